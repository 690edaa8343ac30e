package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/volume-agent/volume-agent/test/kube/oci"
)

// writeConfig writes the certificates, kubeconfigs, and the containerd, CNI
// and kubelet configuration, with the settings this machine needs: cgroup
// v1 with cgroupfs, no negative oom_score_adj, low eviction thresholds so
// the imported images are never collected.
func (n *node) writeConfig() error {
	var err error
	if n.pki, err = newPKI(n.path("pki")); err != nil {
		return err
	}
	for _, c := range []struct {
		name, cn string
		orgs     []string
		server   bool
		hosts    []string
	}{
		{"apiserver", "kube-apiserver", nil, true, []string{"127.0.0.1", "localhost", "10.96.0.1", "kubernetes", "kubernetes.default", "kubernetes.default.svc", n.name}},
		{"admin", "kube-harness-admin", []string{"system:masters"}, false, nil},
		{"kubelet", "system:node:" + n.name, []string{"system:nodes"}, false, nil},
	} {
		if err := n.pki.issue(c.name, c.cn, c.orgs, c.server, c.hosts...); err != nil {
			return err
		}
	}
	if err := n.pki.serviceAccountKey(); err != nil {
		return err
	}
	for _, kc := range []struct{ file, cert string }{{"admin.kubeconfig", "admin"}, {"kubelet.kubeconfig", "kubelet"}} {
		if err := os.WriteFile(n.path(kc.file), []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: kube-harness
  cluster:
    server: https://127.0.0.1:%d
    certificate-authority: %s
users:
- name: %s
  user:
    client-certificate: %s
    client-key: %s
contexts:
- name: kube-harness
  context: {cluster: kube-harness, user: %s}
current-context: kube-harness
`, apiserverPort, n.pki.path("ca.crt"), kc.cert, n.pki.path(kc.cert+".crt"), n.pki.path(kc.cert+".key"), kc.cert)), 0o600); err != nil {
			return err
		}
	}

	containerd := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = %[3]q

[ttrpc]
  address = %[4]q

[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[6]q
  # root lacks CAP_SYS_RESOURCE here: a negative oom_score_adj kills sandboxes.
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %[7]q
`, n.path("containerd", "root"), n.path("containerd", "state"), n.containerdSock(), n.path("containerd", "ttrpc.sock"),
		n.path("containerd", "opt"), pauseImage, n.path("cni", "net.d"))
	if err := os.WriteFile(n.path("containerd", "config.toml"), []byte(containerd), 0o644); err != nil {
		return err
	}
	// Every pod of the harness uses the host's network: the loopback plugin
	// alone makes the node Ready.
	if err := os.WriteFile(n.path("cni", "net.d", "10-loopback.conflist"), []byte(`{
  "cniVersion": "1.0.0",
  "name": "loopback",
  "plugins": [{"type": "loopback"}]
}
`), 0o644); err != nil {
		return err
	}

	kubelet := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: %d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %d
containerRuntimeEndpoint: unix://%s
podLogsDir: %s
volumePluginDir: %s
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
  x509: {clientCAFile: %s}
authorization: {mode: AlwaysAllow}
# cgroup v1 (hybrid) here.
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
# root lacks CAP_SYS_RESOURCE here.
oomScoreAdj: 0
# Never evict or garbage-collect the imported images.
evictionHard: {nodefs.available: "1%%", imagefs.available: "1%%", memory.available: "50Mi"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
resolvConf: /etc/resolv.conf
nodeStatusUpdateFrequency: 2s
`, kubeletPort, kubeletHealthz, n.containerdSock(), n.path("pod-logs"), n.path("volume-plugins"), n.pki.path("ca.crt"))
	return os.WriteFile(n.path("kubelet-config.yaml"), []byte(kubelet), 0o644)
}

// importImages builds the pause image (the harness's static pause program)
// and a busybox image (Debian's busybox-static, one symlink per applet), and
// imports both into containerd.
func (n *node) importImages(ctx context.Context) error {
	pause := n.path("images", "pause.tar")
	if err := oci.WriteFile(pause, oci.Image{
		Name:       pauseImage,
		Files:      []oci.File{{Path: "/pause", Source: filepath.Join(n.binDir, "pause")}},
		Entrypoint: []string{"/pause"},
	}); err != nil {
		return fmt.Errorf("failed to build the pause image: %w", err)
	}
	applets, err := run(ctx, time.Minute, "busybox", "--list")
	if err != nil {
		return fmt.Errorf("busybox-static is needed for the test image: %w", err)
	}
	files := []oci.File{{Path: "/bin/busybox", Source: "/bin/busybox"}}
	for _, a := range strings.Fields(applets) {
		if a != "busybox" {
			files = append(files, oci.File{Path: "/bin/" + a, Link: "busybox"})
		}
	}
	busybox := n.path("images", "busybox.tar")
	if err := oci.WriteFile(busybox, oci.Image{
		Name:  busyboxImage,
		Files: files,
		Env:   []string{"PATH=/bin"},
		Cmd:   []string{"/bin/sh"},
	}); err != nil {
		return fmt.Errorf("failed to build the busybox image: %w", err)
	}
	for _, img := range []string{pause, busybox} {
		if err := n.importImage(ctx, img); err != nil {
			return err
		}
	}
	return nil
}

func (n *node) importImage(ctx context.Context, tarball string) error {
	if _, err := n.ctr(ctx, "images", "import", tarball); err != nil {
		return fmt.Errorf("failed to import %s: %w", tarball, err)
	}
	return nil
}
