package gitrepo

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
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
	volumetesting "github.com/volume-agent/volume-agent/pkg/volume/testing"
	"github.com/volume-agent/volume-agent/pkg/volume/util"
	"github.com/volume-agent/volume-agent/test/gitserver"
)

// testTimeout bounds every set-up of the real-git tests.
const testTimeout = 30 * time.Second

// realConfig is the plugin configuration of the real-git tests: the test
// server's protocols allowed.
func realConfig(cacheOn bool) Config {
	return Config{
		AllowedProtocols: []string{"git", "http"},
		Timeout:          testTimeout,
		Cache:            CacheConfig{Enabled: cacheOn, Mode: CacheModeCopy},
	}
}

// realEnv is a node with real git, real mounts and a loopback git server.
type realEnv struct {
	t    *testing.T
	root string
	srv  *gitserver.Server
	cfg  Config
	host volume.VolumeHost
	mgr  *volume.VolumePluginMgr
	// mounter is the host's; nil means the agent's, util.NewMounter().
	mounter mount.Interface
}

func newRealEnv(t *testing.T, cfg Config) *realEnv {
	t.Helper()
	e := &realEnv{t: t, root: t.TempDir(), srv: gitserver.StartForTest(t), cfg: cfg}
	t.Cleanup(func() { unmountAllUnder(t, e.root) })
	e.start()
	return e
}

// unmountAllUnder detaches every mount under root, deepest first, so that
// no test leaves a mount behind, whatever it failed at.
func unmountAllUnder(t *testing.T, root string) {
	mounts, err := mount.ParseMountInfo("/proc/self/mountinfo")
	if err != nil {
		t.Errorf("failed to read the mount table: %v", err)
		return
	}
	var points []string
	for _, m := range mounts {
		if strings.HasPrefix(m.MountPoint, root+"/") {
			points = append(points, m.MountPoint)
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(points)))
	for _, p := range points {
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil {
			t.Errorf("failed to unmount %s: %v", p, err)
		}
	}
}

// requireOverlay skips the test unless it runs as root, which overlay
// mounts need.
func requireOverlay(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("overlay mounts need root")
	}
}

// start loads the plugins afresh and checks their health, as an agent start
// does: the check prepares the plugin's dir. A dead agent's git is killed
// later, by the first NewBuilder.
func (e *realEnv) start() {
	mounter := e.mounter
	if mounter == nil {
		mounter = util.NewMounter()
	}
	e.host, e.mgr = volumetesting.NewFakeVolumeHost(e.t, e.root,
		append(ProbeVolumePlugins(e.cfg), emptydir.ProbeVolumePlugins()...),
		volumetesting.FakeHostOptions{Mounter: mounter, Exec: utilexec.New(), Clock: clock.RealClock{}})
	if health := e.plugin().CheckHealth(e.t.Context()); !health.Usable {
		e.t.Fatalf("gitRepo plugin not usable: %s", health.Message)
	}
	// Make the plugin's dir, as the first volume would, so that tests can
	// mount on its cache.
	if err := e.plugin().prepare(); err != nil {
		e.t.Fatal(err)
	}
}

func (e *realEnv) plugin() *plugin {
	p, err := e.mgr.FindPluginByName(PluginName)
	if err != nil {
		e.t.Fatal(err)
	}
	return p.(*plugin)
}

func (e *realEnv) cacheDir() string {
	return filepath.Join(e.host.GetPluginDir(PluginName), "cache")
}

func testPod(uid string) *v1.Pod {
	return &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "pod-" + uid, Namespace: "default", UID: types.UID(uid)}}
}

func gitRepoSpec(name string, src v1.GitRepoVolumeSource) *volume.Spec {
	return volume.NewSpecFromVolume(&v1.Volume{Name: name, VolumeSource: v1.VolumeSource{GitRepo: &src}})
}

// builder returns the Builder of volume "vol" of pod uid.
func (e *realEnv) builder(uid string, src v1.GitRepoVolumeSource) (volume.Builder, error) {
	return e.plugin().NewBuilder(gitRepoSpec("vol", src), testPod(uid), volume.VolumeOptions{Context: e.t.Context()})
}

// setUp sets volume "vol" of pod uid up and returns its path.
func (e *realEnv) setUp(uid string, src v1.GitRepoVolumeSource, fsGroup *int64) (string, error) {
	b, err := e.builder(uid, src)
	if err != nil {
		return "", err
	}
	return b.GetPath(), b.SetUp(fsGroup)
}

func (e *realEnv) mustSetUp(t *testing.T, uid string, src v1.GitRepoVolumeSource) string {
	t.Helper()
	path, err := e.setUp(uid, src, nil)
	if err != nil {
		t.Fatalf("SetUp(%+v) error = %v", src, err)
	}
	return path
}

func (e *realEnv) tearDown(t *testing.T, uid string) {
	t.Helper()
	c, err := e.plugin().NewCleaner("vol", types.UID(uid))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.TearDown(); err != nil {
		t.Fatalf("TearDown() error = %v", err)
	}
}

// metaDir returns the metadata dir of volume "vol" of pod uid.
func (e *realEnv) metaDir(uid string) string {
	return filepath.Join(e.host.GetPodPluginDir(types.UID(uid), PluginName), "vol")
}

// userGit runs git in dir as a user of the volume would (plain git, no
// protective options, but no host config either) and returns its output.
func userGit(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, err := runUserGit(dir, args...)
	if err != nil {
		t.Fatalf("git %s in %s: %v: %s", strings.Join(args, " "), dir, err, out)
	}
	return strings.TrimSpace(out)
}

func runUserGit(dir string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.TempDir(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "LC_ALL=C"}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// sampleRepo is a repository on the test server:
//
//	main: first (README.md, a.txt) <- second (b.txt)
//	dev:  first <- devCommit (dev.txt)
//	tags: v1 (annotated, at first), light (lightweight, at second)
type sampleRepo struct {
	name                     string
	repo                     *gitserver.Repo
	first, second, devCommit string
}

func newSampleRepo(t *testing.T, srv *gitserver.Server, name string) *sampleRepo {
	t.Helper()
	repo, err := srv.NewRepo(name)
	if err != nil {
		t.Fatal(err)
	}
	s := &sampleRepo{name: name, repo: repo}
	must := func(id string, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	s.first = must(repo.Commit("main", "first", gitserver.File("README.md", "# sample\n"), gitserver.File("a.txt", "a\n")))
	s.second = must(repo.Commit("main", "second", gitserver.File("b.txt", "b\n")))
	if err := repo.Branch("dev", s.first); err != nil {
		t.Fatal(err)
	}
	s.devCommit = must(repo.Commit("dev", "dev work", gitserver.File("dev.txt", "dev\n")))
	if err := repo.Tag("v1", s.first, true); err != nil {
		t.Fatal(err)
	}
	if err := repo.Tag("light", s.second, false); err != nil {
		t.Fatal(err)
	}
	return s
}

// url returns the repository's URL over protocol ("git" or "http").
func (e *realEnv) url(protocol, name string) string {
	if protocol == "http" {
		return e.srv.HTTPURL(name)
	}
	return e.srv.GitURL(name)
}
