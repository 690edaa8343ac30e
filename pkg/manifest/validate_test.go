package manifest_test

import (
	"errors"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/volume-agent/volume-agent/pkg/manifest"
	"github.com/volume-agent/volume-agent/pkg/volume"
)

// podWithVolumes returns a pod manifest named name whose spec.volumes is
// volumes, a YAML list indented by two spaces.
func podWithVolumes(name, volumes string) string {
	return "apiVersion: v1\nkind: Pod\nmetadata:\n  name: " + name + "\nspec:\n  volumes:\n" + volumes
}

const flockerPV = `apiVersion: v1
kind: PersistentVolume
metadata:
  name: pv
spec:
  accessModes: [ReadWriteOnce]
  flocker:
    datasetName: data
`

func TestValidate(t *testing.T) {
	tests := []struct {
		name  string
		input string
		// want are fragments of the problems, one a problem, in order; none
		// means valid.
		want []string
	}{
		{name: "valid pod", input: podWeb},
		{name: "valid PV and claim", input: flockerPV + "---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: c\nspec:\n  accessModes: [ReadWriteOnce]\n  volumeName: pv\n"},
		{
			name:  "every volume problem of a pod",
			input: podWithVolumes("web", "  - name: a\n    emptyDir: {}\n  - name: a\n    emptyDir: {}\n  - name: B\n    emptyDir: {}\n  - name: c\n  - name: d\n    emptyDir: {}\n    gitRepo: {repository: r}\n    flocker: {datasetName: x}\n  - name: e\n    persistentVolumeClaim: {claimName: \"\"}\n"),
			want: []string{
				`spec.volumes[1].name: Duplicate value: "a"`,
				`spec.volumes[2].name: Invalid value: "B"`,
				`spec.volumes[3]: Required value: must specify a volume type`,
				`spec.volumes[4].gitRepo: Forbidden: may not specify more than 1 volume type; this volume also specifies emptyDir`,
				`spec.volumes[4].flocker: Forbidden: may not specify more than 1 volume type; this volume also specifies emptyDir`,
				`spec.volumes[5].persistentVolumeClaim.claimName: Required value`,
			},
		},
		{
			name:  "volume name too long for a DNS label",
			input: podWithVolumes("web", "  - name: "+strings.Repeat("a", 64)+"\n    emptyDir: {}\n"),
			want:  []string{`spec.volumes[0].name: Invalid value: "aaaa`},
		},
		{
			name:  "volume name with a dot",
			input: podWithVolumes("web", "  - name: a.b\n    emptyDir: {}\n"),
			want:  []string{`spec.volumes[0].name: Invalid value: "a.b": must not contain dots`},
		},
		{
			name:  "pod security context IDs",
			input: "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  securityContext:\n    fsGroup: -5\n    runAsUser: -1\n    runAsGroup: 4294967296\n    supplementalGroups: [5, -2]\n",
			want: []string{
				"spec.securityContext.fsGroup: Invalid value: -5",
				"spec.securityContext.runAsUser: Invalid value: -1",
				"spec.securityContext.runAsGroup: Invalid value: 4294967296",
				"spec.securityContext.supplementalGroups[1]: Invalid value: -2",
			},
		},
		{name: "fsGroup 0 is valid", input: strings.Replace(podWeb, "spec:\n", "spec:\n  securityContext:\n    fsGroup: 0\n", 1)},
		{
			name:  "pod metadata",
			input: "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web.\n  namespace: -ns\n  labels:\n    \"bad key!\": x\n  uid: ..\n",
			want: []string{
				`metadata.name: Invalid value: "web."`,
				`metadata.namespace: Invalid value: "-ns"`,
				`metadata.labels: Invalid value: "bad key!"`,
				`metadata.uid: Invalid value: ".."`,
			},
		},
		{
			name:  "duplicate pod across documents, by name",
			input: podWeb + "---\n" + podWeb,
			want:  []string{`document 2 (line 10): Pod "default/web": metadata.name: Duplicate value: "web": already used by the object at test.yaml, document 1 (line 1)`},
		},
		{
			name:  "same name in two namespaces is fine",
			input: podWeb + "---\n" + strings.Replace(podWeb, "name: web", "name: web\n  namespace: other", 1),
		},
		{
			name: "duplicate pod by UID",
			input: strings.Replace(podWeb, "name: web", "name: web\n  uid: same", 1) + "---\n" +
				strings.Replace(podWeb, "name: web", "name: api\n  uid: same", 1),
			want: []string{`document 2 (line 11): Pod "default/api": metadata.uid: Duplicate value: "same"`},
		},
		{
			name:  "duplicate pod in a List",
			input: "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Pod, metadata: {name: a}}\n- {apiVersion: v1, kind: Pod, metadata: {name: a}}\n",
			want:  []string{`items[1].metadata.name: Duplicate value: "a": already used by the object at test.yaml, document 1 (line 1), items[0]`},
		},
		{
			name:  "PersistentVolume problems",
			input: "apiVersion: v1\nkind: PersistentVolume\nmetadata:\n  name: Pv\n  namespace: default\nspec:\n  claimRef: {namespace: default}\n",
			want: []string{
				`PersistentVolume "Pv": metadata.name: Invalid value: "Pv"`,
				`spec: Required value: must specify a volume type`,
				`spec.accessModes: Required value: at least 1 access mode is required`,
				`spec.claimRef.name: Required value`,
			},
		},
		{
			name:  "ReadWriteOncePod stands alone",
			input: strings.Replace(flockerPV, "[ReadWriteOnce]", "[ReadWriteOncePod, ReadOnlyMany]", 1),
			want:  []string{`spec.accessModes: Forbidden: may not use ReadWriteOncePod with other access modes`},
		},
		{
			name:  "UID with a newline",
			input: strings.Replace(podWeb, "name: web", "name: web\n  uid: \"a\\nb\"", 1),
			want:  []string{`metadata.uid: Invalid value: "a\nb": must not contain whitespace or control characters`},
		},
		{
			name:  "UID of a lone space",
			input: strings.Replace(podWeb, "name: web", "name: web\n  uid: \" \"", 1),
			want:  []string{`metadata.uid: Invalid value: " ": must not contain whitespace or control characters`},
		},
		{
			name:  "UID too long for a directory name",
			input: strings.Replace(podWeb, "name: web", "name: web\n  uid: "+strings.Repeat("u", 300), 1),
			want:  []string{`metadata.uid: Invalid value: "` + strings.Repeat("u", 300) + `": must be no more than 128 bytes`},
		},
		{
			name:  "duplicate PersistentVolumes",
			input: flockerPV + "---\n" + flockerPV,
			want:  []string{`document 2 (line 10): PersistentVolume "pv": metadata.name: Duplicate value: "pv"`},
		},
		{
			name: "two PersistentVolumes claim one claim",
			input: strings.Replace(flockerPV, "spec:\n", "spec:\n  claimRef: {name: c}\n", 1) + "---\n" +
				strings.Replace(strings.Replace(flockerPV, "name: pv", "name: pv2", 1), "spec:\n", "spec:\n  claimRef: {namespace: default, name: c}\n", 1),
			want: []string{`document 2 (line 11): PersistentVolume "pv2": spec.claimRef: Duplicate value: "default/c"`},
		},
		{
			name:  "claim problems",
			input: "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: c\nspec:\n  volumeName: Bad_Name\n",
			want: []string{
				`PersistentVolumeClaim "default/c": spec.accessModes: Required value`,
				`spec.volumeName: Invalid value: "Bad_Name"`,
			},
		},
		{
			name:  "duplicate claims",
			input: "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: c\nspec:\n  accessModes: [ReadWriteOnce]\n---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: c\n  namespace: default\nspec:\n  accessModes: [ReadWriteOnce]\n",
			want:  []string{`document 2 (line 8): PersistentVolumeClaim "default/c": metadata.name: Duplicate value: "c"`},
		},
		{
			name: "two claims name one volume",
			input: flockerPV + "---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: c1\nspec:\n  accessModes: [ReadWriteOnce]\n  volumeName: pv\n" +
				"---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: c2\nspec:\n  accessModes: [ReadWriteOnce]\n  volumeName: pv\n",
			want: []string{`document 3 (line 18): PersistentVolumeClaim "default/c2": spec.volumeName: Invalid value: "pv": PersistentVolume "pv" is bound to claim "default/c1" (at test.yaml, document 2 (line 10)), which names it too; a PersistentVolume is bound to one claim`},
		},
		{
			name: "a claim names a volume whose claimRef is to another",
			input: strings.Replace(flockerPV, "spec:\n", "spec:\n  claimRef: {name: c1}\n", 1) +
				"---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: c1\nspec:\n  accessModes: [ReadWriteOnce]\n" +
				"---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: c2\nspec:\n  accessModes: [ReadWriteOnce]\n  volumeName: pv\n",
			want: []string{`PersistentVolumeClaim "default/c2": spec.volumeName: Invalid value: "pv": PersistentVolume "pv" has a claimRef to claim "default/c1"`},
		},
		{
			name:  "claim asks for a mode its volume does not offer",
			input: strings.Replace(flockerPV, "spec:\n", "spec:\n  claimRef: {name: c}\n", 1) + "---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: c\nspec:\n  accessModes: [ReadWriteOnce, ReadOnlyMany]\n",
			want:  []string{`spec.accessModes: Invalid value: ["ReadWriteOnce","ReadOnlyMany"]: the claim is bound to PersistentVolume "pv", which offers only [ReadWriteOnce]`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bundle, err := manifest.Decode(strings.NewReader(tc.input), "test.yaml", manifest.Options{})
			if err != nil {
				t.Fatalf("Decode = %v", err)
			}
			got := problems(t, manifest.Validate(bundle, nil))
			if len(got) != len(tc.want) {
				t.Fatalf("got %d problems, want %d:\n%v", len(got), len(tc.want), got)
			}
			for i, want := range tc.want {
				if !strings.Contains(got[i].Error(), want) {
					t.Errorf("problem %d = %q, want it to contain %q", i, got[i].Error(), want)
				}
				var fieldErr *field.Error
				if !errors.As(got[i], &fieldErr) || fieldErr.Field != got[i].Field || got[i].Field == "" {
					t.Errorf("problem %d = %#v, want a *field.Error with its field in Field", i, got[i])
				}
			}
		})
	}
}

func TestValidateAcrossSources(t *testing.T) {
	first, err := manifest.Decode(strings.NewReader(podWeb), "a.yaml", manifest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	second, err := manifest.Decode(strings.NewReader("# the same pod again\n"+podWeb), "b.yaml", manifest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	first.Append(second)
	if err := manifest.Validate(first, nil); err == nil ||
		err.Error() != `b.yaml: document 1 (line 1): Pod "default/web": metadata.name: Duplicate value: "web": already used by the object at a.yaml, document 1 (line 1)` {
		t.Errorf("Validate = %v, want the duplicate in b.yaml, naming a.yaml", err)
	}
}

func TestLoadReturnsDecodeAndValidationProblemsInOrder(t *testing.T) {
	input := podWithVolumes("a", "  - name: X\n    emptyDir: {}\n") +
		"---\nkind: Pod\n" +
		"---\n" + podWithVolumes("c", "  - name: data\n    emptyDir: {medium: SSD}\n")
	_, err := manifest.Load(strings.NewReader(input), "test.yaml", manifest.Options{Plugins: newPluginMgr(t, newFakeEmptyDir())})
	got := problems(t, err)
	want := []string{
		`test.yaml: document 1 (line 1): Pod "default/a": spec.volumes[0].name: Invalid value: "X"`,
		`test.yaml: document 2 (line 10): Pod: apiVersion: Required value`,
		`test.yaml: document 3 (line 12): Pod "default/c": spec.volumes[0].emptyDir.medium: Unsupported value: "SSD"`,
	}
	if len(got) != len(want) {
		t.Fatalf("got %d problems, want %d: %v", len(got), len(want), err)
	}
	for i := range want {
		if !strings.HasPrefix(got[i].Error(), want[i]) {
			t.Errorf("problem %d = %q, want it to start with %q", i, got[i], want[i])
		}
	}
}

func TestValidateWithPlugins(t *testing.T) {
	const pods = `apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  volumes:
  - name: ok
    emptyDir: {}
  - name: bad
    emptyDir: {medium: SSD}
  - name: unsupported
    nfs: {server: nfs.example, path: /export}
  - name: two
    emptyDir: {medium: SSD}
    hostPath: {path: /srv}
  - name: claim
    persistentVolumeClaim: {claimName: c}
`
	tests := []struct {
		name      string
		input     string
		plugins   []volume.VolumePlugin
		want      []string
		wantPaths []string
	}{
		{
			name:    "plugin validates its sources at their paths; no plugin is no error",
			input:   pods,
			plugins: []volume.VolumePlugin{newFakeEmptyDir()},
			// volumes[3] has two sources: generic validation reports it,
			// and no plugin is asked about it.
			want: []string{
				`spec.volumes[3].emptyDir: Forbidden: may not specify more than 1 volume type`,
				`spec.volumes[1].emptyDir.medium: Unsupported value: "SSD"`,
			},
			wantPaths: []string{"spec.volumes[0].emptyDir", "spec.volumes[1].emptyDir"},
		},
		{
			name:      "a PersistentVolume's source is validated at its path",
			input:     "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: PersistentVolume\n  metadata: {name: pv}\n  spec:\n    accessModes: [ReadWriteOnce]\n    flocker: {datasetName: x}\n",
			plugins:   []volume.VolumePlugin{&fakeValidatingPlugin{fakePlugin: newFakeFlocker().fakePlugin, validate: func(*volume.Spec, *field.Path) field.ErrorList { return nil }}},
			want:      []string{`items[0].spec.flocker: Forbidden: volume plugin "kubernetes.io/flocker" does not support PersistentVolumes`},
			wantPaths: []string{"items[0].spec.flocker"},
		},
		{
			name:    "a PersistentVolume's modes must be the plugin's",
			input:   strings.Replace(flockerPV, "[ReadWriteOnce]", "[ReadWriteOnce, ReadWriteMany]", 1),
			plugins: []volume.VolumePlugin{newFakeFlocker()},
			want:    []string{`spec.accessModes[1]: Unsupported value: "ReadWriteMany": supported values: "ReadWriteOnce"`},
		},
		{
			name:    "several plugins matching is left to set-up",
			input:   podWeb,
			plugins: []volume.VolumePlugin{newFakeEmptyDir(), &fakePlugin{name: "example.com/also-empty-dir", canSupport: newFakeEmptyDir().canSupport}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bundle, err := manifest.Decode(strings.NewReader(tc.input), "test.yaml", manifest.Options{})
			if err != nil {
				t.Fatal(err)
			}
			got := problems(t, manifest.Validate(bundle, newPluginMgr(t, tc.plugins...)))
			if len(got) != len(tc.want) {
				t.Fatalf("got %d problems, want %d: %v", len(got), len(tc.want), got)
			}
			for i, want := range tc.want {
				if !strings.Contains(got[i].Error(), want) {
					t.Errorf("problem %d = %q, want it to contain %q", i, got[i].Error(), want)
				}
			}
			if validating, ok := tc.plugins[0].(*fakeValidatingPlugin); ok && tc.wantPaths != nil {
				if strings.Join(validating.paths, ",") != strings.Join(tc.wantPaths, ",") {
					t.Errorf("ValidateSpec paths = %v, want %v", validating.paths, tc.wantPaths)
				}
			}
		})
	}
}

func TestVolumeSpecAndResolveVolume(t *testing.T) {
	claim := func(name, extra string) string {
		return "---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: " + name + "\nspec:\n  accessModes: [ReadWriteOnce]\n" + extra
	}
	pv := func(name, extra string) string {
		return "---\napiVersion: v1\nkind: PersistentVolume\nmetadata:\n  name: " + name + "\nspec:\n  flocker: {datasetName: x}\n" + extra
	}
	rwo := "  accessModes: [ReadWriteOnce]\n"
	podClaiming := func(claimName, extra string) string {
		return podWithVolumes("web", "  - name: data\n    persistentVolumeClaim:\n      claimName: "+claimName+"\n"+extra)
	}
	tests := []struct {
		name         string
		input        string
		plugins      []volume.VolumePlugin
		wantPV       string
		wantReadOnly bool
		wantPending  manifest.PendingReason
		wantFinal    string
	}{
		{
			name:   "bound by the claim's volumeName",
			input:  podClaiming("c", "") + claim("c", "  volumeName: pv-b\n") + pv("pv-a", rwo) + pv("pv-b", rwo),
			wantPV: "pv-b",
		},
		{
			name:   "bound by the volume's claimRef",
			input:  podClaiming("c", "") + claim("c", "") + pv("pv-a", rwo+"  claimRef: {name: other}\n") + pv("pv-b", rwo+"  claimRef: {name: c}\n"),
			wantPV: "pv-b",
		},
		{
			name:         "read-only from the pod's source",
			input:        podClaiming("c", "      readOnly: true\n") + claim("c", "  volumeName: pv\n") + pv("pv", rwo),
			wantPV:       "pv",
			wantReadOnly: true,
		},
		{
			name:         "read-only from a ReadOnlyMany volume",
			input:        podClaiming("c", "") + strings.Replace(claim("c", "  volumeName: pv\n"), "ReadWriteOnce", "ReadOnlyMany", 1) + pv("pv", "  accessModes: [ReadOnlyMany]\n"),
			plugins:      []volume.VolumePlugin{&fakePersistentPlugin{fakePlugin: newFakeFlocker().fakePlugin, accessModes: []v1.PersistentVolumeAccessMode{v1.ReadOnlyMany}}},
			wantPV:       "pv",
			wantReadOnly: true,
		},
		{
			name:        "claim missing",
			input:       podClaiming("c", "") + claim("other", ""),
			wantPending: manifest.ReasonClaimNotFound,
		},
		{
			name:        "claim in another namespace",
			input:       podClaiming("c", "") + strings.Replace(claim("c", "  volumeName: pv\n"), "name: c", "name: c\n  namespace: other", 1) + pv("pv", rwo),
			wantPending: manifest.ReasonClaimNotFound,
		},
		{
			name:        "claim not bound",
			input:       podClaiming("c", "") + claim("c", "") + pv("pv", rwo),
			wantPending: manifest.ReasonClaimNotBound,
		},
		{
			name:        "claim names a missing volume",
			input:       podClaiming("c", "") + claim("c", "  volumeName: pv\n"),
			wantPending: manifest.ReasonVolumeNotFound,
		},
		{
			name:        "claim names a volume bound to another claim",
			input:       podClaiming("c", "") + claim("c", "  volumeName: pv\n") + pv("pv", rwo+"  claimRef: {name: d}\n"),
			wantPending: manifest.ReasonVolumeBoundToAnotherClaim,
		},
		{
			name:        "claimRef with another UID",
			input:       podClaiming("c", "") + strings.Replace(claim("c", ""), "name: c", "name: c\n  uid: u1", 1) + pv("pv", rwo+"  claimRef: {name: c, uid: u2}\n"),
			wantPending: manifest.ReasonClaimNotBound,
		},
		{
			name:   "the first of two claims naming one volume",
			input:  podClaiming("c", "") + claim("c", "  volumeName: pv\n") + claim("d", "  volumeName: pv\n") + pv("pv", rwo),
			wantPV: "pv",
		},
		{
			name:        "the second of two claims naming one volume",
			input:       podClaiming("c", "") + claim("d", "  volumeName: pv\n") + claim("c", "  volumeName: pv\n") + pv("pv", rwo),
			wantPending: manifest.ReasonVolumeBoundToAnotherClaim,
		},
		{
			name:        "claimed by two volumes",
			input:       podClaiming("c", "") + claim("c", "") + pv("pv-a", rwo+"  claimRef: {name: c}\n") + pv("pv-b", rwo+"  claimRef: {name: c}\n"),
			wantPending: manifest.ReasonClaimBoundTwice,
		},
		{
			name:      "plugin does not offer the claim's mode",
			input:     podClaiming("c", "") + claim("c", "  volumeName: pv\n") + pv("pv", rwo),
			plugins:   []volume.VolumePlugin{&fakePersistentPlugin{fakePlugin: newFakeFlocker().fakePlugin, accessModes: []v1.PersistentVolumeAccessMode{v1.ReadOnlyMany}}},
			wantPV:    "pv",
			wantFinal: `claim "default/c" asks for access modes [ReadWriteOnce], but volume plugin "kubernetes.io/flocker" supports only [ReadOnlyMany]`,
		},
		{
			name:      "plugin is not persistent",
			input:     podClaiming("c", "") + claim("c", "  volumeName: pv\n") + pv("pv", rwo),
			plugins:   []volume.VolumePlugin{&fakePlugin{name: "kubernetes.io/flocker", canSupport: newFakeFlocker().canSupport}},
			wantPV:    "pv",
			wantFinal: `volume plugin "kubernetes.io/flocker" does not support persistent volumes`,
		},
		{
			name:      "no plugin",
			input:     podClaiming("c", "") + claim("c", "  volumeName: pv\n") + pv("pv", rwo),
			plugins:   []volume.VolumePlugin{newFakeEmptyDir()},
			wantPV:    "pv",
			wantFinal: volume.ErrNoPluginMatched.Error(),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bundle, err := manifest.Decode(strings.NewReader(tc.input), "test.yaml", manifest.Options{})
			if err != nil {
				t.Fatal(err)
			}
			pod := bundle.Pods[0]
			vol := &pod.Spec.Volumes[0]
			if tc.plugins == nil {
				tc.plugins = []volume.VolumePlugin{newFakeFlocker()}
			}

			spec, err := bundle.VolumeSpec(pod, vol)
			_, plugin, resolveErr := bundle.ResolveVolume(pod, vol, newPluginMgr(t, tc.plugins...))
			if tc.wantPending != "" {
				for _, err := range []error{err, resolveErr} {
					var pending *manifest.PendingError
					if !errors.As(err, &pending) || pending.Reason != tc.wantPending || pending.Volume != "data" || !manifest.IsPending(err) {
						t.Errorf("error = %v, want pending %s for volume data", err, tc.wantPending)
					}
					if want := `volume "data" is pending (` + string(tc.wantPending) + `): claim "default/c": `; err != nil && !strings.HasPrefix(err.Error(), want) {
						t.Errorf("error = %q, want it to start with %q", err, want)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("VolumeSpec = %v", err)
			}
			if spec.PersistentVolume == nil || spec.PersistentVolume.Name != tc.wantPV || spec.ReadOnly != tc.wantReadOnly {
				t.Errorf("spec = PV %v read-only %v, want PV %s read-only %v", spec.PersistentVolume, spec.ReadOnly, tc.wantPV, tc.wantReadOnly)
			}
			if tc.wantFinal != "" {
				if !volume.IsFinal(resolveErr) || !strings.Contains(resolveErr.Error(), tc.wantFinal) || manifest.IsPending(resolveErr) {
					t.Errorf("ResolveVolume = %v, want a final error containing %q", resolveErr, tc.wantFinal)
				}
				return
			}
			if resolveErr != nil || plugin == nil || plugin.Name() != "kubernetes.io/flocker" {
				t.Errorf("ResolveVolume = %v, %v, want the flocker plugin", plugin, resolveErr)
			}
		})
	}
}

func TestResolveInlineVolume(t *testing.T) {
	bundle, err := manifest.Decode(strings.NewReader(podWithVolumes("web", "  - name: a\n    emptyDir: {}\n  - name: b\n    nfs: {server: s, path: /p}\n")), "test.yaml", manifest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pod := bundle.Pods[0]
	plugins := newPluginMgr(t, newFakeEmptyDir())

	spec, plugin, err := bundle.ResolveVolume(pod, &pod.Spec.Volumes[0], plugins)
	if err != nil || spec.Volume != &pod.Spec.Volumes[0] || plugin.Name() != "kubernetes.io/empty-dir" {
		t.Errorf("ResolveVolume(a) = %+v, %v, %v, want the pod's volume and the emptyDir plugin", spec, plugin, err)
	}
	spec, _, err = bundle.ResolveVolume(pod, &pod.Spec.Volumes[1], plugins)
	if !errors.Is(err, volume.ErrNoPluginMatched) || !volume.IsFinal(err) || spec == nil || spec.Name() != "b" {
		t.Errorf("ResolveVolume(b) = %v, %v, want the spec and a final ErrNoPluginMatched", spec, err)
	}
}
