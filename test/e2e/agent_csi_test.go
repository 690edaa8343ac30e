package e2e

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/mount-utils"

	"github.com/volume-agent/volume-agent/pkg/csi"
	"github.com/volume-agent/volume-agent/test/gitserver"
)

// csiClient calls the agent's CSI node service as the kubelet does.
type csiClient struct {
	t       *testing.T
	node    csipb.NodeClient
	kubelet string
}

func (e *env) csiClient(sock string) *csiClient {
	e.t.Helper()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { conn.Close() })
	return &csiClient{t: e.t, node: csipb.NewNodeClient(conn), kubelet: filepath.Join(e.dir, "kubelet")}
}

// target makes the kubelet's dir for volume name of pod uid and returns
// its target path.
func (c *csiClient) target(uid, name string) string {
	dir := filepath.Join(c.kubelet, "pods", uid, "volumes", "kubernetes.io~csi", name)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		c.t.Fatal(err)
	}
	return filepath.Join(dir, "mount")
}

func (c *csiClient) publish(volumeID, target, pod string, attrs map[string]string) {
	c.t.Helper()
	vc := map[string]string{"csi.storage.k8s.io/ephemeral": "true", "csi.storage.k8s.io/pod.name": pod, "csi.storage.k8s.io/pod.namespace": "default"}
	for k, v := range attrs {
		vc[k] = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := c.node.NodePublishVolume(ctx, &csipb.NodePublishVolumeRequest{
		VolumeId:   volumeID,
		TargetPath: target,
		VolumeCapability: &csipb.VolumeCapability{
			AccessType: &csipb.VolumeCapability_Mount{Mount: &csipb.VolumeCapability_MountVolume{}},
			AccessMode: &csipb.VolumeCapability_AccessMode{Mode: csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		},
		VolumeContext: vc,
	})
	if err != nil {
		c.t.Fatalf("NodePublishVolume(%s) = %v", volumeID, err)
	}
}

func (c *csiClient) unpublish(volumeID, target string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := c.node.NodeUnpublishVolume(ctx, &csipb.NodeUnpublishVolumeRequest{VolumeId: volumeID, TargetPath: target}); err != nil {
		c.t.Fatalf("NodeUnpublishVolume(%s) = %v", volumeID, err)
	}
	if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
		c.t.Errorf("target %s is still there after unpublish: %v", target, err)
	}
}

func isTmpfs(t *testing.T, path string) bool {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Type == unix.TMPFS_MAGIC
}

// TestAgentCSIRestart runs the built agent as a CSI driver with a
// registration dir (no manifest dir), publishes a disk emptyDir, a memory
// emptyDir and a gitRepo volume, SIGKILLs the agent, and restarts it: the
// repeated publishes succeed without redoing anything, the unpublishes
// (one of a volume never published again) tear everything down, and no
// mount or volume is left.
func TestAgentCSIRestart(t *testing.T) {
	e := newEnv(t)
	srv := gitRepoForTest(t, "site.git", gitserver.File("index.html", "hello\n"))

	sock := filepath.Join(e.dir, "plugins", "csi.sock")
	registry := filepath.Join(e.dir, "registry")
	args := []string{"run", "--root-dir", e.root, "--csi-endpoint", "unix://" + sock, "--kubelet-registration-dir", registry, "--git-allowed-protocols", "git"}
	startAgent := func() *agent {
		a := e.startBare(args...)
		// The registration socket is served last; a stale one refuses.
		waitFor(t, "the registration socket", 30*time.Second, func(context.Context) (bool, error) {
			conn, err := net.Dial("unix", csi.RegistrationSocket(registry, "volume-agent.io"))
			if err == nil {
				conn.Close()
			}
			return err == nil, nil
		})
		return a
	}
	a := startAgent()
	c := e.csiClient(sock)
	disk, mem, git := c.target("pod-a", "scratch"), c.target("pod-a", "cache"), c.target("pod-b", "site")
	c.publish("vol-disk", disk, "web", map[string]string{"type": "emptyDir"})
	c.publish("vol-mem", mem, "web", map[string]string{"type": "emptyDir", "medium": "Memory", "sizeLimit": "4Mi"})
	c.publish("vol-git", git, "site", map[string]string{"type": "gitRepo", "repository": srv.GitURL("site.git"), "directory": "."})
	if err := os.WriteFile(filepath.Join(disk, "data"), []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	if !isTmpfs(t, mem) {
		t.Errorf("%s is not a tmpfs", mem)
	}
	if data, err := os.ReadFile(filepath.Join(git, "index.html")); err != nil || string(data) != "hello\n" {
		t.Errorf("index.html = %q, %v", data, err)
	}
	code, out, stderr := cli(t, "get", "volumes", "--root-dir", e.root)
	if code != 0 || !strings.Contains(out, "default/web") || !strings.Contains(out, "default/site") || strings.Count(out, "ready") != 3 {
		t.Errorf("get volumes = %d\n%s%s", code, out, stderr)
	}

	a.kill()
	a = startAgent()
	// A new connection, as the kubelet dials for each call.
	c = e.csiClient(sock)
	fetches := srv.Fetches("/site.git")
	c.publish("vol-disk", disk, "web", map[string]string{"type": "emptyDir"})
	c.publish("vol-git", git, "site", map[string]string{"type": "gitRepo", "repository": srv.GitURL("site.git"), "directory": "."})
	if data, err := os.ReadFile(filepath.Join(disk, "data")); err != nil || string(data) != "kept" {
		t.Errorf("after the restart, data = %q, %v; want the volume kept", data, err)
	}
	if got := srv.Fetches("/site.git"); got != fetches {
		t.Errorf("the repeated publish fetched the repository again (%d fetches, was %d)", got, fetches)
	}
	if !isTmpfs(t, mem) {
		t.Errorf("after the restart %s is not a tmpfs", mem)
	}
	// The kubelet unpublishes a volume it did not publish again.
	c.unpublish("vol-mem", mem)
	c.unpublish("vol-disk", disk)
	c.unpublish("vol-git", git)

	mountPoints, err := mount.New("").List()
	if err != nil {
		t.Fatal(err)
	}
	for _, mp := range mountPoints {
		if strings.HasPrefix(mp.Path, e.dir+"/") {
			t.Errorf("%s is still mounted", mp.Path)
		}
	}
	waitFor(t, "the pod dirs to go", 10*time.Second, func(context.Context) (bool, error) {
		entries, err := os.ReadDir(filepath.Join(e.root, "pods"))
		return err == nil && len(entries) == 0, nil
	})
	if err := a.stop(unix.SIGTERM, 30*time.Second); err != nil {
		t.Errorf("agent exited with %v\n%s", err, a.output())
	}
	for _, s := range []string{sock, csi.RegistrationSocket(registry, "volume-agent.io")} {
		if _, err := os.Lstat(s); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket %s is still there after the agent stopped: %v", s, err)
		}
	}
}
