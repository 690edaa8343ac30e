package volumemanager

import (
	"fmt"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/volume-agent/volume-agent/pkg/manifest"
)

func hostPathPV(name, path string) *v1.PersistentVolume {
	return &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1.PersistentVolumeSpec{
			AccessModes:            []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
			PersistentVolumeSource: v1.PersistentVolumeSource{HostPath: &v1.HostPathVolumeSource{Path: path}},
		},
	}
}

func namedClaim(name, volumeName string) *v1.PersistentVolumeClaim {
	return &v1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec:       v1.PersistentVolumeClaimSpec{AccessModes: []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce}, VolumeName: volumeName},
	}
}

func claimVolume(name, claim string) v1.Volume {
	return v1.Volume{Name: name, VolumeSource: v1.VolumeSource{PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}}
}

// desiredHostPath returns the hostPath of the PersistentVolume that the
// pod's volume resolved to, or "".
func (e *testEnv) desiredHostPath(uid types.UID, volume string) string {
	e.m.mu.Lock()
	defer e.m.mu.Unlock()
	dp := e.m.pods[uid]
	if dp == nil {
		return ""
	}
	for _, dv := range dp.volumes {
		if dv.name == volume && dv.spec != nil && dv.spec.PersistentVolume != nil {
			return dv.spec.PersistentVolume.Spec.HostPath.Path
		}
	}
	return ""
}

func (e *testEnv) sourceStatus(name string) SourceStatus {
	for _, s := range e.m.Sources() {
		if s.Name == name {
			return s
		}
	}
	return SourceStatus{}
}

func (e *testEnv) conflictEvents(source string) int {
	n := 0
	for _, ev := range e.m.Events() {
		if ev.Reason == ReasonSourceConflict && ev.Source == source {
			n++
		}
	}
	return n
}

// Two sources declaring a PersistentVolume of the same name: the source
// whose name sorts first wins, every time; the other reports the conflict.
// A later source that sorts first does not take the volume over.
func TestManagerDuplicatePersistentVolumeHasOneWinner(t *testing.T) {
	e := newTestEnv(t)
	e.m.MarkSourcesSynced()
	e.start()
	e.m.UpdateSources(
		SourceUpdate{Source: "file:b.yaml", Bundle: &manifest.Bundle{PersistentVolumes: []*v1.PersistentVolume{hostPathPV("pv-1", "/data-b")}}},
		SourceUpdate{Source: "file:a.yaml", Bundle: &manifest.Bundle{
			PersistentVolumes:      []*v1.PersistentVolume{hostPathPV("pv-1", "/data-a")},
			PersistentVolumeClaims: []*v1.PersistentVolumeClaim{namedClaim("data", "pv-1")},
		}},
	)
	// Pods added one by one each resolve the claim again.
	for i := range 16 {
		uid := types.UID(fmt.Sprintf("uid-%d", i))
		e.setPods(fmt.Sprintf("pod-%d", i), testPod(uid, fmt.Sprintf("p%d", i), claimVolume("data", "data")))
		if got := e.desiredHostPath(uid, "data"); got != "/data-a" {
			t.Fatalf("pod %d: the claim resolved to hostPath %q, want /data-a from file:a.yaml", i, got)
		}
	}
	if s := e.sourceStatus("file:b.yaml"); !strings.Contains(s.Error, `PersistentVolume "pv-1"`) || !strings.Contains(s.Error, "file:a.yaml") {
		t.Errorf("losing source: %+v, want an error naming the volume and the winning source", s)
	}
	if s := e.sourceStatus("file:a.yaml"); s.Error != "" {
		t.Errorf("winning source: %+v, want no error", s)
	}
	if n := e.conflictEvents("file:b.yaml"); n != 1 {
		t.Errorf("%d SourceConflict events on file:b.yaml, want 1 (not one per update)", n)
	}
	e.waitFor("the volume ready", e.stateIs("uid-0", "data", StateReady))

	// A new source that sorts first: the volume set up stays with file:a.
	e.m.UpdateSources(SourceUpdate{Source: "file:0.yaml", Bundle: &manifest.Bundle{PersistentVolumes: []*v1.PersistentVolume{hostPathPV("pv-1", "/data-0")}}})
	if got := e.desiredHostPath("uid-0", "data"); got != "/data-a" {
		t.Errorf("after file:0.yaml came: hostPath %q, want /data-a", got)
	}
	if s := e.sourceStatus("file:0.yaml"); !strings.Contains(s.Error, `PersistentVolume "pv-1"`) {
		t.Errorf("later source that sorts first: %+v, want the conflict", s)
	}
	if e.conflictEvents("file:0.yaml") != 1 {
		t.Error("no SourceConflict event on file:0.yaml")
	}

	// The winner goes: the first remaining source by name takes over.
	e.m.UpdateSources(SourceUpdate{Source: "file:a.yaml", Bundle: &manifest.Bundle{PersistentVolumeClaims: []*v1.PersistentVolumeClaim{namedClaim("data", "pv-1")}}})
	if got := e.desiredHostPath("uid-0", "data"); got != "/data-0" {
		t.Errorf("after file:a.yaml dropped the volume: hostPath %q, want /data-0", got)
	}
	if s := e.sourceStatus("file:0.yaml"); s.Error != "" {
		t.Errorf("the new winner still reports %q", s.Error)
	}
	if n := e.pvPlugin.count(OperationTearDown, "pv-1"); n != 0 {
		t.Errorf("%d tear-downs of pv-1, want none", n)
	}
}

// Two sources declaring a claim of the same namespace/name, bound to
// different volumes: one wins; a claim that was set up is never moved to
// the other's volume.
func TestManagerDuplicateClaimHasOneWinner(t *testing.T) {
	e := newTestEnv(t)
	e.m.MarkSourcesSynced()
	e.start()
	e.m.UpdateSources(
		SourceUpdate{Source: "file:storage.yaml", Bundle: &manifest.Bundle{PersistentVolumes: []*v1.PersistentVolume{hostPathPV("pv-a", "/a"), hostPathPV("pv-z", "/z")}}},
		SourceUpdate{Source: "file:z.yaml", Bundle: &manifest.Bundle{PersistentVolumeClaims: []*v1.PersistentVolumeClaim{namedClaim("data", "pv-z")}}},
	)
	e.setPods("pods", testPod("uid-1", "p", claimVolume("data", "data")))
	e.waitFor("the volume ready", e.stateIs("uid-1", "data", StateReady))

	for i := range 16 {
		e.m.UpdateSources(SourceUpdate{Source: "file:a.yaml", Bundle: &manifest.Bundle{PersistentVolumeClaims: []*v1.PersistentVolumeClaim{namedClaim("data", "pv-a")}}})
		if v := e.volume("uid-1", "data"); v.PersistentVolume != "pv-z" {
			t.Fatalf("update %d: the claim is bound to %q, want pv-z, set up before the duplicate came", i, v.PersistentVolume)
		}
	}
	if s := e.sourceStatus("file:a.yaml"); !strings.Contains(s.Error, `PersistentVolumeClaim "default/data"`) || !strings.Contains(s.Error, "file:z.yaml") {
		t.Errorf("losing source: %+v", s)
	}
	if e.conflictEvents("file:a.yaml") != 1 {
		t.Error("want one SourceConflict event on file:a.yaml")
	}
	e.never("a tear-down of the volume set up", func() bool { return e.pvPlugin.count(OperationTearDown, "pv-z") > 0 })
	if n := e.pvPlugin.count(OperationSetUp, "pv-a"); n != 0 {
		t.Errorf("%d set-ups of pv-a, want none", n)
	}
}

// A pod UID declared by two sources: the loser reports it in its status and
// in one event, and its pod is not counted.
func TestManagerDuplicatePodUIDIsAnEvent(t *testing.T) {
	e := newTestEnv(t)
	e.setPods("file:a.yaml", testPod("uid-a", "a", emptyDirVolume("v")))
	e.setPods("file:b.yaml", testPod("uid-a", "b", emptyDirVolume("v")), testPod("uid-b", "c", emptyDirVolume("v")))
	e.setPods("file:b.yaml", testPod("uid-a", "b", emptyDirVolume("v")), testPod("uid-b", "c", emptyDirVolume("v")))
	if s := e.sourceStatus("file:b.yaml"); s.Pods != 1 || !strings.Contains(s.Error, "already declares") {
		t.Errorf("losing source: %+v", s)
	}
	if n := e.conflictEvents("file:b.yaml"); n != 1 {
		t.Errorf("%d SourceConflict events, want 1", n)
	}
}

// Two claims naming one PersistentVolume: the first binds, the other is
// pending with a reason; a claim that comes later never takes the volume
// over, even from a source that sorts first.
func TestManagerBindsAVolumeToOneClaim(t *testing.T) {
	e := newTestEnv(t)
	e.m.MarkSourcesSynced()
	e.start()
	e.m.UpdateSources(
		SourceUpdate{Source: "file:z.yaml", Bundle: &manifest.Bundle{
			PersistentVolumes:      []*v1.PersistentVolume{hostPathPV("pv-1", "/data")},
			PersistentVolumeClaims: []*v1.PersistentVolumeClaim{namedClaim("first", "pv-1")},
		}},
		SourceUpdate{Source: "pods", Bundle: &manifest.Bundle{Pods: []*v1.Pod{testPod("uid-1", "p1", claimVolume("data", "first"))}}},
	)
	e.waitFor("the first claim's volume ready", e.stateIs("uid-1", "data", StateReady))

	e.m.UpdateSources(
		SourceUpdate{Source: "file:a.yaml", Bundle: &manifest.Bundle{PersistentVolumeClaims: []*v1.PersistentVolumeClaim{namedClaim("second", "pv-1")}}},
		SourceUpdate{Source: "pods", Bundle: &manifest.Bundle{Pods: []*v1.Pod{
			testPod("uid-1", "p1", claimVolume("data", "first")),
			testPod("uid-2", "p2", claimVolume("data", "second")),
		}}},
	)
	if v := e.volume("uid-2", "data"); v.State != StatePending || v.Reason != string(manifest.ReasonVolumeBoundToAnotherClaim) || !strings.Contains(v.Message, `bound to claim "default/first", which names it too`) {
		t.Errorf("second claim's volume: %+v, want pending, bound to another claim", v)
	}
	e.never("the second claim's pod set up", func() bool { return e.pvPlugin.count(OperationSetUp, "pv-1") > 1 })
	if v := e.volume("uid-1", "data"); v.State != StateReady || v.PersistentVolume != "pv-1" {
		t.Errorf("first claim's volume: %+v, want still ready", v)
	}
}
