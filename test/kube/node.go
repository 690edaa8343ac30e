package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Loopback ports of the test node, away from the defaults so that it does not
// collide with a real cluster on the same machine.
const (
	etcdClientPort = 23790
	etcdPeerPort   = 23800
	apiserverPort  = 16443
	kubeletPort    = 10350
	kubeletHealthz = 10348

	pauseImage   = "localhost/kube-harness/pause:1"
	busyboxImage = "localhost/kube-harness/busybox:1"
)

// node is a single-node Kubernetes on loopback: etcd, kube-apiserver,
// containerd and the kubelet, all under state.
type node struct {
	state    string // everything the node writes, removed at teardown
	logDir   string // logs, kept after the run
	kubeBin  string // kube-apiserver, kubelet, kubectl
	binDir   string // the harness's own binaries: pause, volume-agent, gitserver, flocker-emulator
	name     string // node name, resolving to 127.x
	ip       string // the node's InternalIP
	procs    map[string]*proc
	pki      *pki
	timings  []timing
	readyAt  time.Time
	kubelets int  // kubelet starts
	firstPod bool // the first pod Running was recorded
}

type timing struct {
	what string
	d    time.Duration
}

func (n *node) path(elem ...string) string {
	return filepath.Join(append([]string{n.state}, elem...)...)
}

func (n *node) kubeletDir() string     { return n.path("kubelet") }
func (n *node) containerdSock() string { return n.path("containerd", "containerd.sock") }
func (n *node) kubeconfig() string     { return n.path("admin.kubeconfig") }

func (n *node) record(what string, d time.Duration) {
	n.timings = append(n.timings, timing{what, d})
	fmt.Printf("  %-44s %6.1fs\n", what, d.Seconds())
}

// nodeName is the machine's host name when it resolves to a loopback
// address (the apiserver reaches the kubelet by host name), else localhost.
func nodeName() string {
	host, err := os.Hostname()
	if err == nil {
		if addrs, err := net.LookupHost(host); err == nil && len(addrs) > 0 && strings.HasPrefix(addrs[0], "127.") {
			return strings.ToLower(host)
		}
	}
	return "localhost"
}

// checkPortsFree fails early, naming the port, when another process (a
// previous run, a real cluster) holds one of the node's ports.
func checkPortsFree() error {
	for _, port := range []int{etcdClientPort, etcdPeerPort, apiserverPort, kubeletPort, kubeletHealthz} {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			return fmt.Errorf("port 127.0.0.1:%d is in use (a previous run still going, or another cluster): %w", port, err)
		}
		l.Close()
	}
	return nil
}

// up brings the node up and waits for it to be Ready.
func (n *node) up(ctx context.Context) error {
	start := time.Now()
	if err := checkPortsFree(); err != nil {
		return err
	}
	for _, d := range []string{"etcd", "containerd", "cni/net.d", "kubelet", "images", "pod-logs", "volume-plugins"} {
		if err := os.MkdirAll(n.path(d), 0o755); err != nil {
			return err
		}
	}
	// The state dir (the kubelet's dir and the agent's root in it) is a
	// shared mount, so that a pod's Bidirectional mounts reach the host:
	// "/" is private here.
	if err := syscall.Mount(n.state, n.state, "", syscall.MS_BIND, ""); err != nil {
		return fmt.Errorf("failed to bind-mount %s onto itself: %w", n.state, err)
	}
	if err := syscall.Mount("", n.state, "", syscall.MS_SHARED|syscall.MS_REC, ""); err != nil {
		return fmt.Errorf("failed to make %s a shared mount: %w", n.state, err)
	}
	if err := n.writeConfig(); err != nil {
		return fmt.Errorf("failed to write the node's configuration: %w", err)
	}
	if err := n.startEtcd(ctx); err != nil {
		return err
	}
	if err := n.startContainerd(ctx); err != nil {
		return err
	}
	imgStart := time.Now()
	if err := n.importImages(ctx); err != nil {
		return err
	}
	n.record("images built and imported", time.Since(imgStart))
	if err := n.startAPIServer(ctx); err != nil {
		return err
	}
	if err := n.startKubelet(ctx); err != nil {
		return err
	}
	if err := n.waitNodeReady(ctx, 90*time.Second); err != nil {
		return err
	}
	n.readyAt = time.Now()
	n.record("node Ready (from etcd start)", time.Since(start))
	// The kubelet refuses a loopback node IP, so the node's InternalIP is the
	// host's address (the apiserver reaches the kubelet by host name).
	ip, err := n.kubectl(ctx, "get", "node", n.name, "-o", `jsonpath={.status.addresses[?(@.type=="InternalIP")].address}`)
	if err != nil || ip == "" {
		return fmt.Errorf("node %s has no InternalIP %q: %v", n.name, ip, err)
	}
	n.ip = ip
	return nil
}

func (n *node) start(name string, env []string, bin string, args ...string) error {
	p, err := startProc(n.logDir, name, env, bin, args...)
	if err != nil {
		return err
	}
	n.procs[name] = p
	return nil
}

// waitUp polls check until it succeeds, failing at once when the process
// exits.
func (n *node) waitUp(ctx context.Context, name string, timeout time.Duration, check func() error) error {
	p := n.procs[name]
	return poll(ctx, timeout, 100*time.Millisecond, name+" to serve", func() (bool, error) {
		if p.exited() {
			return false, fmt.Errorf("%s exited: %v (see %s)", name, p.err, filepath.Join(n.logDir, name+".log"))
		}
		if err := check(); err != nil {
			return false, err
		}
		return true, nil
	})
}

func (n *node) startEtcd(ctx context.Context) error {
	client := fmt.Sprintf("http://127.0.0.1:%d", etcdClientPort)
	peer := fmt.Sprintf("http://127.0.0.1:%d", etcdPeerPort)
	if err := n.start("etcd", nil, "etcd",
		"--name=kube-harness", "--data-dir="+n.path("etcd"),
		"--listen-client-urls="+client, "--advertise-client-urls="+client,
		"--listen-peer-urls="+peer, "--initial-advertise-peer-urls="+peer,
		"--initial-cluster=kube-harness="+peer,
	); err != nil {
		return err
	}
	return n.waitUp(ctx, "etcd", 30*time.Second, func() error {
		resp, err := http.Get(client + "/health")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("etcd /health: %s", resp.Status)
		}
		return nil
	})
}

func (n *node) startContainerd(ctx context.Context) error {
	if err := n.start("containerd", nil, "containerd", "--config", n.path("containerd", "config.toml")); err != nil {
		return err
	}
	return n.waitUp(ctx, "containerd", 30*time.Second, func() error {
		_, err := n.ctr(ctx, "version")
		return err
	})
}

func (n *node) ctr(ctx context.Context, args ...string) (string, error) {
	return run(ctx, time.Minute, "ctr", append([]string{"--address", n.containerdSock(), "--namespace", "k8s.io"}, args...)...)
}

func (n *node) startAPIServer(ctx context.Context) error {
	p := n.pki.path
	if err := n.start("kube-apiserver", nil, filepath.Join(n.kubeBin, "kube-apiserver"),
		fmt.Sprintf("--etcd-servers=http://127.0.0.1:%d", etcdClientPort),
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", apiserverPort),
		"--cert-dir="+n.path("apiserver"),
		"--tls-cert-file="+p("apiserver.crt"), "--tls-private-key-file="+p("apiserver.key"),
		"--client-ca-file="+p("ca.crt"),
		"--kubelet-client-certificate="+p("admin.crt"), "--kubelet-client-key="+p("admin.key"),
		"--kubelet-preferred-address-types=Hostname",
		"--authorization-mode=AlwaysAllow",
		"--disable-admission-plugins=ServiceAccount",
		"--allow-privileged=true",
		"--endpoint-reconciler-type=none",
		"--service-cluster-ip-range=10.96.0.0/24",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+p("sa.pub"), "--service-account-signing-key-file="+p("sa.key"),
		"--enable-priority-and-fairness=false",
		"--profiling=false",
	); err != nil {
		return err
	}
	return n.waitUp(ctx, "kube-apiserver", 60*time.Second, func() error {
		_, err := n.kubectl(ctx, "get", "--raw=/readyz")
		return err
	})
}

func (n *node) startKubelet(ctx context.Context) error {
	n.kubelets++
	return n.start("kubelet", nil, filepath.Join(n.kubeBin, "kubelet"),
		"--config="+n.path("kubelet-config.yaml"),
		"--kubeconfig="+n.path("kubelet.kubeconfig"),
		"--root-dir="+n.kubeletDir(),
		"--cert-dir="+n.path("kubelet-pki"),
		"--hostname-override="+n.name,
		"--v=2",
	)
}

func (n *node) waitNodeReady(ctx context.Context, timeout time.Duration) error {
	return n.waitUp(ctx, "kubelet", timeout, func() error {
		out, err := n.kubectl(ctx, "get", "node", n.name, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		if err != nil {
			return err
		}
		if out != "True" {
			return fmt.Errorf("node %s Ready=%q", n.name, out)
		}
		return nil
	})
}

// restartKubelet stops the kubelet (SIGTERM) and starts it again, waiting
// for the node to report Ready.
func (n *node) restartKubelet(ctx context.Context) error {
	n.procs["kubelet"].stop(syscall.SIGTERM, 20*time.Second)
	if err := n.startKubelet(ctx); err != nil {
		return err
	}
	// The node stays Ready through a short restart; wait for the new
	// kubelet's healthz instead.
	return n.waitUp(ctx, "kubelet", 60*time.Second, func() error {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", kubeletHealthz))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errors.New("kubelet healthz: " + resp.Status)
		}
		return nil
	})
}

func (n *node) kubectl(ctx context.Context, args ...string) (string, error) {
	return run(ctx, 2*time.Minute, filepath.Join(n.kubeBin, "kubectl"), append([]string{"--kubeconfig", n.kubeconfig()}, args...)...)
}

// kubectlApply applies a manifest given as text.
func (n *node) apply(ctx context.Context, manifest string) error {
	f, err := os.CreateTemp(n.state, "manifest-*.yaml")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(manifest); err != nil {
		f.Close()
		return err
	}
	f.Close()
	_, err = n.kubectl(ctx, "apply", "-f", f.Name())
	return err
}

// down stops everything and removes the state dir. It returns what was
// left behind (a process, a mount), which is a failure of the run.
func (n *node) down() error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var problems []string
	if p := n.procs["kubelet"]; p != nil {
		p.stop(syscall.SIGTERM, 15*time.Second)
	}
	if p := n.procs["containerd"]; p != nil && !p.exited() {
		n.killContainers(ctx)
	}
	// The agent and the servers it uses after the containers, which may
	// still use their volumes; the control plane last.
	for _, name := range []string{"volume-agent", "containerd", "gitserver", "flocker-emulator", "kube-apiserver", "etcd"} {
		if p := n.procs[name]; p != nil {
			p.stop(syscall.SIGTERM, 15*time.Second)
		}
	}
	for name, p := range n.procs {
		p.stop(syscall.SIGKILL, 5*time.Second)
		delete(n.procs, name)
	}
	if leaked := killLeftovers(n.state); len(leaked) > 0 {
		problems = append(problems, "processes left: "+strings.Join(leaked, ", "))
	}
	if left, err := unmountAll(n.state); err != nil || len(left) > 0 {
		problems = append(problems, fmt.Sprintf("mounts left: %v %v", left, err))
	} else if err := os.RemoveAll(n.state); err != nil {
		problems = append(problems, fmt.Sprintf("failed to remove %s: %v", n.state, err))
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// killContainers kills and deletes every container task, so that the
// containerd shims exit.
func (n *node) killContainers(ctx context.Context) {
	out, err := n.ctr(ctx, "tasks", "ls", "-q")
	if err != nil {
		return
	}
	for _, id := range strings.Fields(out) {
		_, _ = n.ctr(ctx, "tasks", "rm", "-f", id)
	}
}

// leftoverBinaries are the programs the node starts; a process of one of
// them whose command line names the state dir is ours.
var leftoverBinaries = map[string]bool{
	"containerd-shim-runc-v2": true, "containerd": true, "etcd": true, "kube-apiserver": true, "kubelet": true,
	"volume-agent": true, "gitserver": true, "flocker-emulator": true, "pause": true,
}

// killLeftovers SIGKILLs the node's processes still running, naming them.
func killLeftovers(state string) []string {
	var leaked []string
	for _, pid := range procsMentioning(state) {
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil || !leftoverBinaries[filepath.Base(strings.TrimSuffix(exe, " (deleted)"))] {
			continue
		}
		leaked = append(leaked, fmt.Sprintf("%s[%d]", filepath.Base(exe), pid))
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if len(leaked) > 0 {
		time.Sleep(500 * time.Millisecond)
	}
	return leaked
}
