// Package gitrepo benchmarks making gitRepo volumes of a generated
// repository served by git daemon on loopback, side by side, at two sizes: a
// 50 MB tree of source-like text (5,000 commits, 5,000 files of 10 KB) and a
// 500 MB tree of incompressible files (500 commits, 5,000 files of 100 KB).
// The methods:
//
//   - kubelet: what the kubelet did per volume: git clone, then git checkout
//     and git reset --hard in the clone;
//   - copy: volume-agent with a warm cache in copy mode (a copy of the
//     cache's finished checkout);
//   - overlay: volume-agent with a warm cache in overlay mode (an overlay
//     mount over the cache's checkout), with the agent's mounter;
//   - cp-a: the floor of any copy, cp -a of a finished checkout, .git
//     included.
//
// Each is measured for a batch of 1 and of 20 volumes, made one after the
// other. Reported per volume: the time (s/vol) and the disk used (MB/vol:
// the growth of ROOT outside the cache, not counting what a volume shows
// from a mount's lower layer); and the 1-minute load average at the end of
// the batch (load-avg), since the machine is shared.
//
// One sample is one batch: run with -benchtime 1x. make bench-gitrepo runs
// the batches that write the whole tree for 20 volumes, which take minutes
// each, with a lower -count than the others, so that the whole stays within
// about half an hour.
//
// The repositories, and a finished checkout of each, are generated on the
// first benchmark that needs them and kept in
// $VOLUME_AGENT_CACHE/gitrepo-bench (default ~/.cache/volume-agent), in a
// dir named after the generator's parameters, for the next runs. Everything
// else a run makes is under run-<pid> there and is removed at its end,
// mounts included; a run that was killed is cleaned up by the next one.
// Plain go test runs no benchmark and so generates nothing. The overlay
// method needs root. Run one case, e.g.:
// go test -run '^$' -bench 'GitRepo/size=500MB/overlay/' -benchtime 1x -count 6 ./test/bench/gitrepo/
package gitrepo

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/mount-utils"
	"k8s.io/utils/clock"
	utilexec "k8s.io/utils/exec"

	"github.com/volume-agent/volume-agent/pkg/volume"
	"github.com/volume-agent/volume-agent/pkg/volume/emptydir"
	"github.com/volume-agent/volume-agent/pkg/volume/gitrepo"
	"github.com/volume-agent/volume-agent/pkg/volume/util"
	"github.com/volume-agent/volume-agent/test/gitserver"
)

// size is one generated repository.
type size struct {
	name string
	opts gitserver.GenerateOptions
}

var sizes = []size{
	{name: "50MB", opts: gitserver.GenerateOptions{Commits: 5000, Files: 5000, FileSize: 10 << 10, Content: gitserver.Text, Seed: 1}},
	{name: "500MB", opts: gitserver.GenerateOptions{Commits: 500, Files: 5000, FileSize: 100 << 10, Content: gitserver.Random, Seed: 1}},
}

// fixtureVersion names the generator's output format in the cache's dir
// names: change it when gitserver.Generate or makeFixture makes something
// else from the same options.
const fixtureVersion = "v2"

// key names a size's cached fixture after everything that shapes it.
func (sz size) key() string {
	o := sz.opts
	return fmt.Sprintf("%s-commits%d-files%d-bytes%d-%s-seed%d", fixtureVersion, o.Commits, o.Files, o.FileSize, o.Content, o.Seed)
}

const repoName = "bench.git"

var (
	// benchDir holds the cached fixtures and the run dirs.
	benchDir string
	// runDir holds everything this run makes but the cached fixtures.
	runDir string

	mu       sync.Mutex
	fixtures = map[string]*fixture{}
	agents   = map[string]*agentRoot{}
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	flag.Parse()
	if flag.Lookup("test.bench").Value.String() == "" {
		return m.Run() // no benchmark: nothing to make or remove
	}
	cache := os.Getenv("VOLUME_AGENT_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		cache = filepath.Join(home, ".cache", "volume-agent")
	}
	benchDir = filepath.Join(cache, "gitrepo-bench")
	if err := os.MkdirAll(benchDir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// Mount points are listed with symlinks resolved.
	var err error
	if benchDir, err = filepath.EvalSymlinks(benchDir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	removeStaleRunDirs()
	runDir = filepath.Join(benchDir, fmt.Sprintf("run-%d", os.Getpid()))
	if err := os.Mkdir(runDir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// An interrupted run removes what it made; one killed outright is
	// cleaned up by the next run (removeStaleRunDirs).
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-signals
		if err := removeRunDir(runDir); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
		os.Exit(1)
	}()

	code := m.Run()

	signal.Stop(signals)
	mu.Lock()
	defer mu.Unlock()
	for _, f := range fixtures {
		f.srv.Close()
	}
	if err := removeRunDir(runDir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	return code
}

// removeStaleRunDirs removes the run dirs of runs whose process is gone.
func removeStaleRunDirs() {
	dirs, _ := filepath.Glob(filepath.Join(benchDir, "run-*"))
	for _, dir := range dirs {
		pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(dir), "run-"))
		if err != nil || !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			continue
		}
		if err := removeRunDir(dir); err != nil {
			fmt.Fprintf(os.Stderr, "failed to remove the stale run dir %s: %v\n", dir, err)
		}
	}
}

// removeRunDir unmounts whatever is mounted under dir, deepest first, then
// removes dir. It removes nothing while a mount stays.
func removeRunDir(dir string) error {
	mounts, err := mount.New("").List()
	if err != nil {
		return fmt.Errorf("failed to list mounts: %w", err)
	}
	var under []string
	for _, mp := range mounts {
		if strings.HasPrefix(mp.Path, dir+"/") {
			under = append(under, mp.Path)
		}
	}
	slices.SortFunc(under, func(a, b string) int { return len(b) - len(a) })
	for _, path := range under {
		if err := unix.Unmount(path, 0); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("failed to unmount %s: %w", path, err)
		}
	}
	return os.RemoveAll(dir)
}

// fixture is a served repository and a finished checkout of its revision.
type fixture struct {
	srv      *gitserver.Server
	url      string
	rev      string
	checkout string
}

func getFixture(b *testing.B, sz size) *fixture {
	b.Helper()
	mu.Lock()
	defer mu.Unlock()
	if f := fixtures[sz.name]; f != nil {
		return f
	}
	dir, rev, err := cachedFixture(sz)
	if err != nil {
		b.Fatalf("failed to make the %s benchmark repository: %v", sz.name, err)
	}
	srv, err := gitserver.Start(filepath.Join(dir, "served"), "", "")
	if err != nil {
		b.Fatal(err)
	}
	f := &fixture{srv: srv, url: srv.GitURL(repoName), rev: rev, checkout: filepath.Join(dir, "checkout")}
	fixtures[sz.name] = f
	return f
}

// cachedFixture returns the dir of sz's fixture in the cache, and its
// revision, generating it first if it is not there: served/bench.git, the
// repository; checkout/, a kubelet's clone of it at the revision; rev, the
// revision. It is made under the run dir and renamed into place when
// complete, so the cache never holds a half-made one.
func cachedFixture(sz size) (dir, rev string, err error) {
	dir = filepath.Join(benchDir, sz.key())
	if data, err := os.ReadFile(filepath.Join(dir, "rev")); err == nil {
		return dir, strings.TrimSpace(string(data)), nil
	}
	tmp, err := os.MkdirTemp(runDir, "fixture-")
	if err != nil {
		return "", "", err
	}
	defer os.RemoveAll(tmp)
	served := filepath.Join(tmp, "served", repoName)
	if err := os.Mkdir(filepath.Dir(served), 0o755); err != nil {
		return "", "", err
	}
	repo, err := gitserver.Init(served)
	if err != nil {
		return "", "", err
	}
	start := time.Now()
	if rev, err = repo.Generate(sz.opts); err != nil {
		return "", "", err
	}
	if err := kubeletClone("file://"+served, rev, filepath.Join(tmp, "checkout")); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(filepath.Join(tmp, "rev"), []byte(rev+"\n"), 0o644); err != nil {
		return "", "", err
	}
	if err := os.Rename(tmp, dir); err != nil {
		// Another run made it meanwhile: use that one.
		if _, serr := os.Stat(filepath.Join(dir, "rev")); serr != nil {
			return "", "", err
		}
	}
	fmt.Printf("# generated the %s fixture in %s in %.0f s\n", sz.name, dir, time.Since(start).Seconds())
	return dir, rev, nil
}

// kubeletClone does what the kubelet's gitRepo plugin did: git clone, then
// git checkout and git reset --hard in the clone.
func kubeletClone(url, rev, dir string) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	for _, step := range []struct {
		dir  string
		args []string
	}{
		{filepath.Dir(dir), []string{"clone", "--quiet", "--", url, filepath.Base(dir)}},
		{dir, []string{"checkout", "--quiet", rev}},
		{dir, []string{"reset", "--quiet", "--hard"}},
	} {
		cmd := exec.Command("git", step.args...)
		cmd.Dir = step.dir
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.TempDir(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null"}
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("git %v: %w: %s", step.args, err, out)
		}
	}
	return nil
}

// batch is where one batch of volumes is made: makeVolume makes volume i
// under root, whose growth is the volumes' disk; tearDown removes every
// volume made.
type batch struct {
	root       string
	makeVolume func(i int) error
	tearDown   func() error
}

// method makes batches of volumes; start runs, untimed, before each batch.
type method struct {
	name  string
	start func(b *testing.B, sz size, f *fixture) batch
}

var methods = []method{
	{name: "kubelet", start: func(b *testing.B, _ size, f *fixture) batch {
		return dirBatch(b, func(dir string) error { return kubeletClone(f.url, f.rev, dir) })
	}},
	{name: "copy", start: agentBatch(gitrepo.CacheModeCopy)},
	{name: "overlay", start: agentBatch(gitrepo.CacheModeOverlay)},
	{name: "cp-a", start: func(b *testing.B, _ size, f *fixture) batch {
		return dirBatch(b, func(dir string) error {
			if out, err := exec.Command("cp", "-a", f.checkout, dir).CombinedOutput(); err != nil {
				return fmt.Errorf("cp -a: %w: %s", err, out)
			}
			return nil
		})
	}},
}

// dirBatch is a batch under a new root in which volume i is made by
// makeDir(root/pod-i/bench).
func dirBatch(b *testing.B, makeDir func(dir string) error) batch {
	root, err := os.MkdirTemp(runDir, "batch-")
	if err != nil {
		b.Fatal(err)
	}
	return batch{
		root: root,
		makeVolume: func(i int) error {
			dir := filepath.Join(root, fmt.Sprintf("pod-%d", i))
			if err := os.Mkdir(dir, 0o755); err != nil {
				return err
			}
			return makeDir(filepath.Join(dir, "bench"))
		},
		tearDown: func() error { return os.RemoveAll(root) },
	}
}

// agentRoot is a ROOT of volume-agent's gitRepo plugin in one cache mode
// whose cache is warm: it has served the revision twice, so it holds the
// mirror and the finished checkout (or lower layer) that volumes are made
// from. It is made once per size and mode, and kept for the run.
type agentRoot struct {
	root   string
	plugin volume.VolumePlugin
	spec   *volume.Spec
	pods   int
}

func agentBatch(mode string) func(b *testing.B, sz size, f *fixture) batch {
	return func(b *testing.B, sz size, f *fixture) batch {
		a := getAgentRoot(b, sz, f, mode)
		var made []string
		return batch{
			root: a.root,
			makeVolume: func(int) error {
				a.pods++
				uid := fmt.Sprintf("pod-%d", a.pods)
				made = append(made, uid)
				return a.setUp(uid)
			},
			tearDown: func() error {
				var errs []error
				for _, uid := range made {
					errs = append(errs, a.tearDown(uid))
				}
				return errors.Join(errs...)
			},
		}
	}
}

func getAgentRoot(b *testing.B, sz size, f *fixture, mode string) *agentRoot {
	mu.Lock()
	defer mu.Unlock()
	key := sz.name + "-" + mode
	if a := agents[key]; a != nil {
		return a
	}
	cfg := gitrepo.DefaultConfig()
	cfg.AllowedProtocols = []string{"git"}
	cfg.Cache.Mode = mode
	a := &agentRoot{
		root: filepath.Join(runDir, "agent-"+key),
		spec: volume.NewSpecFromVolume(&v1.Volume{Name: "repo", VolumeSource: v1.VolumeSource{GitRepo: &v1.GitRepoVolumeSource{Repository: f.url, Revision: f.rev}}}),
	}
	mgr := &volume.VolumePluginMgr{}
	host := volume.NewHost(volume.HostConfig{
		Layout: volume.Layout{Root: a.root}, Mounter: util.NewMounter(), Exec: utilexec.New(), Clock: clock.RealClock{}, NodeName: "bench",
	}, mgr)
	if err := mgr.InitPlugins(append(gitrepo.ProbeVolumePlugins(cfg), emptydir.ProbeVolumePlugins()...), host); err != nil {
		b.Fatal(err)
	}
	var err error
	if a.plugin, err = mgr.FindPluginByName(gitrepo.PluginName); err != nil {
		b.Fatal(err)
	}
	for _, uid := range []string{"warm-up-1", "warm-up-2"} {
		if err := a.setUp(uid); err != nil {
			b.Fatal(err)
		}
		if err := a.tearDown(uid); err != nil {
			b.Fatal(err)
		}
	}
	if health := a.plugin.(volume.HealthCheckingPlugin).CheckHealth(context.Background()); mode == gitrepo.CacheModeOverlay && !health.Usable {
		b.Fatalf("overlay mode unusable: %s", health.Message)
	}
	agents[key] = a
	return a
}

func (a *agentRoot) setUp(uid string) error {
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: uid, Namespace: "bench", UID: types.UID(uid)}}
	builder, err := a.plugin.NewBuilder(a.spec, pod, volume.VolumeOptions{Context: context.Background()})
	if err != nil {
		return err
	}
	return builder.SetUp(nil)
}

// tearDown tears volume uid down, then removes its pod's dir, as the
// kubelet does once a pod's volumes are gone.
func (a *agentRoot) tearDown(uid string) error {
	cleaner, err := a.plugin.NewCleaner("repo", types.UID(uid))
	if err != nil {
		return err
	}
	if err := cleaner.TearDown(); err != nil {
		return fmt.Errorf("failed to tear volume %s down: %w", uid, err)
	}
	return os.RemoveAll(filepath.Join(a.root, "pods", uid))
}

func BenchmarkGitRepo(b *testing.B) {
	for _, sz := range sizes {
		for _, volumes := range []int{1, 20} {
			for _, m := range methods {
				b.Run(fmt.Sprintf("size=%s/%s/volumes=%d", sz.name, m.name, volumes), func(b *testing.B) {
					b.StopTimer() // runBatch times the making of volumes only
					if m.name == "overlay" && os.Geteuid() != 0 {
						b.Skip("overlay mounts need root")
					}
					f := getFixture(b, sz)
					var elapsed time.Duration
					var diskPerVolume int64
					for range b.N {
						e, d := runBatch(b, sz, f, m, volumes)
						elapsed += e
						diskPerVolume = d
					}
					b.ReportMetric(elapsed.Seconds()/float64(b.N*volumes), "s/vol")
					b.ReportMetric(float64(diskPerVolume)/1e6, "MB/vol")
					b.ReportMetric(loadAverage(b), "load-avg")
				})
			}
		}
	}
}

// runBatch makes one batch of volumes with m and tears it down (even when
// it fails), and returns the time it took and the disk per volume. Only the
// making is timed.
func runBatch(b *testing.B, sz size, f *fixture, m method, volumes int) (time.Duration, int64) {
	bt := m.start(b, sz, f)
	defer func() {
		if err := bt.tearDown(); err != nil {
			b.Errorf("failed to remove the batch's volumes: %v", err)
		}
	}()
	// Flush the previous batches' writes, so that they do not slow this one
	// down.
	syscall.Sync()
	before := volumeBytes(b, bt.root)
	b.StartTimer()
	start := time.Now()
	for i := range volumes {
		if err := bt.makeVolume(i); err != nil {
			b.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	return elapsed, (volumeBytes(b, bt.root) - before) / int64(volumes)
}

// volumeBytes returns the bytes the files under root take on disk, without
// the cache and without crossing into a mount (an overlay volume's files
// from its lower layer are the cache's, counted once there).
func volumeBytes(b *testing.B, root string) int64 {
	var rootStat syscall.Stat_t
	if err := syscall.Lstat(root, &rootStat); err != nil {
		b.Fatal(err)
	}
	cache := filepath.Join(root, "plugins", "kubernetes.io~git-repo", "cache")
	var total int64
	err := filepath.WalkDir(root, func(path string, entry fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path == cache {
			return filepath.SkipDir
		}
		info, err := entry.Info()
		if err != nil {
			return err
		}
		st := info.Sys().(*syscall.Stat_t)
		if st.Dev != rootStat.Dev {
			if entry.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		total += st.Blocks * 512
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return total
}

// loadAverage returns the 1-minute load average.
func loadAverage(b *testing.B) float64 {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		b.Fatal(err)
	}
	load, err := strconv.ParseFloat(strings.Fields(string(data))[0], 64)
	if err != nil {
		b.Fatal(err)
	}
	return load
}
