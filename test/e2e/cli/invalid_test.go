package cli

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestInvalidManifests: every malformed manifest under test/testdata/invalid
// exits 2 from validate and setup, with a message holding the expected text
// (its .expect file: field path and problem), and nothing is created under
// the root dir. teardown exits 2 the same way when the pods cannot be named,
// and otherwise tears them down with a warning that says the same problems.
func TestInvalidManifests(t *testing.T) {
	manifests, err := filepath.Glob(testdata("invalid", "*.*"))
	if err != nil {
		t.Fatal(err)
	}
	count := 0
	for _, path := range manifests {
		if strings.HasSuffix(path, ".expect") {
			continue
		}
		count++
		expectRaw, err := os.ReadFile(strings.TrimSuffix(path, filepath.Ext(path)) + ".expect")
		if err != nil {
			t.Fatalf("%s has no .expect file: %v", path, err)
		}
		t.Run(filepath.Base(path), func(t *testing.T) {
			for _, command := range []string{"validate", "setup", "teardown"} {
				root := filepath.Join(t.TempDir(), "root")
				res := run(t, "", command, "-f", path, "--root-dir", root)
				if command == "teardown" && res.code == 0 {
					// A tear-down needs only the pods' identities: a
					// manifest that decodes is torn down, with a warning
					// that names its problems.
					if !strings.Contains(res.stderr, "Warning: tearing the pods down although their manifest is not valid now") {
						t.Errorf("teardown: exit 0 without the warning; stderr:\n%s", res.stderr)
					}
				} else if res.code != 2 {
					t.Errorf("%s: exit %d, want 2", command, res.code)
				}
				for _, line := range strings.Split(strings.TrimSpace(string(expectRaw)), "\n") {
					if !strings.Contains(res.stderr, strings.TrimSpace(line)) {
						t.Errorf("%s: stderr does not say %q", command, line)
					}
				}
				if !strings.Contains(res.stderr, filepath.Base(path)) {
					t.Errorf("%s: stderr does not name the file", command)
				}
				if _, err := os.Stat(root); res.code != 0 && !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("%s created the root dir %s on invalid input", command, root)
				}
			}
		})
	}
	if count < 10 {
		t.Errorf("only %d malformed manifests under test/testdata/invalid, want at least 10", count)
	}
}

func TestValidManifests(t *testing.T) {
	manifests, err := filepath.Glob(testdata("valid", "*.*"))
	if err != nil || len(manifests) == 0 {
		t.Fatalf("no valid manifests: %v", err)
	}
	for _, path := range manifests {
		t.Run(filepath.Base(path), func(t *testing.T) {
			if res := run(t, "", "validate", "-f", path); res.code != 0 {
				t.Errorf("exit %d, want 0", res.code)
			}
		})
	}
	t.Run("stdin", func(t *testing.T) {
		content, err := os.ReadFile(testdata("valid", "pod-emptydir.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if res := run(t, string(content), "validate", "-f", "-"); res.code != 0 || !strings.Contains(res.stdout, "valid") {
			t.Errorf("validate -f - exit %d, want 0", res.code)
		}
	})
}
