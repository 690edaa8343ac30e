package hooks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"k8s.io/klog/v2"
)

const (
	// outputLimit is how much of each of a hook's stdout and stderr is kept
	// for the log.
	outputLimit = 64 << 10
	// reapTimeout bounds how long a hook's output pipes may stay open after
	// the hook was killed or exited (a child it started may hold them).
	reapTimeout = 10 * time.Second
)

// HookError is the failure of one hook.
type HookError struct {
	// Hook is the hook file's name.
	Hook string
	// Stage is the stage it ran at.
	Stage Stage
	// Err says how it failed: its exit status and the end of its stderr, a
	// timeout, or a failure to start it.
	Err error
}

// Error returns "<stage> hook <name> failed: <reason>".
func (e *HookError) Error() string {
	return fmt.Sprintf("%s hook %q failed: %v", e.Stage, e.Hook, e.Err)
}

// Unwrap returns the reason.
func (e *HookError) Unwrap() error { return e.Err }

// run runs h once for stage. The program gets state as JSON on stdin, only the
// environment h gives, "/" as its working directory, and its own process
// group, which is killed when h's timeout expires or ctx is done. Its output is
// logged.
func (h *Hook) run(ctx context.Context, stage Stage, state VolumeState) error {
	logger := klog.FromContext(ctx).WithValues("hook", h.Name, "stage", stage, "podUID", state.PodUID, "volume", state.Volume)
	stdin, err := json.Marshal(StdinState{Version: Version, Stage: stage, VolumeState: state})
	if err != nil {
		return fmt.Errorf("failed to encode the volume state: %w", err)
	}

	runCtx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	def := h.Definition.Hook
	cmd := exec.CommandContext(runCtx, def.Path)
	if len(def.Args) > 0 {
		cmd.Args = def.Args
	}
	// A non-nil empty Env keeps the agent's environment from the hook.
	cmd.Env = append([]string{}, def.Env...)
	cmd.Dir = "/"
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr limitedBuffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// The hook leads its own process group: kill all of it.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = reapTimeout

	started := time.Now()
	runErr := cmd.Run()
	elapsed := time.Since(started)
	if errors.Is(runErr, exec.ErrWaitDelay) && cmd.ProcessState != nil && cmd.ProcessState.Success() {
		// The hook succeeded but left a child holding its output open.
		logger.Info("Hook left a process holding its output open", "program", def.Path)
		runErr = nil
	}
	exitCode := -1
	if cmd.ProcessState != nil {
		exitCode = cmd.ProcessState.ExitCode()
	}
	logger.Info("Ran hook", "program", def.Path, "exitCode", exitCode, "duration", elapsed,
		"stdout", stdout.String(), "stderr", stderr.String())

	switch {
	case runErr == nil:
		return nil
	case errors.Is(runCtx.Err(), context.DeadlineExceeded) && ctx.Err() == nil:
		return fmt.Errorf("timed out after %s and was killed", h.timeout)
	case ctx.Err() != nil:
		return fmt.Errorf("was stopped: %w", ctx.Err())
	}
	if tail := stderr.lastLine(); tail != "" {
		return fmt.Errorf("%w: %s", runErr, tail)
	}
	return runErr
}

// limitedBuffer keeps the first outputLimit bytes written to it and counts the
// rest.
type limitedBuffer struct {
	buf     bytes.Buffer
	dropped int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	room := outputLimit - b.buf.Len()
	if room >= len(p) {
		return b.buf.Write(p)
	}
	if room > 0 {
		b.buf.Write(p[:room])
	}
	b.dropped += len(p) - max(room, 0)
	return len(p), nil
}

// String returns the kept output, with a note of how much was dropped.
func (b *limitedBuffer) String() string {
	s := strings.TrimRight(b.buf.String(), "\n")
	if b.dropped > 0 {
		s += fmt.Sprintf("\n[%d more bytes dropped]", b.dropped)
	}
	return s
}

// lastLine returns the last non-empty line kept.
func (b *limitedBuffer) lastLine() string {
	lines := strings.Split(strings.TrimSpace(b.buf.String()), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
