package source

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/types"

	"github.com/volume-agent/volume-agent/pkg/manifest"
	"github.com/volume-agent/volume-agent/pkg/volumemanager"
)

func claimManifest(namespace, name, volumeName string) string {
	return "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {namespace: " + namespace + ", name: " + name + "}\nspec:\n  accessModes: [ReadWriteOnce]\n  volumeName: " + volumeName + "\n"
}

func pvManifest(name, path string) string {
	return "apiVersion: v1\nkind: PersistentVolume\nmetadata: {name: " + name + "}\nspec:\n  accessModes: [ReadWriteOnce]\n  hostPath: {path: " + path + "}\n"
}

// objects returns "Kind ns/name=detail" of every object the sink holds,
// sorted, where detail is a claim's volumeName, a PV's hostPath, a pod's
// UID and a Secret's stringData token.
func (s *fakeSink) objects() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, b := range s.bundles {
		for _, pod := range b.Pods {
			out = append(out, "Pod "+pod.Namespace+"/"+pod.Name+"="+string(pod.UID))
		}
		for _, pv := range b.PersistentVolumes {
			out = append(out, "PersistentVolume "+pv.Name+"="+pv.Spec.HostPath.Path)
		}
		for _, c := range b.PersistentVolumeClaims {
			out = append(out, "PersistentVolumeClaim "+c.Namespace+"/"+c.Name+"="+c.Spec.VolumeName)
		}
		for _, secret := range b.Secrets {
			out = append(out, "Secret "+secret.Namespace+"/"+secret.Name+"="+secret.StringData["token"])
		}
	}
	slices.Sort(out)
	return out
}

func newTestAPI(t *testing.T) (*API, *fakeSink, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "api")
	sink := newFakeSink()
	api, err := NewAPI(dir, sink, manifest.Options{NodeName: "node"})
	if err != nil {
		t.Fatal(err)
	}
	return api, sink, dir
}

func mustApply(t *testing.T, api *API, content string) []AppliedPod {
	t.Helper()
	applied, err := api.Apply(context.Background(), []byte(content))
	if err != nil {
		t.Fatalf("Apply(%q) = %v", content, err)
	}
	return applied.Pods
}

func wantObjects(t *testing.T, sink *fakeSink, want ...string) {
	t.Helper()
	slices.Sort(want)
	if got := sink.objects(); !slices.Equal(got, want) {
		t.Errorf("objects = %q, want %q", got, want)
	}
}

// Objects whose namespace and name join to the same string are kept apart,
// and names of every valid length can be stored.
func TestAPIStoresObjectsUnambiguously(t *testing.T) {
	api, sink, dir := newTestAPI(t)
	mustApply(t, api, claimManifest("a-b", "c", "pv-1"))
	mustApply(t, api, claimManifest("a", "b-c", "pv-2"))
	long := strings.Repeat("x", 250) + ".io"
	mustApply(t, api, pvManifest(long, "/long"))
	mustApply(t, api, pvManifest(long[:200], "/prefix"))
	wantObjects(t, sink,
		"PersistentVolumeClaim a-b/c=pv-1", "PersistentVolumeClaim a/b-c=pv-2",
		"PersistentVolume "+long+"=/long", "PersistentVolume "+long[:200]+"=/prefix")

	// Replacing one changes only it.
	mustApply(t, api, claimManifest("a", "b-c", "pv-3"))
	mustApply(t, api, pvManifest(long, "/long2"))
	wantObjects(t, sink,
		"PersistentVolumeClaim a-b/c=pv-1", "PersistentVolumeClaim a/b-c=pv-3",
		"PersistentVolume "+long+"=/long2", "PersistentVolume "+long[:200]+"=/prefix")

	// A restart reads the same objects back.
	sink2 := newFakeSink()
	api2, _ := NewAPI(dir, sink2, manifest.Options{NodeName: "node"})
	if err := api2.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, want := sink2.objects(), sink.objects(); !slices.Equal(got, want) {
		t.Errorf("after a restart: %q, want %q", got, want)
	}
}

// Files stored under the old names are still read; applying the same object
// again replaces them, and an object that only joined to the same old name
// leaves them alone.
func TestAPIReadsAndReplacesFilesOfTheOldNaming(t *testing.T) {
	api, sink, dir := newTestAPI(t)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	legacyClaim := write(t, dir, "persistentvolumeclaim-a-b-c.json", `{"apiVersion":"v1","kind":"PersistentVolumeClaim","metadata":{"namespace":"a-b","name":"c"},"spec":{"accessModes":["ReadWriteOnce"],"volumeName":"pv-old"}}`)
	legacyPod := write(t, dir, "pod-old-uid.json", `{"apiVersion":"v1","kind":"Pod","metadata":{"namespace":"default","name":"web","uid":"old-uid"},"spec":{}}`)
	if err := api.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	wantObjects(t, sink, "PersistentVolumeClaim a-b/c=pv-old", "Pod default/web=old-uid")

	mustApply(t, api, claimManifest("a", "b-c", "pv-2"))
	wantObjects(t, sink, "PersistentVolumeClaim a-b/c=pv-old", "PersistentVolumeClaim a/b-c=pv-2", "Pod default/web=old-uid")
	if _, err := os.Stat(legacyClaim); err != nil {
		t.Errorf("the old file of another claim was touched: %v", err)
	}

	mustApply(t, api, claimManifest("a-b", "c", "pv-new"))
	applied := mustApply(t, api, podManifest("web"))
	wantObjects(t, sink, "PersistentVolumeClaim a-b/c=pv-new", "PersistentVolumeClaim a/b-c=pv-2", "Pod default/web="+string(applied[0].UID))
	for _, path := range []string{legacyClaim, legacyPod} {
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: %v, want it replaced", filepath.Base(path), err)
		}
	}
	if applied[0].Replaced != "old-uid" {
		t.Errorf("applied = %+v, want it to name the replaced UID", applied[0])
	}
}

// orderSink fails the test when an update leaves two pods of one
// namespace/name declared by the API at once.
type orderSink struct {
	*fakeSink
	t *testing.T
}

func (s orderSink) UpdateSources(updates ...volumemanager.SourceUpdate) {
	s.fakeSink.UpdateSources(updates...)
	seen := map[string]bool{}
	for _, obj := range s.objects() {
		key, _, _ := strings.Cut(obj, "=")
		if strings.HasPrefix(obj, "Pod ") && seen[key] {
			s.t.Errorf("after an update both pods %s are desired: %q", key, s.objects())
		}
		seen[key] = true
	}
}

// Applying a changed pod without metadata.uid replaces the pod of the same
// namespace and name, in one update.
func TestAPIApplyReplacesAPodByName(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "api")
	sink := orderSink{fakeSink: newFakeSink(), t: t}
	api, err := NewAPI(dir, sink, manifest.Options{NodeName: "node"})
	if err != nil {
		t.Fatal(err)
	}
	first := mustApply(t, api, podManifest("web"))
	changed := strings.Replace(podManifest("web"), "emptyDir: {}", "emptyDir: {medium: Memory}", 1)
	second := mustApply(t, api, changed)
	if first[0].UID == second[0].UID {
		t.Fatalf("the changed pod kept UID %s", first[0].UID)
	}
	if second[0].Replaced != first[0].UID {
		t.Errorf("applied = %+v, want Replaced %s", second[0], first[0].UID)
	}
	wantObjects(t, sink.fakeSink, "Pod default/web="+string(second[0].UID))
	// Another namespace is another pod.
	other := mustApply(t, api, strings.Replace(podManifest("web"), "metadata: {", "metadata: {namespace: prod, ", 1))
	wantObjects(t, sink.fakeSink, "Pod default/web="+string(second[0].UID), "Pod prod/web="+string(other[0].UID))
}

func TestAPIDeleteObjects(t *testing.T) {
	api, sink, _ := newTestAPI(t)
	ctx := context.Background()
	pods := mustApply(t, api, pvManifest("pv-1", "/d")+"---\n"+claimManifest("ns", "data", "pv-1")+"---\n"+podManifest("web")+"---\n"+podManifest("db"))
	for _, tc := range []struct {
		ref  ObjectRef
		want error
	}{
		{ObjectRef{Kind: manifest.KindPersistentVolumeClaim, Namespace: "ns", Name: "nope"}, ErrObjectNotFound},
		{ObjectRef{Kind: manifest.KindPersistentVolumeClaim, Namespace: "ns", Name: "data"}, nil},
		{ObjectRef{Kind: manifest.KindPersistentVolumeClaim, Namespace: "ns", Name: "data"}, ErrObjectNotFound},
		{ObjectRef{Kind: manifest.KindPersistentVolume, Name: "pv-1"}, nil},
		{ObjectRef{Kind: manifest.KindPod, Namespace: "default", Name: "web"}, nil},
		{ObjectRef{Kind: "Node", Name: "x"}, ErrObjectNotFound},
		{ObjectRef{Kind: manifest.KindPod, Namespace: "..", Name: "x"}, ErrObjectNotFound},
	} {
		if err := api.DeleteObject(ctx, tc.ref); !errors.Is(err, tc.want) || (err == nil) != (tc.want == nil) {
			t.Errorf("DeleteObject(%+v) = %v, want %v", tc.ref, err, tc.want)
		}
	}
	wantObjects(t, sink, "Pod default/db="+string(pods[1].UID))
	// By UID, as before.
	if err := api.Delete(ctx, pods[1].UID); err != nil {
		t.Fatal(err)
	}
	if err := api.Delete(ctx, types.UID("nope")); !errors.Is(err, ErrPodNotFound) {
		t.Errorf("Delete(unknown) = %v", err)
	}
	wantObjects(t, sink)
}

// An apply interrupted after it wrote the new file and before it removed
// the replaced one is finished by the next Sync.
func TestAPISyncFinishesAnInterruptedReplace(t *testing.T) {
	api, sink, dir := newTestAPI(t)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	stale := write(t, dir, "persistentvolumeclaim-a-b-c.json", `{"apiVersion":"v1","kind":"PersistentVolumeClaim","metadata":{"namespace":"a-b","name":"c"},"spec":{"accessModes":["ReadWriteOnce"],"volumeName":"pv-old"}}`)
	write(t, dir, "persistentvolumeclaim_a-b_c.json", `{"apiVersion":"v1","kind":"PersistentVolumeClaim","metadata":{"namespace":"a-b","name":"c"},"spec":{"accessModes":["ReadWriteOnce"],"volumeName":"pv-new"}}`)
	if err := api.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	wantObjects(t, sink, "PersistentVolumeClaim a-b/c=pv-new")
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the replaced file is still there: %v", err)
	}
}

func secretManifest(namespace, name, token string) string {
	return "apiVersion: v1\nkind: Secret\nmetadata: {namespace: " + namespace + ", name: " + name + "}\nstringData:\n  token: " + token + "\n"
}

// TestAPIKeepsSecretsInMemoryOnly: applied Secrets reach the sink, are
// replaced and deleted by namespace/name, are never written to disk, and
// are gone after a restart.
func TestAPIKeepsSecretsInMemoryOnly(t *testing.T) {
	api, sink, dir := newTestAPI(t)
	ctx := context.Background()
	applied, err := api.Apply(ctx, []byte(secretManifest("team", "creds", "s3cret-1")+"---\n"+secretManifest("", "other", "s3cret-2")))
	if err != nil {
		t.Fatal(err)
	}
	if want := []ObjectRef{{Kind: manifest.KindSecret, Namespace: "team", Name: "creds"}, {Kind: manifest.KindSecret, Namespace: "default", Name: "other"}}; !slices.Equal(applied.Secrets, want) {
		t.Errorf("Apply() secrets = %v, want %v", applied.Secrets, want)
	}
	wantObjects(t, sink, "Secret default/other=s3cret-2", "Secret team/creds=s3cret-1")
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("applying Secrets alone created the API dir (%v)", err)
	}

	// With a pod: the pod is written, the Secret is not.
	web := "Pod default/web=" + string(mustApply(t, api, podManifest("web")+"---\n"+secretManifest("team", "creds", "s3cret-3"))[0].UID)
	wantObjects(t, sink, web, "Secret default/other=s3cret-2", "Secret team/creds=s3cret-3")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, entry := range entries {
		data, err := os.ReadFile(filepath.Join(dir, entry.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(data), "s3cret") || strings.Contains(entry.Name(), "secret") {
			t.Errorf("%s holds a Secret", entry.Name())
		}
	}

	for _, tc := range []struct {
		ref     ObjectRef
		wantErr error
	}{
		{ObjectRef{Kind: manifest.KindSecret, Name: "other"}, nil},
		{ObjectRef{Kind: manifest.KindSecret, Name: "other"}, ErrObjectNotFound},
		{ObjectRef{Kind: manifest.KindSecret, Namespace: "default", Name: "creds"}, ErrObjectNotFound},
	} {
		if err := api.DeleteObject(ctx, tc.ref); !errors.Is(err, tc.wantErr) {
			t.Errorf("DeleteObject(%s) = %v, want %v", tc.ref, err, tc.wantErr)
		}
	}
	wantObjects(t, sink, web, "Secret team/creds=s3cret-3")
	if err := api.DeleteObject(ctx, ObjectRef{Kind: manifest.KindSecret, Namespace: "team", Name: "creds"}); err != nil {
		t.Fatal(err)
	}
	if objs := sink.objects(); len(objs) != 1 {
		t.Errorf("objects = %q, want the pod only", objs)
	}
	if _, ok := sink.bundles[apiSecretsSource]; ok {
		t.Error("the Secrets source is left with no Secret")
	}

	// A restarted agent has the pod, and no Secret.
	mustApply(t, api, secretManifest("team", "creds", "s3cret-4"))
	sink2 := newFakeSink()
	api2, err := NewAPI(dir, sink2, manifest.Options{NodeName: "node"})
	if err != nil {
		t.Fatal(err)
	}
	if err := api2.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	wantObjects(t, sink2, web)
}
