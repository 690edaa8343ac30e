package faults

import (
	"context"
	"path/filepath"
	"strings"

	"k8s.io/utils/exec"
)

// WrapExec returns e with every git command intercepted as the operation
// GitOperationName(args) (Operation.Args holds the arguments). Other commands
// pass untouched. Give the result to volume.HostConfig.Exec so that the
// plugins' git calls can be made to fail.
//
// An error from Pre is returned by Run, Output, CombinedOutput and Start (and
// then by Wait) without running git; it is not an *exec.ExitError.
func WrapExec(e exec.Interface, ic Interceptor) exec.Interface {
	return &interceptedExec{Interface: e, ic: ic}
}

type interceptedExec struct {
	exec.Interface
	ic Interceptor
}

func (e *interceptedExec) Command(cmd string, args ...string) exec.Cmd {
	return e.wrap(context.Background(), e.Interface.Command(cmd, args...), cmd, args)
}

func (e *interceptedExec) CommandContext(ctx context.Context, cmd string, args ...string) exec.Cmd {
	return e.wrap(ctx, e.Interface.CommandContext(ctx, cmd, args...), cmd, args)
}

func (e *interceptedExec) wrap(ctx context.Context, c exec.Cmd, cmd string, args []string) exec.Cmd {
	if filepath.Base(cmd) != "git" {
		return c
	}
	op := Operation{Name: GitOperationName(args), Args: append([]string(nil), args...)}
	return &interceptedCmd{Cmd: c, ctx: ctx, ic: e.ic, op: op}
}

// gitOptionsWithValue are git's global options that take the next argument as
// their value.
var gitOptionsWithValue = map[string]bool{
	"-C": true, "-c": true, "--git-dir": true, "--work-tree": true,
	"--namespace": true, "--config-env": true, "--exec-path": true,
}

// GitOperationName returns the operation name of git run with args: "git"
// followed by its subcommand in lower camel case ("clone" gives "gitClone",
// "rev-parse" gives "gitRevParse"), after git's global options. With no
// subcommand it is "git".
func GitOperationName(args []string) string {
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if gitOptionsWithValue[arg] {
			i++
			continue
		}
		if strings.HasPrefix(arg, "-") {
			continue
		}
		name := "git"
		for _, part := range strings.Split(arg, "-") {
			if part != "" {
				name += strings.ToUpper(part[:1]) + part[1:]
			}
		}
		return name
	}
	return "git"
}

type interceptedCmd struct {
	exec.Cmd
	ctx context.Context
	ic  Interceptor
	op  Operation
	// preErr is Pre's error at Start, returned again by Wait.
	preErr error
}

func (c *interceptedCmd) Run() error {
	return c.ic.around(c.ctx, c.op, c.Cmd.Run)
}

func (c *interceptedCmd) Output() ([]byte, error) {
	var out []byte
	err := c.ic.around(c.ctx, c.op, func() error {
		var err error
		out, err = c.Cmd.Output()
		return err
	})
	return out, err
}

func (c *interceptedCmd) CombinedOutput() ([]byte, error) {
	var out []byte
	err := c.ic.around(c.ctx, c.op, func() error {
		var err error
		out, err = c.Cmd.CombinedOutput()
		return err
	})
	return out, err
}

func (c *interceptedCmd) Start() error {
	if c.preErr = c.ic.pre(c.ctx, c.op); c.preErr != nil {
		return c.preErr
	}
	return c.Cmd.Start()
}

func (c *interceptedCmd) Wait() error {
	if c.preErr != nil {
		return c.preErr
	}
	return c.ic.post(c.ctx, c.op, c.Cmd.Wait())
}
