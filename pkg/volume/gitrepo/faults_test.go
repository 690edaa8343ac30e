package gitrepo

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/mount-utils"
	"k8s.io/utils/clock"
	utilexec "k8s.io/utils/exec"

	"github.com/volume-agent/volume-agent/pkg/volume"
	"github.com/volume-agent/volume-agent/pkg/volume/emptydir"
	volumetesting "github.com/volume-agent/volume-agent/pkg/volume/testing"
	"github.com/volume-agent/volume-agent/test/gitserver"
)

// processesWith returns the pids of live processes whose command line
// contains s.
func processesWith(s string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(cmdline, []byte(s)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// waitFor polls cond every 10ms for up to timeout.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// randomRepo makes a repository of files of random (incompressible) content
// totalling about size bytes.
func randomRepo(t *testing.T, srv *gitserver.Server, name string, size int) {
	t.Helper()
	repo, err := srv.NewRepo(name)
	if err != nil {
		t.Fatal(err)
	}
	var entries []gitserver.Entry
	for i := 0; i*64<<10 < size; i++ {
		data := make([]byte, 64<<10)
		rand.Read(data)
		entries = append(entries, gitserver.Entry{Path: fmt.Sprintf("blob%03d.bin", i), Content: data})
	}
	if _, err := repo.Commit("main", "random", entries...); err != nil {
		t.Fatal(err)
	}
}

func forEachCacheMode(t *testing.T, fn func(t *testing.T, cacheOn bool)) {
	for _, cacheOn := range []bool{false, true} {
		t.Run(fmt.Sprintf("cache=%v", cacheOn), func(t *testing.T) {
			t.Parallel()
			fn(t, cacheOn)
		})
	}
}

func TestServerDownIsTransientAndRetried(t *testing.T) {
	forEachCacheMode(t, func(t *testing.T, cacheOn bool) {
		env := newRealEnv(t, realConfig(cacheOn))
		s := newSampleRepo(t, env.srv, "sample.git")
		src := v1.GitRepoVolumeSource{Repository: env.srv.GitURL("sample.git"), Revision: "dev"}
		env.srv.Down()
		path, err := env.setUp("pod", src, nil)
		if err == nil || volume.IsFinal(err) || volume.IsUncertain(err) {
			t.Fatalf("SetUp() with the server down error = %v (class %v), want a transient error", err, volume.ClassOf(err))
		}
		if !strings.Contains(err.Error(), "Connection refused") {
			t.Errorf("error %q lacks git's message", err)
		}
		assertNothingLeft(t, env, "pod", path)
		if err := env.srv.Up(); err != nil {
			t.Fatal(err)
		}
		// The retry succeeds.
		path = env.mustSetUp(t, "pod", src)
		if got := userGit(t, filepath.Join(path, "sample"), "rev-parse", "HEAD"); got != s.devCommit {
			t.Errorf("HEAD = %s, want %s", got, s.devCommit)
		}
	})
}

func TestUnknownRevisionIsFinal(t *testing.T) {
	forEachCacheMode(t, func(t *testing.T, cacheOn bool) {
		env := newRealEnv(t, realConfig(cacheOn))
		newSampleRepo(t, env.srv, "sample.git")
		for _, rev := range []string{"no-such-branch", "0123456789abcdef0123456789abcdef01234567", "deadbee", "main~9", "HEAD:README.md"} {
			path, err := env.setUp("pod", v1.GitRepoVolumeSource{Repository: env.srv.HTTPURL("sample.git"), Revision: rev}, nil)
			if !volume.IsFinal(err) || !strings.Contains(err.Error(), "unknown revision") || !strings.Contains(err.Error(), rev) {
				t.Errorf("SetUp() at %s error = %v, want a final unknown revision error", rev, err)
			}
			assertNothingLeft(t, env, "pod", path)
		}
	})
}

// TestTimeoutKillsProcessGroup sets a volume up from a server that never
// answers: at the timeout git and its helper (git-remote-http) are killed
// and the staging dir and any half-made mirror are removed.
func TestTimeoutKillsProcessGroup(t *testing.T) {
	forEachCacheMode(t, func(t *testing.T, cacheOn bool) {
		cfg := realConfig(cacheOn)
		cfg.Timeout = 2 * time.Second
		env := newRealEnv(t, cfg)
		newSampleRepo(t, env.srv, "sample.git")
		url := env.srv.HTTPURL("sample.git")
		release := env.srv.Hold()
		defer release()

		type result struct {
			path string
			err  error
		}
		done := make(chan result, 1)
		start := time.Now()
		go func() {
			path, err := env.setUp("pod", v1.GitRepoVolumeSource{Repository: url}, nil)
			done <- result{path, err}
		}()
		// Control: while the request hangs, git and its helper are running.
		if !waitFor(10*time.Second, func() bool { return env.srv.Waiting() > 0 }) {
			t.Fatal("the clone never reached the server")
		}
		if pids := processesWith(env.srv.HTTPAddr()); len(pids) < 2 {
			t.Errorf("found %d processes for the hanging clone, want git and git-remote-http", len(pids))
		}
		var r result
		select {
		case r = <-done:
		case <-time.After(20 * time.Second):
			t.Fatal("SetUp still running 20s after a 2s timeout")
		}
		if elapsed := time.Since(start); elapsed > 10*time.Second {
			t.Errorf("SetUp returned after %v, with a timeout of 2s", elapsed)
		}
		if r.err == nil || volume.IsFinal(r.err) || !strings.Contains(r.err.Error(), "timed out (gitRepo.timeout)") {
			t.Errorf("SetUp() error = %v, want a transient timeout error", r.err)
		}
		if !waitFor(2*time.Second, func() bool { return len(processesWith(env.srv.HTTPAddr())) == 0 }) {
			t.Errorf("processes of the timed-out clone still run: %v", processesWith(env.srv.HTTPAddr()))
		}
		assertNothingLeft(t, env, "pod", r.path)
		assertNoCacheLeftovers(t, env)
	})
}

// assertNoCacheLeftovers checks that no half-made mirror is left in the
// cache.
func assertNoCacheLeftovers(t *testing.T, env *realEnv) {
	t.Helper()
	for _, pattern := range []string{newMirrorPrefix + "*", oldMirrorPrefix + "*", fetchingFileName} {
		if matches, _ := filepath.Glob(filepath.Join(env.cacheDir(), "*", pattern)); len(matches) > 0 {
			t.Errorf("cache leftovers: %v", matches)
		}
	}
}

// TestDiskFull sets a volume up on a ROOT that is a small tmpfs: the clone
// fails cleanly and leaves nothing; and with only the cache full, the volume
// is cloned directly.
func TestDiskFull(t *testing.T) {
	volumetesting.RequiresRoot(t)
	t.Run("ROOT full", func(t *testing.T) {
		forEachCacheMode(t, func(t *testing.T, cacheOn bool) {
			srv := gitserver.StartForTest(t)
			randomRepo(t, srv, "big.git", 3<<20)
			root := t.TempDir()
			volumetesting.Mount(t, "tmpfs", root, "tmpfs", []string{"size=1m"})
			env := &realEnv{t: t, root: root, srv: srv, cfg: realConfig(cacheOn)}
			env.start()
			before := usedBytes(t, root)
			path, err := env.setUp("pod", v1.GitRepoVolumeSource{Repository: srv.GitURL("big.git")}, nil)
			if err == nil || volume.IsUncertain(err) {
				t.Fatalf("SetUp() on a full disk error = %v, want a failure", err)
			}
			if !strings.Contains(err.Error(), "No space left on device") {
				t.Errorf("error %q does not say the disk is full", err)
			}
			assertNothingLeft(t, env, "pod", path)
			assertNoCacheLeftovers(t, env)
			if after := usedBytes(t, root); after > before+64<<10 {
				t.Errorf("tmpfs ROOT uses %d bytes after the failure, %d before", after, before)
			}
		})
	})
	t.Run("cache full falls back to a direct clone", func(t *testing.T) {
		env := newRealEnv(t, realConfig(true))
		randomRepo(t, env.srv, "big.git", 1<<20)
		volumetesting.Mount(t, "tmpfs", env.cacheDir(), "tmpfs", []string{"size=256k"})
		path := env.mustSetUp(t, "pod", v1.GitRepoVolumeSource{Repository: env.srv.GitURL("big.git"), Directory: "."})
		if out := userGit(t, path, "status", "--porcelain"); out != "" {
			t.Errorf("volume not clean: %s", out)
		}
		if matches, _ := filepath.Glob(filepath.Join(env.cacheDir(), "*", mirrorDirName)); len(matches) > 0 {
			t.Errorf("a mirror was made on a full cache: %v", matches)
		}
		assertNoCacheLeftovers(t, env)
	})
}

func usedBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Blocks-st.Bfree) * st.Bsize
}

// TestSizeLimit sets up a repository larger than MaxSizeBytes: the clone is
// stopped, the error is final and names the setting, nothing is left.
func TestSizeLimit(t *testing.T) {
	forEachCacheMode(t, func(t *testing.T, cacheOn bool) {
		cfg := realConfig(cacheOn)
		cfg.MaxSizeBytes = 512 << 10
		env := newRealEnv(t, cfg)
		randomRepo(t, env.srv, "big.git", 2<<20)
		newSampleRepo(t, env.srv, "small.git")
		path, err := env.setUp("big", v1.GitRepoVolumeSource{Repository: env.srv.HTTPURL("big.git")}, nil)
		if !volume.IsFinal(err) || !strings.Contains(err.Error(), "gitRepo.maxSizeBytes") {
			t.Errorf("SetUp() error = %v, want a final error naming gitRepo.maxSizeBytes", err)
		}
		assertNothingLeft(t, env, "big", path)
		assertNoCacheLeftovers(t, env)
		env.mustSetUp(t, "small", v1.GitRepoVolumeSource{Repository: env.srv.HTTPURL("small.git")})
	})
}

// helperEnv is set in the environment of a child test process that sets a
// volume up and is killed during the clone.
const helperEnv = "GITREPO_TEST_HELPER"

// TestHelperSetUp is not a test: run as a child process by
// TestKilledDuringClone, it sets a volume up as an agent would, and is
// killed before it ends.
func TestHelperSetUp(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		t.Skip("helper process for TestKilledDuringClone")
	}
	env := &realEnv{t: t, root: os.Getenv("HELPER_ROOT"), cfg: realConfig(os.Getenv("HELPER_CACHE") == "true")}
	env.host, env.mgr = volumetesting.NewFakeVolumeHost(t, env.root,
		append(ProbeVolumePlugins(env.cfg), emptydir.ProbeVolumePlugins()...),
		volumetesting.FakeHostOptions{Mounter: mount.New(""), Exec: utilexec.New(), Clock: clock.RealClock{}})
	_, err := env.setUp("pod", v1.GitRepoVolumeSource{Repository: os.Getenv("HELPER_URL"), Revision: "main"}, nil)
	t.Fatalf("the helper was not killed during the set-up; it ended with %v", err)
}

// TestKilledDuringClone kills an agent (a child process) while its clone or
// fetch waits on the server, then sets the volume up again in a fresh
// agent: it succeeds, git died with the agent, and nothing of the killed
// set-up is left.
func TestKilledDuringClone(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cacheOn bool
		// warm has the mirror made before the kill, so the kill hits a fetch.
		warm bool
	}{
		{name: "direct clone"},
		{name: "mirror creation", cacheOn: true},
		{name: "mirror fetch", cacheOn: true, warm: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := newRealEnv(t, realConfig(tc.cacheOn))
			s := newSampleRepo(t, env.srv, "sample.git")
			url := env.srv.HTTPURL("sample.git")
			if tc.warm {
				env.mustSetUp(t, "warm", v1.GitRepoVolumeSource{Repository: url})
			}
			newHead, err := s.repo.Commit("main", "third", gitserver.File("c.txt", "c\n"))
			if err != nil {
				t.Fatal(err)
			}

			release := env.srv.Hold()
			defer release()
			child := exec.Command(os.Args[0], "-test.run=^TestHelperSetUp$", "-test.count=1")
			child.Env = append(os.Environ(), helperEnv+"=1", "HELPER_ROOT="+env.root, "HELPER_URL="+url, fmt.Sprintf("HELPER_CACHE=%v", tc.cacheOn))
			var out bytes.Buffer
			child.Stdout, child.Stderr = &out, &out
			if err := child.Start(); err != nil {
				t.Fatal(err)
			}
			if !waitFor(20*time.Second, func() bool { return env.srv.Waiting() > 0 }) {
				child.Process.Kill()
				child.Wait()
				t.Fatalf("the child's clone never reached the server:\n%s", out.String())
			}
			if len(processesWith(env.srv.HTTPAddr())) == 0 {
				t.Error("control: no git process of the child found")
			}
			child.Process.Kill()
			child.Wait()
			// Git dies with the agent (PR_SET_PDEATHSIG); a helper blocked on
			// the network is killed when the next agent builds its first
			// volume, not by its health check.
			env.start()
			if _, err := env.builder("other", v1.GitRepoVolumeSource{Repository: url}); err != nil {
				t.Fatal(err)
			}
			if !waitFor(5*time.Second, func() bool { return len(processesWith(env.srv.HTTPAddr())) == 0 }) {
				t.Errorf("git processes outlived the killed agent: %v", processesWith(env.srv.HTTPAddr()))
			}
			release()
			path := env.mustSetUp(t, "pod", v1.GitRepoVolumeSource{Repository: url, Revision: "main"})
			if got := userGit(t, filepath.Join(path, "sample"), "rev-parse", "HEAD"); got != newHead {
				t.Errorf("HEAD = %s, want %s", got, newHead)
			}
			if _, err := os.Lstat(stagingDir(path)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("staging dir left: %v", err)
			}
			assertNoCacheLeftovers(t, env)
		})
	}
}

// TestOnlyBuildersKillStrays checks that a health check, as `volume-agent
// plugins` runs beside a live agent, kills none of the root's git processes,
// and that the first Builder of an agent does.
func TestOnlyBuildersKillStrays(t *testing.T) {
	env := newRealEnv(t, realConfig(false))
	stray := exec.Command("sleep", "60")
	stray.Env = []string{"GIT_CONFIG_GLOBAL=" + filepath.Join(env.host.GetPluginDir(PluginName), "gitconfig")}
	if err := stray.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { stray.Wait(); close(exited) }()
	t.Cleanup(func() { stray.Process.Kill(); <-exited })

	env.start()
	if health := env.plugin().CheckHealth(t.Context()); !health.Usable {
		t.Fatalf("gitRepo plugin not usable: %s", health.Message)
	}
	select {
	case <-exited:
		t.Fatal("a health check killed a git process of the root")
	case <-time.After(200 * time.Millisecond):
	}
	if _, err := env.builder("pod", v1.GitRepoVolumeSource{Repository: env.url("git", "any.git")}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		t.Fatal("the first Builder did not kill a git process left on the root")
	}
}

// TestStrayKillingSparesLiveAgents checks that the first Builder kills a git
// process of the root whose agent is dead, and none of a live agent's: its
// own (a health check's git version running at the same time) or another
// live process's.
func TestStrayKillingSparesLiveAgents(t *testing.T) {
	env := newRealEnv(t, realConfig(false))
	config := "GIT_CONFIG_GLOBAL=" + filepath.Join(env.host.GetPluginDir(PluginName), "gitconfig")
	start := func(owner string) <-chan struct{} {
		cmd := exec.Command("sleep", "60")
		cmd.Env = []string{config, ownerEnvName + "=" + owner}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		t.Cleanup(func() { cmd.Process.Kill(); <-exited })
		return exited
	}
	own := start(processIdentity(os.Getpid()))
	live := start(processIdentity(os.Getppid()))
	// Pid 1 is alive, but started at another time than this owner says.
	dead := start("1.0")

	env.start()
	if _, err := env.builder("pod", v1.GitRepoVolumeSource{Repository: env.url("git", "any.git")}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-dead:
	case <-time.After(5 * time.Second):
		t.Fatal("the first Builder did not kill a git process of a dead agent")
	}
	select {
	case <-own:
		t.Error("the first Builder killed the agent's own git process")
	case <-live:
		t.Error("the first Builder killed a live process's git process")
	case <-time.After(200 * time.Millisecond):
	}
}
