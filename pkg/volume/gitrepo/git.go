package gitrepo

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/utils/exec"

	"github.com/volume-agent/volume-agent/pkg/volume"
)

// gitCommand is the name git is run by, looked up in PATH.
const gitCommand = "git"

// commandRunner runs one command to completion and returns its combined
// output. It exists beside exec.Interface because exec.Interface cannot start
// a process in a process group of its own nor kill that group: its
// CommandContext kills git alone, and the helpers git starts for a transfer
// (git-remote-http, index-pack, ssh, and git-upload-pack even for a clone of
// a local mirror) would live on, writing into a staging dir that is being
// removed. Clones and fetches go through the process-group runner; commands
// that start no helper (checkout, reset, config, fsck, cat-file, rev-parse)
// go through exec.Interface, and are killed alone.
type commandRunner interface {
	Run(ctx context.Context, dir string, env []string, name string, args ...string) ([]byte, error)
}

// execRunner runs commands through an exec.Interface: every command in unit
// tests, where the interface is a FakeExec.
type execRunner struct {
	exec exec.Interface
}

func (r execRunner) Run(ctx context.Context, dir string, env []string, name string, args ...string) ([]byte, error) {
	cmd := r.exec.CommandContext(ctx, name, args...)
	cmd.SetDir(dir)
	cmd.SetEnv(env)
	return cmd.CombinedOutput()
}

// git runs git the hardened way: a clean environment, protective -c options
// on every command, and a cwd outside any repository.
type git struct {
	// local runs commands that start no other process.
	local commandRunner
	// network runs commands that may start helpers (clones, of the mirror
	// too, and fetches), each in its own process group.
	network commandRunner
	// home is an empty private dir: HOME and the cwd of every command.
	home string
	// env is the environment of every command.
	env []string
	// protocols are the allowed transports.
	protocols []string
	// configEnv is the variable naming the private global config, which
	// every git process of this plugin, and every helper it starts, has.
	configEnv string
}

// newGit returns a git that keeps its private files under dir.
func newGit(local, network commandRunner, dir string, protocols []string) (*git, error) {
	home := filepath.Join(dir, "home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		return nil, fmt.Errorf("failed to create git's home dir: %w", err)
	}
	globalConfig := filepath.Join(dir, "gitconfig")
	// An empty private file: git reads no user's global config.
	if err := os.WriteFile(globalConfig, nil, 0o600); err != nil {
		return nil, fmt.Errorf("failed to write git's global config: %w", err)
	}
	return &git{
		local:     local,
		network:   network,
		home:      home,
		env:       cleanEnv(home, globalConfig, dir),
		protocols: protocols,
		configEnv: "GIT_CONFIG_GLOBAL=" + globalConfig,
	}, nil
}

// inheritedEnv are the variables taken from the agent's environment: how to
// find programs and how to reach the network. Every other variable, GIT_*
// ones first of all, is dropped.
var inheritedEnv = []string{
	"PATH", "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
	"ALL_PROXY", "all_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR",
}

// cleanEnv returns the environment of every git command.
func cleanEnv(home, globalConfig, ceiling string) []string {
	var env []string
	for _, name := range inheritedEnv {
		if value, ok := os.LookupEnv(name); ok {
			env = append(env, name+"="+value)
		}
	}
	if _, ok := os.LookupEnv("PATH"); !ok {
		env = append(env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	}
	return append(env,
		"HOME="+home,
		"LC_ALL=C",
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_CONFIG_GLOBAL="+globalConfig,
		"GIT_ATTR_NOSYSTEM=1",
		"GIT_TERMINAL_PROMPT=0",
		"GIT_ASKPASS=/bin/false",
		"SSH_ASKPASS=/bin/false",
		"GIT_SSH_COMMAND=ssh -o BatchMode=yes -o StrictHostKeyChecking=yes",
		"GIT_PROTOCOL_FROM_USER=0",
		"GIT_LFS_SKIP_SMUDGE=1",
		"GIT_NO_REPLACE_OBJECTS=1",
		"GIT_CEILING_DIRECTORIES="+ceiling,
		ownerEnv(),
	)
}

// options returns the -c options of every command, allowing protocols only.
func options(protocols []string) []string {
	opts := []string{
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
	}
	for _, p := range protocols {
		opts = append(opts, "-c", "protocol."+p+".allow=always")
	}
	return opts
}

// gitArgs returns the argv after "git" of a command on the repository whose
// git dir and work tree are given (both may be empty: no repository yet).
func gitArgs(protocols []string, gitDir, workTree string, args ...string) []string {
	argv := options(protocols)
	if gitDir != "" {
		argv = append(argv, "--git-dir="+gitDir)
	}
	if workTree != "" {
		argv = append(argv, "--work-tree="+workTree)
	}
	return append(argv, args...)
}

// runLocal runs a git command that starts no helper.
func (g *git) runLocal(ctx context.Context, gitDir, workTree string, args ...string) ([]byte, error) {
	return g.local.Run(ctx, g.home, g.env, gitCommand, gitArgs(g.protocols, gitDir, workTree, args...)...)
}

// runNetwork runs a git command that may reach the network, in its own
// process group.
func (g *git) runNetwork(ctx context.Context, gitDir string, args ...string) ([]byte, error) {
	return g.network.Run(ctx, g.home, g.env, gitCommand, gitArgs(g.protocols, gitDir, "", args...)...)
}

// mirrorProtocols are the protocols of a command on a local mirror: only
// the file protocol, for the mirror's path, which the plugin chose.
var mirrorProtocols = []string{"file"}

// runOnMirror runs a git command that reads a local mirror and starts no
// helper.
func (g *git) runOnMirror(ctx context.Context, gitDir string, args ...string) ([]byte, error) {
	return g.local.Run(ctx, g.home, g.env, gitCommand, gitArgs(mirrorProtocols, gitDir, "", args...)...)
}

// cloneMirror runs "git clone args..." of a local mirror in its own process
// group: even a local clone starts git-upload-pack.
func (g *git) cloneMirror(ctx context.Context, args ...string) ([]byte, error) {
	return g.network.Run(ctx, g.home, g.env, gitCommand, gitArgs(mirrorProtocols, "", "", append([]string{"clone"}, args...)...)...)
}

// Causes of a cancelled set-up, told apart by context.Cause.
var (
	errTimeout   = errors.New("timed out")
	errSizeLimit = errors.New("size limit exceeded")
)

// unknownRevision are what git says when a revision names nothing.
var unknownRevision = []string{
	"invalid reference:",
	"did not match any file(s) known to git",
	"unknown revision",
	"not a commit",
	"reference is not a tree",
	"Needed a single revision",
}

// commandError turns a failed git command into an error that carries git's
// message, redacted for repo, and the class the caller decides on: final
// for an unknown revision, a size limit or objects that fail git's checks;
// transient otherwise.
func commandError(ctx context.Context, what, repo string, output []byte, err error) error {
	// Redacted before it is cut: a cut inside a URL's user information
	// would leave a part of a token that redaction no longer recognizes.
	msg := strings.TrimSpace(tail(redactMessage(string(output), repo), 2048))
	if msg != "" {
		err = fmt.Errorf("failed to %s: %w: %s", what, redactError(err, repo), msg)
	} else {
		err = fmt.Errorf("failed to %s: %w", what, redactError(err, repo))
	}
	switch cause := context.Cause(ctx); {
	case errors.Is(cause, errSizeLimit):
		return volume.NewFinalError(fmt.Errorf("%w (gitRepo.maxSizeBytes): %w", errSizeLimit, err))
	case errors.Is(cause, errTimeout):
		return volume.NewTransientError(fmt.Errorf("%w (gitRepo.timeout): %w", errTimeout, err))
	case cause != nil:
		return volume.NewTransientError(fmt.Errorf("%w: %w", cause, err))
	}
	for _, s := range unknownRevision {
		if strings.Contains(msg, s) {
			return volume.NewFinalError(fmt.Errorf("unknown revision: %w", err))
		}
	}
	if strings.Contains(msg, "fsck error") {
		return volume.NewFinalError(fmt.Errorf("repository refused by git's object checks (transfer.fsckObjects): %w", err))
	}
	return volume.NewTransientError(err)
}

// tail returns the last n bytes of s.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
