// Package agent benchmarks the volume-agent daemon, built and run as a user
// runs it: convergence on 1,000 pods written into the manifest directory at
// once and their removal, and a restart over 10,000 ready volumes, with the
// agent's resident memory. Run with `make bench` (root, real mounts).
package agent

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/mount-utils"

	"github.com/volume-agent/volume-agent/pkg/apis/config"
	"github.com/volume-agent/volume-agent/pkg/server"
	volumetesting "github.com/volume-agent/volume-agent/pkg/volume/testing"
	"github.com/volume-agent/volume-agent/pkg/volume/util"
	"github.com/volume-agent/volume-agent/pkg/volumemanager"
	"github.com/volume-agent/volume-agent/test/testbin"
)

var binary string

func TestMain(m *testing.M) { testbin.Main(m, &binary) }

// bench is one benchmark's root and manifest dirs.
type bench struct {
	b         *testing.B
	dir       string
	root      string
	manifests string
	client    *server.Client
	cmd       *exec.Cmd
	done      chan error
}

func newBench(b *testing.B) *bench {
	volumetesting.RequiresRoot(b)
	dir, err := os.MkdirTemp("", "va-bench")
	if err != nil {
		b.Fatal(err)
	}
	x := &bench{b: b, dir: dir, root: filepath.Join(dir, "root"), manifests: filepath.Join(dir, "manifests")}
	x.client = server.NewClient(filepath.Join(x.root, config.DefaultSocketName), time.Minute)
	if err := os.MkdirAll(x.manifests, 0o755); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(x.cleanup)
	return x
}

func (x *bench) cleanup() {
	x.kill()
	// Unmounting with the system calls is faster than a tear-down of
	// thousands of volumes, which is not what is measured.
	volumetesting.UnmountAllBeneath(x.b, util.NewMounter(), x.dir)
	if err := os.RemoveAll(x.dir); err != nil {
		x.b.Errorf("cleanup: %v", err)
	}
}

// start runs the agent with args and waits until its API answers.
func (x *bench) start(args ...string) {
	x.cmd = exec.Command(binary, append([]string{"run", "--root-dir", x.root, "--pod-manifest-path", x.manifests, "-v", "0"}, args...)...)
	x.done = make(chan error, 1)
	if err := x.cmd.Start(); err != nil {
		x.b.Fatal(err)
	}
	go func() { x.done <- x.cmd.Wait() }()
	x.waitFor("the API", time.Minute, func(ctx context.Context) bool { return x.client.Healthz(ctx) == nil })
}

func (x *bench) kill() {
	if x.cmd == nil {
		return
	}
	_ = x.cmd.Process.Kill()
	<-x.done
	x.cmd = nil
}

func (x *bench) stop() {
	_ = x.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-x.done:
	case <-time.After(time.Minute):
		x.b.Fatal("agent did not stop")
	}
	x.cmd = nil
}

func (x *bench) waitFor(what string, timeout time.Duration, cond func(ctx context.Context) bool) {
	x.b.Helper()
	if err := wait.PollUntilContextTimeout(context.Background(), 5*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		return cond(ctx), nil
	}); err != nil {
		x.b.Fatalf("timed out waiting for %s", what)
	}
}

// readyVolumes returns whether the agent is ready and how many volumes are
// ready and known.
func (x *bench) readyVolumes(ctx context.Context) (bool, int, int) {
	status, err := x.client.Status(ctx)
	if err != nil {
		return false, 0, 0
	}
	total := 0
	for _, n := range status.Volumes {
		total += n
	}
	return status.Ready, status.Volumes[volumemanager.StateReady], total
}

// writePods writes n pod manifests, each with a disk and a tmpfs emptyDir,
// in parallel.
func (x *bench) writePods(first, n int) {
	var wg sync.WaitGroup
	const writers = 8
	for w := range writers {
		wg.Go(func() {
			for i := first + w; i < first+n; i += writers {
				content := fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: pod-%d, namespace: bench, uid: bench-%d}
spec:
  volumes:
  - {name: disk, emptyDir: {}}
  - {name: mem, emptyDir: {medium: Memory, sizeLimit: 1Mi}}
`, i, i)
				if err := os.WriteFile(filepath.Join(x.manifests, fmt.Sprintf("pod-%d.yaml", i)), []byte(content), 0o644); err != nil {
					x.b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func (x *bench) removePods() {
	entries, err := os.ReadDir(x.manifests)
	if err != nil {
		x.b.Fatal(err)
	}
	for _, entry := range entries {
		if err := os.Remove(filepath.Join(x.manifests, entry.Name())); err != nil {
			x.b.Fatal(err)
		}
	}
}

func podDirs(root string) int {
	entries, _ := os.ReadDir(filepath.Join(root, "pods"))
	return len(entries)
}

// BenchmarkAgent1000Pods writes 1,000 pods with two emptyDir volumes each
// (one on disk, one tmpfs) into the manifest directory at once, and times
// until the agent is ready with every volume ready; then removes them all
// and times until every volume is torn down and every pod dir removed.
func BenchmarkAgent1000Pods(b *testing.B) {
	const pods, volumes = 1000, 2000
	var setUp, tearDown time.Duration
	for b.Loop() {
		b.StopTimer()
		x := newBench(b)
		x.start()
		b.StartTimer()

		start := time.Now()
		x.writePods(0, pods)
		x.waitFor("every volume ready", 5*time.Minute, func(ctx context.Context) bool {
			ready, n, _ := x.readyVolumes(ctx)
			return ready && n == volumes
		})
		setUp += time.Since(start)

		start = time.Now()
		x.removePods()
		x.waitFor("every volume torn down", 5*time.Minute, func(ctx context.Context) bool {
			_, _, total := x.readyVolumes(ctx)
			return total == 0 && podDirs(x.root) == 0
		})
		tearDown += time.Since(start)

		b.StopTimer()
		x.stop()
		b.StartTimer()
	}
	n := float64(b.N)
	b.ReportMetric(setUp.Seconds()/n, "setup-s")
	b.ReportMetric(tearDown.Seconds()/n, "teardown-s")
	b.ReportMetric(float64(setUp.Microseconds())/n/volumes, "setup-µs/volume")
	b.ReportMetric(float64(tearDown.Microseconds())/n/volumes, "teardown-µs/volume")
}

// BenchmarkAgentRestart10000Volumes sets up 5,000 pods with a disk and a
// tmpfs emptyDir each (10,000 volumes), stops the agent (which leaves them in
// place), and times a restart: rebuilding the state from disk and being
// ready with every volume ready, with no set-up doing real work. It reports
// the agent's resident memory at 10,000 volumes.
func BenchmarkAgentRestart10000Volumes(b *testing.B) {
	const pods, volumes = 5000, 10000
	x := newBench(b)
	x.writePods(0, pods)
	x.start("--workers", "16")
	x.waitFor("10,000 volumes ready", 10*time.Minute, func(ctx context.Context) bool {
		ready, n, _ := x.readyVolumes(ctx)
		return ready && n == volumes
	})
	x.stop()
	if got := len(mountsUnder(b, x.root)); got != pods {
		b.Fatalf("%d mounts after a stop, want %d", got, pods)
	}

	var restart time.Duration
	var rss int64
	for b.Loop() {
		start := time.Now()
		x.start()
		x.waitFor("ready after restart", 5*time.Minute, func(ctx context.Context) bool {
			ready, n, _ := x.readyVolumes(ctx)
			return ready && n == volumes
		})
		restart += time.Since(start)
		b.StopTimer()
		rss = max(rss, residentBytes(b, x.cmd.Process.Pid))
		x.stop()
		b.StartTimer()
	}
	if got := len(mountsUnder(b, x.root)); got != pods {
		b.Errorf("%d mounts after the restarts, want %d: a restart replaced or dropped mounts", got, pods)
	}
	b.ReportMetric(restart.Seconds()/float64(b.N), "restart-s")
	b.ReportMetric(float64(rss)/(1<<20), "rss-MB")
}

// residentBytes returns the resident set size of the process pid.
func residentBytes(b *testing.B, pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb << 10
		}
	}
	b.Fatal("no VmRSS")
	return 0
}

func mountsUnder(b *testing.B, dir string) []mount.MountPoint {
	mps, err := mount.New("").List()
	if err != nil {
		b.Fatal(err)
	}
	var out []mount.MountPoint
	for _, mp := range mps {
		if strings.HasPrefix(mp.Path, dir+"/") {
			out = append(out, mp)
		}
	}
	return out
}
