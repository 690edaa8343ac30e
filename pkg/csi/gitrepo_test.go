package csi_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/volume-agent/volume-agent/pkg/csi"
	"github.com/volume-agent/volume-agent/pkg/volumemanager"
	"github.com/volume-agent/volume-agent/test/gitserver"
)

func startGitServer(t *testing.T) *gitserver.Server {
	t.Helper()
	srv, err := gitserver.Start(t.TempDir(), "", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

func TestEphemeralGitRepo(t *testing.T) {
	e := newEnv(t, gitConfig())
	srv := startGitServer(t)
	repo, err := srv.NewRepo("site.git")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Commit(gitserver.DefaultBranch, "v1", gitserver.File("index.html", "v1\n")); err != nil {
		t.Fatal(err)
	}
	url := srv.HTTPURL("site.git")

	t.Run("publish, again, unpublish", func(t *testing.T) {
		target := e.target("pod-1", "site")
		req := e.request("csi-site", target, "web", map[string]string{"type": "gitRepo", "repository": url, "revision": gitserver.DefaultBranch, "directory": "."})
		req.VolumeCapability.GetMount().VolumeMountGroup = "2000"
		e.mustPublish(t, req)
		if data, err := os.ReadFile(filepath.Join(target, "index.html")); err != nil || string(data) != "v1\n" {
			t.Errorf("index.html = %q, %v", data, err)
		}
		_, vol := e.volumeStatus(t, "csi-site")
		if vol.Plugin != "kubernetes.io/git-repo" || vol.State != volumemanager.StateReady {
			t.Errorf("volume status = %+v", vol)
		}
		fetches := srv.Fetches("/site.git")
		e.mustPublish(t, req)
		if got := srv.Fetches("/site.git"); got != fetches {
			t.Errorf("the repeated publish fetched again: %d fetches, was %d", got, fetches)
		}
		e.mustUnpublish(t, "csi-site", target)
	})

	t.Run("concurrent publishes of one volume do the work once", func(t *testing.T) {
		target := e.target("pod-2", "site")
		req := e.request("csi-concurrent", target, "web", map[string]string{"type": "gitRepo", "repository": url, "directory": "."})
		fetches := srv.Fetches("/site.git")
		release := srv.Hold()
		const calls = 5
		errs := make(chan error, calls)
		var wg sync.WaitGroup
		for range calls {
			wg.Go(func() { errs <- e.publish(req) })
		}
		waitUntil(t, "the clone to reach the server", func() bool { return srv.Waiting() > 0 })
		// A call whose deadline passes while the set-up runs is told to
		// come back (the kubelet retries DeadlineExceeded).
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		_, err := e.node.NodePublishVolume(ctx, req)
		cancel()
		if status.Code(err) != codes.DeadlineExceeded {
			t.Errorf("a publish past its deadline = %v; want DeadlineExceeded", err)
		}
		release()
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Errorf("a concurrent NodePublishVolume() = %v", err)
			}
		}
		if got := srv.Fetches("/site.git") - fetches; got != 1 {
			t.Errorf("%d fetches for concurrent publishes of one volume; want 1", got)
		}
		setUps := 0
		for _, ev := range e.m.Events() {
			if ev.Reason == volumemanager.ReasonSetUp && ev.PodUID == csi.PodUID("csi-concurrent") {
				setUps++
			}
		}
		if setUps != 1 {
			t.Errorf("%d set-ups of the volume; want 1", setUps)
		}
		e.mustUnpublish(t, "csi-concurrent", target)
	})

	t.Run("a failed set-up is retried by the next publish", func(t *testing.T) {
		target := e.target("pod-3", "missing")
		req := e.request("csi-missing", target, "web", map[string]string{"type": "gitRepo", "repository": srv.HTTPURL("later.git")})
		err := e.publish(req)
		if code := status.Code(err); code != codes.Internal && code != codes.Unavailable {
			t.Fatalf("publish of a missing repository = %v; want Internal or Unavailable", err)
		}
		if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a failed set-up left the target: %v", err)
		}
		// The manager retries in the background: hold its fetches until
		// the repository has its commit, or a retry between the two steps
		// clones an empty repository.
		release := srv.Hold()
		later, err := srv.NewRepo("later.git")
		if err == nil {
			_, err = later.Commit(gitserver.DefaultBranch, "now", gitserver.File("here", "yes\n"))
		}
		release()
		if err != nil {
			t.Fatal(err)
		}
		e.mustPublish(t, req)
		if _, err := os.Stat(filepath.Join(target, "later", "here")); err != nil {
			t.Errorf("the retried volume lacks its file: %v", err)
		}
		e.mustUnpublish(t, "csi-missing", target)
	})
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 1000 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// TestHostileGitRepoContext sends the gitRepo hardening corpus through the
// volume context: what the plugin refuses before git runs is
// InvalidArgument naming the key; a crafted tree is cloned without running
// anything; a tree git's object checks refuse fails the publish and leaves
// nothing.
func TestHostileGitRepoContext(t *testing.T) {
	e := newEnv(t, gitConfig())
	srv := startGitServer(t)
	marker := filepath.Join(t.TempDir(), "pwned")
	payload := "touch " + marker
	script := []byte("#!/bin/sh\n" + payload + "\n")
	local := filepath.Join(t.TempDir(), "local.git")
	if _, err := gitserver.Init(local); err != nil {
		t.Fatal(err)
	}
	crafted, err := srv.NewRepo("crafted.git")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := crafted.Commit(gitserver.DefaultBranch, "crafted",
		gitserver.File("HEAD", "ref: refs/heads/main\n"),
		gitserver.File("config", fmt.Sprintf("[core]\n\tfsmonitor = %s\n\thooksPath = hooks\n[filter \"pwn\"]\n\tsmudge = %s\n\trequired = true\n", payload, payload)),
		gitserver.File(".gitattributes", "* filter=pwn\n"),
		gitserver.Entry{Path: "hooks/post-checkout", Mode: gitserver.Executable, Content: script},
		gitserver.File("README.md", "nothing to see\n"),
	); err != nil {
		t.Fatal(err)
	}
	dotgit, err := srv.NewRepo("dotgit.git")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dotgit.Commit(gitserver.DefaultBranch, "dotgit", gitserver.Entry{Path: ".GIT/hooks/post-checkout", Mode: gitserver.Executable, Content: script}); err != nil {
		t.Fatal(err)
	}
	url := srv.HTTPURL("crafted.git")
	assertNothingRan := func(t *testing.T) {
		t.Helper()
		if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("a payload ran: %v", err)
		}
	}

	refused := map[string]struct {
		attrs map[string]string
		key   string
	}{
		"directory x/.git (CVE-2024-10220)": {map[string]string{"repository": url, "directory": "x/.git"}, "directory"},
		"local path":                        {map[string]string{"repository": local}, "repository"},
		"file URL":                          {map[string]string{"repository": "file://" + local}, "repository"},
		"relative local path":               {map[string]string{"repository": "../../../../local.git"}, "repository"},
		"leading dash in repository":        {map[string]string{"repository": "--upload-pack=touch%20" + marker}, "repository"},
		"leading dash in revision":          {map[string]string{"repository": url, "revision": "--orphan=x"}, "revision"},
		"leading dash in directory":         {map[string]string{"repository": url, "directory": "--template=/tmp"}, "directory"},
		"ext transport":                     {map[string]string{"repository": "ext::touch%20" + marker}, "repository"},
		"https not allowed by the agent":    {map[string]string{"repository": "https://example.com/x.git"}, "repository"},
	}
	target := e.target("pod-h", "src")
	for name, tc := range refused {
		t.Run(name+" is InvalidArgument", func(t *testing.T) {
			tc.attrs["type"] = "gitRepo"
			err := e.publish(e.request("csi-hostile", target, "web", tc.attrs))
			wantCode(t, err, codes.InvalidArgument, fmt.Sprintf("volume context key %q: invalid value %q", tc.key, tc.attrs[tc.key]))
			assertNothingRan(t)
		})
	}
	if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused publish made the target: %v", err)
	}

	for _, dir := range []string{".", "x"} {
		t.Run("crafted git dir in the tree, directory "+dir, func(t *testing.T) {
			target := e.target("pod-c", "src"+filepath.Base(dir))
			e.mustPublish(t, e.request("csi-crafted"+dir, target, "web", map[string]string{"type": "gitRepo", "repository": url, "directory": dir}))
			if info, err := os.Lstat(filepath.Join(target, dir, "hooks", "post-checkout")); err != nil || !info.Mode().IsRegular() {
				t.Errorf("the crafted hook is not a plain file of the work tree: %v, %v", info, err)
			}
			assertNothingRan(t)
			e.mustUnpublish(t, "csi-crafted"+dir, target)
		})
	}

	t.Run("a tree git's object checks refuse", func(t *testing.T) {
		target := e.target("pod-d", "src")
		err := e.publish(e.request("csi-dotgit", target, "web", map[string]string{"type": "gitRepo", "repository": srv.HTTPURL("dotgit.git")}))
		wantCode(t, err, codes.Internal, "transfer.fsckObjects")
		if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the refused clone left the target: %v", err)
		}
		assertNothingRan(t)
		e.mustUnpublish(t, "csi-dotgit", target)
	})
}

// Stopping the driver cancels a publish that waits for its volume, rather
// than waiting for the call's deadline.
func TestStopCancelsACallInFlight(t *testing.T) {
	e := newEnv(t, gitConfig())
	srv := startGitServer(t)
	repo, err := srv.NewRepo("slow.git")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Commit(gitserver.DefaultBranch, "v1", gitserver.File("f", "x\n")); err != nil {
		t.Fatal(err)
	}
	release := srv.Hold()
	defer release()
	errs := make(chan error, 1)
	go func() {
		errs <- e.publish(e.request("csi-slow", e.target("pod-s", "src"), "web", map[string]string{"type": "gitRepo", "repository": srv.HTTPURL("slow.git")}))
	}()
	waitUntil(t, "the clone to reach the server", func() bool { return srv.Waiting() > 0 })
	e.stop()
	if err := <-errs; status.Code(err) != codes.Unavailable && status.Code(err) != codes.Canceled {
		t.Errorf("a publish in flight when the driver stopped = %v; want Unavailable or Canceled", err)
	}
}
