package csimock

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/kubernetes/test/e2e/storage/drivers/csi-test/driver"
	"k8s.io/kubernetes/test/e2e/storage/drivers/csi-test/mock/service"
	"k8s.io/mount-utils"

	"github.com/volume-agent/volume-agent/pkg/volume"
	"github.com/volume-agent/volume-agent/pkg/volume/csi"
	voltesting "github.com/volume-agent/volume-agent/pkg/volume/testing"
)

const driverName = "io.kubernetes.storage.mock"

// mockDriver is Kubernetes' CSI mock driver served on a unix socket, with an
// interceptor that records the calls and fails or blocks those it is told
// to. The mock keeps its volumes in memory: "1", "2" and "3" exist.
type mockDriver struct {
	sock string
	drv  *driver.CSIDriver

	mu    sync.Mutex
	calls []string
	// secrets are the secrets of the last call of each method that has
	// them.
	secrets map[string]map[string]string
	fail    map[string][]codes.Code
	block   map[string]chan struct{}
	blocked chan string
}

func startMock(t *testing.T, sock string) *mockDriver {
	t.Helper()
	m := &mockDriver{sock: sock, secrets: map[string]map[string]string{}, fail: map[string][]codes.Code{}, block: map[string]chan struct{}{}, blocked: make(chan string, 1)}
	m.start(t)
	return m
}

// start serves a new mock, with none of the old one's state, at the socket.
func (m *mockDriver) start(t *testing.T) {
	t.Helper()
	svc := service.New(service.Config{DisableAttach: true, DriverName: driverName})
	m.drv = driver.NewCSIDriver(&driver.CSIDriverServers{Identity: svc, Node: svc, Controller: svc})
	lis, err := net.Listen("unix", m.sock)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.drv.Start(lis, m.intercept); err != nil {
		t.Fatal(err)
	}
	drv := m.drv
	t.Cleanup(drv.Stop)
}

// stop stops the driver and removes its socket, as a driver that dies does.
func (m *mockDriver) stop() {
	m.drv.Stop()
	_ = os.Remove(m.sock)
}

func (m *mockDriver) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	method := info.FullMethod[strings.LastIndex(info.FullMethod, "/")+1:]
	call := method
	if r, ok := req.(interface{ GetVolumeId() string }); ok {
		call += " " + r.GetVolumeId()
	}
	m.mu.Lock()
	m.calls = append(m.calls, call)
	if r, ok := req.(interface{ GetSecrets() map[string]string }); ok {
		m.secrets[method] = r.GetSecrets()
	}
	var code codes.Code
	if codes := m.fail[method]; len(codes) > 0 {
		code, m.fail[method] = codes[0], codes[1:]
	}
	block := m.block[method]
	delete(m.block, method)
	m.mu.Unlock()
	if block != nil {
		m.blocked <- method
		select {
		case <-block:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	if code != codes.OK {
		return nil, status.Error(code, "injected by the test")
	}
	return handler(ctx, req)
}

func (m *mockDriver) failNext(method string, code codes.Code) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fail[method] = append(m.fail[method], code)
}

// takeCalls returns the Node calls that change volumes, and forgets every call.
func (m *mockDriver) takeCalls() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, c := range m.calls {
		if strings.HasPrefix(c, "Node") && !strings.HasPrefix(c, "NodeGet") {
			out = append(out, c)
		}
	}
	m.calls = nil
	return out
}

func (m *mockDriver) assertCalls(t *testing.T, want ...string) {
	t.Helper()
	if got := m.takeCalls(); !slices.Equal(got, want) {
		t.Errorf("mock driver calls:\n got %q\nwant %q", got, want)
	}
}

// env is a root dir with the csi plugin loaded over it and a mock driver.
type env struct {
	t      *testing.T
	root   string
	mock   *mockDriver
	plugin volume.VolumePlugin
}

func newEnv(t *testing.T) *env {
	dir, err := os.MkdirTemp("", "csimock")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e := &env{t: t, root: t.TempDir(), mock: startMock(t, filepath.Join(dir, "csi.sock"))}
	e.restart()
	return e
}

// restart loads a new plugin over the same root dir, as after a SIGKILL of
// the agent.
func (e *env) restart() {
	plugins := csi.ProbeVolumePlugins(csi.Config{
		Drivers:     []csi.DriverConfig{{Name: driverName, Endpoint: "unix://" + e.mock.sock}},
		CallTimeout: 10 * time.Second,
	})
	_, mgr := voltesting.NewFakeVolumeHost(e.t, e.root, plugins, voltesting.FakeHostOptions{Mounter: mount.NewFakeMounter(nil)})
	plugin, err := mgr.FindPluginByName(csi.PluginName)
	if err != nil {
		e.t.Fatal(err)
	}
	e.plugin = plugin
}

func (e *env) setUp(spec *volume.Spec, pod *v1.Pod) error {
	b, err := e.plugin.NewBuilder(spec, pod, volume.VolumeOptions{Context: e.t.Context()})
	if err != nil {
		e.t.Fatalf("NewBuilder() error = %v", err)
	}
	return b.SetUp(nil)
}

func (e *env) tearDown(volName string, podUID types.UID) error {
	c, err := e.plugin.NewCleaner(volName, podUID)
	if err != nil {
		e.t.Fatalf("NewCleaner() error = %v", err)
	}
	return c.TearDown()
}

func (e *env) target(podUID types.UID, volName string) string {
	return filepath.Join(e.root, "pods", string(podUID), "volumes", "kubernetes.io~csi", volName, "mount")
}

func (e *env) stagingDir(handle string) string {
	sum := sha256.Sum256([]byte(handle))
	return filepath.Join(e.root, "plugins", "kubernetes.io", "csi", driverName, hex.EncodeToString(sum[:]))
}

func pod(name string) *v1.Pod {
	return &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", UID: types.UID(name + "-uid")}}
}

func pvSpec(handle string) *volume.Spec {
	return volume.NewSpecFromPersistentVolume(&v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "pv-" + handle},
		Spec: v1.PersistentVolumeSpec{
			AccessModes:            []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
			PersistentVolumeSource: v1.PersistentVolumeSource{CSI: &v1.CSIPersistentVolumeSource{Driver: driverName, VolumeHandle: handle}},
		},
	}, false)
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return !errors.Is(err, fs.ErrNotExist)
}

func TestStagePublishSequenceAndRepublishAfterRestart(t *testing.T) {
	e := newEnv(t)
	a, b := pod("a"), pod("b")
	if err := e.setUp(pvSpec("1"), a); err != nil {
		t.Fatalf("SetUp(a) error = %v", err)
	}
	e.mock.assertCalls(t, "NodeStageVolume 1", "NodePublishVolume 1")
	if err := e.setUp(pvSpec("1"), b); err != nil {
		t.Fatalf("SetUp(b) error = %v", err)
	}
	e.mock.assertCalls(t, "NodePublishVolume 1")
	// The mock creates the target; the plugin created its parent.
	if !exists(e.target(a.UID, "pv-1")) || !exists(e.target(b.UID, "pv-1")) {
		t.Error("the targets were not created")
	}

	// After a restart, a volume still wanted is published again, not staged
	// again; the other pod's volume goes, and the volume stays staged.
	e.restart()
	if err := e.setUp(pvSpec("1"), b); err != nil {
		t.Fatalf("SetUp(b) after restart error = %v", err)
	}
	if err := e.tearDown("pv-1", a.UID); err != nil {
		t.Fatalf("TearDown(a) after restart error = %v", err)
	}
	e.mock.assertCalls(t, "NodePublishVolume 1", "NodeUnpublishVolume 1")
	if exists(e.target(a.UID, "pv-1")) || !exists(e.target(b.UID, "pv-1")) {
		t.Error("pod a's target is left, or pod b's is gone")
	}

	if err := e.tearDown("pv-1", b.UID); err != nil {
		t.Fatalf("TearDown(b) error = %v", err)
	}
	e.mock.assertCalls(t, "NodeUnpublishVolume 1", "NodeUnstageVolume 1")
	if exists(e.stagingDir("1")) || exists(filepath.Dir(e.target(b.UID, "pv-1"))) {
		t.Error("the staging dir or pod b's volume dir is left")
	}
}

// No inline (ephemeral) volume is tested here: the mock's NodePublishVolume
// dereferences a nil volume for every ephemeral volume it does not know
// (service/node.go at v1.37.2), so it panics; the plugin's unit tests cover
// inline volumes.

func TestErrorClassPerCode(t *testing.T) {
	e := newEnv(t)
	for code, want := range map[codes.Code]volume.ErrorClass{
		codes.Canceled: volume.Uncertain, codes.DeadlineExceeded: volume.Uncertain, codes.Unavailable: volume.Uncertain,
		codes.ResourceExhausted: volume.Uncertain, codes.Aborted: volume.Uncertain,
		codes.InvalidArgument: volume.Final, codes.NotFound: volume.Final, codes.AlreadyExists: volume.Final,
		codes.FailedPrecondition: volume.Final, codes.PermissionDenied: volume.Final, codes.Internal: volume.Final,
		codes.Unimplemented: volume.Final, codes.Unknown: volume.Final, codes.OutOfRange: volume.Final,
	} {
		for _, method := range []string{"NodeStageVolume", "NodePublishVolume"} {
			e.mock.failNext(method, code)
			err := e.setUp(pvSpec("2"), pod("a"))
			if err == nil || volume.ClassOf(err) != want {
				t.Errorf("%s failing with %v: SetUp() error = %v (class %v), want class %v", method, code, err, volume.ClassOf(err), want)
			}
			if err := e.tearDown("pv-2", "a-uid"); err != nil {
				t.Fatalf("TearDown() error = %v", err)
			}
		}
	}
	// A volume the driver does not know is its NotFound: final.
	if err := e.setUp(pvSpec("no-such-volume"), pod("a")); !volume.IsFinal(err) || !strings.Contains(err.Error(), "NotFound") {
		t.Errorf("SetUp() of an unknown volume error = %v, want a final NotFound", err)
	}
}

func TestKillBetweenStageAndPublish(t *testing.T) {
	e := newEnv(t)
	e.mock.failNext("NodePublishVolume", codes.Unavailable) // the agent is killed here
	if err := e.setUp(pvSpec("1"), pod("a")); !volume.IsUncertain(err) {
		t.Fatalf("SetUp() error = %v, want uncertain", err)
	}
	e.mock.takeCalls()
	e.restart()
	if err := e.tearDown("pv-1", "a-uid"); err != nil {
		t.Fatalf("TearDown() after restart error = %v", err)
	}
	e.mock.assertCalls(t, "NodeUnpublishVolume 1", "NodeUnstageVolume 1")
	if exists(e.stagingDir("1")) {
		t.Error("staging dir leaked")
	}
}

func TestKillBetweenUnpublishAndUnstage(t *testing.T) {
	e := newEnv(t)
	if err := e.setUp(pvSpec("1"), pod("a")); err != nil {
		t.Fatal(err)
	}
	e.mock.failNext("NodeUnstageVolume", codes.Unavailable) // the agent is killed here
	if err := e.tearDown("pv-1", "a-uid"); err == nil {
		t.Fatal("TearDown() succeeded, want the unstage's error")
	}
	e.mock.takeCalls()
	e.restart()
	if err := e.tearDown("pv-1", "a-uid"); err != nil {
		t.Fatalf("TearDown() after restart error = %v", err)
	}
	e.mock.assertCalls(t, "NodeUnpublishVolume 1", "NodeUnstageVolume 1")
	if exists(e.stagingDir("1")) || exists(filepath.Dir(e.target("a-uid", "pv-1"))) {
		t.Error("staging dir or volume dir leaked")
	}
}

// retrySetUp sets the volume up as the volume manager would: again after
// each error that is not final, for up to 20 s.
func (e *env) retrySetUp(spec *volume.Spec, p *v1.Pod) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := e.setUp(spec, p)
		if err == nil || volume.IsFinal(err) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestDriverRestartedMidOperation(t *testing.T) {
	e := newEnv(t)
	release := make(chan struct{})
	e.mock.mu.Lock()
	e.mock.block["NodePublishVolume"] = release
	e.mock.mu.Unlock()
	result := make(chan error, 1)
	go func() { result <- e.setUp(pvSpec("1"), pod("a")) }()
	<-e.mock.blocked
	e.mock.stop() // the driver dies during NodePublishVolume
	err := <-result
	if err == nil || volume.IsFinal(err) {
		t.Fatalf("SetUp() with the driver gone error = %v, want one that is retried", err)
	}
	e.mock.start(t)
	if err := e.retrySetUp(pvSpec("1"), pod("a")); err != nil {
		t.Fatalf("SetUp() after the driver restarted error = %v", err)
	}
	if err := e.tearDown("pv-1", "a-uid"); err != nil {
		t.Fatalf("TearDown() error = %v", err)
	}
}

func TestDriverSocketDeleted(t *testing.T) {
	e := newEnv(t)
	if err := e.setUp(pvSpec("1"), pod("a")); err != nil {
		t.Fatal(err)
	}
	e.mock.stop()
	err := e.setUp(pvSpec("1"), pod("b"))
	if err == nil || volume.IsFinal(err) {
		t.Fatalf("SetUp() with the socket gone error = %v, want one that is retried", err)
	}
	if err := e.tearDown("pv-1", "a-uid"); err == nil || volume.IsFinal(err) {
		t.Fatalf("TearDown() with the socket gone error = %v, want one that is retried", err)
	}
	e.mock.start(t)
	if err := e.retrySetUp(pvSpec("1"), pod("b")); err != nil {
		t.Fatalf("SetUp() once the socket is back error = %v", err)
	}
	for _, uid := range []types.UID{"a-uid", "b-uid"} {
		if err := e.tearDown("pv-1", uid); err != nil {
			t.Fatalf("TearDown(%s) error = %v", uid, err)
		}
	}
	if exists(e.stagingDir("1")) {
		t.Error("staging dir leaked")
	}
}
