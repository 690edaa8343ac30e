package app

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestUsageErrorsExit2 pins down that every usage error (a missing required
// flag, a stray argument, an unknown command or flag) exits 2, as the README
// says, and touches nothing.
func TestUsageErrorsExit2(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	for _, args := range [][]string{
		{"setup"},
		{"setup", "-f", filepath.Join(dir, "p.yaml"), "extra"},
		{"teardown"},
		{"validate"},
		{"delete"},
		{"apply"},
		{"get"},
		{"status", "extra"},
		{"plugins", "extra"},
		{"setpu", "-f", "p.yaml"},
		{"setup", "--no-such-flag"},
		{"run", "extra"},
	} {
		code, _, stderr := runApp(t, "", append(args, "--root-dir", root)...)
		if code != ExitInvalid {
			t.Errorf("%v: exit %d (%s), want %d", args, code, strings.TrimSpace(stderr), ExitInvalid)
		}
	}
	if code, _, stderr := runApp(t, "", "version", "extra"); code != ExitInvalid {
		t.Errorf("version extra: exit %d (%s), want %d", code, strings.TrimSpace(stderr), ExitInvalid)
	}
	if _, err := os.Stat(root); !os.IsNotExist(err) {
		t.Errorf("a usage error touched the root dir: %v", err)
	}
}

// TestClientHelpListsClientFlagsOnly pins down that the commands that only
// talk to a running agent do not list the daemon's flags.
func TestClientHelpListsClientFlagsOnly(t *testing.T) {
	for _, command := range []string{"status", "get", "apply", "delete"} {
		code, out, stderr := runApp(t, "", command, "--help")
		if code != ExitOK {
			t.Fatalf("%s --help: exit %d, %s", command, code, stderr)
		}
		for _, want := range []string{"--socket", "--root-dir", "--config"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s --help does not list %s:\n%s", command, want, out)
			}
		}
		for _, daemonFlag := range []string{"--pod-manifest-path", "--teardown-on-exit", "--workers", "--git-timeout", "--flocker-control-service-host", "--hook-dir", "--metrics-address"} {
			if strings.Contains(out, daemonFlag) {
				t.Errorf("%s --help lists the daemon flag %s", command, daemonFlag)
			}
		}
	}
	code, out, _ := runApp(t, "", "run", "--help")
	if code != ExitOK || !strings.Contains(out, "--pod-manifest-path") || !strings.Contains(out, "--teardown-on-exit") {
		t.Errorf("run --help (exit %d) does not list the daemon's flags:\n%s", code, out)
	}
}

// TestPluginsIsReadOnlyAndTakesARelativeRootDir pins down that `plugins`, a
// query, creates nothing under the root dir, and that a relative --root-dir
// is taken from the working directory.
func TestPluginsIsReadOnlyAndTakesARelativeRootDir(t *testing.T) {
	cwd := t.TempDir()
	t.Chdir(cwd)
	if err := os.Mkdir(filepath.Join(cwd, "root"), 0o755); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := runApp(t, "", "plugins", "-o", "json", "--root-dir", "root")
	if code != ExitOK {
		t.Fatalf("plugins --root-dir root: exit %d, stderr:\n%s", code, stderr)
	}
	if !strings.Contains(out, "kubernetes.io/git-repo") {
		t.Errorf("plugins output lacks the gitRepo plugin:\n%s", out)
	}
	if !strings.Contains(out, filepath.Join(cwd, "root", "plugins")) {
		t.Errorf("plugins output does not show paths under %s:\n%s", filepath.Join(cwd, "root"), out)
	}
	entries, err := os.ReadDir(filepath.Join(cwd, "root"))
	if err != nil || len(entries) != 0 {
		t.Errorf("plugins changed the root dir: %v, %v", entries, err)
	}
}
