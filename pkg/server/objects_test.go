package server

import (
	"context"
	"errors"
	"net/http"
	"os"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/volume-agent/volume-agent/pkg/manifest"
	"github.com/volume-agent/volume-agent/pkg/source"
	"github.com/volume-agent/volume-agent/pkg/volumemanager"
)

// Applying a changed pod without metadata.uid replaces the pod of that
// namespace and name: the old one's volume is torn down once, the new one's
// set up, and PersistentVolumes and claims applied can be deleted by name.
func TestAPIReplacesPodsAndDeletesObjects(t *testing.T) {
	a := startAgent(t)
	a.manager.MarkSourcesSynced()
	ctx := context.Background()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		if err := wait.PollUntilContextTimeout(ctx, 5*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
			return cond(), nil
		}); err != nil {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
	podReady := func(uid string) func() bool {
		return func() bool {
			pod, err := a.client.Pod(ctx, types.UID(uid))
			return err == nil && pod.State == volumemanager.PodReady
		}
	}
	const pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  volumes:\n  - {name: scratch, emptyDir: {}}\n"
	const changed = "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  volumes:\n  - {name: cache, emptyDir: {}}\n"
	first, err := a.client.Apply(ctx, []byte(pod))
	if err != nil {
		t.Fatal(err)
	}
	oldUID := string(first.Pods[0].UID)
	waitFor("the first pod ready", podReady(oldUID))
	second, err := a.client.Apply(ctx, []byte(changed))
	if err != nil {
		t.Fatal(err)
	}
	newUID := string(second.Pods[0].UID)
	if second.Pods[0].Replaced != first.Pods[0].UID {
		t.Errorf("Apply(changed) = %+v, want it to replace %s", second.Pods[0], oldUID)
	}
	waitFor("the new pod ready", podReady(newUID))
	waitFor("the old pod gone", func() bool {
		_, err := os.Stat(a.manager.Layout().PodDir(types.UID(oldUID)))
		return os.IsNotExist(err)
	})
	pods, err := a.client.Pods(ctx)
	if err != nil || len(pods) != 1 || string(pods[0].UID) != newUID {
		t.Errorf("Pods() = %+v, %v; want only the new pod", pods, err)
	}
	tornDown := 0
	events, _ := a.client.Events(ctx)
	for _, ev := range events {
		if ev.Reason == volumemanager.ReasonTornDown {
			tornDown++
		}
	}
	if tornDown != 1 {
		t.Errorf("%d TornDown events, want 1: %+v", tornDown, events)
	}

	// PersistentVolumes and claims are deleted by name.
	if _, err := a.client.Apply(ctx, []byte("apiVersion: v1\nkind: PersistentVolume\nmetadata: {name: pv-1}\nspec:\n  accessModes: [ReadWriteOnce]\n  hostPath: {path: /d}\n---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data, namespace: team}\nspec:\n  accessModes: [ReadWriteOnce]\n")); err != nil {
		t.Fatal(err)
	}
	var statusErr *StatusError
	for _, tc := range []struct {
		ref  source.ObjectRef
		code int
	}{
		{source.ObjectRef{Kind: manifest.KindPersistentVolumeClaim, Namespace: "team", Name: "data"}, 0},
		{source.ObjectRef{Kind: manifest.KindPersistentVolumeClaim, Namespace: "team", Name: "data"}, http.StatusNotFound},
		{source.ObjectRef{Kind: manifest.KindPersistentVolume, Name: "pv-1"}, 0},
		{source.ObjectRef{Kind: manifest.KindPod, Namespace: "default", Name: "web"}, 0},
		{source.ObjectRef{Kind: "Secret", Namespace: "default", Name: "web"}, http.StatusNotFound},
	} {
		err := a.client.DeleteObject(ctx, tc.ref)
		if tc.code == 0 && err != nil || tc.code != 0 && (!errors.As(err, &statusErr) || statusErr.Code != tc.code) {
			t.Errorf("DeleteObject(%s) = %v, want code %d", tc.ref, err, tc.code)
		}
	}
	waitFor("the pod deleted by name gone", func() bool {
		pods, err := a.client.Pods(ctx)
		return err == nil && len(pods) == 0
	})
}
