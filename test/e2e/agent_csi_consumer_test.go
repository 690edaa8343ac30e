package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/volume-agent/volume-agent/pkg/apis/config"
)

// TestAgentUsesExternalCSIDriver runs two agents: one as a CSI driver,
// registered through the registration dir of the other, which sets up a
// pod's inline csi volumes through it (kubernetes.io/csi). The pod's volumes
// survive a SIGKILL of the consumer, and removing the pod unpublishes them
// in the driver, which then holds no volume.
func TestAgentUsesExternalCSIDriver(t *testing.T) {
	e := newEnv(t)
	consumer := e.start()

	driverRoot := filepath.Join(e.dir, "driver-root")
	sock := filepath.Join(e.dir, "csi.sock")
	registry := filepath.Join(e.root, config.DefaultPluginRegistrationDirName)
	driver := e.startBare("run", "--root-dir", driverRoot, "--csi-endpoint", "unix://"+sock, "--kubelet-registration-dir", registry)
	t.Cleanup(func() {
		// The driver's own volumes, if a failure left any.
		if entries, err := os.ReadDir(filepath.Join(driverRoot, "pods")); err == nil && len(entries) > 0 {
			driver.kill()
			cli(t, "teardown", "--root-dir", driverRoot, "--all")
		}
	})

	waitFor(t, "the driver to register", 30*time.Second, func(context.Context) (bool, error) {
		code, out, _ := cli(t, "get", "plugins", "--root-dir", e.root)
		return code == 0 && strings.Contains(out, "kubernetes.io/csi:volume-agent.io") && strings.Contains(out, "nodeID="), nil
	})

	const uid = "7d4c0c0e-0000-4000-8000-0000000000c5"
	e.writeManifest("web.yaml", fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: default
  uid: %s
spec:
  volumes:
  - name: scratch
    csi:
      driver: volume-agent.io
      volumeAttributes:
        type: emptyDir
  - name: cache
    csi:
      driver: volume-agent.io
      volumeAttributes:
        type: emptyDir
        medium: Memory
        sizeLimit: 4Mi
`, uid))
	if err := waitForErr(60*time.Second, podReady(consumer, "default/web")); err != nil {
		_, out, _ := cli(t, "get", "volumes", "--root-dir", e.root)
		t.Fatalf("the pod's csi volumes are not ready: %v\n%s\nconsumer:\n%s\ndriver:\n%s", err, out, consumer.output(), driver.output())
	}
	scratch := filepath.Join(e.root, "pods", uid, "volumes", "kubernetes.io~csi", "scratch", "mount")
	cache := filepath.Join(e.root, "pods", uid, "volumes", "kubernetes.io~csi", "cache", "mount")
	if !isTmpfsMount(t, cache) {
		t.Errorf("%s is not a tmpfs", cache)
	}
	// The driver sets a disk emptyDir up at the target itself: a dir.
	if info, err := os.Stat(scratch); err != nil || !info.IsDir() {
		t.Errorf("%s is not a dir (%v)", scratch, err)
	}
	if err := os.WriteFile(filepath.Join(scratch, "data"), []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(scratch), "vol_data.json")); err != nil {
		t.Errorf("vol_data.json: %v", err)
	}

	// The consumer is killed and restarted: it publishes again, and the
	// data is still there.
	consumer.kill()
	consumer = e.start()
	waitFor(t, "the pod's csi volumes after a restart", 60*time.Second, podReady(consumer, "default/web"))
	if data, err := os.ReadFile(filepath.Join(scratch, "data")); err != nil || string(data) != "kept" {
		t.Errorf("after the restart, data = %q, %v", data, err)
	}

	e.removeManifest("web.yaml")
	waitFor(t, "the pod's dir to go", 60*time.Second, func(context.Context) (bool, error) {
		_, err := os.Lstat(filepath.Join(e.root, "pods", uid))
		return os.IsNotExist(err), nil
	})
	waitFor(t, "the driver's volumes to go", 30*time.Second, func(context.Context) (bool, error) {
		entries, err := os.ReadDir(filepath.Join(driverRoot, "pods"))
		return err == nil && len(entries) == 0 || os.IsNotExist(err), nil
	})
	if mps := mountsUnder(t, e.dir); len(mps) > 0 {
		t.Errorf("mounts left: %v", mps)
	}
	if err := driver.stop(unix.SIGTERM, 30*time.Second); err != nil {
		t.Errorf("driver agent exited with %v\n%s", err, driver.output())
	}
}
