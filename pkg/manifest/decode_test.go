package manifest_test

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"

	"github.com/volume-agent/volume-agent/pkg/manifest"
)

const podWeb = `apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  volumes:
  - name: data
    emptyDir: {}
`

// problems returns the *manifest.Error of err, failing the test on any
// other error.
func problems(t *testing.T, err error) []*manifest.Error {
	t.Helper()
	if err == nil {
		return nil
	}
	var agg utilerrors.Aggregate
	if !errors.As(err, &agg) {
		t.Fatalf("error is not an aggregate: %T %v", err, err)
	}
	var out []*manifest.Error
	for _, e := range agg.Errors() {
		var problem *manifest.Error
		if !errors.As(e, &problem) {
			t.Fatalf("problem is not a *manifest.Error: %T %v", e, e)
		}
		out = append(out, problem)
	}
	return out
}

func podNames(bundle *manifest.Bundle) []string {
	var names []string
	for _, pod := range bundle.Pods {
		names = append(names, pod.Namespace+"/"+pod.Name)
	}
	return names
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name  string
		input string
		// wantPods are namespace/name, in order.
		wantPods []string
		wantPVs  int
		wantPVCs int
		// wantDocuments are the documents of the pods, in order.
		wantDocuments []int
		wantLines     []int
		wantRoots     []string
		wantErr       []string
	}{
		{
			name:          "one pod",
			input:         podWeb,
			wantPods:      []string{"default/web"},
			wantDocuments: []int{1},
			wantLines:     []int{1},
			wantRoots:     []string{"<nil>"},
		},
		{
			name: "several documents with empty ones skipped",
			input: "# header comment\n---\n" + podWeb + "---\n# only a comment\n---\n" +
				strings.Replace(podWeb, "name: web", "name: api\n  namespace: team-a", 1) +
				"---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: claim\nspec:\n  accessModes: [ReadWriteOnce]\n" +
				"---\napiVersion: v1\nkind: PersistentVolume\nmetadata:\n  name: pv\nspec:\n  accessModes: [ReadWriteOnce]\n  flocker:\n    datasetName: x\n",
			wantPods:      []string{"default/web", "team-a/api"},
			wantPVs:       1,
			wantPVCs:      1,
			wantDocuments: []int{1, 2},
			wantLines:     []int{3, 14},
			wantRoots:     []string{"<nil>", "<nil>"},
		},
		{
			name: "list of pods",
			input: "apiVersion: v1\nkind: List\nitems:\n" +
				"- " + strings.ReplaceAll(strings.TrimSuffix(podWeb, "\n"), "\n", "\n  ") + "\n" +
				"- " + strings.ReplaceAll(strings.TrimSuffix(strings.Replace(podWeb, "name: web", "name: api", 1), "\n"), "\n", "\n  ") + "\n",
			wantPods:      []string{"default/web", "default/api"},
			wantDocuments: []int{1, 1},
			wantLines:     []int{1, 1},
			wantRoots:     []string{"items[0]", "items[1]"},
		},
		{
			name:          "json object",
			input:         `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","namespace":"ns"},"spec":{"volumes":[{"name":"data","emptyDir":{}}]}}`,
			wantPods:      []string{"ns/web"},
			wantDocuments: []int{1},
			wantLines:     []int{1},
			wantRoots:     []string{"<nil>"},
		},
		{
			name: "json stream",
			input: "\n{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"a\"}}\n\n" +
				"{\"apiVersion\":\"v1\",\"kind\":\"List\",\"items\":[{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"b\"}}]}\n",
			wantPods:      []string{"default/a", "default/b"},
			wantDocuments: []int{1, 2},
			wantLines:     []int{2, 4},
			wantRoots:     []string{"<nil>", "items[0]"},
		},
		{
			name:  "empty input",
			input: "# nothing here\n---\n",
		},
		{
			name:     "strict: unknown field",
			input:    strings.Replace(podWeb, "emptyDir: {}", "emptyDir:\n      mediun: Memory", 1),
			wantPods: []string{"default/web"}, wantDocuments: []int{1}, wantLines: []int{1}, wantRoots: []string{"<nil>"},
			wantErr: []string{`test.yaml: document 1 (line 1): Pod "default/web": unknown field "spec.volumes[0].emptyDir.mediun"`},
		},
		{
			name:     "strict: wrong case is an unknown field",
			input:    strings.Replace(podWeb, "emptyDir: {}", "emptydir: {}", 1),
			wantPods: []string{"default/web"}, wantDocuments: []int{1}, wantLines: []int{1}, wantRoots: []string{"<nil>"},
			wantErr: []string{`unknown field "spec.volumes[0].emptydir"`},
		},
		{
			name:    "strict: duplicate key, line counted from the start of the source",
			input:   podWeb + "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n  name: b\n",
			wantErr: []string{`test.yaml: document 2 (line 10): Pod "default/b": yaml: line 14: key "name" already set in map`},
			// The pods decode; only their duplicate key is wrong.
			wantPods: []string{"default/web", "default/b"}, wantDocuments: []int{1, 2}, wantLines: []int{1, 10}, wantRoots: []string{"<nil>", "<nil>"},
		},
		{
			name:  "strict: two duplicate keys are two problems",
			input: "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n  name: b\nspec:\n  volumes:\n  - name: v\n    emptyDir: {}\n    emptyDir: {}\n",
			wantErr: []string{
				`test.yaml: document 1 (line 1): Pod "default/b": yaml: line 5: key "name" already set in map`,
				`test.yaml: document 1 (line 1): Pod "default/b": yaml: line 10: key "emptyDir" already set in map`,
			},
			wantPods: []string{"default/b"}, wantDocuments: []int{1}, wantLines: []int{1}, wantRoots: []string{"<nil>"},
		},
		{
			name:     "a broken document does not hide the next",
			input:    "apiVersion: v1\nkind: Pod\nmetadata: [\n---\n" + podWeb,
			wantErr:  []string{`test.yaml: document 1 (line 1): failed to parse YAML: yaml: line 3:`},
			wantPods: []string{"default/web"}, wantDocuments: []int{2}, wantLines: []int{5}, wantRoots: []string{"<nil>"},
		},
		{
			name:    "every problem of every document",
			input:   "kind: Pod\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: ConfigMap\n---\napiVersion: batch/v1\n",
			wantErr: []string{"document 1 (line 1): Pod \"default/a\": apiVersion: Required value", "document 2 (line 5): ConfigMap: kind: Unsupported value: \"ConfigMap\"", "document 3 (line 8): object: apiVersion: Unsupported value: \"batch/v1\"", "document 3 (line 8): object: kind: Required value"},
		},
		{
			name:     "strict: duplicate JSON key",
			input:    `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a","name":"b"}}`,
			wantErr:  []string{`test.yaml: document 1 (line 1): Pod "default/b": duplicate field "metadata.name"`},
			wantPods: []string{"default/b"}, wantDocuments: []int{1}, wantLines: []int{1}, wantRoots: []string{"<nil>"},
		},
		{
			name:    "apiVersion of the wrong type",
			input:   "apiVersion: 1\nkind: Pod\n",
			wantErr: []string{`test.yaml: document 1 (line 1): apiVersion: Invalid value: 1: cannot unmarshal number`},
		},
		{
			name:    "a List in a List",
			input:   "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: List\n  items: []\n",
			wantErr: []string{`test.yaml: document 1 (line 1): List: items[0].kind: Unsupported value: "List"`},
		},
		{
			name:    "a List item that is not an object",
			input:   "apiVersion: v1\nkind: List\nitems:\n- 42\n",
			wantErr: []string{`items[0]: Invalid value: 42: must be an object`},
		},
		{
			name:    "map value of the wrong type names its key",
			input:   strings.Replace(podWeb, "name: web", "name: web\n  labels:\n    tier: 1\n    app: web", 1),
			wantErr: []string{`Pod "default/web": metadata.labels[tier]: Invalid value: 1: cannot unmarshal number into Go value of type string`},
		},
		{
			name:    "value that does not parse names its field",
			input:   strings.Replace(podWeb, "emptyDir: {}", "emptyDir:\n      sizeLimit: lots", 1),
			wantErr: []string{`Pod "default/web": spec.volumes[0].emptyDir.sizeLimit: Invalid value: "lots": quantities must match`},
		},
		{
			name:    "value that does not parse in a List item names its field",
			input:   `{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"},"spec":{"securityContext":{"runAsUser":"root"}}}]}`,
			wantErr: []string{`Pod "default/a": items[0].spec.securityContext.runAsUser: Invalid value: "root"`},
		},
		{
			name:    "broken JSON names the line",
			input:   "{\n  \"apiVersion\": \"v1\",\n  \"kind\": \"Pod\",,\n}\n",
			wantErr: []string{`test.yaml: document 1 (line 1): failed to parse JSON: line 3: invalid character ','`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bundle, err := manifest.Decode(strings.NewReader(tc.input), "test.yaml", manifest.Options{NodeName: "node-1"})
			got := problems(t, err)
			if len(got) != len(tc.wantErr) {
				t.Fatalf("got %d problems, want %d: %v", len(got), len(tc.wantErr), err)
			}
			for i, want := range tc.wantErr {
				if !strings.Contains(got[i].Error(), want) {
					t.Errorf("problem %d = %q, want it to contain %q", i, got[i].Error(), want)
				}
			}
			if names := podNames(bundle); strings.Join(names, ",") != strings.Join(tc.wantPods, ",") {
				t.Errorf("pods = %v, want %v", names, tc.wantPods)
			}
			if len(bundle.PersistentVolumes) != tc.wantPVs || len(bundle.PersistentVolumeClaims) != tc.wantPVCs {
				t.Errorf("got %d PVs and %d PVCs, want %d and %d", len(bundle.PersistentVolumes), len(bundle.PersistentVolumeClaims), tc.wantPVs, tc.wantPVCs)
			}
			for i, pod := range bundle.Pods {
				origin := bundle.Origin(pod)
				if origin.Source != "test.yaml" || origin.Document != tc.wantDocuments[i] || origin.Line != tc.wantLines[i] || origin.Root.String() != tc.wantRoots[i] {
					t.Errorf("pod %s origin = %+v (root %s), want document %d, line %d, root %s",
						pod.Name, origin, origin.Root, tc.wantDocuments[i], tc.wantLines[i], tc.wantRoots[i])
				}
				if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(string(pod.UID)) {
					t.Errorf("pod %s UID = %q, want 32 hex digits", pod.Name, pod.UID)
				}
			}
		})
	}
}

func TestDecodeDefaults(t *testing.T) {
	input := podWeb + `---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: claim
spec:
  accessModes: [ReadWriteOnce]
---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: pv
  namespace: ignored
spec:
  accessModes: [ReadWriteOnce]
  flocker:
    datasetName: x
`
	bundle, err := manifest.Decode(strings.NewReader(input), "test.yaml", manifest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := bundle.Pods[0].Namespace; got != "default" {
		t.Errorf("pod namespace = %q, want default", got)
	}
	if got := bundle.PersistentVolumeClaims[0].Namespace; got != "default" {
		t.Errorf("claim namespace = %q, want default", got)
	}
	if got := bundle.PersistentVolumes[0].Namespace; got != "" {
		t.Errorf("PersistentVolume namespace = %q, want it cleared: it is not namespaced", got)
	}
	if bundle.Len() != 3 {
		t.Errorf("Len() = %d, want 3", bundle.Len())
	}
}

func TestDecodeTypedFields(t *testing.T) {
	bundle, err := manifest.LoadFile(filepath.Join("..", "..", "test", "testdata", "valid", "pod-emptydir.yaml"), manifest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pod := bundle.Pods[0]
	if fsGroup := pod.Spec.SecurityContext.FSGroup; fsGroup == nil || *fsGroup != 1234 {
		t.Errorf("fsGroup = %v, want 1234", fsGroup)
	}
	cache := pod.Spec.Volumes[1].EmptyDir
	if cache.Medium != v1.StorageMediumMemory || cache.SizeLimit == nil || cache.SizeLimit.Cmp(resource.MustParse("10Mi")) != 0 {
		t.Errorf("cache volume = %+v, want Memory with sizeLimit 10Mi", cache)
	}
}

func TestDecodeFileStdin(t *testing.T) {
	bundle, err := manifest.DecodeFile("-", manifest.Options{Stdin: strings.NewReader(podWeb + "---\nkind: Pod\n")})
	got := problems(t, err)
	if len(got) != 1 || got[0].Source != "stdin" || !strings.HasPrefix(got[0].Error(), "stdin: document 2 (line 10): ") {
		t.Fatalf("problems = %v, want one in stdin, document 2", err)
	}
	if len(bundle.Pods) != 1 || bundle.Origin(bundle.Pods[0]).Source != manifest.StdinSource {
		t.Fatalf("pods = %v from %+v, want web from stdin", podNames(bundle), bundle.Origin(bundle.Pods[0]))
	}

	// The same content from stdin twice gets the same UID.
	again, err := manifest.DecodeFile("-", manifest.Options{Stdin: strings.NewReader(podWeb)})
	if err != nil {
		t.Fatal(err)
	}
	if again.Pods[0].UID != bundle.Pods[0].UID {
		t.Errorf("UIDs from stdin differ: %s, %s", again.Pods[0].UID, bundle.Pods[0].UID)
	}
}

func TestDecodeFileErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	_, err := manifest.DecodeFile(missing, manifest.Options{})
	got := problems(t, err)
	if len(got) != 1 || got[0].Source != missing || !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "failed to open manifest") {
		t.Errorf("DecodeFile(missing) = %v, want one problem naming the file and wrapping ErrNotExist", err)
	}

	_, err = manifest.DecodeFile(t.TempDir(), manifest.Options{})
	if got := problems(t, err); len(got) != 1 || !strings.Contains(err.Error(), "failed to read manifest") {
		t.Errorf("DecodeFile(dir) = %v, want one read failure", err)
	}
}

type endlessReader struct{}

func (endlessReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = '#'
	}
	return len(p), nil
}

func TestDecodeRefusesHugeInput(t *testing.T) {
	_, err := manifest.Decode(endlessReader{}, "huge", manifest.Options{})
	if got := problems(t, err); len(got) != 1 || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("Decode(endless) = %v, want one size error", err)
	}
}

func decodeOnePod(t *testing.T, input, source string, opts manifest.Options) *v1.Pod {
	t.Helper()
	bundle, err := manifest.Decode(strings.NewReader(input), source, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(bundle.Pods) != 1 {
		t.Fatalf("got %d pods, want 1", len(bundle.Pods))
	}
	return bundle.Pods[0]
}

func TestDerivedPodUID(t *testing.T) {
	node1 := manifest.Options{NodeName: "node-1"}
	base := decodeOnePod(t, podWeb, "pod.yaml", node1).UID

	sameContent := map[string]string{
		"same text":                podWeb,
		"comments and key order":   "# the web pod\nkind: Pod\napiVersion: v1\nspec:\n  volumes:\n  - emptyDir: {}\n    name: data\nmetadata:\n  name: web\n",
		"explicit default ns":      strings.Replace(podWeb, "name: web", "name: web\n  namespace: default", 1),
		"as JSON":                  `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web"},"spec":{"volumes":[{"name":"data","emptyDir":{}}]}}`,
		"as the only item of List": "apiVersion: v1\nkind: List\nitems:\n- " + strings.ReplaceAll(strings.TrimSuffix(podWeb, "\n"), "\n", "\n  ") + "\n",
	}
	for name, input := range sameContent {
		t.Run(name, func(t *testing.T) {
			if uid := decodeOnePod(t, input, "pod.yaml", node1).UID; uid != base {
				t.Errorf("UID = %s, want %s as for the same pod", uid, base)
			}
		})
	}

	different := []struct {
		name   string
		input  string
		source string
		opts   manifest.Options
	}{
		{"another node", podWeb, "pod.yaml", manifest.Options{NodeName: "node-2"}},
		{"another source", podWeb, "other.yaml", node1},
		{"another field", strings.Replace(podWeb, "emptyDir: {}", "emptyDir: {medium: Memory}", 1), "pod.yaml", node1},
	}
	for _, tc := range different {
		t.Run(tc.name, func(t *testing.T) {
			if uid := decodeOnePod(t, tc.input, tc.source, tc.opts).UID; uid == base {
				t.Errorf("UID = %s, the same as the base pod's", uid)
			}
		})
	}

	t.Run("metadata.uid wins", func(t *testing.T) {
		input := strings.Replace(podWeb, "name: web", "name: web\n  uid: 0d1c2b3a-0000-4000-8000-000000000001", 1)
		if uid := decodeOnePod(t, input, "pod.yaml", node1).UID; uid != "0d1c2b3a-0000-4000-8000-000000000001" {
			t.Errorf("UID = %s, want metadata.uid", uid)
		}
	})

	t.Run("DerivePodUID ignores the UID set and matches Decode", func(t *testing.T) {
		pod := decodeOnePod(t, podWeb, "pod.yaml", node1)
		pod.UID = "something"
		uid, err := manifest.DerivePodUID(pod, "node-1", "pod.yaml")
		if err != nil || uid != base {
			t.Errorf("DerivePodUID = %s, %v, want %s", uid, err, base)
		}
	})

	t.Run("a file gets the same UID by relative and absolute path", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "pod.yaml")
		if err := os.WriteFile(path, []byte(podWeb), 0o600); err != nil {
			t.Fatal(err)
		}
		byAbsolute, err := manifest.DecodeFile(path, node1)
		if err != nil {
			t.Fatal(err)
		}
		t.Chdir(dir)
		byRelative, err := manifest.DecodeFile("pod.yaml", node1)
		if err != nil {
			t.Fatal(err)
		}
		if a, r := byAbsolute.Pods[0].UID, byRelative.Pods[0].UID; a != r {
			t.Errorf("UID by absolute path %s != by relative path %s", a, r)
		}
		if got := byRelative.Origin(byRelative.Pods[0]).Source; got != "pod.yaml" {
			t.Errorf("source = %q, want the path as given", got)
		}
		want, _ := manifest.DerivePodUID(byAbsolute.Pods[0], "node-1", path)
		if byAbsolute.Pods[0].UID != want {
			t.Errorf("UID = %s, want DerivePodUID(pod, node, absolute path) = %s", byAbsolute.Pods[0].UID, want)
		}
	})
}
