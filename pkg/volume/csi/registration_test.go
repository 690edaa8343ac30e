package csi

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/volume-agent/volume-agent/pkg/volume"
	voltesting "github.com/volume-agent/volume-agent/pkg/volume/testing"
)

// registrationServer is a driver's registration service, as a node-driver
// registrar serves it.
type registrationServer struct {
	registerapi.UnimplementedRegistrationServer
	info     *registerapi.PluginInfo
	statuses chan *registerapi.RegistrationStatus
}

func (s *registrationServer) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	return s.info, nil
}

func (s *registrationServer) NotifyRegistrationStatus(_ context.Context, st *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	s.statuses <- st
	return &registerapi.RegistrationStatusResponse{}, nil
}

// serveRegistration serves a registration service at path until the test
// ends or stop is called, which also removes the socket.
func serveRegistration(t *testing.T, path string, info *registerapi.PluginInfo) (*registrationServer, func()) {
	t.Helper()
	lis, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &registrationServer{info: info, statuses: make(chan *registerapi.RegistrationStatus, 4)}
	server := grpc.NewServer()
	registerapi.RegisterRegistrationServer(server, srv)
	go func() { _ = server.Serve(lis) }()
	stop := sync.OnceFunc(func() { server.Stop(); _ = os.Remove(path) })
	t.Cleanup(stop)
	return srv, stop
}

// shortTempDir is a temp dir with a path short enough for unix sockets.
func shortTempDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "csireg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// regEnv runs the plugin with a registration dir and fake drivers reached by
// endpoint.
type regEnv struct {
	dir     string
	plugin  *plugin
	clock   *testingclock.FakeClock
	mu      sync.Mutex
	drivers map[string]*fakeDriver
}

func newRegEnv(t *testing.T) *regEnv {
	e := &regEnv{dir: shortTempDir(t), drivers: map[string]*fakeDriver{}, clock: testingclock.NewFakeClock(time.Now())}
	e.plugin = newPlugin(Config{RegistrationDir: e.dir, Dialer: func(endpoint string) (Client, error) {
		e.mu.Lock()
		defer e.mu.Unlock()
		d := e.drivers[endpoint]
		if d == nil {
			d = newFakeDriver("unknown")
		}
		return &fakeClient{d: d}, nil
	}})
	voltesting.NewFakeVolumeHost(t, t.TempDir(), []volume.VolumePlugin{e.plugin}, voltesting.FakeHostOptions{Clock: e.clock})
	return e
}

func (e *regEnv) setDriver(endpoint string, d *fakeDriver) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.drivers[endpoint] = d
}

func (e *regEnv) run(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { e.plugin.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func csiInfo(name string, versions ...string) *registerapi.PluginInfo {
	return &registerapi.PluginInfo{Type: registerapi.CSIPlugin, Name: name, SupportedVersions: versions}
}

func waitStatus(t *testing.T, srv *registrationServer) *registerapi.RegistrationStatus {
	t.Helper()
	select {
	case st := <-srv.statuses:
		return st
	case <-time.After(10 * time.Second):
		t.Fatal("no NotifyRegistrationStatus within 10 s")
		return nil
	}
}

// waitRegistered waits until the driver name is registered, or not.
func (e *regEnv) waitRegistered(t *testing.T, name string, want bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for (e.plugin.drivers.lookup(name) != nil) != want {
		if time.Now().After(deadline) {
			t.Fatalf("driver %q registered = %v after 10 s, want %v", name, !want, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRegistrationOfSocketsPresentAndAdded(t *testing.T) {
	e := newRegEnv(t)
	early := filepath.Join(e.dir, "early.sock")
	e.setDriver(early, newFakeDriver("early.example.com", stageCaps...))
	earlySrv, _ := serveRegistration(t, early, csiInfo("early.example.com", "0.3.0", "1.0.0", "1.2.0"))
	e.run(t)

	if st := waitStatus(t, earlySrv); !st.PluginRegistered || st.Error != "" {
		t.Fatalf("status = %v, want registered", st)
	}
	e.waitRegistered(t, "early.example.com", true)
	// A volume of a driver not registered yet waits.
	if _, err := e.plugin.drivers.get(t.Context(), "late.example.com"); volume.ClassOf(err) != volume.Transient || err == nil {
		t.Fatalf("get(late) error = %v, want a transient error", err)
	}

	// The endpoint named in the registration is used, not the socket.
	late := filepath.Join(e.dir, "late-reg.sock")
	lateEndpoint := filepath.Join(e.dir, "late-csi.sock")
	e.setDriver(lateEndpoint, newFakeDriver("late.example.com"))
	info := csiInfo("late.example.com", "1.0.0")
	info.Endpoint = lateEndpoint
	lateSrv, stopLate := serveRegistration(t, late, info)
	if st := waitStatus(t, lateSrv); !st.PluginRegistered {
		t.Fatalf("status = %v, want registered", st)
	}
	e.waitRegistered(t, "late.example.com", true)

	health := e.plugin.DriverHealth()
	if len(health) != 2 || health[0].Name != "early.example.com" || health[1].Name != "late.example.com" {
		t.Fatalf("DriverHealth() = %+v, want early and late", health)
	}
	h := health[0].Health
	if !h.Usable || h.Details["nodeID"] != "node-1" || h.Details["capabilities"] != "STAGE_UNSTAGE_VOLUME" || h.Details["csiVersion"] != "1.2.0" || h.Details["source"] != "registration" {
		t.Errorf("early driver health = %+v", h)
	}
	if got := health[1].Health.Details["endpoint"]; got != lateEndpoint {
		t.Errorf("late driver endpoint = %q, want %q", got, lateEndpoint)
	}

	// The socket removed deregisters the driver.
	stopLate()
	e.waitRegistered(t, "late.example.com", false)
}

func TestRegistrationReregistersARecreatedSocket(t *testing.T) {
	e := newRegEnv(t)
	path := filepath.Join(e.dir, "drv.sock")
	first := newFakeDriver("drv.example.com")
	e.setDriver(path, first)
	srv, stop := serveRegistration(t, path, csiInfo("drv.example.com", "1.0.0"))
	e.run(t)
	waitStatus(t, srv)
	e.waitRegistered(t, "drv.example.com", true)
	d := e.plugin.drivers.lookup("drv.example.com")

	// The driver restarts: its socket goes and comes back.
	stop()
	e.waitRegistered(t, "drv.example.com", false)
	srv, _ = serveRegistration(t, path, csiInfo("drv.example.com", "1.0.0"))
	if st := waitStatus(t, srv); !st.PluginRegistered {
		t.Fatalf("status after re-registration = %v", st)
	}
	e.waitRegistered(t, "drv.example.com", true)
	if e.plugin.drivers.lookup("drv.example.com") == d {
		t.Error("the driver was not registered anew")
	}
}

func TestRegistrationRejects(t *testing.T) {
	for name, tc := range map[string]struct {
		info    *registerapi.PluginInfo
		breakIt func(d *fakeDriver)
		want    string
	}{
		"no versions":       {info: csiInfo("drv.example.com"), want: "no supported versions"},
		"no 1.x version":    {info: csiInfo("drv.example.com", "0.3.0", "2.0.0"), want: "is supported"},
		"invalid name":      {info: csiInfo("Not_A_Name", "1.0.0"), want: "Invalid value"},
		"NodeGetInfo fails": {info: csiInfo("drv.example.com", "1.0.0"), breakIt: func(d *fakeDriver) { d.failNext("NodeGetInfo", codes.Internal) }, want: "NodeGetInfo"},
		"another name":      {info: csiInfo("drv.example.com", "1.0.0"), breakIt: func(d *fakeDriver) { d.name = "other.example.com" }, want: `calls itself "other.example.com"`},
		"tcp endpoint":      {info: &registerapi.PluginInfo{Type: registerapi.CSIPlugin, Name: "drv.example.com", Endpoint: "tcp://1.2.3.4:5", SupportedVersions: []string{"1.0.0"}}, want: "only unix sockets"},
	} {
		t.Run(name, func(t *testing.T) {
			e := newRegEnv(t)
			path := filepath.Join(e.dir, "drv.sock")
			d := newFakeDriver("drv.example.com")
			if tc.breakIt != nil {
				tc.breakIt(d)
			}
			e.setDriver(path, d)
			srv, _ := serveRegistration(t, path, tc.info)
			e.run(t)
			st := waitStatus(t, srv)
			if st.PluginRegistered || !strings.Contains(st.Error, tc.want) {
				t.Fatalf("status = %v, want rejected with %q", st, tc.want)
			}
			if len(e.plugin.drivers.list()) != 0 {
				t.Errorf("drivers = %v, want none", e.plugin.drivers.list())
			}
		})
	}
}

func TestRegistrationIgnoresDotFilesAndOtherPlugins(t *testing.T) {
	e := newRegEnv(t)
	dot, _ := serveRegistration(t, filepath.Join(e.dir, ".hidden.sock"), csiInfo("dot.example.com", "1.0.0"))
	device, _ := serveRegistration(t, filepath.Join(e.dir, "device.sock"), &registerapi.PluginInfo{Type: registerapi.DevicePlugin, Name: "gpu", SupportedVersions: []string{"v1beta1"}})
	if err := os.WriteFile(filepath.Join(e.dir, "not-a-socket"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	real := filepath.Join(e.dir, "real.sock")
	e.setDriver(real, newFakeDriver("real.example.com"))
	realSrv, _ := serveRegistration(t, real, csiInfo("real.example.com", "1.0.0"))
	e.run(t)
	waitStatus(t, realSrv)
	e.waitRegistered(t, "real.example.com", true)
	if n := len(e.plugin.drivers.list()); n != 1 {
		t.Errorf("%d drivers registered, want 1", n)
	}
	for _, srv := range []*registrationServer{dot, device} {
		select {
		case st := <-srv.statuses:
			t.Errorf("unexpected registration status %v", st)
		default:
		}
	}
}

func TestFingerprintEveryPeriod(t *testing.T) {
	e := newRegEnv(t)
	path := filepath.Join(e.dir, "drv.sock")
	d := newFakeDriver("drv.example.com", csipb.NodeServiceCapability_RPC_VOLUME_MOUNT_GROUP)
	e.setDriver(path, d)
	srv, _ := serveRegistration(t, path, csiInfo("drv.example.com", "1.0.0"))
	e.run(t)
	waitStatus(t, srv)
	e.waitRegistered(t, "drv.example.com", true)

	count := func(method string) int {
		d.mu.Lock()
		defer d.mu.Unlock()
		n := 0
		for _, c := range d.calls {
			if strings.HasPrefix(c, method+" ") {
				n++
			}
		}
		return n
	}
	probes := count("Probe")
	d.mu.Lock()
	d.notReady = true
	d.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for count("Probe") <= probes {
		if time.Now().After(deadline) {
			t.Fatal("no Probe after the fingerprint period")
		}
		e.clock.Step(FingerprintPeriod)
		time.Sleep(10 * time.Millisecond)
	}
	for e.plugin.DriverHealth()[0].Usable {
		if time.Now().After(deadline) {
			t.Fatal("a driver that is not ready is still usable")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := count("GetPluginInfo"); n != 1 {
		t.Errorf("GetPluginInfo called %d times, want once", n)
	}
	if h := e.plugin.CheckHealth(t.Context()); h.Usable {
		t.Errorf("CheckHealth() = %+v, want unusable", h)
	}
}
