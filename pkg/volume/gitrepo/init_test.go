package gitrepo

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	utilexec "k8s.io/utils/exec"

	"github.com/volume-agent/volume-agent/pkg/volume"
	volumetesting "github.com/volume-agent/volume-agent/pkg/volume/testing"
)

// TestInitTouchesNothing: loading the plugin, as `volume-agent validate`
// does, creates nothing under the root dir; the first volume prepares
// the plugin's dir.
func TestInitTouchesNothing(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	_, mgr := volumetesting.NewFakeVolumeHost(t, root, ProbeVolumePlugins(DefaultConfig()), volumetesting.FakeHostOptions{})
	if _, err := os.Stat(root); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Init created the root dir: %v", err)
	}
	p, err := mgr.FindPluginByName(PluginName)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.(*plugin).prepare(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"home", "gitconfig", "cache"} {
		if _, err := os.Stat(filepath.Join(root, "plugins", "kubernetes.io~git-repo", name)); err != nil {
			t.Errorf("prepare did not make %s: %v", name, err)
		}
	}
}

// TestCheckHealthTouchesNothing: a health check, as `volume-agent plugins`
// runs it, runs git but creates nothing under the root dir, before and after
// a volume prepared the plugin's dir.
func TestCheckHealthTouchesNothing(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	_, mgr := volumetesting.NewFakeVolumeHost(t, root, ProbeVolumePlugins(DefaultConfig()), volumetesting.FakeHostOptions{Exec: utilexec.New()})
	p, err := mgr.FindPluginByName(PluginName)
	if err != nil {
		t.Fatal(err)
	}
	checker := p.(*plugin)
	health := checker.CheckHealth(t.Context())
	if !health.Usable || health.Details["gitVersion"] == "" {
		t.Fatalf("CheckHealth() = %+v, want usable with git's version", health)
	}
	if want := filepath.Join(root, "plugins", "kubernetes.io~git-repo", "cache"); health.Details["cache"] != want {
		t.Errorf("cache detail = %q, want %q", health.Details["cache"], want)
	}
	if _, err := os.Stat(root); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("CheckHealth created the root dir: %v", err)
	}
	if err := checker.prepare(); err != nil {
		t.Fatal(err)
	}
	if health := checker.CheckHealth(t.Context()); !health.Usable {
		t.Errorf("CheckHealth() after prepare = %+v, want usable", health)
	}
}

// TestVerifyVolumeReportsAGoneCheckout: a checkout deleted or emptied is a
// Final error (reported, not cloned again); one still there is whole.
func TestVerifyVolumeReportsAGoneCheckout(t *testing.T) {
	root := t.TempDir()
	_, mgr := volumetesting.NewFakeVolumeHost(t, root, ProbeVolumePlugins(DefaultConfig()), volumetesting.FakeHostOptions{})
	p, err := mgr.FindPluginByName(PluginName)
	if err != nil {
		t.Fatal(err)
	}
	verifier := p.(volume.VerifyingPlugin)
	spec := volume.NewSpecFromVolume(&v1.Volume{Name: "src", VolumeSource: v1.VolumeSource{GitRepo: &v1.GitRepoVolumeSource{Repository: "https://example.com/r.git"}}})
	path := filepath.Join(root, "src")
	if err := os.MkdirAll(filepath.Join(path, "r", ".git"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := verifier.VerifyVolume(spec, "pod", path); err != nil {
		t.Errorf("VerifyVolume() of a checkout = %v", err)
	}
	if err := os.RemoveAll(filepath.Join(path, "r")); err != nil {
		t.Fatal(err)
	}
	if err := verifier.VerifyVolume(spec, "pod", path); !volume.IsFinal(err) || !strings.Contains(err.Error(), "the dir is empty") {
		t.Errorf("VerifyVolume() of an emptied checkout = %v, want a final error", err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := verifier.VerifyVolume(spec, "pod", path); !volume.IsFinal(err) || !strings.Contains(err.Error(), "is gone") {
		t.Errorf("VerifyVolume() of a deleted checkout = %v, want a final error", err)
	}
}
