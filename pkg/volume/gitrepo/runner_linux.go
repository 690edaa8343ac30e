package gitrepo

import (
	"bytes"
	"context"
	"os"
	osexec "os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// processGroupRunner runs each command as the leader of a new process group
// and, when ctx ends, kills the whole group: git and every helper it
// started. The command also gets SIGKILL when the agent dies, so that no git
// outlives a crashed agent and keeps writing into a staging dir.
type processGroupRunner struct{}

// outputLimit bounds the output kept from one command; the end is kept.
const outputLimit = 64 << 10

func (processGroupRunner) Run(ctx context.Context, dir string, env []string, name string, args ...string) ([]byte, error) {
	cmd := osexec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = env
	out := &tailBuffer{limit: outputLimit}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error {
		// The group id is git's pid, which cannot be reused before Wait
		// reaps git.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	// Helpers that keep the output pipe open cannot hold Wait up for long.
	cmd.WaitDelay = 5 * time.Second
	// Pdeathsig fires when the thread that started the child exits, not the
	// process: keep this goroutine on its thread until the child is gone.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	err := cmd.Run()
	return out.Bytes(), err
}

// tailBuffer keeps the last limit bytes written to it.
type tailBuffer struct {
	mu        sync.Mutex
	limit     int
	buf       []byte
	truncated bool
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > b.limit {
		b.buf = append(b.buf[:0], b.buf[len(b.buf)-b.limit:]...)
		b.truncated = true
	}
	return len(p), nil
}

// Bytes returns the output kept. When its start was dropped, the first,
// partial line is dropped too: it may begin inside a URL's user
// information, where redaction could no longer recognize a token.
func (b *tailBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	kept := b.buf
	if b.truncated {
		if i := bytes.IndexByte(kept, '\n'); i >= 0 {
			kept = kept[i+1:]
		} else {
			kept = nil
		}
	}
	return append([]byte(nil), kept...)
}

// ownerEnvName names the variable, in the environment of every git process
// of the plugin, that says which process runs it: "<pid>.<start time>"
// (/proc/<pid>/stat's 22nd field, so that a reused pid is told apart).
const ownerEnvName = "VOLUME_AGENT_GIT_OWNER"

// ownerEnv returns the owner variable of the processes this process runs.
func ownerEnv() string {
	return ownerEnvName + "=" + processIdentity(os.Getpid())
}

// processIdentity returns "<pid>.<start time>" of a live process pid, and ""
// when it is gone.
func processIdentity(pid int) string {
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return ""
	}
	// The command name, in parentheses, may hold spaces: fields are counted
	// after its closing parenthesis, where the 3rd field starts.
	end := bytes.LastIndexByte(stat, ')')
	if end < 0 {
		return ""
	}
	fields := strings.Fields(string(stat[end+1:]))
	if len(fields) < 20 {
		return ""
	}
	return strconv.Itoa(pid) + "." + fields[19]
}

// killStrays kills every process whose environment holds env exactly (the
// root's private git config) and whose owner (ownerEnvName) is not a live
// process: the git processes, and the helpers they started, that an agent
// which died on this root left running. Git itself dies with its agent
// (Pdeathsig), but its helpers do not, and one blocked on the network lives
// on. The processes of a live agent, this one's own included (a health
// check's git version, a clone of a concurrent set-up) and those of a
// concurrent health-checking command, are left alone. It returns how many
// it killed.
func killStrays(env string) int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	killed := 0
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		environ, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue
		}
		ours, owner := false, ""
		for _, v := range bytes.Split(environ, []byte{0}) {
			if string(v) == env {
				ours = true
			} else if value, ok := strings.CutPrefix(string(v), ownerEnvName+"="); ok {
				owner = value
			}
		}
		if !ours || ownerAlive(owner) {
			continue
		}
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			killed++
		}
	}
	return killed
}

// ownerAlive reports whether owner ("<pid>.<start time>") is a live
// process.
func ownerAlive(owner string) bool {
	pid, _, ok := strings.Cut(owner, ".")
	if !ok {
		return false
	}
	n, err := strconv.Atoi(pid)
	return err == nil && processIdentity(n) == owner
}
