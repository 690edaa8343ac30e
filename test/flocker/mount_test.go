package flocker

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/mount-utils"
	testingclock "k8s.io/utils/clock/testing"
)

func isMounted(t *testing.T, path string) bool {
	t.Helper()
	mounted, err := mount.New("").IsMountPoint(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return mounted
}

// stepOnceWaiting steps the clock by the move delay once the emulator's loop
// waits on it: a step taken before the loop has set its timer for a new
// transition would leave that timer waiting forever.
func stepOnceWaiting(t *testing.T, c *testingclock.FakeClock) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !c.HasWaiters() {
		if time.Now().After(deadline) {
			t.Fatal("the emulator never waited on its clock")
		}
		time.Sleep(5 * time.Millisecond)
	}
	c.Step(time.Second)
}

func TestRealBindMountsFollowTheDataset(t *testing.T) {
	requireRoot(t)
	fakeClock := testingclock.NewFakeClock(time.Now())
	e := StartForTest(t, Config{Clock: fakeClock, MoveDelay: time.Second, RemoteNodes: []Node{{Host: "10.0.0.2", UUID: remoteUUID}}})
	c := newAPIClient(t, e)
	id, err := e.AddDataset(DatasetSpec{Name: "data"})
	if err != nil {
		t.Fatal(err)
	}
	mountPath := e.MountPath(id)
	if !isMounted(t, mountPath) {
		t.Fatalf("%s is not a mount point", mountPath)
	}
	if err := os.WriteFile(filepath.Join(mountPath, "hello"), []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}

	expectStatus(t, c.do(http.MethodPost, "/v1/configuration/datasets/"+id, map[string]string{"primary": remoteUUID}), http.StatusOK)
	c.stateOf(id) // the agents act
	if isMounted(t, mountPath) {
		t.Fatal("still mounted after moving away")
	}
	if _, err := os.Stat(filepath.Join(mountPath, "hello")); !os.IsNotExist(err) {
		t.Fatalf("data visible at the mount path while the dataset is away: %v", err)
	}
	fakeClock.Step(time.Second)

	expectStatus(t, c.do(http.MethodPost, "/v1/configuration/datasets/"+id, map[string]string{"primary": e.LocalNode().UUID}), http.StatusOK)
	stepOnceWaiting(t, fakeClock)
	if st, _ := c.stateOf(id); st.Path != mountPath {
		t.Fatalf("state %+v after moving back", st)
	}
	data, err := os.ReadFile(filepath.Join(mountPath, "hello"))
	if err != nil || string(data) != "kept" {
		t.Fatalf("data after moving away and back: %q, %v", data, err)
	}

	expectStatus(t, c.do(http.MethodDelete, "/v1/configuration/datasets/"+id, nil), http.StatusOK)
	stepOnceWaiting(t, fakeClock)
	c.stateOf(id)
	if isMounted(t, mountPath) {
		t.Error("deleted dataset still mounted")
	}
	if _, err := os.Stat(e.BackingDir(id)); !os.IsNotExist(err) {
		t.Errorf("deleted dataset's data still there: %v", err)
	}
}

func TestCloseUnmountsAndRestartRestores(t *testing.T) {
	requireRoot(t)
	stateDir := t.TempDir()
	e, err := Start(Config{StateDir: stateDir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	ids := map[string]string{}
	for _, name := range []string{"a", "b"} {
		if ids[name], err = e.AddDataset(DatasetSpec{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(e.MountPath(ids["a"]), "f"), []byte("1"), 0o644); err != nil {
		t.Fatal(err)
	}
	certs := e.Certs()
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if isMounted(t, e.MountPath(id)) {
			t.Fatalf("%s still mounted after Close", e.MountPath(id))
		}
	}

	again := StartForTest(t, Config{StateDir: stateDir})
	if again.Certs() != certs {
		t.Errorf("certificates moved: %+v", again.Certs())
	}
	st, ok := again.DatasetByName("a")
	if !ok || st.ID != ids["a"] || st.StatePath != again.MountPath(ids["a"]) {
		t.Fatalf("restored dataset a: %+v %v", st, ok)
	}
	if data, err := os.ReadFile(filepath.Join(again.MountPath(ids["a"]), "f")); err != nil || string(data) != "1" {
		t.Fatalf("data after restart: %q %v", data, err)
	}
}
