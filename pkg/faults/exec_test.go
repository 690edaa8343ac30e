package faults

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"

	"k8s.io/klog/v2/ktesting"
	"k8s.io/utils/exec"
	testingexec "k8s.io/utils/exec/testing"

	"github.com/volume-agent/volume-agent/pkg/volume"
)

func TestGitOperationName(t *testing.T) {
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"clone":                {args: []string{"clone", "--", "https://example.com/r.git", "dir"}, want: "gitClone"},
		"dashed subcommand":    {args: []string{"rev-parse", "HEAD"}, want: "gitRevParse"},
		"after global options": {args: []string{"-C", "/v", "-c", "core.hooksPath=/dev/null", "--no-pager", "checkout", "main"}, want: "gitCheckout"},
		"option with =":        {args: []string{"--git-dir=/v/.git", "fetch"}, want: "gitFetch"},
		"no subcommand":        {args: []string{"--version"}, want: "git"},
	} {
		t.Run(name, func(t *testing.T) {
			if got := GitOperationName(tc.args); got != tc.want {
				t.Errorf("GitOperationName(%q) = %q, want %q", tc.args, got, tc.want)
			}
		})
	}
}

// fakeExec returns a FakeExec whose commands succeed with "out", and counts
// the commands that really ran.
func fakeExec(n int) (*testingexec.FakeExec, *int) {
	ran := 0
	fake := &testingexec.FakeExec{}
	for range n {
		fake.CommandScript = append(fake.CommandScript, func(cmd string, args ...string) exec.Cmd {
			return testingexec.InitFakeCmd(&testingexec.FakeCmd{
				CombinedOutputScript: []testingexec.FakeAction{func() ([]byte, []byte, error) { ran++; return []byte("out"), nil, nil }},
				RunScript:            []testingexec.FakeAction{func() ([]byte, []byte, error) { ran++; return nil, nil, nil }},
			}, cmd, args...)
		})
	}
	return fake, &ran
}

func TestWrapExecInterceptsGit(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	var mu sync.Mutex
	var seen []Operation
	ic := Interceptor{
		Pre: func(_ context.Context, op Operation) error {
			mu.Lock()
			seen = append(seen, op)
			mu.Unlock()
			if op.Name == "gitClone" {
				return volume.NewTransientError(errors.New("network down"))
			}
			return nil
		},
		Post: func(_ context.Context, op Operation, result error) error {
			if op.Name == "gitCheckout" {
				return volume.NewFinalError(errors.New("bad revision"))
			}
			return result
		},
	}
	fake, ran := fakeExec(3)
	e := WrapExec(fake, ic)

	out, err := e.CommandContext(ctx, "/usr/bin/git", "clone", "--", "repo", "dir").CombinedOutput()
	if volume.ClassOf(err) != volume.Transient || err.Error() != "network down" || out != nil {
		t.Errorf("git clone = %q, %v; want the injected transient error", out, err)
	}
	if *ran != 0 {
		t.Errorf("git clone ran although Pre failed it")
	}

	if err := e.Command("git", "checkout", "v1").Run(); !volume.IsFinal(err) {
		t.Errorf("git checkout = %v, want the final error Post returned", err)
	}
	if *ran != 1 {
		t.Errorf("git checkout did not run before Post")
	}

	out, err = e.Command("mount", "-t", "tmpfs").CombinedOutput()
	if err != nil || string(out) != "out" || *ran != 2 {
		t.Errorf("mount = %q, %v; want it run untouched", out, err)
	}

	if len(seen) != 2 || seen[0].Name != "gitClone" || !slices.Equal(seen[0].Args, []string{"clone", "--", "repo", "dir"}) ||
		seen[1].Name != "gitCheckout" || seen[0].Stage != Start {
		t.Errorf("Pre saw %+v, want gitClone then gitCheckout at Start with their args", seen)
	}
}

func TestWrapExecStartWait(t *testing.T) {
	failing := PreHook("gitFetch", func(int) error { return volume.NewTransientError(errors.New("refused")) })
	fake, _ := fakeExec(1)
	cmd := WrapExec(fake, failing).Command("git", "fetch")
	if err := cmd.Start(); err == nil || err.Error() != "refused" {
		t.Errorf("Start() = %v, want the injected error", err)
	}
	if err := cmd.Wait(); err == nil || err.Error() != "refused" {
		t.Errorf("Wait() after a failed Start = %v, want the injected error again", err)
	}
}
