package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// harness is the node plus the servers the scenarios use.
type harness struct {
	*node
	repo string

	agentRegistered bool   // scenario 1 registered the host agent
	gitURL          string // git://127.0.0.1:PORT/example.git, from test/gitserver

	flockerEnv  []string // FLOCKER_CONTROL_SERVICE_* for the agent
	datasetUUID string   // the Flocker dataset "uploads", first on a remote node
}

type scenario struct {
	name string
	run  func(ctx context.Context, h *harness) error
	// keepPods leaves the scenario's pods to the next scenario when it
	// passes; otherwise they are deleted after it.
	keepPods bool
	// needsAgent: not run unless volume-agent is registered.
	needsAgent bool
}

// scenarios run in this order.
var scenarios = []scenario{
	{name: "0 pod without volumes: Running, prints from a real container", run: scenarioPlainPod},
	{name: "5 migration: an in-tree gitRepo volume is refused by this kubelet (FailedMount, plugin disabled)", run: scenarioInTreeGitRepo},
	{name: "1 host process: the kubelet registers volume-agent (CSINode lists it); CSIDriver from deploy/kubernetes", run: scenarioHostAgentRegistered},
	{name: "1 host process: inline CSI gitRepo from a loopback git server shows revision v1.0.0", run: scenarioHostGitRepo, keepPods: true, needsAgent: true},
	{name: "1 host process: inline CSI Memory emptyDir (64Mi, fsGroup, non-root) is a writable tmpfs of that size", run: scenarioHostEmptyDir, keepPods: true, needsAgent: true},
	{name: "1 host process: a Flocker static PV (dataset first on another node) through a PVC shows the dataset's files", run: scenarioHostFlocker, keepPods: true, needsAgent: true},
	{name: "2 deletion: deleting the pods leaves no mount under the kubelet's dir or the agent's root", run: scenarioDeletion, needsAgent: true},
	{name: "5 migration: the same pod rewritten as in docs/csi.md runs and shows the files", run: scenarioMigratedGitRepo, needsAgent: true},
	{name: "4 faults: volume-agent SIGKILLed during a publish: the kubelet retries, the pod runs, nothing leaks", run: scenarioAgentKilledDuringPublish, needsAgent: true},
	{name: "4 faults: kubelet restarted: pods keep running, volumes intact and mounted once", run: scenarioKubeletRestart, keepPods: true, needsAgent: true},
	{name: "4 faults: volume-agent restarted: pods keep running, volumes intact and mounted once; then no mount left", run: scenarioAgentRestart, needsAgent: true},
	{name: "3 DaemonSet: the same three pods with volume-agent deployed by deploy/kubernetes/ from `make image`", run: scenarioDaemonSet, needsAgent: true},
}

func (h *harness) runScenario(ctx context.Context, s scenario) error {
	if s.needsAgent && !h.agentRegistered {
		return errors.New("not run: volume-agent is not registered with the kubelet")
	}
	err := s.run(ctx, h)
	if err != nil {
		// Keep what the node says about the pods for the log.
		if out, derr := h.kubectl(context.Background(), "describe", "pods", "--all-namespaces"); derr == nil {
			_ = os.WriteFile(filepath.Join(h.logDir, fmt.Sprintf("describe-pods-%d.txt", time.Now().Unix())), []byte(out), 0o644)
		}
	}
	if err != nil || !s.keepPods {
		if _, derr := h.kubectl(context.Background(), "delete", "pods", "--all", "--grace-period=1", "--wait=true", "--timeout=90s"); derr != nil && err == nil {
			err = fmt.Errorf("failed to delete the scenario's pods: %w", derr)
		}
	}
	return err
}

// startServers starts the git server and the Flocker emulator on loopback.
func (h *harness) startServers(ctx context.Context) error {
	ready := h.path("gitserver.ready")
	if err := h.start("gitserver", nil, filepath.Join(h.binDir, "gitserver"), "--dir", h.path("git"), "--port", "0", "--ready-file", ready); err != nil {
		return err
	}
	if err := h.waitUp(ctx, "gitserver", 30*time.Second, func() error {
		data, err := os.ReadFile(ready)
		if err != nil {
			return err
		}
		h.gitURL = strings.TrimSpace(strings.SplitN(string(data), "\n", 2)[0])
		return nil
	}); err != nil {
		return err
	}
	return h.startFlocker(ctx)
}

// podSpec is a pod on this node with the host's network and one busybox
// container running script; volumes and mounts are YAML fragments indented
// for their place.
type podSpec struct {
	name            string
	script          string
	volumes         string // items under spec.volumes, indented 2
	mounts          string // items under the container's volumeMounts, indented 4
	securityContext string // the pod's securityContext fields, indented 4
}

func (h *harness) podYAML(p podSpec) string {
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: v1
kind: Pod
metadata:
  name: %s
  namespace: default
spec:
  nodeName: %s
  hostNetwork: true
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  automountServiceAccountToken: false
`, p.name, h.name)
	if p.securityContext != "" {
		fmt.Fprintf(&b, "  securityContext:\n%s\n", p.securityContext)
	}
	fmt.Fprintf(&b, `  containers:
  - name: main
    image: %s
    imagePullPolicy: Never
    command: ["/bin/sh", "-c", %q]
`, busyboxImage, p.script)
	if p.mounts != "" {
		fmt.Fprintf(&b, "    volumeMounts:\n%s\n", p.mounts)
	}
	if p.volumes != "" {
		fmt.Fprintf(&b, "  volumes:\n%s\n", p.volumes)
	}
	return b.String()
}

// createPod creates the pod and returns when the call returned.
func (h *harness) createPod(ctx context.Context, p podSpec) (time.Time, error) {
	created := time.Now()
	if err := h.apply(ctx, h.podYAML(p)); err != nil {
		return created, fmt.Errorf("failed to create pod %s: %w", p.name, err)
	}
	return created, nil
}

// waitRunning waits for the pod's phase to be Running and returns how long
// that took from since.
func (h *harness) waitRunning(ctx context.Context, name string, since time.Time, timeout time.Duration) (time.Duration, error) {
	var phase string
	err := poll(ctx, timeout, 100*time.Millisecond, "pod "+name+" Running", func() (bool, error) {
		out, err := h.kubectl(ctx, "get", "pod", name, "-o", "jsonpath={.status.phase}")
		if err != nil {
			return false, err
		}
		phase = out
		switch phase {
		case "Running":
			return true, nil
		case "Failed", "Succeeded":
			logs, _ := h.kubectl(ctx, "logs", name)
			return false, fmt.Errorf("pod %s is %s; logs: %s", name, phase, logs)
		}
		return false, nil
	})
	if err != nil {
		return 0, fmt.Errorf("%w (phase %q; events: %s)", err, phase, h.events(ctx, name))
	}
	return time.Since(since), nil
}

// events returns the pod's events as "reason: message" lines.
func (h *harness) events(ctx context.Context, pod string) string {
	out, err := h.kubectl(ctx, "get", "events", "--field-selector", "involvedObject.name="+pod,
		"-o", `jsonpath={range .items[*]}{.reason}: {.message}{"\n"}{end}`)
	if err != nil {
		return err.Error()
	}
	return strings.TrimSpace(out)
}

// waitLogs waits until the pod's log contains every one of want.
func (h *harness) waitLogs(ctx context.Context, pod string, want ...string) (string, error) {
	var logs string
	err := poll(ctx, 30*time.Second, 200*time.Millisecond, "the log of pod "+pod, func() (bool, error) {
		out, err := h.kubectl(ctx, "logs", pod)
		if err != nil {
			return false, err
		}
		logs = out
		for _, w := range want {
			if !strings.Contains(out, w) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return logs, fmt.Errorf("%w: want %q in the log, got:\n%s", err, want, logs)
	}
	return logs, nil
}

func scenarioPlainPod(ctx context.Context, h *harness) error {
	p := podSpec{name: "plain", script: "echo hello from $(hostname) in a container; sleep 3600"}
	created, err := h.createPod(ctx, p)
	if err != nil {
		return err
	}
	d, err := h.waitRunning(ctx, p.name, created, 60*time.Second)
	if err != nil {
		return err
	}
	if !h.firstPod {
		h.firstPod = true
		h.record("first pod Running (from node Ready)", time.Since(h.readyAt))
	}
	h.record("pod without volumes: created -> Running", d)
	_, err = h.waitLogs(ctx, p.name, "hello from")
	return err
}

// inTreeGitRepoVolume is the volume both halves of the migration scenario
// start from: an in-tree gitRepo volume of the example repository.
func (h *harness) inTreeGitRepoVolume() string {
	return fmt.Sprintf(`  - name: site
    gitRepo:
      repository: %q
      revision: v1.0.0
      directory: .`, h.gitURL)
}

func scenarioInTreeGitRepo(ctx context.Context, h *harness) error {
	p := podSpec{
		name:    "intree-gitrepo",
		script:  "cat /site/index.html; sleep 3600",
		volumes: h.inTreeGitRepoVolume(),
		mounts:  "    - {name: site, mountPath: /site}",
	}
	if _, err := h.createPod(ctx, p); err != nil {
		return err
	}
	// The kubelet's git-repo plugin is locked off since 1.36: SetUp fails
	// with a FailedMount event naming the feature gate, and the pod never
	// starts.
	var events string
	err := poll(ctx, 60*time.Second, 200*time.Millisecond, "a FailedMount event for the in-tree gitRepo volume", func() (bool, error) {
		events = h.events(ctx, p.name)
		for _, line := range strings.Split(events, "\n") {
			if strings.HasPrefix(line, "FailedMount: ") && strings.Contains(line, "git-repo volume plugin has been disabled") {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("%w; events:\n%s", err, events)
	}
	phase, err := h.kubectl(ctx, "get", "pod", p.name, "-o", "jsonpath={.status.phase}")
	if err != nil {
		return err
	}
	if phase != "Pending" {
		return fmt.Errorf("pod %s with an in-tree gitRepo volume is %s, want Pending", p.name, phase)
	}
	return nil
}
