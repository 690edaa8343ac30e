package gitrepo

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	utilexec "k8s.io/utils/exec"

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
