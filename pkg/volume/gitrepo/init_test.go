package gitrepo

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	volumetesting "github.com/volume-agent/volume-agent/pkg/volume/testing"
)

// TestInitTouchesNothing: loading the plugin, as `volume-agent validate`
// does, creates nothing under the root dir; the first health check prepares
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
