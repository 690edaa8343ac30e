package flocker

import (
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/mount-utils"
	"k8s.io/utils/clock"

	"github.com/volume-agent/volume-agent/pkg/volume"
	volumetesting "github.com/volume-agent/volume-agent/pkg/volume/testing"
	"github.com/volume-agent/volume-agent/pkg/volume/util"
	emulator "github.com/volume-agent/volume-agent/test/flocker"
)

const remoteNode = "5c2e8a1f-6d3b-4c7e-9f0a-2b4d6e8f1a3c"

// itEnv is the plugin, on real mounts and the real clock, talking over real
// TLS on loopback to an emulated control service that also makes real mounts.
type itEnv struct {
	emu     *emulator.Emulator
	root    string
	cfg     Config
	mounter mount.Interface
	plugins *volume.VolumePluginMgr
}

func newIntegrationEnv(t testing.TB, emuCfg emulator.Config, cfg Config) *itEnv {
	t.Helper()
	volumetesting.RequiresRoot(t)
	if emuCfg.RemoteNodes == nil {
		emuCfg.RemoteNodes = []emulator.Node{{Host: "10.0.0.2", UUID: remoteNode}}
	}
	emu := emulator.StartForTest(t, emuCfg)
	certs := emu.Certs()
	cfg.ControlServiceHost, cfg.Port = emu.Host(), emu.Port()
	if cfg.CAFile == "" {
		cfg.CAFile = certs.CACert
	}
	if cfg.ClientCertFile == "" {
		cfg.ClientCertFile, cfg.ClientKeyFile = certs.ClientCert, certs.ClientKey
	}
	env := &itEnv{emu: emu, root: t.TempDir(), cfg: cfg, mounter: mount.New("")}
	env.restart(t, env.mounter)
	// Registered after the emulator's Close, so it runs first: pods' mounts go before the datasets'.
	t.Cleanup(func() { volumetesting.UnmountAllBeneath(t, mount.New(""), env.root) })
	return env
}

// restart loads a fresh plugin over the same root dir, as an agent restart does.
func (env *itEnv) restart(t testing.TB, mounter mount.Interface) {
	_, env.plugins = volumetesting.NewFakeVolumeHost(t, env.root, ProbeVolumePlugins(env.cfg), volumetesting.FakeHostOptions{
		Mounter: mounter, Clock: clock.RealClock{}, NodeIP: net.ParseIP(env.emu.LocalNode().Host),
	})
}

func (env *itEnv) plugin(t testing.TB) *plugin {
	t.Helper()
	p, err := env.plugins.FindPluginByName(PluginName)
	if err != nil {
		t.Fatal(err)
	}
	return p.(*plugin)
}

func testPod(uid string) *v1.Pod {
	return &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: uid, Namespace: "default", UID: types.UID(uid)}}
}

func (env *itEnv) setUp(t testing.TB, spec *volume.Spec, podUID string, fsGroup *int64) (string, error) {
	t.Helper()
	b, err := env.plugin(t).NewBuilder(spec, testPod(podUID), volume.VolumeOptions{Context: t.Context()})
	if err != nil {
		t.Fatalf("NewBuilder: %v", err)
	}
	return b.GetPath(), b.SetUp(fsGroup)
}

func (env *itEnv) mustSetUp(t testing.TB, spec *volume.Spec, podUID string) string {
	t.Helper()
	dir, err := env.setUp(t, spec, podUID, nil)
	if err != nil {
		t.Fatalf("SetUp: %v", err)
	}
	return dir
}

func (env *itEnv) tearDown(t testing.TB, podUID string) {
	t.Helper()
	c, err := env.plugin(t).NewCleaner("data", types.UID(podUID))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.TearDown(); err != nil {
		t.Fatalf("TearDown: %v", err)
	}
}

func (env *itEnv) addDataset(t testing.TB, spec emulator.DatasetSpec) string {
	t.Helper()
	id, err := env.emu.AddDataset(spec)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func isMountPoint(t *testing.T, path string) bool {
	t.Helper()
	mounted, err := mount.New("").IsMountPoint(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return mounted
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func expectFile(t *testing.T, path, want string) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil || string(got) != want {
		t.Fatalf("%s: %q, %v; want %q", path, got, err, want)
	}
}

func TestIntegrationDatasetAlreadyHere(t *testing.T) {
	env := newIntegrationEnv(t, emulator.Config{}, Config{})
	id := env.addDataset(t, emulator.DatasetSpec{Name: "db"})
	writeFile(t, filepath.Join(env.emu.MountPath(id), "before"), "here")

	for name, spec := range map[string]*volume.Spec{"by name": flockerVolume("db", ""), "by uuid": flockerVolume("", id)} {
		t.Run(name, func(t *testing.T) {
			env.emu.ResetRequests()
			podUID := strings.ReplaceAll(name, " ", "-")
			dir := env.mustSetUp(t, spec, podUID)
			if n := env.emu.CountRequests("", "/v1/"); n > 4 {
				t.Errorf("%d API calls for a dataset already here, want at most 4: %+v", n, env.emu.Requests())
			}
			if n := env.emu.CountRequests(http.MethodPost, "/v1/"); n != 0 {
				t.Errorf("%d POSTs: the dataset was moved although it was here", n)
			}
			if !isMountPoint(t, dir) {
				t.Fatalf("%s is not a mount point", dir)
			}
			expectFile(t, filepath.Join(dir, "before"), "here")
			writeFile(t, filepath.Join(dir, "from-"+podUID), "pod")
			expectFile(t, filepath.Join(env.emu.BackingDir(id), "from-"+podUID), "pod")
			env.tearDown(t, podUID)
		})
	}
}

func TestIntegrationMovesDatasetHereKeepingData(t *testing.T) {
	env := newIntegrationEnv(t, emulator.Config{MoveDelay: 300 * time.Millisecond}, Config{})
	id := env.addDataset(t, emulator.DatasetSpec{Name: "db"})
	writeFile(t, filepath.Join(env.emu.MountPath(id), "written-before-the-move"), "precious")
	if err := env.emu.MoveDataset(id, remoteNode); err != nil {
		t.Fatal(err)
	}
	if err := env.emu.CompleteTransitions(); err != nil {
		t.Fatal(err)
	}
	if st, _ := env.emu.Dataset(id); st.StatePrimary != remoteNode || isMountPoint(t, env.emu.MountPath(id)) {
		t.Fatalf("dataset not on the remote node before the test: %+v", st)
	}
	env.emu.ResetRequests()

	dir := env.mustSetUp(t, flockerVolume("db", ""), "pod-a")
	expectFile(t, filepath.Join(dir, "written-before-the-move"), "precious")
	if st, _ := env.emu.Dataset(id); st.StatePrimary != env.emu.LocalNode().UUID || st.Primary != env.emu.LocalNode().UUID {
		t.Errorf("dataset status after SetUp: %+v, want on this node", st)
	}
	if n := env.emu.CountRequests(http.MethodPost, "/v1/configuration/datasets/"+id); n != 1 {
		t.Errorf("%d move requests, want 1", n)
	}
	if !util.IsReady(filepath.Join(env.root, "pods", "pod-a", "plugins", "kubernetes.io~flocker", "data")) {
		t.Error("not marked ready")
	}
}

func TestIntegrationDeletedDatasetWithSameNameIgnored(t *testing.T) {
	env := newIntegrationEnv(t, emulator.Config{}, Config{})
	old := env.addDataset(t, emulator.DatasetSpec{Name: "web", Deleted: true})
	live := env.addDataset(t, emulator.DatasetSpec{Name: "web"})
	if err := os.MkdirAll(env.emu.BackingDir(old), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(env.emu.BackingDir(old), "which"), "deleted")
	writeFile(t, filepath.Join(env.emu.MountPath(live), "which"), "live")
	dir := env.mustSetUp(t, flockerVolume("web", ""), "pod-a")
	expectFile(t, filepath.Join(dir, "which"), "live")
}

func TestIntegrationMissingDataset(t *testing.T) {
	env := newIntegrationEnv(t, emulator.Config{}, Config{})
	deleted := env.addDataset(t, emulator.DatasetSpec{Name: "gone", Deleted: true})
	for name, tc := range map[string]struct {
		spec *volume.Spec
		want string
	}{
		"no such name": {spec: flockerVolume("nothing", ""), want: `dataset "nothing" not found`},
		"deleted name": {spec: flockerVolume("gone", ""), want: `dataset "gone" not found`},
		"no such uuid": {spec: flockerVolume("", "9d1b2c3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e"), want: "dataset 9d1b2c3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e not found"},
		"deleted uuid": {spec: flockerVolume("", deleted), want: "has been deleted"},
	} {
		t.Run(name, func(t *testing.T) {
			dir, err := env.setUp(t, tc.spec, "pod-a", nil)
			if !volume.IsFinal(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("SetUp error %v, want a Final error mentioning %q", err, tc.want)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("volume dir created for a missing dataset: %v", err)
			}
		})
	}
}

func TestIntegrationMoveNeverCompletes(t *testing.T) {
	env := newIntegrationEnv(t, emulator.Config{MoveDelay: time.Hour}, Config{MoveTimeout: 500 * time.Millisecond})
	id := env.addDataset(t, emulator.DatasetSpec{Name: "db", Primary: remoteNode})
	dir, err := env.setUp(t, flockerVolume("db", ""), "pod-a", nil)
	if err == nil || volume.ClassOf(err) != volume.Transient {
		t.Fatalf("SetUp error %v, want a transient timeout", err)
	}
	for _, want := range []string{"timed out after 500ms", id, "last seen state: listed without primary or path"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if _, statErr := os.Stat(dir); !os.IsNotExist(statErr) {
		t.Errorf("a timed-out SetUp left the volume dir: %v", statErr)
	}

	if err := env.emu.CompleteTransitions(); err != nil {
		t.Fatal(err)
	}
	if dir := env.mustSetUp(t, flockerVolume("db", ""), "pod-a"); !isMountPoint(t, dir) {
		t.Error("not mounted after the move completed")
	}
}

func TestIntegrationControlServiceDownThenUp(t *testing.T) {
	env := newIntegrationEnv(t, emulator.Config{}, Config{})
	env.addDataset(t, emulator.DatasetSpec{Name: "db"})
	if err := env.emu.StopServing(); err != nil {
		t.Fatal(err)
	}
	_, err := env.setUp(t, flockerVolume("db", ""), "pod-a", nil)
	if err == nil || volume.ClassOf(err) != volume.Transient || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("SetUp while down: %v, want a transient 'unreachable' error", err)
	}
	if h := env.plugin(t).CheckHealth(t.Context()); h.Usable {
		t.Errorf("health while down: %+v", h)
	}
	if err := env.emu.StartServing(); err != nil {
		t.Fatal(err)
	}
	env.mustSetUp(t, flockerVolume("db", ""), "pod-a")
}

func TestIntegration5xxBurst(t *testing.T) {
	env := newIntegrationEnv(t, emulator.Config{}, Config{})
	env.addDataset(t, emulator.DatasetSpec{Name: "db"})
	env.emu.InjectError(emulator.ErrorRule{Path: "/v1/", Status: http.StatusServiceUnavailable, Count: 3})
	var errs []error
	for range 5 { // the volume manager retries transient errors
		_, err := env.setUp(t, flockerVolume("db", ""), "pod-a", nil)
		if err == nil {
			break
		}
		if volume.ClassOf(err) != volume.Transient {
			t.Fatalf("SetUp during a 5xx burst: %v is not transient", err)
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 || len(errs) == 5 {
		t.Fatalf("errors %v: want some transient failures, then success", errs)
	}
}

func TestIntegrationTLSFailures(t *testing.T) {
	env := newIntegrationEnv(t, emulator.Config{}, Config{})
	env.addDataset(t, emulator.DatasetSpec{Name: "db"})
	dir := t.TempDir()
	nodeCert, nodeKey := filepath.Join(dir, "node.crt"), filepath.Join(dir, "node.key")
	if err := emulator.IssueClientCert(env.emu.Certs(), "node-"+remoteNode, nodeCert, nodeKey); err != nil {
		t.Fatal(err)
	}
	otherPKI, err := emulator.GenerateCerts(filepath.Join(dir, "other"), emulator.CertOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		cfg  func(*Config)
		want string
	}{
		"client certificate that is not an API user's": {
			cfg:  func(c *Config) { c.ClientCertFile, c.ClientKeyFile = nodeCert, nodeKey },
			want: `refused the client certificate (clientCertFile) "` + nodeCert + `"`,
		},
		"client certificate of another cluster": {
			cfg:  func(c *Config) { c.ClientCertFile, c.ClientKeyFile = otherPKI.ClientCert, otherPKI.ClientKey },
			want: `refused the client certificate (clientCertFile) "` + otherPKI.ClientCert + `"`,
		},
		"CA of another cluster": {
			cfg:  func(c *Config) { c.CAFile = otherPKI.CACert },
			want: `not trusted by the CA certificate (caFile) "` + otherPKI.CACert + `"`,
		},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := env.cfg
			tc.cfg(&cfg)
			_, plugins := volumetesting.NewFakeVolumeHost(t, t.TempDir(), ProbeVolumePlugins(cfg), volumetesting.FakeHostOptions{
				Mounter: mount.New(""), Clock: clock.RealClock{}, NodeIP: net.ParseIP("127.0.0.1"),
			})
			p, _ := plugins.FindPluginByName(PluginName)
			b, err := p.NewBuilder(flockerVolume("db", ""), testPod("pod-a"), volume.VolumeOptions{Context: t.Context()})
			if err != nil {
				t.Fatal(err)
			}
			err = b.SetUp(nil)
			if !volume.IsFinal(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("SetUp error %v, want a Final error mentioning %q", err, tc.want)
			}
			if h := p.(volume.HealthCheckingPlugin).CheckHealth(t.Context()); h.Usable || !strings.Contains(h.Message, "TLS failure") {
				t.Errorf("health %+v, want unusable with the TLS failure", h)
			}
		})
	}
}

func TestIntegrationReadOnly(t *testing.T) {
	env := newIntegrationEnv(t, emulator.Config{}, Config{})
	id := env.addDataset(t, emulator.DatasetSpec{Name: "db"})
	writeFile(t, filepath.Join(env.emu.MountPath(id), "data"), "x")
	before, err := os.Stat(filepath.Join(env.emu.MountPath(id), "data"))
	if err != nil {
		t.Fatal(err)
	}
	spec := flockerVolume("db", "")
	spec.ReadOnly = true
	fsGroup := int64(4321)
	dir, err := env.setUp(t, spec, "pod-a", &fsGroup)
	if err != nil {
		t.Fatal(err)
	}
	expectFile(t, filepath.Join(dir, "data"), "x")
	if err := os.WriteFile(filepath.Join(dir, "new"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("writing into a read-only volume: %v, want EROFS", err)
	}
	after, _ := os.Stat(filepath.Join(env.emu.MountPath(id), "data"))
	if after.Sys().(*syscall.Stat_t).Gid != before.Sys().(*syscall.Stat_t).Gid {
		t.Error("fsGroup applied to a read-only volume")
	}
	// The dataset itself stays writable for its other users.
	writeFile(t, filepath.Join(env.emu.MountPath(id), "still-writable"), "y")
}

func TestIntegrationFSGroup(t *testing.T) {
	env := newIntegrationEnv(t, emulator.Config{}, Config{})
	id := env.addDataset(t, emulator.DatasetSpec{Name: "db"})
	writeFile(t, filepath.Join(env.emu.MountPath(id), "data"), "x")
	fsGroup := int64(4321)
	dir, err := env.setUp(t, flockerVolume("db", ""), "pod-a", &fsGroup)
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{dir, filepath.Join(dir, "data")} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if gid := st.Sys().(*syscall.Stat_t).Gid; gid != 4321 || st.Mode().Perm()&0o060 != 0o060 {
			t.Errorf("%s: gid %d mode %v, want group 4321 with g+rw", path, gid, st.Mode())
		}
	}
}

func TestIntegrationTwoPodsShareOneDataset(t *testing.T) {
	env := newIntegrationEnv(t, emulator.Config{}, Config{})
	id := env.addDataset(t, emulator.DatasetSpec{Name: "db"})
	dirA := env.mustSetUp(t, flockerVolume("db", ""), "pod-a")
	dirB := env.mustSetUp(t, flockerVolume("", id), "pod-b")
	writeFile(t, filepath.Join(dirA, "shared"), "from a")
	expectFile(t, filepath.Join(dirB, "shared"), "from a")

	env.tearDown(t, "pod-a")
	if isMountPoint(t, dirA) {
		t.Error("pod-a's volume still mounted")
	}
	if _, err := os.Stat(dirA); !os.IsNotExist(err) {
		t.Errorf("pod-a's volume dir left: %v", err)
	}
	if !isMountPoint(t, dirB) {
		t.Fatal("tearing pod-a down unmounted pod-b's volume")
	}
	expectFile(t, filepath.Join(dirB, "shared"), "from a")
	writeFile(t, filepath.Join(dirB, "after"), "b")

	// The dataset and its own mount point are untouched.
	if !isMountPoint(t, env.emu.MountPath(id)) {
		t.Error("the dataset's own mount point was unmounted")
	}
	if st, _ := env.emu.Dataset(id); st.Deleted {
		t.Error("the dataset was deleted")
	}
	if n := env.emu.CountRequests(http.MethodDelete, ""); n != 0 {
		t.Errorf("%d DELETE requests", n)
	}
	env.tearDown(t, "pod-b")
	expectFile(t, filepath.Join(env.emu.MountPath(id), "after"), "b")
}

// crashingMounter fails the first bind mount, as an agent killed between the
// move and the bind mount leaves things.
type crashingMounter struct {
	mount.Interface
	crashed bool
}

func (m *crashingMounter) Mount(source, target, fstype string, options []string) error {
	if !m.crashed {
		m.crashed = true
		return errors.New("agent killed")
	}
	return m.Interface.Mount(source, target, fstype, options)
}

func TestIntegrationKilledBetweenMoveAndBindMount(t *testing.T) {
	env := newIntegrationEnv(t, emulator.Config{MoveDelay: 200 * time.Millisecond}, Config{})
	id := env.addDataset(t, emulator.DatasetSpec{Name: "db", Primary: remoteNode})
	writeFile(t, filepath.Join(env.emu.BackingDir(id), "data"), "kept")
	env.restart(t, &crashingMounter{Interface: mount.New("")})
	dir, err := env.setUp(t, flockerVolume("db", ""), "pod-a", nil)
	if err == nil || !strings.Contains(err.Error(), "agent killed") {
		t.Fatalf("SetUp error %v, want the injected crash", err)
	}
	if st, _ := env.emu.Dataset(id); st.StatePrimary != env.emu.LocalNode().UUID {
		t.Fatalf("the dataset was not moved before the crash: %+v", st)
	}

	env.restart(t, mount.New("")) // the agent starts again
	if dir2 := env.mustSetUp(t, flockerVolume("db", ""), "pod-a"); dir2 != dir || !isMountPoint(t, dir) {
		t.Fatal("not mounted after the restart")
	}
	expectFile(t, filepath.Join(dir, "data"), "kept")
	if n := env.emu.CountRequests(http.MethodPost, "/v1/configuration/datasets/"+id); n != 1 {
		t.Errorf("%d moves, want 1: the dataset was already here after the restart", n)
	}
}

func TestIntegrationHealth(t *testing.T) {
	env := newIntegrationEnv(t, emulator.Config{}, Config{})
	p := env.plugin(t)
	h := p.CheckHealth(t.Context())
	if !h.Usable || h.Details["nodeUUID"] != env.emu.LocalNode().UUID || h.Details["flockerVersion"] != emulator.Version || h.Details["nodes"] != "2" {
		t.Errorf("health %+v", h)
	}
	if err := env.emu.SetNodeConnected(env.emu.LocalNode().UUID, false); err != nil {
		t.Fatal(err)
	}
	if h := p.CheckHealth(t.Context()); h.Usable || !strings.Contains(h.Message, "is not among its 1 nodes") {
		t.Errorf("health with this node disconnected: %+v", h)
	}
}

func TestIntegrationConformance(t *testing.T) {
	volumetesting.RequiresRoot(t)
	emu := emulator.StartForTest(t, emulator.Config{})
	if _, err := emu.AddDataset(emulator.DatasetSpec{Name: "db"}); err != nil {
		t.Fatal(err)
	}
	certs := emu.Certs()
	cfg := Config{ControlServiceHost: emu.Host(), Port: emu.Port(), CAFile: certs.CACert, ClientCertFile: certs.ClientCert, ClientKeyFile: certs.ClientKey}
	volumetesting.RunConformance(t, volumetesting.ConformanceConfig{
		PluginName:  PluginName,
		Plugins:     func() []volume.VolumePlugin { return ProbeVolumePlugins(cfg) },
		Spec:        func() *volume.Spec { return flockerVolume("db", "") },
		NewMounter:  func() mount.Interface { return mount.New("") },
		HostOptions: volumetesting.FakeHostOptions{NodeIP: net.ParseIP(emu.LocalNode().Host), Clock: clock.RealClock{}},
	})
	if !isMountPoint(t, emu.MountPath(mustDatasetID(t, emu, "db"))) {
		t.Error("the conformance run unmounted the dataset's own mount point")
	}
}

// TestConformanceWithoutRoot runs the conformance suite over real TLS with fake
// mounts on both sides, so that it runs without root.
func TestConformanceWithoutRoot(t *testing.T) {
	emu := emulator.StartForTest(t, emulator.Config{Mounter: mount.NewFakeMounter(nil)})
	if _, err := emu.AddDataset(emulator.DatasetSpec{Name: "db"}); err != nil {
		t.Fatal(err)
	}
	certs := emu.Certs()
	cfg := Config{ControlServiceHost: emu.Host(), Port: emu.Port(), CAFile: certs.CACert, ClientCertFile: certs.ClientCert, ClientKeyFile: certs.ClientKey}
	volumetesting.RunConformance(t, volumetesting.ConformanceConfig{
		PluginName:  PluginName,
		Plugins:     func() []volume.VolumePlugin { return ProbeVolumePlugins(cfg) },
		Spec:        func() *volume.Spec { return flockerVolume("db", "") },
		HostOptions: volumetesting.FakeHostOptions{NodeIP: net.ParseIP(emu.LocalNode().Host), Clock: clock.RealClock{}},
	})
}

func mustDatasetID(t *testing.T, emu *emulator.Emulator, name string) string {
	t.Helper()
	st, ok := emu.DatasetByName(name)
	if !ok {
		t.Fatalf("no dataset %q", name)
	}
	return st.ID
}
