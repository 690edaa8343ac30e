package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/volume-agent/volume-agent/pkg/apis/config"
	"github.com/volume-agent/volume-agent/test/gitserver"
)

// TestAgentUsesExternalCSIDriver runs two agents: one as a CSI driver,
// registered through the registration dir of the other, which sets up a
// pod's inline csi volumes (emptyDir on disk and in memory, and gitRepo
// from a loopback git server) through it (kubernetes.io/csi). The pod's volumes
// survive a SIGKILL of the consumer, and removing the pod unpublishes them
// in the driver, which then holds no volume.
func TestAgentUsesExternalCSIDriver(t *testing.T) {
	e := newEnv(t)
	consumer := e.start()

	srv := gitRepoForTest(t, "site.git", gitserver.File("index.html", "hello\n"))

	driverRoot := filepath.Join(e.dir, "driver-root")
	sock := filepath.Join(e.dir, "csi.sock")
	registry := filepath.Join(e.root, config.DefaultPluginRegistrationDirName)
	driver := e.startBare("run", "--root-dir", driverRoot, "--csi-endpoint", "unix://"+sock, "--kubelet-registration-dir", registry,
		"--git-allowed-protocols", "git")
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
  - name: site
    csi:
      driver: volume-agent.io
      volumeAttributes:
        type: gitRepo
        repository: %s
        directory: .
`, uid, srv.GitURL("site.git")))
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
	site := filepath.Join(e.root, "pods", uid, "volumes", "kubernetes.io~csi", "site", "mount")
	if data, err := os.ReadFile(filepath.Join(site, "index.html")); err != nil || string(data) != "hello\n" {
		t.Errorf("the gitRepo volume's index.html = %q, %v; want the repository's", data, err)
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

// TestAgentSharesStagedExternalCSIVolume sets a Flocker dataset up through
// a second agent in CSI driver mode, as a PersistentVolume with spec.csi used
// by two pods: it is staged once and published twice. One pod is removed
// while the consumer is down (SIGKILL): after the restart the other keeps
// its mount and the volume stays staged; removing it too unstages it.
func TestAgentSharesStagedExternalCSIVolume(t *testing.T) {
	e := newEnv(t)
	emulator, datasetID := e.startFlocker("shared")
	consumer := e.start()
	driverRoot := filepath.Join(e.dir, "driver-root")
	registry := filepath.Join(e.root, config.DefaultPluginRegistrationDirName)
	driver := e.startBare("run", "--root-dir", driverRoot, "--csi-endpoint", "unix://"+filepath.Join(e.dir, "csi.sock"),
		"--kubelet-registration-dir", registry, "--node-ip", "127.0.0.1",
		"--flocker-control-service-host", emulator.Host(), "--flocker-control-service-port", strconv.Itoa(emulator.Port()))

	e.writeManifest("storage.yaml", fmt.Sprintf(`apiVersion: v1
kind: PersistentVolume
metadata: {name: shared}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  claimRef: {namespace: default, name: shared}
  csi: {driver: volume-agent.io, volumeHandle: %s}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: shared, namespace: default}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
  volumeName: shared
`, datasetID))
	pod := func(name string) string {
		return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: default, uid: %s-uid}
spec:
  volumes:
  - name: data
    persistentVolumeClaim: {claimName: shared}
`, name, name)
	}
	e.writeManifest("a.yaml", pod("a"))
	e.writeManifest("b.yaml", pod("b"))
	for _, name := range []string{"default/a", "default/b"} {
		if err := waitForErr(90*time.Second, podReady(consumer, name)); err != nil {
			_, out, _ := cli(t, "get", "volumes", "--root-dir", e.root)
			t.Fatalf("pod %s is not ready: %v\n%s\nconsumer:\n%s\ndriver:\n%s", name, err, out, consumer.output(), driver.output())
		}
	}
	target := func(name string) string {
		return filepath.Join(e.root, "pods", name+"-uid", "volumes", "kubernetes.io~csi", "shared", "mount")
	}
	sum := sha256.Sum256([]byte(datasetID))
	staging := filepath.Join(e.root, "plugins", "kubernetes.io", "csi", "volume-agent.io", hex.EncodeToString(sum[:]), "globalmount")
	for _, path := range []string{staging, target("a"), target("b")} {
		if len(mountsUnder(t, path)) == 0 {
			t.Errorf("%s is not mounted", path)
		}
	}
	if err := os.WriteFile(filepath.Join(target("a"), "row"), []byte("1"), 0o644); err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(filepath.Join(target("b"), "row")); err != nil || string(data) != "1" {
		t.Errorf("pod b does not see pod a's file: %q, %v", data, err)
	}

	consumer.kill()
	e.removeManifest("a.yaml")
	consumer = e.start()
	waitFor(t, "pod a's volume to go", 60*time.Second, func(context.Context) (bool, error) {
		_, err := os.Lstat(filepath.Join(e.root, "pods", "a-uid"))
		return os.IsNotExist(err), nil
	})
	if err := waitForErr(30*time.Second, podReady(consumer, "default/b")); err != nil {
		t.Fatalf("pod b is not ready after the restart: %v", err)
	}
	if data, err := os.ReadFile(filepath.Join(target("b"), "row")); err != nil || string(data) != "1" {
		t.Errorf("after the restart pod b reads %q, %v", data, err)
	}
	if len(mountsUnder(t, staging)) == 0 {
		t.Error("the volume was unstaged under pod b")
	}

	e.removeManifest("b.yaml")
	waitFor(t, "pod b's volume to go", 60*time.Second, func(context.Context) (bool, error) {
		_, err := os.Lstat(filepath.Join(e.root, "pods", "b-uid"))
		return os.IsNotExist(err), nil
	})
	if _, err := os.Lstat(filepath.Dir(staging)); !os.IsNotExist(err) {
		t.Errorf("the staging dir is left: %v", err)
	}
	if mps := mountsUnder(t, e.root); len(mps) > 0 {
		t.Errorf("mounts left: %v", mps)
	}
	if data, err := os.ReadFile(filepath.Join(emulator.BackingDir(datasetID), "row")); err != nil || string(data) != "1" {
		t.Errorf("the dataset lost its data: %q, %v", data, err)
	}
}
