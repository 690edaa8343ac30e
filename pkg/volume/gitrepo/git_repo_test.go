package gitrepo

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	utilexec "k8s.io/utils/exec"
	testingexec "k8s.io/utils/exec/testing"

	"github.com/volume-agent/volume-agent/pkg/volume"
	"github.com/volume-agent/volume-agent/pkg/volume/emptydir"
	volumetesting "github.com/volume-agent/volume-agent/pkg/volume/testing"
	"github.com/volume-agent/volume-agent/pkg/volume/util"
)

// wantOptions are the -c options every git command must carry, with the
// default protocols; spelled out here so that any change to them is seen.
var wantOptions = []string{
	"-c", "core.hooksPath=/dev/null",
	"-c", "core.fsmonitor=",
	"-c", "credential.helper=",
	"-c", "transfer.fsckObjects=true",
	"-c", "safe.bareRepository=explicit",
	"-c", "submodule.recurse=false",
	"-c", "gc.auto=0",
	"-c", "maintenance.auto=false",
	"-c", "advice.detachedHead=false",
	"-c", "protocol.allow=never",
	"-c", "protocol.https.allow=always",
	"-c", "protocol.ssh.allow=always",
}

// wantEnv are variables every git command must get.
var wantEnv = []string{
	"LC_ALL=C",
	"GIT_CONFIG_NOSYSTEM=1",
	"GIT_ATTR_NOSYSTEM=1",
	"GIT_TERMINAL_PROMPT=0",
	"GIT_ASKPASS=/bin/false",
	"GIT_PROTOCOL_FROM_USER=0",
	"GIT_LFS_SKIP_SMUDGE=1",
	"GIT_SSH_COMMAND=ssh -o BatchMode=yes -o StrictHostKeyChecking=yes",
}

const (
	testRepo     = "https://github.com/kubernetes/kubernetes"
	testRevision = "2a30ce65c5ab586b98916d83385c5983edd353a1"
)

// expectedCommand is one git command a set-up must run: its argv after
// "git" and the -c options, and its git dir and work tree relative to the
// staging dir ("" for none).
type expectedCommand struct {
	gitDir, workTree string
	args             []string
	// output and err are what the fake command returns.
	output string
	err    error
}

// fakeEnv is a node whose commands go to a FakeExec.
type fakeEnv struct {
	root   string
	fake   *testingexec.FakeExec
	cmds   []*testingexec.FakeCmd
	host   volume.VolumeHost
	plugin volume.VolumePlugin
}

func newFakeEnv(t *testing.T, cfg Config) *fakeEnv {
	t.Helper()
	e := &fakeEnv{root: t.TempDir(), fake: &testingexec.FakeExec{ExactOrder: true}}
	var mgr *volume.VolumePluginMgr
	e.host, mgr = volumetesting.NewFakeVolumeHost(t, e.root,
		append([]volume.VolumePlugin{newPlugin(cfg, nil)}, emptydir.ProbeVolumePlugins()...),
		volumetesting.FakeHostOptions{Exec: e.fake})
	var err error
	if e.plugin, err = mgr.FindPluginByName(PluginName); err != nil {
		t.Fatal(err)
	}
	return e
}

// script makes the FakeExec expect exactly commands (after "git version"),
// each run in the plugin's private home dir. staging is the staging dir the
// relative git dirs and work trees are under.
func (e *fakeEnv) script(version, staging string, commands []expectedCommand) {
	e.add(expectedCommand{args: []string{"version"}, output: version}, "")
	for _, c := range commands {
		e.add(c, staging)
	}
}

func (e *fakeEnv) add(c expectedCommand, staging string) {
	argv := append([]string{"git"}, wantOptions...)
	if c.gitDir != "" {
		argv = append(argv, "--git-dir="+filepath.Join(staging, c.gitDir))
	}
	if c.workTree != "" {
		argv = append(argv, "--work-tree="+filepath.Join(staging, c.workTree))
	}
	for _, a := range c.args {
		argv = append(argv, strings.ReplaceAll(a, "STAGING", staging))
	}
	cmd := &testingexec.FakeCmd{
		CombinedOutputScript: []testingexec.FakeAction{func() ([]byte, []byte, error) { return []byte(c.output), nil, c.err }},
	}
	e.cmds = append(e.cmds, cmd)
	e.fake.CommandScript = append(e.fake.CommandScript, func(name string, args ...string) utilexec.Cmd {
		return testingexec.InitFakeCmd(cmd, argv[0], argv[1:]...)
	})
}

func (e *fakeEnv) home() string {
	return filepath.Join(e.host.GetPluginDir(PluginName), "home")
}

// checkRan checks that every scripted command ran once, with the exact argv
// (checked by ExactOrder), in the private home dir, with a clean
// environment.
func (e *fakeEnv) checkRan(t *testing.T) {
	t.Helper()
	if e.fake.CommandCalls != len(e.fake.CommandScript) {
		t.Errorf("ran %d commands, want %d", e.fake.CommandCalls, len(e.fake.CommandScript))
	}
	for i, cmd := range e.cmds[:e.fake.CommandCalls] {
		if want := []string{e.home()}; !slices.Equal(cmd.Dirs, want) {
			t.Errorf("command %d %v ran in %v, want %v", i, cmd.Argv, cmd.Dirs, want)
		}
		for _, v := range wantEnv {
			if !slices.Contains(cmd.Env, v) {
				t.Errorf("command %d lacks %s in its environment %v", i, v, cmd.Env)
			}
		}
		for _, v := range cmd.Env {
			if strings.HasPrefix(v, "GIT_DIR=") || strings.HasPrefix(v, "GIT_WORK_TREE=") || strings.HasPrefix(v, "GIT_EXEC_PATH=") {
				t.Errorf("command %d inherited %s", i, v)
			}
		}
	}
}

const gitVersionOutput = "git version 2.39.5\n"

// TestKubeletCases runs the kubelet's gitRepo unit cases: the exact git
// commands, their dirs, the volume path, the wrapped emptyDir's metadata and
// tear-down.
func TestKubeletCases(t *testing.T) {
	// Inherited GIT_* variables must not reach git.
	t.Setenv("GIT_DIR", "/evil")
	t.Setenv("GIT_WORK_TREE", "/evil")
	t.Setenv("GIT_EXEC_PATH", "/evil")

	cases := []struct {
		name     string
		source   v1.GitRepoVolumeSource
		commands []expectedCommand
		// badField is the field an invalid spec's error names.
		badField string
	}{
		{
			name:   "target-dir",
			source: v1.GitRepoVolumeSource{Repository: testRepo, Revision: testRevision, Directory: "target_dir"},
			commands: []expectedCommand{
				{args: []string{"clone", "--quiet", "--no-checkout", "--", testRepo, "STAGING/target_dir"}},
				{gitDir: "target_dir/.git", workTree: "target_dir", args: []string{"checkout", "--quiet", "--force", testRevision, "--"}},
				{gitDir: "target_dir/.git", workTree: "target_dir", args: []string{"reset", "--quiet", "--hard"}},
			},
		},
		{
			name:     "target-dir-no-revision",
			source:   v1.GitRepoVolumeSource{Repository: testRepo, Directory: "target_dir"},
			commands: []expectedCommand{{args: []string{"clone", "--quiet", "--", testRepo, "STAGING/target_dir"}}},
		},
		{
			name:     "only-git-clone",
			source:   v1.GitRepoVolumeSource{Repository: testRepo},
			commands: []expectedCommand{{args: []string{"clone", "--quiet", "--", testRepo, "STAGING/kubernetes"}}},
		},
		{
			name:   "no-target-dir",
			source: v1.GitRepoVolumeSource{Repository: testRepo, Revision: testRevision},
			commands: []expectedCommand{
				{args: []string{"clone", "--quiet", "--no-checkout", "--", testRepo, "STAGING/kubernetes"}},
				{gitDir: "kubernetes/.git", workTree: "kubernetes", args: []string{"checkout", "--quiet", "--force", testRevision, "--"}},
				{gitDir: "kubernetes/.git", workTree: "kubernetes", args: []string{"reset", "--quiet", "--hard"}},
			},
		},
		{
			name:   "current-dir",
			source: v1.GitRepoVolumeSource{Repository: testRepo, Revision: testRevision, Directory: "."},
			commands: []expectedCommand{
				{args: []string{"clone", "--quiet", "--no-checkout", "--", testRepo, "STAGING"}},
				{gitDir: ".git", workTree: ".", args: []string{"checkout", "--quiet", "--force", testRevision, "--"}},
				{gitDir: ".git", workTree: ".", args: []string{"reset", "--quiet", "--hard"}},
			},
		},
		{
			name:   "current-dir-mess",
			source: v1.GitRepoVolumeSource{Repository: testRepo, Revision: testRevision, Directory: "./."},
			commands: []expectedCommand{
				{args: []string{"clone", "--quiet", "--no-checkout", "--", testRepo, "STAGING"}},
				{gitDir: ".git", workTree: ".", args: []string{"checkout", "--quiet", "--force", testRevision, "--"}},
				{gitDir: ".git", workTree: ".", args: []string{"reset", "--quiet", "--hard"}},
			},
		},
		{name: "invalid-repository", source: v1.GitRepoVolumeSource{Repository: "--foo"}, badField: "gitRepo.repository"},
		{name: "invalid-revision", source: v1.GitRepoVolumeSource{Repository: testRepo, Revision: "--bar"}, badField: "gitRepo.revision"},
		{name: "invalid-directory", source: v1.GitRepoVolumeSource{Repository: testRepo, Directory: "-b"}, badField: "gitRepo.directory"},
		{name: "invalid-revision-directory-combo", source: v1.GitRepoVolumeSource{Repository: testRepo, Revision: "main", Directory: "foo/bar"}, badField: "gitRepo.directory"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := newFakeEnv(t, Config{})
			pod := testPod("uid-" + tc.name)
			builder, err := env.plugin.NewBuilder(gitRepoSpec("vol1", tc.source), pod, volume.VolumeOptions{Context: t.Context()})
			if tc.badField != "" {
				if err == nil || !volume.IsFinal(err) || !strings.Contains(err.Error(), tc.badField) {
					t.Fatalf("NewBuilder() error = %v, want a final error naming %s", err, tc.badField)
				}
				if env.fake.CommandCalls != 0 {
					t.Errorf("ran %d commands for an invalid spec", env.fake.CommandCalls)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewBuilder() error = %v", err)
			}
			path := builder.GetPath()
			if want := filepath.Join("pods", "uid-"+tc.name, "volumes", "kubernetes.io~git-repo", "vol1"); !strings.HasSuffix(path, want) {
				t.Errorf("path = %s, want suffix %s", path, want)
			}
			env.script(gitVersionOutput, stagingDir(path), tc.commands)
			if err := builder.SetUp(nil); err != nil {
				t.Fatalf("SetUp() error = %v", err)
			}
			env.checkRan(t)
			wrappedMeta := filepath.Join(env.host.GetPodPluginDir(pod.UID, "kubernetes.io/empty-dir"), "wrapped_vol1")
			if _, err := os.Stat(wrappedMeta); err != nil {
				t.Errorf("wrapped emptyDir metadata dir: %v", err)
			}
			if !util.IsReady(filepath.Join(env.host.GetPodPluginDir(pod.UID, PluginName), "vol1")) {
				t.Error("volume not marked ready")
			}
			// A second SetUp of a ready volume runs nothing.
			if err := builder.SetUp(nil); err != nil {
				t.Errorf("second SetUp() error = %v", err)
			}
			env.checkRan(t)

			cleaner, err := env.plugin.NewCleaner("vol1", pod.UID)
			if err != nil {
				t.Fatal(err)
			}
			if err := cleaner.TearDown(); err != nil {
				t.Fatalf("TearDown() error = %v", err)
			}
			if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("volume dir %s still exists after TearDown (%v)", path, err)
			}
		})
	}
}

// TestFailedCommands checks the error classes and messages of failed git
// commands, and that a failed set-up leaves nothing behind.
func TestFailedCommands(t *testing.T) {
	const secretRepo = "https://user:s3cr3t-token@example.com/org/repo.git"
	exit128 := testingexec.FakeExitError{Status: 128}
	cases := []struct {
		name     string
		source   v1.GitRepoVolumeSource
		version  string
		commands []expectedCommand
		final    bool
		// want are in the error; notWant are not.
		want, notWant []string
	}{
		{
			name:    "network failure is transient, with git's message redacted",
			source:  v1.GitRepoVolumeSource{Repository: secretRepo},
			version: gitVersionOutput,
			commands: []expectedCommand{{args: []string{"clone", "--quiet", "--", secretRepo, "STAGING/repo"}, err: exit128,
				output: "Cloning into 'repo'...\nfatal: unable to access 'https://user:s3cr3t-token@example.com/org/repo.git/': Could not resolve host: example.com\n"}},
			want:    []string{"Could not resolve host", "https://xxxxx@example.com/org/repo.git"},
			notWant: []string{"s3cr3t-token", "user:"},
		},
		{
			name:    "unknown revision is final",
			source:  v1.GitRepoVolumeSource{Repository: testRepo, Revision: "no-such-branch"},
			version: gitVersionOutput,
			commands: []expectedCommand{
				{args: []string{"clone", "--quiet", "--no-checkout", "--", testRepo, "STAGING/kubernetes"}},
				{gitDir: "kubernetes/.git", workTree: "kubernetes", args: []string{"checkout", "--quiet", "--force", "no-such-branch", "--"}, err: exit128,
					output: "fatal: invalid reference: no-such-branch\n"},
			},
			final: true,
			want:  []string{"unknown revision", "no-such-branch"},
		},
		{
			name:    "git older than the minimum is final and runs nothing else",
			source:  v1.GitRepoVolumeSource{Repository: testRepo},
			version: "git version 2.20.1\n",
			final:   true,
			want:    []string{"git 2.20.1 is older than 2.30.0", "gitRepo.minGitVersion"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := newFakeEnv(t, Config{})
			pod := testPod("uid")
			builder, err := env.plugin.NewBuilder(gitRepoSpec("vol1", tc.source), pod, volume.VolumeOptions{Context: t.Context()})
			if err != nil {
				t.Fatal(err)
			}
			env.script(tc.version, stagingDir(builder.GetPath()), tc.commands)
			err = builder.SetUp(nil)
			if err == nil {
				t.Fatal("SetUp() succeeded")
			}
			if volume.IsFinal(err) != tc.final || volume.IsUncertain(err) {
				t.Errorf("SetUp() error class = %v, want final=%v: %v", volume.ClassOf(err), tc.final, err)
			}
			for _, s := range tc.want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q lacks %q", err, s)
				}
			}
			for _, s := range tc.notWant {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error %q contains %q", err, s)
				}
			}
			env.checkRan(t)
			path := builder.GetPath()
			wrappedMeta := filepath.Join(env.host.GetPodPluginDir(pod.UID, "kubernetes.io/empty-dir"), "wrapped_vol1")
			for _, p := range []string{path, stagingDir(path), wrappedMeta} {
				if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("%s left after a failed SetUp (%v)", p, err)
				}
			}
			if util.IsReady(filepath.Join(env.host.GetPodPluginDir(pod.UID, PluginName), "vol1")) {
				t.Error("failed volume marked ready")
			}
		})
	}
}

func TestCheckHealth(t *testing.T) {
	for _, tc := range []struct {
		version    string
		usable     bool
		gitVersion string
	}{
		{version: "git version 2.39.5\n", usable: true, gitVersion: "2.39.5"},
		{version: "git version 2.45.1.windows.1\n", usable: true, gitVersion: "2.45.1"},
		{version: "git version 2.29.9\n", usable: false, gitVersion: "2.29.9"},
	} {
		env := newFakeEnv(t, Config{})
		env.script(tc.version, "", nil)
		// Prepared, as after a first volume: git runs in the plugin's home.
		if err := env.plugin.(*plugin).prepare(); err != nil {
			t.Fatal(err)
		}
		health := env.plugin.(volume.HealthCheckingPlugin).CheckHealth(context.Background())
		if health.Usable != tc.usable || health.Details["gitVersion"] != tc.gitVersion || health.Details["minGitVersion"] != DefaultMinGitVersion {
			t.Errorf("CheckHealth() with %q = %+v", tc.version, health)
		}
		env.checkRan(t)
	}
	// No git at all.
	env := newFakeEnv(t, Config{})
	env.add(expectedCommand{args: []string{"version"}, err: utilexec.ErrExecutableNotFound}, "")
	if health := env.plugin.(volume.HealthCheckingPlugin).CheckHealth(context.Background()); health.Usable || !strings.Contains(health.Message, "failed to run git") {
		t.Errorf("CheckHealth() without git = %+v", health)
	}
}

func TestInitRejectsBadConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{AllowedProtocols: []string{"https", "ext"}}, `gitRepo.allowedProtocols: unsupported protocol "ext"`},
		{Config{Timeout: -1}, "gitRepo.timeout"},
		{Config{MaxSizeBytes: -1}, "gitRepo.maxSizeBytes"},
		{Config{Cache: CacheConfig{MaxBytes: -5}}, "gitRepo.cache.maxBytes"},
		{Config{MinGitVersion: "two"}, `gitRepo.minGitVersion: "two"`},
	} {
		mgr := &volume.VolumePluginMgr{}
		host := volume.NewHost(volume.HostConfig{Layout: volume.Layout{Root: t.TempDir()}}, mgr)
		err := mgr.InitPlugins(ProbeVolumePlugins(tc.cfg), host)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("InitPlugins(%+v) error = %v, want it to contain %q", tc.cfg, err, tc.want)
		}
		if _, err := mgr.FindPluginByName(PluginName); err == nil {
			t.Errorf("plugin with %+v was loaded", tc.cfg)
		}
	}
}

func TestValidateSpec(t *testing.T) {
	cfg, _, err := Config{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	withGit, _, _ := Config{AllowedProtocols: []string{"https", "git", "file"}}.withDefaults()
	path := field.NewPath("spec", "volumes").Index(2).Child("gitRepo")
	cases := []struct {
		name   string
		cfg    Config
		source v1.GitRepoVolumeSource
		// want is every field error expected, as "<field>: <part of its
		// message>"; nil for a valid source.
		want []string
	}{
		{name: "https URL", source: v1.GitRepoVolumeSource{Repository: "https://example.com/org/repo.git"}},
		{name: "ssh URL", source: v1.GitRepoVolumeSource{Repository: "ssh://git@example.com/org/repo.git", Revision: "v1.2.3", Directory: "src"}},
		{name: "scp-like", source: v1.GitRepoVolumeSource{Repository: "git@example.com:org/repo.git", Revision: "feature/x-1"}},
		{name: "full id", source: v1.GitRepoVolumeSource{Repository: "https://example.com/r", Revision: testRevision, Directory: "."}},
		{name: "repository required", source: v1.GitRepoVolumeSource{}, want: []string{"repository: Required value"}},
		{name: "leading dash in every field", source: v1.GitRepoVolumeSource{Repository: "--upload-pack=touch /tmp/x", Revision: "--output=/tmp/x", Directory: "-b"},
			want: []string{"repository: Invalid value: \"--upload-pack=touch /tmp/x\": must not start with '-'", "revision: Invalid value: \"--output=/tmp/x\": must not start with '-'", "directory: Invalid value: \"-b\": must not start with '-'"}},
		{name: "local path", source: v1.GitRepoVolumeSource{Repository: "/var/lib/volume-agent/pods/other/volumes/kubernetes.io~git-repo/vol"},
			want: []string{`repository: Invalid value: "/var/lib/volume-agent/pods/other/volumes/kubernetes.io~git-repo/vol": a local path or file:// URL (protocol "file") is not allowed on this node; allowed protocols (gitRepo.allowedProtocols): https, ssh`}},
		{name: "relative local path", source: v1.GitRepoVolumeSource{Repository: "../other"}, want: []string{`repository: protocol "file"`}},
		{name: "file URL", source: v1.GitRepoVolumeSource{Repository: "file:///srv/repo.git"}, want: []string{`repository: Invalid value: "file:///srv/repo.git": a local path or file:// URL`}},
		{name: "file URL allowed by config", cfg: withGit, source: v1.GitRepoVolumeSource{Repository: "file:///srv/repo.git"}},
		{name: "git protocol not allowed by default", source: v1.GitRepoVolumeSource{Repository: "git://example.com/r.git"}, want: []string{`repository: Invalid value: "git://example.com/r.git": protocol "git" is not allowed`}},
		{name: "git protocol allowed", cfg: withGit, source: v1.GitRepoVolumeSource{Repository: "git://example.com/r.git"}},
		{name: "ext transport always refused", cfg: withGit, source: v1.GitRepoVolumeSource{Repository: "ext::sh -c touch% /tmp/pwned"}, want: []string{"repository: Invalid value"}},
		{name: "ext transport without spaces", cfg: withGit, source: v1.GitRepoVolumeSource{Repository: "ext::sh"}, want: []string{`repository: protocol "ext" is not allowed`}},
		{name: "credentials are redacted", source: v1.GitRepoVolumeSource{Repository: "http://user:pw@example.com/r"},
			want: []string{`repository: Invalid value: "http://xxxxx@example.com/r": protocol "http" is not allowed`}},
		{name: "ssh host starting with dash", source: v1.GitRepoVolumeSource{Repository: "ssh://-oProxyCommand=touch%20x/r"}, want: []string{"repository: Invalid value"}},
		{name: "scp-like host starting with dash", source: v1.GitRepoVolumeSource{Repository: "git@-oProxyCommand=x:r"}, want: []string{"repository: host and user must not start with '-'"}},
		{name: "newline in repository", source: v1.GitRepoVolumeSource{Repository: "https://example.com/r\nprotocol=https"}, want: []string{"repository: control characters"}},
		{name: "absolute directory", source: v1.GitRepoVolumeSource{Repository: "https://example.com/r", Directory: "/etc"}, want: []string{`directory: Invalid value: "/etc": must be a relative path`}},
		{name: "dot-dot directory", source: v1.GitRepoVolumeSource{Repository: "https://example.com/r", Directory: ".."}, want: []string{`directory: Invalid value: "..": must not contain '..'`}},
		{name: "nested dot-dot directory", source: v1.GitRepoVolumeSource{Repository: "https://example.com/r", Directory: "a/../.."}, want: []string{"directory: must not contain '..'"}},
		{name: "CVE-2024-10220 directory", source: v1.GitRepoVolumeSource{Repository: "https://example.com/r", Revision: "main", Directory: "x/.git"}, want: []string{`directory: Invalid value: "x/.git": must not contain '.git'`}},
		{name: ".GIT directory", source: v1.GitRepoVolumeSource{Repository: "https://example.com/r", Directory: ".GIT"}, want: []string{"directory: must not contain '.git'"}},
		{name: ".git. directory", source: v1.GitRepoVolumeSource{Repository: "https://example.com/r", Directory: ".git."}, want: []string{"directory: must not contain '.git'"}},
		{name: "nested directory", source: v1.GitRepoVolumeSource{Repository: "https://example.com/r", Directory: "a/b"}, want: []string{"directory: must be a single directory name"}},
		{name: "backslash directory", source: v1.GitRepoVolumeSource{Repository: "https://example.com/r", Directory: `a\b`}, want: []string{`directory: must not contain '\'`}},
		{name: "repository whose name is .git", source: v1.GitRepoVolumeSource{Repository: "https://example.com/.git.git"}, want: []string{"repository: cannot derive a directory name"}},
		{name: "repository with only a host", source: v1.GitRepoVolumeSource{Repository: "https://example.com/"}},
		{name: "revision with a space", source: v1.GitRepoVolumeSource{Repository: "https://example.com/r", Revision: "a b"}, want: []string{"revision: Invalid value: \"a b\": must not contain whitespace"}},
		{name: "revision with a newline", source: v1.GitRepoVolumeSource{Repository: "https://example.com/r", Revision: "main\n--upload-pack=x"}, want: []string{"revision: must not contain whitespace or control characters"}},
		{name: "revision ancestor", source: v1.GitRepoVolumeSource{Repository: "https://example.com/r", Revision: "main~1"}},
		{name: "revision parent of HEAD", source: v1.GitRepoVolumeSource{Repository: "https://example.com/r", Revision: "HEAD^"}},
		{name: "revision peeled", source: v1.GitRepoVolumeSource{Repository: "https://example.com/r", Revision: "v1^{commit}"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := cfg
			if tc.cfg.AllowedProtocols != nil {
				c = tc.cfg
			}
			errs := validateSource(&tc.source, c, path)
			if tc.want == nil {
				if len(errs) > 0 {
					t.Errorf("unexpected errors: %v", errs)
				}
				return
			}
			if len(errs) == 0 {
				t.Fatalf("no error for %+v", tc.source)
			}
			all := errs.ToAggregate().Error()
			if len(tc.want) > 0 && len(errs) != len(tc.want) {
				t.Errorf("got %d errors, want %d: %v", len(errs), len(tc.want), all)
			}
			for _, w := range tc.want {
				// "<field>: <part of the message>"
				name, part, _ := strings.Cut(w, ": ")
				found := false
				for _, e := range errs {
					found = found || e.Field == "spec.volumes[2].gitRepo."+name && strings.Contains(e.Error(), part)
				}
				if !found {
					t.Errorf("errors %q lack one on %s containing %q", all, name, part)
				}
			}
		})
	}
}

func TestDefaultDirectory(t *testing.T) {
	for repo, want := range map[string]string{
		"https://github.com/kubernetes/kubernetes":  "kubernetes",
		"https://github.com/kubernetes/kubernetes/": "kubernetes",
		"https://example.com/org/repo.git":          "repo",
		"https://example.com/org/repo/.git":         "repo",
		"git@example.com:org/repo.git":              "repo",
		"example.com:repo":                          "repo",
		"ssh://git@example.com:2222/repo":           "repo",
		"https://user:pw@example.com":               "example.com",
		"git://example.com:9418":                    "example.com",
	} {
		if got := defaultDirectory(repo); got != want {
			t.Errorf("defaultDirectory(%q) = %q, want %q", repo, got, want)
		}
	}
}

func TestRepositoryProtocol(t *testing.T) {
	for repo, want := range map[string]string{
		"https://example.com/r":     "https",
		"HTTP://example.com/r":      "http",
		"git://example.com/r":       "git",
		"ssh://example.com/r":       "ssh",
		"git+ssh://example.com/r":   "ssh",
		"git@example.com:r":         "ssh",
		"[::1]:r":                   "ssh",
		"file:///srv/r":             "file",
		"/srv/r":                    "file",
		"./r":                       "file",
		"r":                         "file",
		"dir/with:colon":            "file",
		"ext::sh -c x":              "ext",
		"fd::3":                     "fd",
		"ftp://example.com/r":       "ftp",
		"persistent-https://host/r": "persistent-https",
	} {
		got, err := repositoryProtocol(repo)
		if err != nil || got != want {
			t.Errorf("repositoryProtocol(%q) = %q, %v; want %q", repo, got, err, want)
		}
	}
}

func TestNormalizeURL(t *testing.T) {
	same := [][]string{
		{"https://Example.COM/org/repo", "https://example.com:443/org/repo/", "HTTPS://example.com/org/repo"},
		{"git://127.0.0.1:9418/r.git", "git://127.0.0.1/r.git"},
		{"git@Example.com:org/r.git", "git@example.com:org/r.git/"},
	}
	for _, group := range same {
		for _, u := range group[1:] {
			if normalizeURL(u) != normalizeURL(group[0]) {
				t.Errorf("normalizeURL(%q) = %q, want %q", u, normalizeURL(u), normalizeURL(group[0]))
			}
		}
	}
	different := [][2]string{
		{"https://example.com/org/repo", "https://example.com/org/repo.git"},
		{"https://a:token1@example.com/r", "https://a:token2@example.com/r"},
		{"https://example.com/r", "https://user@example.com/r"},
		{"https://example.com/r", "http://example.com/r"},
		{"Git@example.com:r", "git@example.com:r"},
	}
	for _, pair := range different {
		if normalizeURL(pair[0]) == normalizeURL(pair[1]) {
			t.Errorf("normalizeURL(%q) == normalizeURL(%q)", pair[0], pair[1])
		}
	}
}

func TestRedact(t *testing.T) {
	repo := "https://deploy:p%40ss-w0rd@example.com/r.git"
	msg := "fatal: Authentication failed for 'https://deploy:p%40ss-w0rd@example.com/r.git/' (user deploy, password p@ss-w0rd)"
	got := redactMessage(msg, repo)
	for _, secret := range []string{"p%40ss-w0rd", "p@ss-w0rd", "deploy"} {
		if strings.Contains(got, secret) {
			t.Errorf("redactMessage() = %q still contains %q", got, secret)
		}
	}
	if !strings.Contains(got, "https://xxxxx@example.com/r.git") {
		t.Errorf("redactMessage() = %q lost the URL", got)
	}
	if got := redactURL("https://ghp_token@github.com/org/r"); got != "https://xxxxx@github.com/org/r" {
		t.Errorf("redactURL() = %q", got)
	}
	if got := redactURL("git@github.com:org/r"); got != "git@github.com:org/r" {
		t.Errorf("redactURL() of an scp-like URL = %q", got)
	}
}

// TestCleanerRemovesHalfDoneSetUp checks that a Cleaner built from a name
// alone (after a restart) removes a volume whose set-up stopped half-way,
// staging included.
func TestCleanerRemovesHalfDoneSetUp(t *testing.T) {
	env := newFakeEnv(t, Config{})
	path := env.host.GetPodVolumeDir(types.UID("uid"), PluginName, "vol1")
	staging := stagingDir(path)
	for _, dir := range []string{filepath.Join(path, "repo"), filepath.Join(staging, "repo", ".git")} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cleaner, err := env.plugin.NewCleaner("vol1", types.UID("uid"))
	if err != nil {
		t.Fatal(err)
	}
	if err := cleaner.TearDown(); err != nil {
		t.Fatalf("TearDown() error = %v", err)
	}
	for _, p := range []string{path, staging} {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s left after TearDown (%v)", p, err)
		}
	}
}

// TestOutputCutAfterRedaction checks that a token in git's output is never
// shown in part, wherever the output is cut.
func TestOutputCutAfterRedaction(t *testing.T) {
	const token = "abcdefghijklmnopqrstuvwx"
	repo := "https://" + token + "@example.com/r.git"
	line := "fatal: unable to access '" + repo + "/': error\n"
	for cut := 0; cut < len(line); cut++ {
		// The last 2048 bytes of the output start at line[cut:].
		output := []byte(line + strings.Repeat("z", 2048-(len(line)-cut)))
		err := commandError(context.Background(), "clone", repo, output, errors.New("exit status 128"))
		if strings.Contains(err.Error(), token[len(token)/2:]) {
			t.Fatalf("output cut at %d shows part of the token: %v", cut, err)
		}
	}
	t.Run("tailBuffer", func(t *testing.T) {
		for cut := 0; cut < len(line); cut++ {
			// The kept bytes start at line[cut:].
			b := &tailBuffer{limit: len(line) - cut + 10}
			fmt.Fprintf(b, "%s%s", line, "0123456789")
			if got := redactMessage(string(b.Bytes()), repo); strings.Contains(got, token[len(token)/2:]) {
				t.Fatalf("tailBuffer cut at %d kept part of the token: %q", cut, got)
			}
		}
	})
}
