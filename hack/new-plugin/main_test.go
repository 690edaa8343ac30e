package main

import (
	"bytes"
	"go/format"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// copyModule copies go.mod, go.sum and the non-test Go files of pkg/volume
// (the framework, its util and testing packages, the plugins) into a temp dir,
// so that generated code is built against the real framework without touching
// the working tree.
func copyModule(t *testing.T) string {
	t.Helper()
	src, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	for _, file := range []string{"go.mod", "go.sum"} {
		copyFile(t, filepath.Join(src, file), filepath.Join(dst, file))
	}
	volumeDir := filepath.Join(src, "pkg", "volume")
	err = filepath.WalkDir(volumeDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		copyFile(t, path, filepath.Join(dst, rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// goCommand runs the go tool in dir and fails t with its output on error.
func goCommand(t *testing.T, dir string, args ...string) {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("skipping: the go tool is not on PATH")
	}
	cmd := exec.CommandContext(t.Context(), goTool, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s failed: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func TestGeneratedPluginBuildsAndPassesItsTests(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping in -short mode: builds a module")
	}
	root := copyModule(t)
	var stdout, stderr bytes.Buffer
	if code := run([]string{"-name", "gentest", "-root", root}, &stdout, &stderr); code != 0 {
		t.Fatalf("new-plugin exited %d: %s", code, stderr.String())
	}
	for _, want := range []string{
		"Wrote pkg/volume/gentest/",
		"Edit these three places",
		"1. pkg/volume/gentest/gentest.go, ValidateSpec",
		"2. pkg/volume/gentest/gentest.go, SetUpAt and TearDownAt",
		"3. cmd/volume-agent/app/plugins.go, BuiltinPlugins",
		"plugins = append(plugins, gentest.ProbeVolumePlugins()...)",
	} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("message does not say %q:\n%s", want, stdout.String())
		}
	}

	dir := filepath.Join(root, "pkg", "volume", "gentest")
	for _, file := range []string{"doc.go", "gentest.go", "gentest_test.go"} {
		src, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		formatted, err := format.Source(src)
		if err != nil || !bytes.Equal(formatted, src) {
			t.Errorf("%s is not gofmt'ed (%v)", file, err)
		}
		if bytes.Contains(src, []byte("{{")) {
			t.Errorf("%s holds an unexpanded template action", file)
		}
	}
	goCommand(t, root, "vet", "./pkg/volume/gentest/")
	goCommand(t, root, "test", "-count=1", "./pkg/volume/gentest/")
}

func TestRefusesToOverwrite(t *testing.T) {
	root := t.TempDir()
	copyFile(t, "../../go.mod", filepath.Join(root, "go.mod"))
	existing := filepath.Join(root, "pkg", "volume", "foo", "foo.go")
	if err := os.MkdirAll(filepath.Dir(existing), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(existing, []byte("package foo // mine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"-name", "foo", "-root", root}, &stdout, &stderr); code != 1 {
		t.Errorf("exit code = %d, want 1", code)
	}
	if !strings.Contains(stderr.String(), "already exists: refusing to overwrite it") {
		t.Errorf("stderr = %q, want a refusal", stderr.String())
	}
	if data, _ := os.ReadFile(existing); string(data) != "package foo // mine\n" {
		t.Errorf("existing file was changed to %q", data)
	}
	entries, err := os.ReadDir(filepath.Dir(existing))
	if err != nil || len(entries) != 1 {
		t.Errorf("files were added next to the existing one: %v, %v", entries, err)
	}
}

func TestRejectsBadInput(t *testing.T) {
	root := t.TempDir()
	copyFile(t, "../../go.mod", filepath.Join(root, "go.mod"))
	if err := os.MkdirAll(filepath.Join(root, "pkg", "volume"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		args []string
		code int
		want string
	}{
		"no name":        {args: []string{"-root", root}, code: 1, want: "-name is required"},
		"upper case":     {args: []string{"-name", "Foo", "-root", root}, code: 1, want: `invalid -name "Foo": must be 1 to 31 lower-case letters and digits`},
		"underscore":     {args: []string{"-name", "my_vol", "-root", root}, code: 1, want: `invalid -name "my_vol"`},
		"leading digit":  {args: []string{"-name", "9p", "-root", root}, code: 1, want: `invalid -name "9p"`},
		"keyword":        {args: []string{"-name", "func", "-root", root}, code: 1, want: "it is a Go keyword"},
		"not a plugin":   {args: []string{"-name", "util", "-root", root}, code: 1, want: "pkg/volume/util is not a plugin"},
		"no module":      {args: []string{"-name", "foo", "-root", t.TempDir()}, code: 1, want: "failed to read go.mod"},
		"stray argument": {args: []string{"-name", "foo", "extra"}, code: 2, want: `unexpected arguments ["extra"]`},
		"unknown flag":   {args: []string{"-nme", "foo"}, code: 2, want: "flag provided but not defined: -nme"},
		"no pkg/volume":  {args: []string{"-name", "foo", "-root", filepath.Dir(copyGoModOnly(t))}, code: 1, want: "no pkg/volume dir"},
	} {
		t.Run(name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(tc.args, &stdout, &stderr); code != tc.code {
				t.Errorf("exit code = %d, want %d", code, tc.code)
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr = %q, want it to contain %q", stderr.String(), tc.want)
			}
			if _, err := os.Stat(filepath.Join(root, "pkg", "volume", "foo")); err == nil {
				t.Errorf("a plugin was written despite the error")
			}
		})
	}
}

// copyGoModOnly returns the go.mod of a temp module with no pkg/volume.
func copyGoModOnly(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "go.mod")
	copyFile(t, "../../go.mod", path)
	return path
}
