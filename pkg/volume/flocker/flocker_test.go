package flocker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/mount-utils"

	"github.com/volume-agent/volume-agent/pkg/volume"
	volumetesting "github.com/volume-agent/volume-agent/pkg/volume/testing"
	"github.com/volume-agent/volume-agent/pkg/volume/util"
	emulator "github.com/volume-agent/volume-agent/test/flocker"
)

const datasetID = "3b0e6f4a-9c2d-4e81-a5f7-6d1c8b2e9f03"

func TestPluginIdentity(t *testing.T) {
	env := newUnitEnv(t, unitOptions{})
	p := env.plugin
	if p.Name() != "kubernetes.io/flocker" {
		t.Errorf("Name() = %q", p.Name())
	}
	if got := p.GetAccessModes(); !slices.Equal(got, []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce}) {
		t.Errorf("GetAccessModes() = %v, want [ReadWriteOnce]", got)
	}
	pv := &v1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pv"}, Spec: v1.PersistentVolumeSpec{
		PersistentVolumeSource: v1.PersistentVolumeSource{Flocker: &v1.FlockerVolumeSource{DatasetName: "db"}}}}
	for name, tc := range map[string]struct {
		spec *volume.Spec
		want bool
	}{
		"inline flocker volume": {spec: flockerVolume("db", ""), want: true},
		"flocker PV":            {spec: volume.NewSpecFromPersistentVolume(pv, false), want: true},
		"emptyDir":              {spec: volume.NewSpecFromVolume(&v1.Volume{Name: "x", VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{}}})},
		"PV of another kind":    {spec: volume.NewSpecFromPersistentVolume(&v1.PersistentVolume{}, false)},
		"empty spec":            {spec: &volume.Spec{}},
		"nil spec":              {},
	} {
		if got := p.CanSupport(tc.spec); got != tc.want {
			t.Errorf("%s: CanSupport() = %v, want %v", name, got, tc.want)
		}
	}
}

func TestValidateSpec(t *testing.T) {
	env := newUnitEnv(t, unitOptions{})
	path := field.NewPath("spec", "volumes").Index(0).Child("flocker")
	for name, tc := range map[string]struct {
		name, uuid string
		wantErrs   []string
	}{
		"by name":             {name: "db"},
		"by uuid":             {uuid: datasetID},
		"by upper-case uuid":  {uuid: strings.ToUpper(datasetID)},
		"neither":             {wantErrs: []string{"spec.volumes[0].flocker: Required value: exactly one of datasetName and datasetUUID is required"}},
		"both":                {name: "db", uuid: datasetID, wantErrs: []string{`spec.volumes[0].flocker: Invalid value: "datasetName=\"db\", datasetUUID=\"` + datasetID + `\"": exactly one`}},
		"slash in name":       {name: "a/b", wantErrs: []string{`spec.volumes[0].flocker.datasetName: Invalid value: "a/b": must not contain '/'`}},
		"name too long":       {name: strings.Repeat("n", 257), wantErrs: []string{"spec.volumes[0].flocker.datasetName: Too long"}},
		"uuid not a uuid":     {uuid: "uuid1", wantErrs: []string{`spec.volumes[0].flocker.datasetUUID: Invalid value: "uuid1": must be a UUID`}},
		"uuid with traversal": {uuid: "../../state/nodes", wantErrs: []string{"spec.volumes[0].flocker.datasetUUID: Invalid value"}},
	} {
		t.Run(name, func(t *testing.T) {
			errs := env.plugin.ValidateSpec(flockerVolume(tc.name, tc.uuid), path)
			if len(errs) != len(tc.wantErrs) {
				t.Fatalf("errors %v, want %d", errs, len(tc.wantErrs))
			}
			for i, want := range tc.wantErrs {
				if !strings.Contains(errs[i].Error(), want) {
					t.Errorf("error %q does not contain %q", errs[i].Error(), want)
				}
			}
			_, err := env.plugin.NewBuilder(flockerVolume(tc.name, tc.uuid), env.pod, volume.VolumeOptions{})
			if (err != nil) != (len(tc.wantErrs) > 0) || (err != nil && !volume.IsFinal(err)) {
				t.Errorf("NewBuilder error %v: want a Final error exactly when the spec is invalid", err)
			}
		})
	}
}

func TestSetUpDatasetAlreadyHere(t *testing.T) {
	for name, tc := range map[string]struct {
		spec      *volume.Spec
		wantCalls []string
	}{
		"by name": {spec: flockerVolume("db", ""), wantCalls: []string{"GetDatasetID", "GetDatasetState", "ListNodes"}},
		"by uuid": {spec: flockerVolume("", strings.ToUpper(datasetID)), wantCalls: []string{"GetDatasetState", "ListNodes"}},
	} {
		t.Run(name, func(t *testing.T) {
			env := newUnitEnv(t, unitOptions{})
			d := env.dataset(t, fakeDataset{id: datasetID, name: "db", stateNode: localNode})
			b := env.builder(t, tc.spec, volume.VolumeOptions{})
			if err := b.SetUp(nil); err != nil {
				t.Fatalf("SetUp: %v", err)
			}
			if got := env.client.callLog(); !slices.Equal(got, tc.wantCalls) {
				t.Errorf("API calls %v, want %v (no move)", got, tc.wantCalls)
			}
			mp, ok := env.mountedAt(b.GetPath())
			if !ok || mp.Device != d.path || !slices.Equal(mp.Opts, []string{"bind"}) {
				t.Errorf("mount at %s: %+v %v, want a bind mount of %s", b.GetPath(), mp, ok, d.path)
			}
			if !util.IsReady(env.metaDir()) {
				t.Error("volume not marked ready")
			}
			if waits := env.clock.recorded(); len(waits) != 0 {
				t.Errorf("waited %v for a dataset already here", waits)
			}

			// A second SetUp of a ready, mounted volume makes no API call and no mount.
			if err := env.builder(t, tc.spec, volume.VolumeOptions{}).SetUp(nil); err != nil {
				t.Fatalf("second SetUp: %v", err)
			}
			if got := env.client.callLog(); len(got) != len(tc.wantCalls) {
				t.Errorf("second SetUp made API calls: %v", got[len(tc.wantCalls):])
			}
			if n := len(env.mounter.GetLog()); n != 1 {
				t.Errorf("%d mount actions, want 1", n)
			}
		})
	}
}

func TestSetUpMovesDatasetHere(t *testing.T) {
	env := newUnitEnv(t, unitOptions{})
	env.dataset(t, fakeDataset{id: datasetID, name: "db", stateNode: otherNode, pollsToMove: 3})
	b := env.builder(t, flockerVolume("db", ""), volume.VolumeOptions{})
	if err := b.SetUp(nil); err != nil {
		t.Fatalf("SetUp: %v", err)
	}
	want := []string{"GetDatasetID", "GetDatasetState", "ListNodes", "UpdatePrimaryForDataset", "GetDatasetState", "GetDatasetState", "GetDatasetState", "GetDatasetState"}
	if got := env.client.callLog(); !slices.Equal(got, want) {
		t.Errorf("API calls %v, want %v", got, want)
	}
	if waits := env.clock.recorded(); !slices.Equal(waits, []time.Duration{100 * time.Millisecond, 100 * time.Millisecond, 100 * time.Millisecond, 100 * time.Millisecond}) {
		t.Errorf("waits %v, want four of 100ms", waits)
	}
	if _, ok := env.mountedAt(b.GetPath()); !ok || !util.IsReady(env.metaDir()) {
		t.Error("not mounted and ready after the move")
	}
}

func TestStateWithoutPrimaryOrPathIsNotReady(t *testing.T) {
	for name, d := range map[string]fakeDataset{
		"primary without path": {stateNode: localNode, primaryWithoutPath: true},
		"neither":              {stateNode: ""},
		"absent":               {absent: true},
	} {
		t.Run(name, func(t *testing.T) {
			env := newUnitEnv(t, unitOptions{cfg: Config{MoveTimeout: time.Second}})
			d.id, d.name, d.pollsToMove = datasetID, "db", -1
			env.dataset(t, d)
			err := env.builder(t, flockerVolume("db", ""), volume.VolumeOptions{}).SetUp(nil)
			if err == nil || volume.ClassOf(err) != volume.Transient || !strings.Contains(err.Error(), "timed out") {
				t.Fatalf("SetUp error %v, want a transient timeout", err)
			}
			if n := len(env.mounter.GetLog()); n != 0 {
				t.Errorf("mounted a dataset that is not ready: %v", env.mounter.GetLog())
			}
		})
	}
}

func TestMoveTimeout(t *testing.T) {
	env := newUnitEnv(t, unitOptions{cfg: Config{MoveTimeout: 30 * time.Second}})
	d := env.dataset(t, fakeDataset{id: datasetID, name: "db", stateNode: otherNode, pollsToMove: -1})
	b := env.builder(t, flockerVolume("db", ""), volume.VolumeOptions{})
	err := b.SetUp(nil)
	if err == nil || volume.ClassOf(err) != volume.Transient {
		t.Fatalf("SetUp error %v, want transient", err)
	}
	for _, want := range []string{"timed out after 30s", `dataset "db"`, datasetID, "last seen state: listed without primary or path"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if total := env.clock.total(); total != 30*time.Second {
		t.Errorf("waited %v in all, want exactly the 30s timeout", total)
	}
	waits := env.clock.recorded()
	for i, w := range waits {
		if i < 20 && w != 100*time.Millisecond {
			t.Fatalf("wait %d is %v, want 100ms during the first 2s: %v", i, w, waits)
		}
		if w > 5*time.Second {
			t.Fatalf("wait %d is %v, more than the 5s cap: %v", i, w, waits)
		}
		if i > 20 && i < len(waits)-1 && w < waits[i-1] {
			t.Fatalf("waits do not back off: %v", waits)
		}
	}
	if !slices.Contains(waits, 5*time.Second) {
		t.Errorf("waits never reach the 5s cap: %v", waits)
	}
	if _, err := os.Stat(b.GetPath()); !os.IsNotExist(err) || len(env.mounter.GetLog()) > 0 || util.IsReady(env.metaDir()) {
		t.Errorf("a timed-out SetUp left something behind: dir err %v, mounts %v", err, env.mounter.GetLog())
	}

	// Once the move completes, a retry succeeds.
	d.pollsToMove = 0
	if err := env.builder(t, flockerVolume("db", ""), volume.VolumeOptions{}).SetUp(nil); err != nil {
		t.Fatalf("retry after the move completed: %v", err)
	}
}

func TestSetUpHonoursCancellation(t *testing.T) {
	env := newUnitEnv(t, unitOptions{})
	env.dataset(t, fakeDataset{id: datasetID, name: "db", stateNode: otherNode, pollsToMove: -1})
	ctx, cancel := context.WithCancel(t.Context())
	reads := 0
	env.client.onCall = func(method string) {
		if method == "GetDatasetState" {
			if reads++; reads == 3 {
				cancel()
			}
		}
	}
	err := env.builder(t, flockerVolume("db", ""), volume.VolumeOptions{Context: ctx}).SetUp(nil)
	if !errors.Is(err, context.Canceled) || volume.ClassOf(err) != volume.Transient {
		t.Fatalf("SetUp error %v, want a transient error wrapping context.Canceled", err)
	}
	if env.clock.total() >= time.Second {
		t.Errorf("kept waiting %v after cancellation", env.clock.total())
	}
	if len(env.mounter.GetLog()) > 0 {
		t.Error("mounted after cancellation")
	}
}

func TestDatasetNotFound(t *testing.T) {
	for name, tc := range map[string]struct {
		spec         *volume.Spec
		configReader bool
		wantClass    volume.ErrorClass
		wantMessage  string
	}{
		"no such name":              {spec: flockerVolume("nothing", ""), wantClass: volume.Final, wantMessage: `dataset "nothing" not found`},
		"deleted name":              {spec: flockerVolume("gone", ""), wantClass: volume.Final, wantMessage: `dataset "gone" not found`},
		"no such uuid":              {spec: flockerVolume("", "9d1b2c3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e"), configReader: true, wantClass: volume.Final, wantMessage: "no dataset with id 9d1b2c3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e"},
		"deleted uuid":              {spec: flockerVolume("", datasetID), configReader: true, wantClass: volume.Final, wantMessage: "has been deleted"},
		"no such uuid, cannot tell": {spec: flockerVolume("", "9d1b2c3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e"), wantClass: volume.Transient, wantMessage: "failed to move dataset 9d1b2c3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e to this node"},
	} {
		t.Run(name, func(t *testing.T) {
			env := newUnitEnv(t, unitOptions{configReader: tc.configReader, cfg: Config{MoveTimeout: time.Second}})
			env.dataset(t, fakeDataset{id: datasetID, name: "gone", deleted: true})
			err := env.builder(t, tc.spec, volume.VolumeOptions{}).SetUp(nil)
			if err == nil || volume.ClassOf(err) != tc.wantClass || !strings.Contains(err.Error(), tc.wantMessage) {
				t.Fatalf("SetUp error %v (class %v), want %v mentioning %q", err, volume.ClassOf(err), tc.wantClass, tc.wantMessage)
			}
			if len(env.mounter.GetLog()) > 0 || util.IsReady(env.metaDir()) {
				t.Error("set up a dataset that does not exist")
			}
			if env.client.count("DeleteDataset") > 0 {
				t.Error("the plugin deleted a dataset")
			}
		})
	}
}

func TestAPIErrorClasses(t *testing.T) {
	cfg := Config{ControlServiceHost: "flocker.example", CAFile: "/etc/flocker/cluster.crt", ClientCertFile: "/etc/flocker/apiuser.crt"}
	urlErr := func(err error) error {
		return &url.Error{Op: "Get", URL: "https://flocker.example:4523/v1/state/nodes", Err: err}
	}
	for name, tc := range map[string]struct {
		err         error
		wantClass   volume.ErrorClass
		wantMessage string
	}{
		"connection refused": {err: urlErr(&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}), wantClass: volume.Transient, wantMessage: "flocker.example:4523 is unreachable"},
		"5xx":                {err: errors.New("Expected: {1,2}xx listing nodes, got: 503"), wantClass: volume.Transient, wantMessage: "503"},
		"unknown CA": {err: urlErr(&tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}), wantClass: volume.Final,
			wantMessage: `not trusted by the CA certificate (caFile) "/etc/flocker/cluster.crt"`},
		"wrong host": {err: urlErr(x509.HostnameError{Certificate: &x509.Certificate{}, Host: "flocker.example"}), wantClass: volume.Final,
			wantMessage: `not valid for the host "flocker.example"`},
		"client certificate refused": {err: urlErr(&net.OpError{Op: "remote error", Err: errors.New("tls: bad certificate")}), wantClass: volume.Final,
			wantMessage: `refused the client certificate (clientCertFile) "/etc/flocker/apiuser.crt"`},
		"not TLS": {err: urlErr(tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}), wantClass: volume.Final, wantMessage: "does not speak TLS"},
	} {
		t.Run(name, func(t *testing.T) {
			env := newUnitEnv(t, unitOptions{cfg: cfg})
			env.dataset(t, fakeDataset{id: datasetID, name: "db", stateNode: localNode})
			env.client.fail("GetDatasetID", tc.err)
			err := env.builder(t, flockerVolume("db", ""), volume.VolumeOptions{}).SetUp(nil)
			if err == nil || volume.ClassOf(err) != tc.wantClass || !strings.Contains(err.Error(), tc.wantMessage) {
				t.Fatalf("SetUp error %v (class %v), want %v mentioning %q", err, volume.ClassOf(err), tc.wantClass, tc.wantMessage)
			}
			if !errors.Is(err, tc.err) {
				t.Errorf("error %v does not wrap the client's error", err)
			}
			// After a TLS failure the client is made again, so new certificates are picked up.
			wantFactoryCalls := 1
			if tc.wantClass == volume.Final {
				wantFactoryCalls = 2
			}
			if err := env.builder(t, flockerVolume("db", ""), volume.VolumeOptions{}).SetUp(nil); err != nil {
				t.Fatalf("SetUp after the failure: %v", err)
			}
			if env.factoryCalls != wantFactoryCalls {
				t.Errorf("client made %d times, want %d", env.factoryCalls, wantFactoryCalls)
			}
		})
	}
}

func TestTransientErrorsWhileWaitingAreRetried(t *testing.T) {
	env := newUnitEnv(t, unitOptions{})
	env.dataset(t, fakeDataset{id: datasetID, name: "db", stateNode: otherNode, pollsToMove: 1})
	badGateway := errors.New("invalid character '<' looking for beginning of value")
	reads := 0
	env.client.onCall = func(method string) {
		if method == "GetDatasetState" {
			if reads++; reads == 2 { // the first read after the move
				env.client.fail("GetDatasetState", badGateway, badGateway)
			}
		}
	}
	if err := env.builder(t, flockerVolume("db", ""), volume.VolumeOptions{}).SetUp(nil); err != nil {
		t.Fatalf("SetUp with bad answers during the wait: %v", err)
	}
	if n := env.client.count("UpdatePrimaryForDataset"); n != 1 {
		t.Errorf("moved %d times, want 1", n)
	}
}

// failingMounter fails its first Mount, as an agent killed between the move
// and the bind mount would leave things.
type failingMounter struct {
	*mount.FakeMounter
	failures int
}

func (m *failingMounter) Mount(source, target, fstype string, options []string) error {
	if m.failures > 0 {
		m.failures--
		return errors.New("injected mount failure")
	}
	return m.FakeMounter.Mount(source, target, fstype, options)
}

func TestMountFailureIsUndoneAndRetried(t *testing.T) {
	fake := &failingMounter{FakeMounter: mount.NewFakeMounter(nil), failures: 1}
	env := newUnitEnv(t, unitOptions{mounter: fake})
	env.mounter = fake.FakeMounter
	env.dataset(t, fakeDataset{id: datasetID, name: "db", stateNode: otherNode, pollsToMove: 0})
	b := env.builder(t, flockerVolume("db", ""), volume.VolumeOptions{})
	err := b.SetUp(nil)
	if err == nil || volume.ClassOf(err) != volume.Transient || !strings.Contains(err.Error(), "injected mount failure") {
		t.Fatalf("SetUp error %v, want the transient mount failure", err)
	}
	if _, err := os.Stat(b.GetPath()); !os.IsNotExist(err) || util.IsReady(env.metaDir()) {
		t.Fatalf("failed mount left the volume dir (%v) or a ready marker", err)
	}
	if err := env.builder(t, flockerVolume("db", ""), volume.VolumeOptions{}).SetUp(nil); err != nil {
		t.Fatalf("SetUp after the failure: %v", err)
	}
	if n := env.client.count("UpdatePrimaryForDataset"); n != 1 {
		t.Errorf("moved %d times, want 1: the dataset was already here on the retry", n)
	}
	if _, ok := env.mountedAt(b.GetPath()); !ok {
		t.Error("not mounted after the retry")
	}
}

func TestReadOnly(t *testing.T) {
	env := newUnitEnv(t, unitOptions{})
	env.dataset(t, fakeDataset{id: datasetID, name: "db", stateNode: localNode})
	spec := flockerVolume("db", "")
	spec.ReadOnly = true
	b := env.builder(t, spec, volume.VolumeOptions{})
	if attrs := b.GetAttributes(); !attrs.ReadOnly || attrs.Managed {
		t.Errorf("attributes %+v, want read-only and not managed", attrs)
	}
	if err := b.SetUp(nil); err != nil {
		t.Fatal(err)
	}
	if mp, _ := env.mountedAt(b.GetPath()); !slices.Equal(mp.Opts, []string{"bind", "ro"}) {
		t.Errorf("mount options %v, want [bind ro]", mp.Opts)
	}
}

func TestReadyButUnmountedIsSetUpAgain(t *testing.T) {
	env := newUnitEnv(t, unitOptions{})
	env.dataset(t, fakeDataset{id: datasetID, name: "db", stateNode: localNode})
	b := env.builder(t, flockerVolume("db", ""), volume.VolumeOptions{})
	if err := b.SetUp(nil); err != nil {
		t.Fatal(err)
	}
	if err := env.mounter.Unmount(b.GetPath()); err != nil { // a reboot
		t.Fatal(err)
	}
	if err := env.builder(t, flockerVolume("db", ""), volume.VolumeOptions{}).SetUp(nil); err != nil {
		t.Fatal(err)
	}
	if _, ok := env.mountedAt(b.GetPath()); !ok || !util.IsReady(env.metaDir()) {
		t.Error("not mounted again")
	}
}

// TestVerifyVolumeFindsALostBindMount: a volume whose bind mount is gone
// fails verification with a Transient error, without an API call, and is
// whole again once set up again.
func TestVerifyVolumeFindsALostBindMount(t *testing.T) {
	env := newUnitEnv(t, unitOptions{})
	env.dataset(t, fakeDataset{id: datasetID, name: "db", stateNode: localNode})
	spec := flockerVolume("db", "")
	b := env.builder(t, spec, volume.VolumeOptions{})
	if err := b.SetUp(nil); err != nil {
		t.Fatal(err)
	}
	calls := len(env.client.callLog())
	if err := env.plugin.VerifyVolume(spec, env.pod.UID, b.GetPath()); err != nil {
		t.Fatalf("VerifyVolume() of a mounted volume = %v", err)
	}
	if err := env.mounter.Unmount(b.GetPath()); err != nil {
		t.Fatal(err)
	}
	err := env.plugin.VerifyVolume(spec, env.pod.UID, b.GetPath())
	if err == nil || volume.ClassOf(err) != volume.Transient || !strings.Contains(err.Error(), "no longer bind-mounted") {
		t.Fatalf("VerifyVolume() of an unmounted volume = %v, want a transient error", err)
	}
	if n := len(env.client.callLog()); n != calls {
		t.Errorf("VerifyVolume made %d API calls", n-calls)
	}
	if err := env.builder(t, spec, volume.VolumeOptions{}).SetUp(nil); err != nil {
		t.Fatal(err)
	}
	if err := env.plugin.VerifyVolume(spec, env.pod.UID, b.GetPath()); err != nil {
		t.Errorf("VerifyVolume() after set-up again = %v", err)
	}
}

func TestTearDown(t *testing.T) {
	env := newUnitEnv(t, unitOptions{})
	d := env.dataset(t, fakeDataset{id: datasetID, name: "db", stateNode: localNode})
	b := env.builder(t, flockerVolume("db", ""), volume.VolumeOptions{})
	if err := b.SetUp(nil); err != nil {
		t.Fatal(err)
	}
	callsBefore := len(env.client.callLog())
	c, err := env.plugin.NewCleaner("data", env.pod.UID)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := c.TearDown(); err != nil {
			t.Fatalf("TearDown: %v", err)
		}
	}
	if _, ok := env.mountedAt(b.GetPath()); ok {
		t.Error("still mounted")
	}
	if _, err := os.Stat(b.GetPath()); !os.IsNotExist(err) {
		t.Errorf("volume dir left: %v", err)
	}
	if util.IsReady(env.metaDir()) {
		t.Error("ready marker left")
	}
	if _, err := os.Stat(d.path); err != nil {
		t.Errorf("the dataset's own mount point was touched: %v", err)
	}
	if calls := env.client.callLog()[callsBefore:]; len(calls) != 0 {
		t.Errorf("TearDown called the control service: %v", calls)
	}
}

func TestTearDownRefusesNestedMount(t *testing.T) {
	env := newUnitEnv(t, unitOptions{})
	env.dataset(t, fakeDataset{id: datasetID, name: "db", stateNode: localNode})
	b := env.builder(t, flockerVolume("db", ""), volume.VolumeOptions{})
	if err := b.SetUp(nil); err != nil {
		t.Fatal(err)
	}
	nested := filepath.Join(b.GetPath(), "sub")
	if err := os.Mkdir(nested, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := env.mounter.Mount("tmpfs", nested, "tmpfs", nil); err != nil {
		t.Fatal(err)
	}
	c, _ := env.plugin.NewCleaner("data", env.pod.UID)
	err := c.TearDown()
	var nestedErr *util.NestedMountError
	if !errors.As(err, &nestedErr) || nestedErr.Path != nested {
		t.Fatalf("TearDown error %v, want a NestedMountError naming %s", err, nested)
	}
	if _, ok := env.mountedAt(b.GetPath()); !ok {
		t.Error("unmounted the volume despite the nested mount")
	}
}

func TestClientIsMadeLazilyAndOnce(t *testing.T) {
	env := newUnitEnv(t, unitOptions{})
	env.dataset(t, fakeDataset{id: datasetID, name: "db", stateNode: localNode})
	if env.factoryCalls != 0 {
		t.Fatalf("client made %d times before any use", env.factoryCalls)
	}
	for range 2 {
		if err := env.builder(t, flockerVolume("db", ""), volume.VolumeOptions{}).SetUp(nil); err != nil {
			t.Fatal(err)
		}
		_ = util.RemoveMetadataDir(env.metaDir())
	}
	if env.factoryCalls != 1 {
		t.Errorf("client made %d times, want once", env.factoryCalls)
	}
}

func TestClientFactoryErrorIsReturned(t *testing.T) {
	want := volume.Finalf("failed to read the Flocker CA certificate (caFile) %q", "/nope")
	env := newUnitEnv(t, unitOptions{factoryErr: want})
	err := env.builder(t, flockerVolume("db", ""), volume.VolumeOptions{}).SetUp(nil)
	if !errors.Is(err, want) || !volume.IsFinal(err) {
		t.Fatalf("SetUp error %v, want %v", err, want)
	}
}

func TestNewFlockerClientNamesTheBadFile(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		cfg  Config
		want string
	}{
		"missing CA":          {cfg: Config{CAFile: filepath.Join(dir, "missing.crt")}, want: "(caFile)"},
		"CA not PEM":          {cfg: Config{CAFile: garbage}, want: "no PEM certificate"},
		"client cert missing": {cfg: Config{CAFile: testCA(t, dir), ClientCertFile: filepath.Join(dir, "missing.crt"), ClientKeyFile: garbage}, want: "(clientCertFile)"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := newFlockerClient(tc.cfg.withDefaults(), "127.0.0.1")
			if !volume.IsFinal(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want a Final error mentioning %q", err, tc.want)
			}
		})
	}
}

// testCA writes a throwaway cluster CA and returns its path.
func testCA(t *testing.T, dir string) string {
	t.Helper()
	certs, err := emulator.GenerateCerts(filepath.Join(dir, "pki"), emulator.CertOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return certs.CACert
}

func TestCheckHealth(t *testing.T) {
	t.Run("this node listed", func(t *testing.T) {
		env := newUnitEnv(t, unitOptions{})
		h := env.plugin.CheckHealth(t.Context())
		if !h.Usable || h.Details["nodeUUID"] != localNode || h.Details["nodes"] != "2" || !strings.Contains(h.Message, "lists this node") {
			t.Errorf("health %+v", h)
		}
	})
	t.Run("this node not listed", func(t *testing.T) {
		env := newUnitEnv(t, unitOptions{})
		env.client.nodes = env.client.nodes[1:]
		h := env.plugin.CheckHealth(t.Context())
		if h.Usable || !strings.Contains(h.Message, "this node ("+localIP+") is not among its 1 nodes") {
			t.Errorf("health %+v", h)
		}
	})
	t.Run("control service down", func(t *testing.T) {
		env := newUnitEnv(t, unitOptions{})
		env.client.fail("ListNodes", &url.Error{Op: "Get", URL: "https://localhost:4523/v1/state/nodes", Err: syscall.ECONNREFUSED})
		h := env.plugin.CheckHealth(t.Context())
		if h.Usable || !strings.Contains(h.Message, "unreachable") {
			t.Errorf("health %+v", h)
		}
	})
	t.Run("certificates unusable", func(t *testing.T) {
		env := newUnitEnv(t, unitOptions{factoryErr: volume.Finalf("failed to read the Flocker CA certificate (caFile)")})
		if h := env.plugin.CheckHealth(t.Context()); h.Usable || !strings.Contains(h.Message, "caFile") {
			t.Errorf("health %+v", h)
		}
	})
}

func TestNodeIPFromRouteWhenNotConfigured(t *testing.T) {
	p := newPlugin(Config{ControlServiceHost: "127.0.0.1"}, nil)
	volumetesting.NewFakeVolumeHost(t, t.TempDir(), []volume.VolumePlugin{p}, volumetesting.FakeHostOptions{})
	ip, err := p.resolveNodeIP(t.Context())
	if err != nil || ip != "127.0.0.1" {
		t.Fatalf("resolveNodeIP() = %q, %v; want the loopback address used to reach 127.0.0.1", ip, err)
	}
}

func TestInitRejectsBadConfig(t *testing.T) {
	for name, cfg := range map[string]Config{
		"port":    {Port: 70000},
		"timeout": {MoveTimeout: -time.Second},
	} {
		if err := newPlugin(cfg, nil).Init(nil); err == nil {
			t.Errorf("%s: Init accepted %+v", name, cfg)
		}
	}
	if got := newPlugin(Config{}, nil).cfg; got != DefaultConfig() {
		t.Errorf("zero config became %+v, want the defaults", got)
	}
}

func TestSetUpPersistentVolume(t *testing.T) {
	env := newUnitEnv(t, unitOptions{})
	d := env.dataset(t, fakeDataset{id: datasetID, name: "db", stateNode: localNode})
	pv := &v1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pv-db"}, Spec: v1.PersistentVolumeSpec{
		AccessModes:            []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
		PersistentVolumeSource: v1.PersistentVolumeSource{Flocker: &v1.FlockerVolumeSource{DatasetUUID: datasetID}}}}
	b := env.builder(t, volume.NewSpecFromPersistentVolume(pv, true), volume.VolumeOptions{})
	if !strings.HasSuffix(b.GetPath(), "/volumes/kubernetes.io~flocker/pv-db") {
		t.Errorf("volume path %s, want it named after the PersistentVolume", b.GetPath())
	}
	if err := b.SetUp(nil); err != nil {
		t.Fatal(err)
	}
	if mp, ok := env.mountedAt(b.GetPath()); !ok || mp.Device != d.path || !slices.Equal(mp.Opts, []string{"bind", "ro"}) {
		t.Errorf("mount %+v, want a read-only bind mount of %s", mp, d.path)
	}
	if !util.IsReady(filepath.Join(env.plugin.host.GetPodPluginDir(env.pod.UID, PluginName), "pv-db")) {
		t.Error("not marked ready")
	}
}
