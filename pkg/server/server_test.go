package server

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/mount-utils"

	"github.com/volume-agent/volume-agent/pkg/manifest"
	"github.com/volume-agent/volume-agent/pkg/source"
	"github.com/volume-agent/volume-agent/pkg/volume"
	"github.com/volume-agent/volume-agent/pkg/volume/emptydir"
	volumetesting "github.com/volume-agent/volume-agent/pkg/volume/testing"
	"github.com/volume-agent/volume-agent/pkg/volumemanager"
)

// shortTempDir returns a temp dir whose paths fit in a unix socket address.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "va")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

type testAgent struct {
	root    string
	socket  string
	manager *volumemanager.Manager
	metrics *Metrics
	client  *Client
}

// startAgent runs a volume manager with the emptyDir plugin (disk medium,
// fake mounter), its API source and the server, until the test ends.
func startAgent(t *testing.T) *testAgent {
	t.Helper()
	dir := shortTempDir(t)
	a := &testAgent{root: filepath.Join(dir, "root"), socket: filepath.Join(dir, "api.sock"), metrics: NewMetrics()}
	mounter := mount.NewFakeMounter(nil)
	_, plugins := volumetesting.NewFakeVolumeHost(t, a.root, emptydir.ProbeVolumePlugins(), volumetesting.FakeHostOptions{Mounter: mounter})
	m, err := volumemanager.New(volumemanager.Config{Plugins: plugins, Layout: volume.Layout{Root: a.root}, Mounter: mounter, Observer: a.metrics})
	if err != nil {
		t.Fatal(err)
	}
	a.manager = m
	a.metrics.WatchManager(m)
	api, err := source.NewAPI(filepath.Join(a.root, "api"), m, manifest.Options{Plugins: plugins})
	if err != nil {
		t.Fatal(err)
	}
	listener, err := ListenUnix(SocketOptions{Path: a.socket})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	ran := make(chan error, 1)
	go func() { served <- Serve(ctx, listener, Handler(Options{Manager: m, API: api, Version: "test"})) }()
	go func() { ran <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve() = %v", err)
		}
		<-ran
		if _, err := os.Lstat(a.socket); !os.IsNotExist(err) {
			t.Errorf("socket left after the server stopped: %v", err)
		}
	})
	a.client = NewClient(a.socket, 10*time.Second)
	return a
}

func TestAPI(t *testing.T) {
	a := startAgent(t)
	ctx := context.Background()
	if err := a.client.Healthz(ctx); err != nil {
		t.Fatalf("Healthz() = %v", err)
	}
	var statusErr *StatusError
	if err := a.client.Readyz(ctx); !errors.As(err, &statusErr) || statusErr.Code != http.StatusServiceUnavailable {
		t.Errorf("Readyz() before the sources synced = %v, want 503", err)
	}
	a.manager.MarkSourcesSynced()
	if err := wait.PollUntilContextTimeout(ctx, 5*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		return a.client.Readyz(ctx) == nil, nil
	}); err != nil {
		t.Fatal("never ready")
	}

	// An invalid manifest names the field.
	_, err := a.client.Apply(ctx, []byte("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  volumes:\n  - {name: v, emptyDir: {medium: Tape}}\n"))
	if !errors.As(err, &statusErr) || statusErr.Code != http.StatusUnprocessableEntity || !strings.Contains(err.Error(), "spec.volumes[0].emptyDir.medium") {
		t.Errorf("Apply(invalid) = %v", err)
	}

	applied, err := a.client.Apply(ctx, []byte("apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: team}\nspec:\n  volumes:\n  - {name: scratch, emptyDir: {}}\n"))
	if err != nil || len(applied.Pods) != 1 || applied.Pods[0].Name != "web" {
		t.Fatalf("Apply() = %+v, %v", applied, err)
	}
	uid := applied.Pods[0].UID
	if err := wait.PollUntilContextTimeout(ctx, 5*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		pod, err := a.client.Pod(ctx, uid)
		return err == nil && pod.State == volumemanager.PodReady, nil
	}); err != nil {
		t.Fatal("the applied pod never became ready")
	}
	volumes, err := a.client.Volumes(ctx)
	if err != nil || len(volumes) != 1 || volumes[0].Volume != "scratch" || volumes[0].PodName != "web" || volumes[0].State != volumemanager.StateReady {
		t.Errorf("Volumes() = %+v, %v", volumes, err)
	}
	if info, err := os.Stat(volumes[0].Path); err != nil || !info.IsDir() {
		t.Errorf("volume dir %s: %v", volumes[0].Path, err)
	}
	pods, err := a.client.Pods(ctx)
	if err != nil || len(pods) != 1 || pods[0].Source == "" {
		t.Errorf("Pods() = %+v, %v", pods, err)
	}
	status, err := a.client.Status(ctx)
	if err != nil || !status.Ready || status.Volumes[volumemanager.StateReady] != 1 || status.Version != "test" || status.RootDir != a.root {
		t.Errorf("Status() = %+v, %v", status, err)
	}
	plugins, err := a.client.Plugins(ctx)
	if err != nil || len(plugins) != 1 || plugins[0].Name != emptydir.PluginName {
		t.Errorf("Plugins() = %+v, %v", plugins, err)
	}
	events, err := a.client.Events(ctx)
	if err != nil || len(events) == 0 || events[len(events)-1].Reason != volumemanager.ReasonSetUp {
		t.Errorf("Events() = %+v, %v", events, err)
	}

	if err := a.client.DeletePod(ctx, "unknown"); !errors.As(err, &statusErr) || statusErr.Code != http.StatusNotFound {
		t.Errorf("DeletePod(unknown) = %v", err)
	}
	if _, err := a.client.Pod(ctx, "unknown"); !errors.As(err, &statusErr) || statusErr.Code != http.StatusNotFound {
		t.Errorf("Pod(unknown) = %v", err)
	}
	if err := a.client.DeletePod(ctx, uid); err != nil {
		t.Fatalf("DeletePod() = %v", err)
	}
	// The volume's dir goes during its tear-down; the pod, and the
	// operation's metrics, once the tear-down has finished.
	if err := wait.PollUntilContextTimeout(ctx, 5*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := os.Stat(volumes[0].Path)
		_, podErr := a.client.Pod(ctx, uid)
		return os.IsNotExist(err) && errors.As(podErr, &statusErr) && statusErr.Code == http.StatusNotFound, nil
	}); err != nil {
		t.Error("the deleted pod's volume was not torn down")
	}

	// Metrics.
	srv := &http.Server{Handler: a.metrics.Handler()}
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(listener)
	defer srv.Close()
	resp, err := http.Get("http://" + listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`volume_agent_operation_duration_seconds_count{operation="setUp",plugin="kubernetes.io/empty-dir",result="success"} 1`,
		`volume_agent_operation_duration_seconds_count{operation="tearDown",plugin="kubernetes.io/empty-dir",result="success"} 1`,
		`volume_agent_volumes{state="ready"} 0`,
		`volume_agent_reconcile_duration_seconds_count`,
		`process_resident_memory_bytes`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestClientWithoutAgent(t *testing.T) {
	c := NewClient(filepath.Join(shortTempDir(t), "none.sock"), time.Second)
	if err := c.Healthz(context.Background()); !errors.Is(err, ErrNoAgent) || !strings.Contains(err.Error(), "none.sock") {
		t.Errorf("Healthz() = %v, want ErrNoAgent naming the socket", err)
	}
}

func TestListenUnix(t *testing.T) {
	dir := shortTempDir(t)
	path := filepath.Join(dir, "a.sock")

	l, err := ListenUnix(SocketOptions{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	if info, err := os.Stat(path); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("default mode: %v %v", info.Mode(), err)
	}
	// Another agent answers: refused.
	if _, err := ListenUnix(SocketOptions{Path: path}); err == nil || !strings.Contains(err.Error(), "another agent") {
		t.Errorf("ListenUnix() on a live socket = %v", err)
	}
	// A stale socket, left by an agent that died, is replaced.
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("stale socket not there: %v", err)
	}
	gid := os.Getgid()
	l, err = ListenUnix(SocketOptions{Path: path, Mode: 0o660, Group: strconv.Itoa(gid)})
	if err != nil {
		t.Fatalf("ListenUnix() over a stale socket = %v", err)
	}
	info, err := os.Stat(path)
	if err != nil || info.Mode().Perm() != 0o660 {
		t.Errorf("mode: %v %v", info.Mode(), err)
	}
	l.Close()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("socket left after close: %v", err)
	}

	// Any other file is left alone.
	regular := filepath.Join(dir, "file")
	if err := os.WriteFile(regular, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ListenUnix(SocketOptions{Path: regular}); err == nil {
		t.Error("ListenUnix() over a regular file succeeded")
	}
	if data, _ := os.ReadFile(regular); string(data) != "data" {
		t.Error("ListenUnix() touched a regular file")
	}
	if _, err := ListenUnix(SocketOptions{Path: filepath.Join(dir, "b.sock"), Group: "no-such-group-here"}); err == nil || !strings.Contains(err.Error(), "no-such-group-here") {
		t.Errorf("unknown group: %v", err)
	}
}

func TestMetricsAddress(t *testing.T) {
	tests := map[string]string{":9090": "127.0.0.1:9090", "0.0.0.0:9090": "0.0.0.0:9090", "[::1]:80": "[::1]:80"}
	for in, want := range tests {
		if got, err := MetricsAddress(in); err != nil || got != want {
			t.Errorf("MetricsAddress(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := MetricsAddress("9090"); err == nil {
		t.Error("MetricsAddress(9090) succeeded")
	}
}
