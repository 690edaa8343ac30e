package gitrepo

import (
	"context"
	osexec "os/exec"
	"runtime"
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
	mu    sync.Mutex
	limit int
	buf   []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > b.limit {
		b.buf = append(b.buf[:0], b.buf[len(b.buf)-b.limit:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]byte(nil), b.buf...)
}
