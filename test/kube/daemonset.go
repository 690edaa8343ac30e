package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

const (
	controllerManagerPort = 10357
	schedulerPort         = 10359
)

// hostPath maps a host path of deploy/kubernetes/daemonset.yaml to this
// node's: the kubelet's dir, the agent's root and the Flocker paths live
// under the state dir here.
func (h *harness) hostPath(p string) string {
	for _, m := range []struct{ from, to string }{
		{"/var/lib/kubelet", h.kubeletDir()},
		{"/var/lib/volume-agent", h.agentRoot()},
		{"/flocker", h.path("flocker", "flocker")},   // the emulator's mount root
		{"/etc/flocker", h.path("flocker", "certs")}, // the emulator's certificates
	} {
		if p == m.from || strings.HasPrefix(p, m.from+"/") {
			return m.to + strings.TrimPrefix(p, m.from)
		}
	}
	return p
}

// daemonSet reads deploy/kubernetes/daemonset.yaml and points it at this
// node: host paths under the state dir (mounted at the same paths in the
// pod, since the kubelet and Flocker name them to the agent, except the
// certificates), the emulator's address, and git:// allowed for the
// loopback git server.
func (h *harness) daemonSet() (string, error) {
	data, err := os.ReadFile(filepath.Join(h.repo, "deploy", "kubernetes", "daemonset.yaml"))
	if err != nil {
		return "", err
	}
	var ds appsv1.DaemonSet
	if err := yaml.UnmarshalStrict(data, &ds); err != nil {
		return "", fmt.Errorf("failed to read deploy/kubernetes/daemonset.yaml: %w", err)
	}
	spec := &ds.Spec.Template.Spec
	for i := range spec.Volumes {
		if hp := spec.Volumes[i].HostPath; hp != nil {
			hp.Path = h.hostPath(hp.Path)
		}
	}
	if len(spec.Containers) != 1 {
		return "", fmt.Errorf("deploy/kubernetes/daemonset.yaml: want one container, got %d", len(spec.Containers))
	}
	c := &spec.Containers[0]
	for i := range c.VolumeMounts {
		if m := &c.VolumeMounts[i]; m.MountPath != "/etc/flocker" {
			m.MountPath = h.hostPath(m.MountPath)
		}
	}
	for i, a := range c.Args {
		if name, value, ok := strings.Cut(a, "="); ok {
			if strings.HasPrefix(value, "unix://") {
				value = "unix://" + h.hostPath(strings.TrimPrefix(value, "unix://"))
			} else {
				value = h.hostPath(value)
			}
			c.Args[i] = name + "=" + value
		}
	}
	c.Args = append(c.Args, "--git-allowed-protocols=git", "--git-timeout=30s")
	flockerEnv := map[string]string{}
	for _, kv := range h.flockerEnv {
		if k, v, ok := strings.Cut(kv, "="); ok {
			flockerEnv[k] = v
		}
	}
	for i, e := range c.Env {
		if v, ok := flockerEnv[e.Name]; ok && (e.Name == "FLOCKER_CONTROL_SERVICE_HOST" || e.Name == "FLOCKER_CONTROL_SERVICE_PORT") {
			c.Env[i] = corev1.EnvVar{Name: e.Name, Value: v}
		}
	}
	out, err := yaml.Marshal(&ds)
	return string(out), err
}

// startControllers starts the DaemonSet controller (kube-controller-manager)
// and kube-scheduler, which bind the DaemonSet's pod to the node.
func (h *harness) startControllers(ctx context.Context) error {
	if err := h.start("kube-controller-manager", nil, filepath.Join(h.kubeBin, "kube-controller-manager"),
		"--kubeconfig="+h.kubeconfig(), "--controllers=daemonset-controller,garbage-collector-controller", "--leader-elect=false",
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", controllerManagerPort)); err != nil {
		return err
	}
	return h.start("kube-scheduler", nil, filepath.Join(h.kubeBin, "kube-scheduler"),
		"--kubeconfig="+h.kubeconfig(), "--leader-elect=false",
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", schedulerPort))
}

func (h *harness) stopControllers() {
	for _, name := range []string{"kube-controller-manager", "kube-scheduler"} {
		if p := h.procs[name]; p != nil {
			p.stop(syscall.SIGTERM, 10*time.Second)
			delete(h.procs, name)
		}
	}
}

// scenarioDaemonSet replaces the host agent by volume-agent deployed with
// deploy/kubernetes/ as a DaemonSet pod of `make image`'s image, and runs the
// three pods of scenario 1 again.
func scenarioDaemonSet(ctx context.Context, h *harness) error {
	image := filepath.Join(h.repo, "_output", "volume-agent-image.tar")
	if err := h.importImage(ctx, image); err != nil {
		return fmt.Errorf("%w (run `make image` first)", err)
	}
	manifest, err := h.daemonSet()
	if err != nil {
		return err
	}
	h.stopAgent(syscall.SIGTERM)
	// The kubelet forgets the host agent once its registration socket is gone.
	if err := poll(ctx, 30*time.Second, 200*time.Millisecond, "the kubelet to deregister the host agent", func() (bool, error) {
		return h.driverRegistered(ctx)() != nil, nil
	}); err != nil {
		return err
	}
	if err := h.startControllers(ctx); err != nil {
		return err
	}
	defer h.stopControllers()
	start := time.Now()
	if err := h.apply(ctx, manifest); err != nil {
		return err
	}
	defer func() {
		_, _ = h.kubectl(context.Background(), "delete", "daemonset", "-n", "kube-system", "volume-agent", "--wait=true", "--timeout=60s")
		_, _ = h.kubectl(context.Background(), "delete", "pods", "-n", "kube-system", "--all", "--grace-period=1", "--wait=true", "--timeout=60s")
	}()
	if err := poll(ctx, 2*time.Minute, 200*time.Millisecond, "the DaemonSet's pod to register volume-agent", func() (bool, error) {
		return h.driverRegistered(ctx)() == nil, nil
	}); err != nil {
		out, _ := h.kubectl(ctx, "get", "pods", "-n", "kube-system", "-o", "wide")
		return fmt.Errorf("%w; kube-system pods:\n%s", err, out)
	}
	h.record("DaemonSet applied -> driver registered", time.Since(start))
	if err := h.runPod(ctx, h.csiGitRepoPod("ds-gitrepo"), "", h.checkGitRepoLog); err != nil {
		return err
	}
	if err := h.runPod(ctx, csiEmptyDirPod("ds-emptydir"), "", h.checkEmptyDirLog); err != nil {
		return err
	}
	if err := h.runPod(ctx, flockerPod("ds-flocker", "uploads"), "", h.checkFlockerLog); err != nil {
		return err
	}
	if _, err := h.kubectl(ctx, "delete", "pods", "-n", "default", "--all", "--grace-period=1", "--wait=true", "--timeout=90s"); err != nil {
		return err
	}
	if err := h.noMountsLeft(ctx); err != nil {
		return err
	}
	if _, err := h.kubectl(ctx, "delete", "daemonset", "-n", "kube-system", "volume-agent", "--wait=true", "--timeout=60s"); err != nil {
		return err
	}
	if err := poll(ctx, 60*time.Second, 200*time.Millisecond, "the DaemonSet's pod to go", func() (bool, error) {
		out, err := h.kubectl(ctx, "get", "pods", "-n", "kube-system", "-o", "name")
		return err == nil && strings.TrimSpace(out) == "", err
	}); err != nil {
		return err
	}
	return h.noMountsLeft(ctx)
}
