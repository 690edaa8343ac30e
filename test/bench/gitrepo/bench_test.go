// Package gitrepo benchmarks making gitRepo volumes of a realistic
// repository (5,000 commits, 5,000 files, a 50 MB tree) served by git daemon
// on loopback, side by side:
//
//   - kubelet: what the kubelet did per volume: git clone, then git checkout
//     and git reset --hard in the clone;
//   - agent-direct: volume-agent with the cache off (a hardened clone);
//   - cold-cache: volume-agent with an empty cache at the start of the batch;
//   - warm-cache: volume-agent with the repository already cached;
//   - cp-a: the floor, cp -a of a finished checkout, .git included.
//
// Each is measured for a batch of 1 and of 20 volumes, made one after the
// other. Reported per volume: the time (s/vol) and the disk used (MB/vol);
// for the cache, the disk the cache takes (cache-MB).
//
// The repository is generated on the first benchmark that needs it (about
// 15 s) and kept for the run; plain go test runs no benchmark and so
// generates nothing. Run: go test -bench . -run '^$' ./test/bench/gitrepo/
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
	"k8s.io/mount-utils"
	"k8s.io/utils/clock"
	utilexec "k8s.io/utils/exec"

	"github.com/volume-agent/volume-agent/pkg/volume"
	"github.com/volume-agent/volume-agent/pkg/volume/emptydir"
	"github.com/volume-agent/volume-agent/pkg/volume/gitrepo"
	"github.com/volume-agent/volume-agent/test/gitserver"
)

// The generated repository.
const (
	commits  = 5000
	files    = 5000
	fileSize = 10 << 10
	repoName = "bench.git"
)

// fixture is the served repository and a finished checkout of it, made once
// per test binary.
type fixture struct {
	dir      string
	srv      *gitserver.Server
	url      string
	rev      string
	checkout string
}

var (
	fixtureOnce sync.Once
	shared      *fixture
	fixtureErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if shared != nil {
		shared.srv.Close()
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

func getFixture(b *testing.B) *fixture {
	b.Helper()
	fixtureOnce.Do(func() { shared, fixtureErr = makeFixture() })
	if fixtureErr != nil {
		b.Fatalf("failed to make the benchmark repository: %v", fixtureErr)
	}
	return shared
}

func makeFixture() (*fixture, error) {
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
	if f.rev, err = repo.Generate(gitserver.GenerateOptions{Commits: commits, Files: files, FileSize: fileSize, Seed: 1}); err != nil {
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
// batch and returns the function that makes volume i and returns its path.
type strategy struct {
	name  string
	cache bool
	start func(b *testing.B, f *fixture, root string) func(i int) (string, error)
}

func agent(cacheOn, warm bool) func(b *testing.B, f *fixture, root string) func(i int) (string, error) {
	return func(b *testing.B, f *fixture, root string) func(i int) (string, error) {
		cfg := gitrepo.DefaultConfig()
		cfg.AllowedProtocols = []string{"git"}
		cfg.Cache.Enabled = cacheOn
		mgr := &volume.VolumePluginMgr{}
		host := volume.NewHost(volume.HostConfig{
			Layout: volume.Layout{Root: root}, Mounter: mount.New(""), Exec: utilexec.New(), Clock: clock.RealClock{}, NodeName: "bench",
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
		if warm {
			// The cache has served the revision twice: it holds the mirror
			// and the finished checkout volumes are copied from.
			for _, uid := range []string{"warm-up-1", "warm-up-2"} {
				if _, err := setUp(uid); err != nil {
					b.Fatal(err)
				}
			}
		}
		return func(i int) (string, error) { return setUp(fmt.Sprintf("pod-%d", i)) }
	}
}

var strategies = []strategy{
	{name: "kubelet", start: func(b *testing.B, f *fixture, root string) func(int) (string, error) {
		return func(i int) (string, error) {
			dir := filepath.Join(root, fmt.Sprintf("pod-%d", i), "bench")
			return filepath.Dir(dir), kubeletClone(f.url, f.rev, dir)
		}
	}},
	{name: "agent-direct", start: agent(false, false)},
	{name: "cold-cache", cache: true, start: agent(true, false)},
	{name: "warm-cache", cache: true, start: agent(true, true)},
	{name: "cp-a", start: func(b *testing.B, f *fixture, root string) func(int) (string, error) {
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
		}
	}},
}

func BenchmarkGitRepo(b *testing.B) {
	f := getFixture(b)
	for _, volumes := range []int{1, 20} {
		for _, s := range strategies {
			b.Run(fmt.Sprintf("%s/volumes=%d", s.name, volumes), func(b *testing.B) {
				var elapsed time.Duration
				var diskPerVolume, cacheBytes int64
				for range b.N {
					b.StopTimer()
					root, err := os.MkdirTemp(f.dir, "root-")
					if err != nil {
						b.Fatal(err)
					}
					makeVolume := s.start(b, f, root)
					syncDisk()
					b.StartTimer()
					start := time.Now()
					paths := make([]string, volumes)
					for i := range volumes {
						if paths[i], err = makeVolume(i); err != nil {
							b.Fatal(err)
						}
					}
					elapsed += time.Since(start)
					b.StopTimer()
					diskPerVolume = diskUsage(b, paths[0])
					if s.cache {
						cacheBytes = diskUsage(b, filepath.Join(root, "plugins", "kubernetes.io~git-repo", "cache"))
					}
					if err := os.RemoveAll(root); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
				}
				b.ReportMetric(elapsed.Seconds()/float64(b.N*volumes), "s/vol")
				b.ReportMetric(float64(diskPerVolume)/1e6, "MB/vol")
				if s.cache {
					b.ReportMetric(float64(cacheBytes)/1e6, "cache-MB")
				}
			})
		}
	}
}

// syncDisk flushes dirty pages, so that one batch's writes do not slow the
// next one down.
func syncDisk() { syscall.Sync() }

// diskUsage returns the bytes the files under dir take on disk.
func diskUsage(b *testing.B, dir string) int64 {
	var total int64
	err := filepath.WalkDir(dir, func(path string, entry fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := entry.Info()
		if err != nil {
			return err
		}
		total += info.Sys().(*syscall.Stat_t).Blocks * 512
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return total
}
