package manifest_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/volume-agent/volume-agent/pkg/manifest"
	"github.com/volume-agent/volume-agent/pkg/volume"
)

var testdata = filepath.Join("..", "..", "test", "testdata")

// manifestFiles returns the manifests in dir.
func manifestFiles(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	for _, pattern := range []string{"*.yaml", "*.json"} {
		matches, err := filepath.Glob(filepath.Join(dir, pattern))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, matches...)
	}
	slices.Sort(files)
	return files
}

// readExpect returns the fragments of a manifest's sidecar .expect file:
// one a line, skipping blank lines and # comments.
func readExpect(t *testing.T, file string) []string {
	t.Helper()
	data, err := os.ReadFile(strings.TrimSuffix(file, filepath.Ext(file)) + ".expect")
	if err != nil {
		t.Fatalf("every invalid manifest needs a .expect file: %v", err)
	}
	var fragments []string
	for _, line := range strings.Split(string(data), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			fragments = append(fragments, line)
		}
	}
	if len(fragments) == 0 {
		t.Fatalf("%s.expect has no fragment", file)
	}
	return fragments
}

// pluginRejected are the invalid manifests that only a plugin's ValidateSpec
// rejects; generic validation must accept them. The end-to-end test checks
// them against the real plugins; here the fakes check that the plugin gets
// the source's path.
var pluginRejected = map[string]string{
	"emptydir-unknown-medium.yaml": "spec.volumes[0].emptyDir",
	"gitrepo-leading-dash.yaml":    "spec.volumes[0].gitRepo",
}

// TestInvalidManifests loads every manifest under test/testdata/invalid and
// checks that it is refused with every fragment of its .expect file, and
// that every problem names the file and the document.
func TestInvalidManifests(t *testing.T) {
	files := manifestFiles(t, filepath.Join(testdata, "invalid"))
	if len(files) < 12 {
		t.Fatalf("found %d invalid manifests, want at least 12", len(files))
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			fragments := readExpect(t, file)
			emptyDir, gitRepo := newFakeEmptyDir(), newFakeGitRepo()
			plugins := newPluginMgr(t, emptyDir, gitRepo, newFakeFlocker())

			if sourcePath, ok := pluginRejected[filepath.Base(file)]; ok {
				if _, err := manifest.LoadFile(file, manifest.Options{}); err != nil {
					t.Fatalf("without plugins, LoadFile = %v, want no error: only the plugin should refuse it", err)
				}
				if _, err := manifest.LoadFile(file, manifest.Options{Plugins: newPluginMgr(t)}); err != nil {
					t.Fatalf("with no plugin supporting it, LoadFile = %v, want no error: it fails alone at set-up", err)
				}
				_, err := manifest.LoadFile(file, manifest.Options{Plugins: plugins})
				if paths := append(emptyDir.paths, gitRepo.paths...); !slices.Contains(paths, sourcePath) {
					t.Errorf("plugins validated %v, want %s", paths, sourcePath)
				}
				checkProblems(t, file, err, fragments)
				return
			}

			bundle, err := manifest.LoadFile(file, manifest.Options{Plugins: plugins})
			checkProblems(t, file, err, fragments)
			if bundle == nil {
				t.Error("LoadFile returned a nil bundle")
			}
		})
	}
}

func checkProblems(t *testing.T, file string, err error, fragments []string) {
	t.Helper()
	got := problems(t, err)
	if len(got) == 0 {
		t.Fatalf("LoadFile(%s) = nil, want it refused", file)
	}
	var messages []string
	for _, problem := range got {
		message := problem.Error()
		messages = append(messages, message)
		if problem.Source != file || !strings.HasPrefix(message, file+": document ") {
			t.Errorf("problem %q does not start with the file and its document", message)
		}
	}
	all := strings.Join(messages, "\n")
	for _, fragment := range fragments {
		if !strings.Contains(all, fragment) {
			t.Errorf("problems do not mention %q:\n%s", fragment, all)
		}
	}
}

// TestValidManifests loads every manifest under test/testdata/valid, with
// and without plugins, and resolves every volume of every pod.
func TestValidManifests(t *testing.T) {
	files := manifestFiles(t, filepath.Join(testdata, "valid"))
	if len(files) < 3 {
		t.Fatalf("found %d valid manifests, want at least 3", len(files))
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			plugins := newPluginMgr(t, newFakeEmptyDir(), newFakeGitRepo(), newFakeFlocker())
			for _, opts := range []manifest.Options{{}, {Plugins: plugins}} {
				bundle, err := manifest.LoadFile(file, opts)
				if err != nil {
					t.Fatalf("LoadFile = %v", err)
				}
				if len(bundle.Pods) == 0 {
					t.Fatal("no pods")
				}
				for _, pod := range bundle.Pods {
					for i := range pod.Spec.Volumes {
						vol := &pod.Spec.Volumes[i]
						spec, plugin, err := bundle.ResolveVolume(pod, vol, plugins)
						if err != nil {
							t.Fatalf("ResolveVolume(%s, %s) = %v", pod.Name, vol.Name, err)
						}
						if spec == nil || plugin == nil {
							t.Fatalf("ResolveVolume(%s, %s) = %v, %v", pod.Name, vol.Name, spec, plugin)
						}
					}
				}
			}
		})
	}
}

func TestValidFlockerManifestResolvesToItsVolume(t *testing.T) {
	bundle, err := manifest.LoadFile(filepath.Join(testdata, "valid", "flocker-pv-pvc-pod.yaml"), manifest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pod := bundle.Pods[0]
	spec, plugin, err := bundle.ResolveVolume(pod, &pod.Spec.Volumes[0], newPluginMgr(t, newFakeEmptyDir(), newFakeFlocker()))
	if err != nil {
		t.Fatal(err)
	}
	if spec.PersistentVolume == nil || spec.PersistentVolume.Name != "flocker-pv" || spec.PersistentVolume.Spec.Flocker.DatasetName != "db-data" {
		t.Errorf("spec = %+v, want the PersistentVolume flocker-pv", spec)
	}
	if spec.ReadOnly {
		t.Error("spec is read-only, want read-write")
	}
	if plugin.Name() != "kubernetes.io/flocker" {
		t.Errorf("plugin = %s, want kubernetes.io/flocker", plugin.Name())
	}
	var _ volume.VolumePlugin = plugin
}
