// Package gitrepo benchmarks making gitRepo volumes of a realistic
// repository served by git daemon on loopback, side by side, at two sizes: a
// 50 MB tree (5,000 commits, 5,000 files of 10 KB) and a 500 MB tree (500
// commits, 5,000 files of 100 KB). The methods:
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
// other; for the 500 MB tree, the methods that write the tree per volume
// make 1 volume only, so that a run stays bounded (20 volumes of 500 MB
// would write 10 GB per method). Reported per volume: the time (s/vol) and
// the disk used (MB/vol: the growth of ROOT outside the cache, not counting
// what a volume shows from a mount's lower layer).
//
// The repositories are generated on the first benchmark that needs them and
// kept for the run; plain go test runs no benchmark and so generates nothing.
// The overlay method needs root. Run:
// go test -bench . -run '^$' -benchtime 1x -count 3 ./test/bench/gitrepo/
package gitrepo

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
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
	name                    string
	commits, files, fileLen int
}

var sizes = []size{
	{name: "50MB", commits: 5000, files: 5000, fileLen: 10 << 10},
	{name: "500MB", commits: 500, files: 5000, fileLen: 100 << 10},
}

// fixture is a served repository and a finished checkout of it, made once
// per test binary.
type fixture struct {
	dir      string
	srv      *gitserver.Server
	url      string
	rev      string
	checkout string
}

var (
	fixturesMu sync.Mutex
	fixtures   = map[string]*fixture{}
)

func TestMain(m *testing.M) {
	code := m.Run()
	for _, f := range fixtures {
		f.srv.Close()
		os.RemoveAll(f.dir)
	}
	os.Exit(code)
}

func getFixture(b *testing.B, sz size) *fixture {
	b.Helper()
	fixturesMu.Lock()
	defer fixturesMu.Unlock()
	if f := fixtures[sz.name]; f != nil {
		return f
	}
	f, err := makeFixture(sz)
	if err != nil {
		b.Fatalf("failed to make the %s benchmark repository: %v", sz.name, err)
	}
	fixtures[sz.name] = f
	return f
}

func makeFixture(sz size) (*fixture, error) {
	dir, err := os.MkdirTemp("", "gitrepo-bench-")
	if err != nil {
		return nil, err
	}
	f := &fixture{dir: dir}
	served := filepath.Join(dir, "served")
	if err := os.Mkdir(served, 0o755); err != nil {
		return nil, err
	}
	repo, err := gitserver.Init(filepath.Join(served, repoName))
	if err != nil {
		return nil, err
	}
	if f.rev, err = repo.Generate(gitserver.GenerateOptions{Commits: sz.commits, Files: sz.files, FileSize: sz.fileLen, Seed: 1}); err != nil {
		return nil, err
	}
	if f.srv, err = gitserver.Start(served, "", ""); err != nil {
		return nil, err
	}
	f.url = f.srv.GitURL(repoName)
	f.checkout = filepath.Join(dir, "checkout")
	if err := kubeletClone(f.url, f.rev, f.checkout); err != nil {
		return nil, err
	}
	return f, nil
}

const repoName = "bench.git"

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

// strategy makes volumes under a root dir. start runs, untimed, before each
// batch and returns the function that makes volume i and returns its path,
// and the function that removes a volume (nil: removing root is enough).
type strategy struct {
	name string
	// perVolumeTree is true for the methods that write the whole tree per
	// volume.
	perVolumeTree bool
	start         func(b *testing.B, f *fixture, root string) (makeVolume func(i int) (string, error), tearDown func(i int) error)
}

func agent(mode string) func(b *testing.B, f *fixture, root string) (func(int) (string, error), func(int) error) {
	return func(b *testing.B, f *fixture, root string) (func(int) (string, error), func(int) error) {
		cfg := gitrepo.DefaultConfig()
		cfg.AllowedProtocols = []string{"git"}
		cfg.Cache.Mode = mode
		mgr := &volume.VolumePluginMgr{}
		host := volume.NewHost(volume.HostConfig{
			Layout: volume.Layout{Root: root}, Mounter: util.NewMounter(), Exec: utilexec.New(), Clock: clock.RealClock{}, NodeName: "bench",
		}, mgr)
		if err := mgr.InitPlugins(append(gitrepo.ProbeVolumePlugins(cfg), emptydir.ProbeVolumePlugins()...), host); err != nil {
			b.Fatal(err)
		}
		plugin, err := mgr.FindPluginByName(gitrepo.PluginName)
		if err != nil {
			b.Fatal(err)
		}
		setUp := func(uid string) (string, error) {
			spec := volume.NewSpecFromVolume(&v1.Volume{Name: "repo", VolumeSource: v1.VolumeSource{GitRepo: &v1.GitRepoVolumeSource{Repository: f.url, Revision: f.rev}}})
			pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: uid, Namespace: "bench", UID: types.UID(uid)}}
			builder, err := plugin.NewBuilder(spec, pod, volume.VolumeOptions{Context: context.Background()})
			if err != nil {
				return "", err
			}
			return builder.GetPath(), builder.SetUp(nil)
		}
		tearDown := func(uid string) error {
			cleaner, err := plugin.NewCleaner("repo", types.UID(uid))
			if err != nil {
				return err
			}
			return cleaner.TearDown()
		}
		// The cache has served the revision twice: it holds the mirror and
		// the finished checkout (or lower layer) volumes are made from.
		for _, uid := range []string{"warm-up-1", "warm-up-2"} {
			if _, err := setUp(uid); err != nil {
				b.Fatal(err)
			}
			if err := tearDown(uid); err != nil {
				b.Fatal(err)
			}
		}
		if health := plugin.(volume.HealthCheckingPlugin).CheckHealth(context.Background()); mode == gitrepo.CacheModeOverlay && !health.Usable {
			b.Fatalf("overlay mode unusable: %s", health.Message)
		}
		return func(i int) (string, error) { return setUp(fmt.Sprintf("pod-%d", i)) },
			func(i int) error { return tearDown(fmt.Sprintf("pod-%d", i)) }
	}
}

var strategies = []strategy{
	{name: "kubelet", perVolumeTree: true, start: func(b *testing.B, f *fixture, root string) (func(int) (string, error), func(int) error) {
		return func(i int) (string, error) {
			dir := filepath.Join(root, fmt.Sprintf("pod-%d", i), "bench")
			return filepath.Dir(dir), kubeletClone(f.url, f.rev, dir)
		}, nil
	}},
	{name: "copy", perVolumeTree: true, start: agent(gitrepo.CacheModeCopy)},
	{name: "overlay", start: agent(gitrepo.CacheModeOverlay)},
	{name: "cp-a", perVolumeTree: true, start: func(b *testing.B, f *fixture, root string) (func(int) (string, error), func(int) error) {
		return func(i int) (string, error) {
			dir := filepath.Join(root, fmt.Sprintf("pod-%d", i))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return "", err
			}
			out, err := exec.Command("cp", "-a", f.checkout, filepath.Join(dir, "bench")).CombinedOutput()
			if err != nil {
				return "", fmt.Errorf("cp -a: %w: %s", err, out)
			}
			return dir, nil
		}, nil
	}},
}

func BenchmarkGitRepo(b *testing.B) {
	for _, sz := range sizes {
		for _, volumes := range []int{1, 20} {
			for _, s := range strategies {
				if volumes > 1 && s.perVolumeTree && sz.name != sizes[0].name {
					continue
				}
				b.Run(fmt.Sprintf("size=%s/%s/volumes=%d", sz.name, s.name, volumes), func(b *testing.B) {
					if s.name == "overlay" && os.Geteuid() != 0 {
						b.Skip("overlay mounts need root")
					}
					runBatch(b, getFixture(b, sz), s, volumes)
				})
			}
		}
	}
}

// runBatch makes b.N batches of volumes with s, each under a new root.
func runBatch(b *testing.B, f *fixture, s strategy, volumes int) {
	var elapsed time.Duration
	var diskPerVolume int64
	for range b.N {
		b.StopTimer()
		root, err := os.MkdirTemp(f.dir, "root-")
		if err != nil {
			b.Fatal(err)
		}
		makeVolume, tearDown := s.start(b, f, root)
		syncDisk()
		before := volumeBytes(b, root)
		b.StartTimer()
		start := time.Now()
		for i := range volumes {
			if _, err := makeVolume(i); err != nil {
				b.Fatal(err)
			}
		}
		elapsed += time.Since(start)
		b.StopTimer()
		diskPerVolume = (volumeBytes(b, root) - before) / int64(volumes)
		if tearDown != nil {
			for i := range volumes {
				if err := tearDown(i); err != nil {
					b.Fatal(err)
				}
			}
		}
		if err := os.RemoveAll(root); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(elapsed.Seconds()/float64(b.N*volumes), "s/vol")
	b.ReportMetric(float64(diskPerVolume)/1e6, "MB/vol")
}

// syncDisk flushes dirty pages, so that one batch's writes do not slow the
// next one down.
func syncDisk() { syscall.Sync() }

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
