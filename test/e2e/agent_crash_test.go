package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/volume-agent/volume-agent/pkg/volumemanager"
	"github.com/volume-agent/volume-agent/test/gitserver"
)

const (
	crashPods       = 100
	crashIterations = 30
	// crashBudget bounds the SIGKILL loop; the iterations left when it runs
	// out are skipped (and logged).
	crashBudget = 150 * time.Second
)

// crashPodManifest is a pod with a disk emptyDir, a tmpfs emptyDir and a
// gitRepo volume.
func crashPodManifest(i int, repoURL string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: crash-%d, namespace: default, uid: crash-%d}
spec:
  volumes:
  - name: scratch
    emptyDir: {}
  - name: cache
    emptyDir: {medium: Memory, sizeLimit: 1Mi}
  - name: src
    gitRepo: {repository: %q, directory: "."}
`, i, i, repoURL)
}

// TestAgentCrashSafety starts the agent on 100 pods (emptyDir on disk and in
// memory, and gitRepo), SIGKILLs it at random moments during set-up and
// tear-down 30 times, restarting it each time and changing the manifests
// between some restarts. At the end every desired volume is ready, nothing
// undesired is mounted or left on disk, and no file that a volume still
// wanted was lost.
func TestAgentCrashSafety(t *testing.T) {
	e := newEnv(t)
	srv := gitRepoForTest(t, "app.git", gitserver.File("README", "hello\n"), gitserver.File("src/main.go", "package main\n"))
	repoURL := srv.GitURL("app.git")
	agentArgs := []string{"--git-allowed-protocols", "git"}

	seed := time.Now().UnixNano()
	t.Logf("random seed %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 0))

	desired := map[int]bool{}
	for i := range crashPods {
		desired[i] = true
		e.writeManifest(fmt.Sprintf("crash-%d.yaml", i), crashPodManifest(i, repoURL))
	}
	// markers are files written into ready disk volumes of pods that have
	// stayed desired since: they must survive.
	markers := map[int]string{}
	nextPod := crashPods

	// toggle removes n desired pods (dropping their markers) and adds n.
	toggle := func(n int) {
		var current []int
		for i := range desired {
			current = append(current, i)
		}
		sort.Ints(current)
		rng.Shuffle(len(current), func(a, b int) { current[a], current[b] = current[b], current[a] })
		for _, i := range current[:n] {
			delete(desired, i)
			delete(markers, i)
			e.removeManifest(fmt.Sprintf("crash-%d.yaml", i))
		}
		for range n {
			desired[nextPod] = true
			e.writeManifest(fmt.Sprintf("crash-%d.yaml", nextPod), crashPodManifest(nextPod, repoURL))
			nextPod++
		}
	}

	deadline := time.Now().Add(crashBudget)
	kills := 0
	for iteration := range crashIterations {
		if time.Now().After(deadline) {
			t.Logf("time budget spent after %d iterations", iteration)
			break
		}
		a := e.start(agentArgs...)
		switch {
		case iteration%5 == 4:
			// Converge, mark the disk volumes, then change the manifests and
			// kill the agent while it tears down and sets up.
			waitAllReady(t, a, desired)
			for i := range desired {
				if _, ok := markers[i]; ok {
					continue
				}
				content := fmt.Sprintf("pod %d, iteration %d", i, iteration)
				if err := os.WriteFile(filepath.Join(volumePath(e, i, "scratch"), "marker"), []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
				markers[i] = content
			}
			toggle(10)
			time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
		default:
			// Kill it at a random moment of its start and set-up.
			time.Sleep(time.Duration(rng.IntN(400)) * time.Millisecond)
		}
		a.kill()
		kills++
		if iteration%7 == 3 {
			// Change the manifests while no agent runs.
			toggle(5)
		}
	}
	t.Logf("%d SIGKILLs, %d desired pods at the end", kills, len(desired))

	a := e.start(agentArgs...)
	waitAllReady(t, a, desired)

	pods, err := a.client.Pods(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, pod := range pods {
		var i int
		if _, err := fmt.Sscanf(string(pod.UID), "crash-%d", &i); err != nil || !desired[i] {
			t.Errorf("undesired pod %s still known: %+v", pod.UID, pod)
		}
	}
	// Every desired volume is ready and has its content; markers survived.
	for i := range desired {
		if data, err := os.ReadFile(filepath.Join(volumePath(e, i, "src"), "README")); err != nil || string(data) != "hello\n" {
			t.Errorf("pod %d: gitRepo content %q, %v", i, data, err)
		}
		if !isTmpfsMount(t, volumePath(e, i, "cache")) {
			t.Errorf("pod %d: cache is not a tmpfs mount", i)
		}
		if want, ok := markers[i]; ok {
			if data, err := os.ReadFile(filepath.Join(volumePath(e, i, "scratch"), "marker")); err != nil || string(data) != want {
				t.Errorf("pod %d: marker %q, %v; want %q", i, data, err, want)
			}
		}
	}
	// Nothing undesired on disk or mounted; no mount stacked. The mounts
	// are each desired pod's tmpfs and its gitRepo volume's overlay (the
	// default cache mode, auto, makes overlays where they work, as here).
	entries, err := os.ReadDir(filepath.Join(e.root, "pods"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(desired) {
		var names []string
		for _, entry := range entries {
			names = append(names, entry.Name())
		}
		t.Errorf("%d pod dirs, want %d: %v", len(entries), len(desired), names)
	}
	seen := map[string]bool{}
	for _, mp := range mountsUnder(t, e.root) {
		if seen[mp.Path] {
			t.Errorf("two mounts at %s", mp.Path)
		}
		seen[mp.Path] = true
		var i int
		if _, err := fmt.Sscanf(strings.TrimPrefix(mp.Path, filepath.Join(e.root, "pods")+"/"), "crash-%d/", &i); err != nil || !desired[i] ||
			!(mp.Path == volumePath(e, i, "cache") && mp.Type == "tmpfs" || mp.Path == volumePath(e, i, "src") && mp.Type == "overlay") {
			t.Errorf("unexpected mount %s (%s)", mp.Path, mp.Type)
		}
	}
	if len(seen) != 2*len(desired) {
		t.Errorf("%d mounts, want a tmpfs and an overlay per desired pod (%d)", len(seen), 2*len(desired))
	}
}

func volumePath(e *env, pod int, volume string) string {
	plugin := "kubernetes.io~empty-dir"
	if volume == "src" {
		plugin = "kubernetes.io~git-repo"
	}
	return filepath.Join(e.root, "pods", fmt.Sprintf("crash-%d", pod), "volumes", plugin, volume)
}

// waitAllReady waits until the agent is ready, knows exactly the desired
// pods, and every volume of each is ready.
func waitAllReady(t *testing.T, a *agent, desired map[int]bool) {
	t.Helper()
	var last string
	err := waitForErr(120*time.Second, func(ctx context.Context) (bool, error) {
		pods, err := a.client.Pods(ctx)
		if err != nil {
			last = err.Error()
			return false, nil
		}
		ready := 0
		for _, pod := range pods {
			if pod.State == volumemanager.PodReady && len(pod.Volumes) == 3 {
				ready++
			} else {
				last = fmt.Sprintf("pod %s: %s %+v", pod.UID, pod.State, pod.Volumes)
			}
		}
		return ready == len(desired) && len(pods) == len(desired) && a.client.Readyz(ctx) == nil, nil
	})
	if err != nil {
		t.Fatalf("not every desired pod became ready: %v; last: %s\nagent stderr (tail):\n%s", err, last, tail(a.output(), 40))
	}
}

func tail(s string, lines int) string {
	parts := strings.Split(s, "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}
