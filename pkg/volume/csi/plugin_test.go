package csi

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	"github.com/volume-agent/volume-agent/pkg/volume"
	voltesting "github.com/volume-agent/volume-agent/pkg/volume/testing"
)

const testDriver = "fake.csi.example.com"

// env is a root dir with the plugin loaded over it, and a fake driver that
// outlives the plugin's restarts.
type env struct {
	t      *testing.T
	root   string
	driver *fakeDriver
	plugin *plugin
	// secrets are the Secrets the host has, by namespace/name.
	secrets sync.Map
}

func newEnv(t *testing.T, driver *fakeDriver) *env {
	e := &env{t: t, root: t.TempDir(), driver: driver}
	e.restart()
	return e
}

// restart loads a new plugin over the same root dir, as after a SIGKILL of
// the agent: nothing but the disk carries over.
func (e *env) restart() {
	e.plugin = newPlugin(Config{Drivers: []DriverConfig{{Name: e.driver.name, Endpoint: "/run/fake/csi.sock"}}, Dialer: e.driver.dialer()})
	voltesting.NewFakeVolumeHost(e.t, e.root, []volume.VolumePlugin{e.plugin}, voltesting.FakeHostOptions{GetSecret: e.getSecret})
}

func (e *env) getSecret(namespace, name string) (*v1.Secret, error) {
	if secret, ok := e.secrets.Load(namespace + "/" + name); ok {
		return secret.(*v1.Secret), nil
	}
	return nil, fmt.Errorf("%w: not in the test's Secrets", volume.ErrSecretNotFound)
}

func (e *env) setUp(spec *volume.Spec, pod *v1.Pod) error {
	e.t.Helper()
	b, err := e.plugin.NewBuilder(spec, pod, volume.VolumeOptions{Context: e.t.Context()})
	if err != nil {
		e.t.Fatalf("NewBuilder() error = %v", err)
	}
	return b.SetUp(nil)
}

func (e *env) tearDown(volName string, podUID types.UID) error {
	e.t.Helper()
	c, err := e.plugin.NewCleaner(volName, podUID)
	if err != nil {
		e.t.Fatalf("NewCleaner() error = %v", err)
	}
	return c.TearDown()
}

func (e *env) volDir(podUID types.UID, volName string) string {
	return filepath.Join(e.root, "pods", string(podUID), "volumes", "kubernetes.io~csi", volName)
}

func (e *env) stagingDir(handle string) string {
	sum := sha256.Sum256([]byte(handle))
	return filepath.Join(e.root, "plugins", "kubernetes.io", "csi", e.driver.name, hex.EncodeToString(sum[:]))
}

func testPod(name string) *v1.Pod {
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", UID: types.UID(name + "-uid")},
		Spec:       v1.PodSpec{ServiceAccountName: "sa"},
	}
}

func inlineSpec(name string) *volume.Spec {
	return volume.NewSpecFromVolume(&v1.Volume{Name: name, VolumeSource: v1.VolumeSource{CSI: &v1.CSIVolumeSource{
		Driver: testDriver, VolumeAttributes: map[string]string{"size": "1Gi"},
	}}})
}

func pvSpec(name, handle string) *volume.Spec {
	return volume.NewSpecFromPersistentVolume(&v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1.PersistentVolumeSpec{
			AccessModes:  []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
			MountOptions: []string{"noatime"},
			PersistentVolumeSource: v1.PersistentVolumeSource{CSI: &v1.CSIPersistentVolumeSource{
				Driver: testDriver, VolumeHandle: handle, FSType: "ext4", VolumeAttributes: map[string]string{"pool": "a"},
			}},
		},
	}, false)
}

func mustNotExist(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s still exists (%v)", path, err)
	}
}

func mustExist(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("%s is missing: %v", path, err)
	}
}

func assertCalls(t *testing.T, d *fakeDriver, want ...string) {
	t.Helper()
	if got := d.takeCalls(); !slices.Equal(got, want) {
		t.Errorf("driver calls:\n got %q\nwant %q", got, want)
	}
}

func TestConformance(t *testing.T) {
	for name, tc := range map[string]struct {
		spec func() *volume.Spec
		caps []csipb.NodeServiceCapability_RPC_Type
	}{
		"inline":                     {spec: func() *volume.Spec { return inlineSpec("vol1") }},
		"persistent staged":          {spec: func() *volume.Spec { return pvSpec("pv1", "handle-1") }, caps: stageCaps},
		"persistent without staging": {spec: func() *volume.Spec { return pvSpec("pv1", "handle-1") }},
	} {
		t.Run(name, func(t *testing.T) {
			driver := newFakeDriver(testDriver, tc.caps...)
			voltesting.RunConformance(t, voltesting.ConformanceConfig{
				PluginName: PluginName,
				Plugins: func() []volume.VolumePlugin {
					return ProbeVolumePlugins(Config{Drivers: []DriverConfig{{Name: testDriver, Endpoint: "/run/fake.sock"}}, Dialer: driver.dialer()})
				},
				Spec: tc.spec,
				// A set-up killed half-way: everything but the publish.
				StopHalfWay: func(t *testing.T, b volume.Builder) {
					driver.failNext("NodePublishVolume", codes.Unavailable)
					if err := b.SetUp(nil); err == nil {
						t.Fatal("SetUp() with a failing publish succeeded")
					}
				},
			})
		})
	}
}

func TestInlineVolume(t *testing.T) {
	e := newEnv(t, newFakeDriver(testDriver, stageCaps...))
	pod := testPod("web")
	if err := e.setUp(inlineSpec("scratch"), pod); err != nil {
		t.Fatalf("SetUp() error = %v", err)
	}
	sum := sha256.Sum256([]byte("web-uid" + "scratch"))
	handle := "csi-" + hex.EncodeToString(sum[:])
	// An inline volume is never staged, even by a driver that stages.
	assertCalls(t, e.driver, "NodePublishVolume "+handle)

	req := e.driver.publishes[0]
	target := filepath.Join(e.volDir(pod.UID, "scratch"), "mount")
	if req.TargetPath != target || req.StagingTargetPath != "" || req.Readonly {
		t.Errorf("publish target %q staging %q readonly %v, want %q, none, false", req.TargetPath, req.StagingTargetPath, req.Readonly, target)
	}
	wantContext := map[string]string{
		"size":                                   "1Gi",
		"csi.storage.k8s.io/pod.name":            "web",
		"csi.storage.k8s.io/pod.namespace":       "ns",
		"csi.storage.k8s.io/pod.uid":             "web-uid",
		"csi.storage.k8s.io/serviceAccount.name": "sa",
		"csi.storage.k8s.io/ephemeral":           "true",
	}
	if !maps.Equal(req.VolumeContext, wantContext) {
		t.Errorf("volume context = %v, want %v", req.VolumeContext, wantContext)
	}
	if m := req.VolumeCapability.GetAccessMode().GetMode(); m != csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER {
		t.Errorf("access mode = %v, want SINGLE_NODE_WRITER", m)
	}
	var data map[string]string
	raw, err := os.ReadFile(filepath.Join(e.volDir(pod.UID, "scratch"), "vol_data.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &data); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"specVolumeID": "scratch", "volumeHandle": handle, "driverName": testDriver, "nodeName": "test-node", "volumeLifecycleMode": "Ephemeral"}
	if !maps.Equal(data, want) {
		t.Errorf("vol_data.json = %v, want %v", data, want)
	}
	mustNotExist(t, filepath.Join(e.root, "plugins", "kubernetes.io", "csi"))

	e.restart()
	if err := e.tearDown("scratch", pod.UID); err != nil {
		t.Fatalf("TearDown() error = %v", err)
	}
	assertCalls(t, e.driver, "NodeUnpublishVolume "+handle)
	mustNotExist(t, e.volDir(pod.UID, "scratch"))
}

func TestPersistentVolumeStagedOncePublishedPerPod(t *testing.T) {
	e := newEnv(t, newFakeDriver(testDriver, stageCaps...))
	a, b := testPod("a"), testPod("b")
	spec := pvSpec("pv1", "handle-1")
	sdir := e.stagingDir("handle-1")
	globalMount := filepath.Join(sdir, "globalmount")

	if err := e.setUp(spec, a); err != nil {
		t.Fatalf("SetUp(a) error = %v", err)
	}
	assertCalls(t, e.driver, "NodeStageVolume handle-1", "NodePublishVolume handle-1")
	stage, publish := e.driver.stages[0], e.driver.publishes[0]
	if stage.StagingTargetPath != globalMount || publish.StagingTargetPath != globalMount {
		t.Errorf("staging paths %q, %q; want %q", stage.StagingTargetPath, publish.StagingTargetPath, globalMount)
	}
	mount := stage.VolumeCapability.GetMount()
	if mount.GetFsType() != "ext4" || !slices.Equal(mount.GetMountFlags(), []string{"noatime"}) {
		t.Errorf("stage mount capability = %v, want ext4 with noatime", mount)
	}
	if publish.VolumeContext["pool"] != "a" || len(publish.VolumeContext) != 1 {
		t.Errorf("publish volume context = %v, want the PV's attributes alone", publish.VolumeContext)
	}
	var sdata map[string]string
	raw, _ := os.ReadFile(filepath.Join(sdir, "vol_data.json"))
	if err := json.Unmarshal(raw, &sdata); err != nil || sdata["driverName"] != testDriver || sdata["volumeHandle"] != "handle-1" {
		t.Errorf("staging vol_data.json = %s (%v)", raw, err)
	}

	if err := e.setUp(spec, b); err != nil {
		t.Fatalf("SetUp(b) error = %v", err)
	}
	assertCalls(t, e.driver, "NodePublishVolume handle-1")

	if err := e.tearDown("pv1", a.UID); err != nil {
		t.Fatalf("TearDown(a) error = %v", err)
	}
	assertCalls(t, e.driver, "NodeUnpublishVolume handle-1")
	mustExist(t, globalMount)

	if err := e.tearDown("pv1", b.UID); err != nil {
		t.Fatalf("TearDown(b) error = %v", err)
	}
	assertCalls(t, e.driver, "NodeUnpublishVolume handle-1", "NodeUnstageVolume handle-1")
	mustNotExist(t, filepath.Join(e.root, "plugins", "kubernetes.io", "csi", testDriver))
	mustNotExist(t, e.volDir(b.UID, "pv1"))
}

func TestDriverWithoutStagingIsNotStaged(t *testing.T) {
	e := newEnv(t, newFakeDriver(testDriver))
	pod := testPod("a")
	if err := e.setUp(pvSpec("pv1", "handle-1"), pod); err != nil {
		t.Fatalf("SetUp() error = %v", err)
	}
	assertCalls(t, e.driver, "NodePublishVolume handle-1")
	if p := e.driver.publishes[0].StagingTargetPath; p != "" {
		t.Errorf("staging path = %q, want none", p)
	}
	mustNotExist(t, e.stagingDir("handle-1"))
	if err := e.tearDown("pv1", pod.UID); err != nil {
		t.Fatalf("TearDown() error = %v", err)
	}
	assertCalls(t, e.driver, "NodeUnpublishVolume handle-1")
}

// Two pods share a staged volume; the agent is killed and restarted, and one
// pod is gone: its tear-down must leave the volume staged for the other,
// whose set-up after the restart publishes again without staging again.
func TestSharedVolumeSurvivesRestart(t *testing.T) {
	e := newEnv(t, newFakeDriver(testDriver, stageCaps...))
	a, b := testPod("a"), testPod("b")
	spec := pvSpec("pv1", "handle-1")
	for _, pod := range []*v1.Pod{a, b} {
		if err := e.setUp(spec, pod); err != nil {
			t.Fatalf("SetUp(%s) error = %v", pod.Name, err)
		}
	}
	e.driver.takeCalls()

	e.restart()
	if err := e.setUp(spec, b); err != nil {
		t.Fatalf("SetUp(b) after restart error = %v", err)
	}
	if err := e.tearDown("pv1", a.UID); err != nil {
		t.Fatalf("TearDown(a) after restart error = %v", err)
	}
	assertCalls(t, e.driver, "NodePublishVolume handle-1", "NodeUnpublishVolume handle-1")
	mustExist(t, filepath.Join(e.stagingDir("handle-1"), "globalmount"))
	mustExist(t, filepath.Join(e.volDir(b.UID, "pv1"), "mount"))
}

// A kill between NodeStageVolume and NodePublishVolume: after the restart
// the pod is gone, and its tear-down must unstage the volume.
func TestKillBetweenStageAndPublish(t *testing.T) {
	e := newEnv(t, newFakeDriver(testDriver, stageCaps...))
	pod := testPod("a")
	e.driver.failNext("NodePublishVolume", codes.Unavailable) // the agent dies here
	err := e.setUp(pvSpec("pv1", "handle-1"), pod)
	if !volume.IsUncertain(err) {
		t.Fatalf("SetUp() error = %v, want an uncertain error", err)
	}
	assertCalls(t, e.driver, "NodeStageVolume handle-1", "NodePublishVolume handle-1")

	e.restart()
	if err := e.tearDown("pv1", pod.UID); err != nil {
		t.Fatalf("TearDown() after restart error = %v", err)
	}
	assertCalls(t, e.driver, "NodeUnpublishVolume handle-1", "NodeUnstageVolume handle-1")
	mustNotExist(t, e.stagingDir("handle-1"))
	mustNotExist(t, e.volDir(pod.UID, "pv1"))
}

// A kill between NodeUnpublishVolume and NodeUnstageVolume (k8s #85476): the
// tear-down after the restart finishes the unstage.
func TestKillBetweenUnpublishAndUnstage(t *testing.T) {
	e := newEnv(t, newFakeDriver(testDriver, stageCaps...))
	pod := testPod("a")
	if err := e.setUp(pvSpec("pv1", "handle-1"), pod); err != nil {
		t.Fatal(err)
	}
	e.driver.takeCalls()
	e.driver.failNext("NodeUnstageVolume", codes.DeadlineExceeded) // the agent dies here
	if err := e.tearDown("pv1", pod.UID); err == nil {
		t.Fatal("TearDown() succeeded, want the unstage's error")
	}
	mustExist(t, e.volDir(pod.UID, "pv1"))

	e.restart()
	if err := e.tearDown("pv1", pod.UID); err != nil {
		t.Fatalf("TearDown() after restart error = %v", err)
	}
	assertCalls(t, e.driver, "NodeUnpublishVolume handle-1", "NodeUnstageVolume handle-1", "NodeUnpublishVolume handle-1", "NodeUnstageVolume handle-1")
	mustNotExist(t, e.stagingDir("handle-1"))
	mustNotExist(t, e.volDir(pod.UID, "pv1"))
}

func TestErrorClasses(t *testing.T) {
	for _, tc := range []struct {
		code codes.Code
		want volume.ErrorClass
	}{
		{codes.Canceled, volume.Uncertain},
		{codes.DeadlineExceeded, volume.Uncertain},
		{codes.Unavailable, volume.Uncertain},
		{codes.ResourceExhausted, volume.Uncertain},
		{codes.Aborted, volume.Uncertain},
		{codes.InvalidArgument, volume.Final},
		{codes.NotFound, volume.Final},
		{codes.AlreadyExists, volume.Final},
		{codes.FailedPrecondition, volume.Final},
		{codes.PermissionDenied, volume.Final},
		{codes.Internal, volume.Final},
		{codes.Unimplemented, volume.Final},
		{codes.Unknown, volume.Final},
	} {
		for _, method := range []string{"NodeStageVolume", "NodePublishVolume"} {
			t.Run(method+"/"+tc.code.String(), func(t *testing.T) {
				e := newEnv(t, newFakeDriver(testDriver, stageCaps...))
				e.driver.failNext(method, tc.code)
				err := e.setUp(pvSpec("pv1", "handle-1"), testPod("a"))
				if err == nil || volume.ClassOf(err) != tc.want {
					t.Fatalf("SetUp() error = %v (class %v), want class %v", err, volume.ClassOf(err), tc.want)
				}
				if !strings.Contains(err.Error(), method) || !strings.Contains(err.Error(), "handle-1") {
					t.Errorf("error %q does not name the call and the volume", err)
				}
				// Whatever happened, the tear-down cleans up.
				if err := e.tearDown("pv1", "a-uid"); err != nil {
					t.Fatalf("TearDown() error = %v", err)
				}
				mustNotExist(t, e.stagingDir("handle-1"))
			})
		}
	}
}

func TestUnregisteredDriverIsTransient(t *testing.T) {
	e := newEnv(t, newFakeDriver(testDriver))
	spec := inlineSpec("scratch")
	spec.Volume.CSI.Driver = "later.example.com"
	err := e.setUp(spec, testPod("a"))
	if err == nil || volume.ClassOf(err) != volume.Transient || !strings.Contains(err.Error(), `"later.example.com" is not registered`) {
		t.Fatalf("SetUp() error = %v (class %v), want a transient error naming the driver", err, volume.ClassOf(err))
	}
	mustNotExist(t, e.volDir("a-uid", "scratch"))

	later := newFakeDriver("later.example.com")
	e.plugin.drivers.dial = later.dialer()
	if _, err := e.plugin.drivers.add("later.example.com", "/run/later.sock", sourceRegistration, "1.0.0"); err != nil {
		t.Fatal(err)
	}
	if err := e.setUp(spec, testPod("a")); err != nil {
		t.Fatalf("SetUp() once the driver registered error = %v", err)
	}
}

func TestCapabilityPassThrough(t *testing.T) {
	for name, tc := range map[string]struct {
		caps      []csipb.NodeServiceCapability_RPC_Type
		modes     []v1.PersistentVolumeAccessMode
		readOnly  bool
		wantMode  csipb.VolumeCapability_AccessMode_Mode
		wantGroup string
	}{
		"rwo":                   {modes: []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce}, wantMode: csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		"rwo single-node modes": {caps: []csipb.NodeServiceCapability_RPC_Type{csipb.NodeServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER}, modes: []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce}, wantMode: csipb.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER},
		"rwop":                  {caps: []csipb.NodeServiceCapability_RPC_Type{csipb.NodeServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER}, modes: []v1.PersistentVolumeAccessMode{v1.ReadWriteOncePod}, wantMode: csipb.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER},
		"rox read-only":         {modes: []v1.PersistentVolumeAccessMode{v1.ReadOnlyMany}, readOnly: true, wantMode: csipb.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY},
		"rwx":                   {modes: []v1.PersistentVolumeAccessMode{v1.ReadWriteMany}, wantMode: csipb.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER},
		"volume mount group":    {caps: []csipb.NodeServiceCapability_RPC_Type{csipb.NodeServiceCapability_RPC_VOLUME_MOUNT_GROUP}, modes: []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce}, wantMode: csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, wantGroup: "2000"},
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, newFakeDriver(testDriver, tc.caps...))
			spec := pvSpec("pv1", "handle-1")
			spec.PersistentVolume.Spec.AccessModes = tc.modes
			spec.ReadOnly = tc.readOnly
			b, err := e.plugin.NewBuilder(spec, testPod("a"), volume.VolumeOptions{Context: t.Context()})
			if err != nil {
				t.Fatal(err)
			}
			if err := b.SetUp(ptr.To[int64](2000)); err != nil {
				t.Fatalf("SetUp() error = %v", err)
			}
			req := e.driver.publishes[0]
			if got := req.VolumeCapability.GetAccessMode().GetMode(); got != tc.wantMode {
				t.Errorf("access mode = %v, want %v", got, tc.wantMode)
			}
			if got := req.VolumeCapability.GetMount().GetVolumeMountGroup(); got != tc.wantGroup {
				t.Errorf("volume_mount_group = %q, want %q", got, tc.wantGroup)
			}
			if req.Readonly != tc.readOnly || b.GetAttributes().ReadOnly != tc.readOnly {
				t.Errorf("readonly = %v (attributes %v), want %v", req.Readonly, b.GetAttributes().ReadOnly, tc.readOnly)
			}
		})
	}
}

func TestValidateSpec(t *testing.T) {
	p := newPlugin(Config{})
	block := v1.PersistentVolumeBlock
	for name, tc := range map[string]struct {
		spec *volume.Spec
		want []string
	}{
		"valid inline": {spec: inlineSpec("v")},
		"valid pv":     {spec: pvSpec("pv", "h")},
		"no driver":    {spec: volume.NewSpecFromVolume(&v1.Volume{Name: "v", VolumeSource: v1.VolumeSource{CSI: &v1.CSIVolumeSource{}}}), want: []string{"csi.driver: Required value"}},
		"bad driver":   {spec: volume.NewSpecFromVolume(&v1.Volume{Name: "v", VolumeSource: v1.VolumeSource{CSI: &v1.CSIVolumeSource{Driver: "Bad_Name"}}}), want: []string{`csi.driver: Invalid value: "Bad_Name"`}},
		"no handle":    {spec: func() *volume.Spec { s := pvSpec("pv", ""); return s }(), want: []string{"csi.volumeHandle: Required value"}},
		"block":        {spec: func() *volume.Spec { s := pvSpec("pv", "h"); s.PersistentVolume.Spec.VolumeMode = &block; return s }(), want: []string{`spec.volumeMode: Unsupported value: "Block"`}},
		"inline secret ref": {spec: func() *volume.Spec {
			s := inlineSpec("v")
			s.Volume.CSI.NodePublishSecretRef = &v1.LocalObjectReference{Name: "creds"}
			return s
		}()},
		"inline secret ref without a name": {spec: func() *volume.Spec {
			s := inlineSpec("v")
			s.Volume.CSI.NodePublishSecretRef = &v1.LocalObjectReference{}
			return s
		}(), want: []string{"csi.nodePublishSecretRef.name: Required value"}},
		"pv secret refs": {spec: func() *volume.Spec {
			s := pvSpec("pv", "h")
			s.PersistentVolume.Spec.CSI.NodeStageSecretRef = &v1.SecretReference{Namespace: "ns", Name: "stage"}
			s.PersistentVolume.Spec.CSI.NodePublishSecretRef = &v1.SecretReference{Namespace: "ns", Name: "publish"}
			return s
		}()},
		"pv secret refs without namespace, bad name": {spec: func() *volume.Spec {
			s := pvSpec("pv", "h")
			s.PersistentVolume.Spec.CSI.NodeStageSecretRef = &v1.SecretReference{Name: "stage"}
			s.PersistentVolume.Spec.CSI.NodePublishSecretRef = &v1.SecretReference{Namespace: "Bad_NS", Name: "Bad_Name"}
			return s
		}(), want: []string{
			"csi.nodeStageSecretRef.namespace: Required value",
			`csi.nodePublishSecretRef.name: Invalid value: "Bad_Name"`,
			`csi.nodePublishSecretRef.namespace: Invalid value: "Bad_NS"`,
		}},
	} {
		t.Run(name, func(t *testing.T) {
			errs := p.ValidateSpec(tc.spec, field.NewPath("csi"))
			if len(errs) != len(tc.want) {
				t.Fatalf("ValidateSpec() = %v, want %d errors: %q", errs, len(tc.want), tc.want)
			}
			for i, want := range tc.want {
				if !strings.Contains(errs[i].Error(), want) {
					t.Errorf("error %d = %q, want it to contain %q", i, errs[i].Error(), want)
				}
			}
		})
	}
}

// Pods setting up and tearing down one staged volume at once: it is staged
// once and unstaged once, after the last pod.
func TestConcurrentPodsShareOneStage(t *testing.T) {
	e := newEnv(t, newFakeDriver(testDriver, stageCaps...))
	const pods = 8
	spec := pvSpec("pv1", "handle-1")
	run := func(op func(i int) error) {
		var wg sync.WaitGroup
		errs := make([]error, pods)
		for i := range pods {
			wg.Go(func() { errs[i] = op(i) })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("pod %d: %v", i, err)
			}
		}
	}
	run(func(i int) error { return e.setUp(spec, testPod(fmt.Sprintf("p%d", i))) })
	run(func(i int) error { return e.tearDown("pv1", types.UID(fmt.Sprintf("p%d-uid", i))) })
	counts := map[string]int{}
	for _, c := range e.driver.takeCalls() {
		counts[c]++
	}
	want := map[string]int{"NodeStageVolume handle-1": 1, "NodePublishVolume handle-1": pods, "NodeUnpublishVolume handle-1": pods, "NodeUnstageVolume handle-1": 1}
	if !maps.Equal(counts, want) {
		t.Errorf("driver calls = %v, want %v", counts, want)
	}
	mustNotExist(t, e.stagingDir("handle-1"))
}
