package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

const driverName = "volume-agent.io"

func (h *harness) agentRoot() string { return h.path("agent") }

// startFlocker starts the Flocker control-service emulator with one remote
// node holding the dataset "uploads", and writes a file into the dataset.
func (h *harness) startFlocker(ctx context.Context) error {
	envFile := h.path("flocker.env")
	if err := h.start("flocker-emulator", nil, filepath.Join(h.binDir, "flocker-emulator"),
		"--state-dir", h.path("flocker"), "--listen", "127.0.0.1:0", "--env-file", envFile,
		"--node-ip", h.ip, "--remote-node", "192.0.2.10", "--remote-dataset", "uploads"); err != nil {
		return err
	}
	if err := h.waitUp(ctx, "flocker-emulator", 30*time.Second, func() error {
		data, err := os.ReadFile(envFile)
		if err != nil {
			return err
		}
		h.flockerEnv = strings.Fields(string(data))
		return nil
	}); err != nil {
		return err
	}
	backing, err := os.ReadDir(h.path("flocker", "backing"))
	if err != nil || len(backing) != 1 {
		return fmt.Errorf("want one dataset in the Flocker emulator's backing dir, got %d: %v", len(backing), err)
	}
	h.datasetUUID = backing[0].Name()
	return os.WriteFile(h.path("flocker", "backing", h.datasetUUID, "hello.txt"), []byte("hello from dataset uploads\n"), 0o644)
}

// startAgent runs volume-agent as a host process serving the CSI socket in
// the kubelet's plugin dir and registering through its registration dir,
// with a fault script when faults is set, and waits for the kubelet to list
// the driver in the CSINode object.
func (h *harness) startAgent(ctx context.Context, faults string) error {
	args := []string{"run", "--root-dir", h.agentRoot(), "--git-allowed-protocols", "git", "--git-timeout", "30s",
		"--csi-endpoint", "unix://" + h.path("kubelet", "plugins", driverName, "csi.sock"),
		"--csi-driver-name", driverName,
		"--kubelet-registration-dir", h.path("kubelet", "plugins_registry"),
		"--node-name", h.name, "--node-ip", h.ip,
	}
	if faults != "" {
		args = append(args, "--fault-hooks-file", faults)
	}
	if err := os.MkdirAll(h.path("kubelet", "plugins", driverName), 0o750); err != nil {
		return err
	}
	if err := h.start("volume-agent", h.flockerEnv, filepath.Join(h.binDir, "volume-agent"), args...); err != nil {
		return err
	}
	return h.waitUp(ctx, "volume-agent", 30*time.Second, h.driverRegistered(ctx))
}

// driverRegistered checks that the CSINode object lists the driver.
func (h *harness) driverRegistered(ctx context.Context) func() error {
	return func() error {
		out, err := h.kubectl(ctx, "get", "csinode", h.name, "-o", "jsonpath={.spec.drivers[*].name}")
		if err != nil {
			return err
		}
		if !strings.Contains(" "+out+" ", " "+driverName+" ") {
			return fmt.Errorf("CSINode %s lists drivers %q, not %s", h.name, out, driverName)
		}
		return nil
	}
}

func (h *harness) stopAgent(sig syscall.Signal) {
	if p := h.procs["volume-agent"]; p != nil {
		p.stop(sig, 20*time.Second)
		delete(h.procs, "volume-agent")
	}
}

// The three pods of scenarios 1 and 3: each prints its volume from inside a
// real container.
func (h *harness) csiGitRepoPod(name string) podSpec {
	return podSpec{
		name:   name,
		script: "cat /site/index.html; ls /site; sleep 3600",
		volumes: fmt.Sprintf(`  - name: site
    csi:
      driver: %s
      readOnly: true
      volumeAttributes:
        type: gitRepo
        repository: %q
        revision: v1.0.0
        directory: .`, driverName, h.gitURL),
		mounts: "    - {name: site, mountPath: /site, readOnly: true}",
	}
}

// checkGitRepoLog asserts the files of revision v1.0.0: the first version
// of index.html, and no DEV.md (branch dev).
func (h *harness) checkGitRepoLog(ctx context.Context, pod string) error {
	logs, err := h.waitLogs(ctx, pod, "README.md")
	if err != nil {
		return err
	}
	if !strings.Contains(logs, "<h1>Hello from a gitRepo volume</h1>\n") || strings.Contains(logs, "DEV.md") {
		return fmt.Errorf("pod %s does not show revision v1.0.0 of the repository:\n%s", pod, logs)
	}
	return nil
}

func csiEmptyDirPod(name string) podSpec {
	return podSpec{
		name: name,
		script: "id; grep ' /cache ' /proc/mounts; df -k /cache | tail -1; stat -c 'group=%g mode=%a' /cache; " +
			"echo written > /cache/file && cat /cache/file && echo write-ok; sleep 3600",
		securityContext: "    runAsUser: 1000\n    runAsGroup: 1000\n    fsGroup: 2000",
		volumes: fmt.Sprintf(`  - name: cache
    csi:
      driver: %s
      volumeAttributes:
        type: emptyDir
        medium: Memory
        sizeLimit: 64Mi`, driverName),
		mounts: "    - {name: cache, mountPath: /cache}",
	}
}

// checkEmptyDirLog asserts a tmpfs of 64Mi, the non-root user with the
// fsGroup, and a successful write.
func (h *harness) checkEmptyDirLog(ctx context.Context, pod string) error {
	logs, err := h.waitLogs(ctx, pod, "write-ok")
	if err != nil {
		return err
	}
	var problems []string
	if !strings.Contains(logs, "uid=1000") || !strings.Contains(logs, "2000") {
		problems = append(problems, "not user 1000 with group 2000")
	}
	if !strings.Contains(logs, "tmpfs /cache tmpfs") {
		problems = append(problems, "/cache is not a tmpfs")
	}
	if !strings.Contains(logs, " 65536 ") {
		problems = append(problems, "/cache is not 65536 KiB (64Mi)")
	}
	if !strings.Contains(logs, "group=2000") {
		problems = append(problems, "/cache is not owned by the fsGroup 2000")
	}
	if len(problems) > 0 {
		return fmt.Errorf("pod %s: %s; log:\n%s", pod, strings.Join(problems, ", "), logs)
	}
	return nil
}

// flockerObjects is a static PersistentVolume (spec.csi, the dataset's UUID
// as its handle) and a claim bound to it.
func (h *harness) flockerObjects(name string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: PersistentVolume
metadata:
  name: %[1]s
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  csi:
    driver: %[2]s
    volumeHandle: %[3]s
    volumeAttributes: {type: flocker, datasetUUID: %[3]s}
  claimRef: {namespace: default, name: %[1]s}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: %[1]s
  namespace: default
spec:
  storageClassName: ""
  volumeName: %[1]s
  accessModes: [ReadWriteOnce]
  resources:
    requests: {storage: 1Gi}
`, name, driverName, h.datasetUUID)
}

// createFlockerClaim creates the PV and PVC and marks both Bound, which the
// PV controller would do (no controller manager runs here).
func (h *harness) createFlockerClaim(ctx context.Context, name string) error {
	if err := h.apply(ctx, h.flockerObjects(name)); err != nil {
		return err
	}
	uid, err := h.kubectl(ctx, "get", "pvc", name, "-n", "default", "-o", "jsonpath={.metadata.uid}")
	if err != nil {
		return err
	}
	if _, err := h.kubectl(ctx, "patch", "pv", name, "--type=merge", "-p", `{"spec":{"claimRef":{"uid":"`+uid+`"}}}`); err != nil {
		return err
	}
	if _, err := h.kubectl(ctx, "patch", "pv", name, "--subresource=status", "--type=merge", "-p", `{"status":{"phase":"Bound"}}`); err != nil {
		return err
	}
	_, err = h.kubectl(ctx, "patch", "pvc", name, "-n", "default", "--subresource=status", "--type=merge",
		"-p", `{"status":{"phase":"Bound","accessModes":["ReadWriteOnce"],"capacity":{"storage":"1Gi"}}}`)
	return err
}

func flockerPod(name, claim string) podSpec {
	return podSpec{
		name:    name,
		script:  "ls /data; cat /data/hello.txt; sleep 3600",
		volumes: fmt.Sprintf("  - name: data\n    persistentVolumeClaim: {claimName: %s}", claim),
		mounts:  "    - {name: data, mountPath: /data}",
	}
}

func (h *harness) checkFlockerLog(ctx context.Context, pod string) error {
	_, err := h.waitLogs(ctx, pod, "hello from dataset uploads")
	return err
}

// runPod creates the pod, waits for it to run and checks its log, recording
// creation -> Running under what.
func (h *harness) runPod(ctx context.Context, p podSpec, what string, check func(context.Context, string) error) error {
	created, err := h.createPod(ctx, p)
	if err != nil {
		return err
	}
	d, err := h.waitRunning(ctx, p.name, created, 3*time.Minute)
	if err != nil {
		return err
	}
	if what != "" {
		h.record(what, d)
	}
	return check(ctx, p.name)
}

func scenarioHostAgentRegistered(ctx context.Context, h *harness) error {
	if err := h.startAgent(ctx, ""); err != nil {
		return err
	}
	// The CSIDriver object as deploy/kubernetes/ ships it.
	if _, err := h.kubectl(ctx, "apply", "-f", filepath.Join(h.repo, "deploy", "kubernetes", "csidriver.yaml")); err != nil {
		return err
	}
	h.agentRegistered = true
	return nil
}

func scenarioHostGitRepo(ctx context.Context, h *harness) error {
	return h.runPod(ctx, h.csiGitRepoPod("csi-gitrepo"), "inline CSI gitRepo: created -> Running", h.checkGitRepoLog)
}

func scenarioHostEmptyDir(ctx context.Context, h *harness) error {
	return h.runPod(ctx, csiEmptyDirPod("csi-emptydir"), "inline CSI Memory emptyDir: created -> Running", h.checkEmptyDirLog)
}

func scenarioHostFlocker(ctx context.Context, h *harness) error {
	if err := h.createFlockerClaim(ctx, "uploads"); err != nil {
		return err
	}
	return h.runPod(ctx, flockerPod("csi-flocker", "uploads"), "Flocker PV (stage+publish): created -> Running", h.checkFlockerLog)
}

// scenarioDeletion deletes every pod and checks that no mount is left under
// the kubelet's dir or the agent's root.
func scenarioDeletion(ctx context.Context, h *harness) error {
	if _, err := h.kubectl(ctx, "delete", "pods", "--all", "--grace-period=1", "--wait=true", "--timeout=90s"); err != nil {
		return err
	}
	return h.noMountsLeft(ctx)
}

// noMountsLeft waits briefly for the kubelet to finish tearing down (it
// removes a pod's volumes after the pod object is gone), then fails naming
// every mount left under the kubelet's dir or the agent's root.
func (h *harness) noMountsLeft(ctx context.Context, except ...string) error {
	var left []string
	err := poll(ctx, 60*time.Second, 250*time.Millisecond, "no mount under the kubelet's dir or the agent's root", func() (bool, error) {
		left = nil
		for _, dir := range []string{h.kubeletDir(), h.agentRoot()} {
			m, err := mountsUnder(dir)
			if err != nil {
				return false, err
			}
			for _, mp := range m {
				if !slices.Contains(except, mp) {
					left = append(left, mp)
				}
			}
		}
		return len(left) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("%w: %s", err, strings.Join(left, ", "))
	}
	return nil
}

// csiTargets returns the publish target of every CSI volume of the pod.
func (h *harness) csiTargets(ctx context.Context, pod string) ([]string, error) {
	uid, err := h.kubectl(ctx, "get", "pod", pod, "-o", "jsonpath={.metadata.uid}")
	if err != nil {
		return nil, err
	}
	dirs, err := filepath.Glob(filepath.Join(h.kubeletDir(), "pods", uid, "volumes", "kubernetes.io~csi", "*", "mount"))
	if err != nil || len(dirs) == 0 {
		return nil, fmt.Errorf("pod %s has no CSI publish target: %v", pod, err)
	}
	return dirs, nil
}

// mountedOnce asserts every CSI target of the pod is mounted exactly once.
func (h *harness) mountedOnce(ctx context.Context, pod string) error {
	targets, err := h.csiTargets(ctx, pod)
	if err != nil {
		return err
	}
	var problems []string
	for _, t := range targets {
		m, err := mountsUnder(t)
		if err != nil {
			return err
		}
		n := 0
		for _, mp := range m {
			if mp == t {
				n++
			}
		}
		if n != 1 {
			problems = append(problems, fmt.Sprintf("%s is mounted %d times", t, n))
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// scenarioAgentKilledDuringPublish delays every set-up with a fault script,
// SIGKILLs the agent while the kubelet's NodePublishVolume is in flight, and
// starts it again without faults: the kubelet retries and the pod runs.
func scenarioAgentKilledDuringPublish(ctx context.Context, h *harness) error {
	faults := h.path("faults-delay-setup.yaml")
	if err := os.WriteFile(faults, []byte("setUpStart: |\n  ({delay: \"60s\"})\n"), 0o644); err != nil {
		return err
	}
	h.stopAgent(syscall.SIGTERM)
	if err := h.startAgent(ctx, faults); err != nil {
		return err
	}
	p := csiEmptyDirPod("fault-publish")
	created, err := h.createPod(ctx, p)
	if err != nil {
		return err
	}
	// The kubelet writes vol_data.json beside the target just before it
	// calls NodePublishVolume; the agent then sits in the delayed set-up.
	var uid string
	if err := poll(ctx, 60*time.Second, 100*time.Millisecond, "the kubelet to start publishing", func() (bool, error) {
		if uid == "" {
			uid, _ = h.kubectl(ctx, "get", "pod", p.name, "-o", "jsonpath={.metadata.uid}")
		}
		_, err := os.Stat(filepath.Join(h.kubeletDir(), "pods", uid, "volumes", "kubernetes.io~csi", "cache", "vol_data.json"))
		return uid != "" && err == nil, nil
	}); err != nil {
		return err
	}
	time.Sleep(2 * time.Second)
	h.stopAgent(syscall.SIGKILL)
	if err := h.startAgent(ctx, ""); err != nil {
		return err
	}
	d, err := h.waitRunning(ctx, p.name, created, 3*time.Minute)
	if err != nil {
		return err
	}
	h.record("publish with the agent SIGKILLed: created -> Running", d)
	if err := h.checkEmptyDirLog(ctx, p.name); err != nil {
		return err
	}
	if err := h.mountedOnce(ctx, p.name); err != nil {
		return err
	}
	if _, err := h.kubectl(ctx, "delete", "pod", p.name, "--grace-period=1", "--wait=true", "--timeout=90s"); err != nil {
		return err
	}
	return h.noMountsLeft(ctx)
}

// restartPods are the pods that live through the restarts of scenario 4.
func (h *harness) startRestartPods(ctx context.Context) error {
	if err := h.runPod(ctx, h.csiGitRepoPod("restart-gitrepo"), "", h.checkGitRepoLog); err != nil {
		return err
	}
	if err := h.runPod(ctx, csiEmptyDirPod("restart-emptydir"), "", h.checkEmptyDirLog); err != nil {
		return err
	}
	_, err := h.kubectl(ctx, "exec", "restart-emptydir", "--", "sh", "-c", "echo before-restart > /cache/kept")
	return err
}

// podsIntact checks that the restart pods still run the same containers
// (no restart), see their volumes' content, and that each CSI target is
// mounted once.
func (h *harness) podsIntact(ctx context.Context, before map[string]string) error {
	// Give the restarted component time to reconcile (and to do harm, if
	// it would).
	time.Sleep(5 * time.Second)
	for pod, started := range before {
		now, err := h.containerStarted(ctx, pod)
		if err != nil {
			return err
		}
		if now != started {
			return fmt.Errorf("pod %s's container was restarted: %s, was %s", pod, now, started)
		}
		if err := h.mountedOnce(ctx, pod); err != nil {
			return err
		}
	}
	out, err := h.kubectl(ctx, "exec", "restart-emptydir", "--", "cat", "/cache/kept")
	if err != nil || strings.TrimSpace(out) != "before-restart" {
		return fmt.Errorf("the Memory emptyDir lost its file: %q %v", out, err)
	}
	out, err = h.kubectl(ctx, "exec", "restart-gitrepo", "--", "cat", "/site/index.html")
	if err != nil || strings.TrimSpace(out) != "<h1>Hello from a gitRepo volume</h1>" {
		return fmt.Errorf("the gitRepo volume changed: %q %v", out, err)
	}
	return nil
}

// containerStarted returns the pod's phase, container ID, restart count and
// start time, which stay the same while the container keeps running.
func (h *harness) containerStarted(ctx context.Context, pod string) (string, error) {
	return h.kubectl(ctx, "get", "pod", pod, "-o",
		"jsonpath={.status.phase} {.status.containerStatuses[0].containerID} {.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].state.running.startedAt}")
}

func (h *harness) restartScenario(ctx context.Context, restart func() error) error {
	if _, err := h.containerStarted(ctx, "restart-gitrepo"); err != nil {
		if err := h.startRestartPods(ctx); err != nil {
			return err
		}
	}
	before := map[string]string{}
	for _, pod := range []string{"restart-gitrepo", "restart-emptydir"} {
		s, err := h.containerStarted(ctx, pod)
		if err != nil {
			return err
		}
		if !strings.HasPrefix(s, "Running ") {
			return fmt.Errorf("pod %s is not running before the restart: %s", pod, s)
		}
		before[pod] = s
	}
	if err := restart(); err != nil {
		return err
	}
	return h.podsIntact(ctx, before)
}

func scenarioKubeletRestart(ctx context.Context, h *harness) error {
	return h.restartScenario(ctx, func() error { return h.restartKubelet(ctx) })
}

func scenarioAgentRestart(ctx context.Context, h *harness) error {
	err := h.restartScenario(ctx, func() error {
		h.stopAgent(syscall.SIGTERM)
		return h.startAgent(ctx, "")
	})
	if err != nil {
		return err
	}
	// The pods go; their volumes with them.
	if _, err := h.kubectl(ctx, "delete", "pods", "--all", "--grace-period=1", "--wait=true", "--timeout=90s"); err != nil {
		return err
	}
	return h.noMountsLeft(ctx)
}

// scenarioMigratedGitRepo runs the in-tree gitRepo pod of scenario 5
// rewritten as docs/csi.md says: the same fields as volumeAttributes of an
// inline CSI volume of driver volume-agent.io.
func scenarioMigratedGitRepo(ctx context.Context, h *harness) error {
	p := h.csiGitRepoPod("migrated-gitrepo")
	return h.runPod(ctx, p, "", h.checkGitRepoLog)
}
