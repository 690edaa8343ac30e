// Command new-plugin writes the skeleton of a new volume plugin,
// pkg/volume/<name>/, that builds and passes the plugin conformance suite as
// generated:
//
//	go run ./hack/new-plugin -name foo     (or: make new-plugin NAME=foo)
//
// It refuses to overwrite anything, and prints the three places to edit.
package main

import (
	"bufio"
	"bytes"
	"embed"
	"errors"
	"flag"
	"fmt"
	"go/format"
	"go/token"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"text/template"

	utilstrings "k8s.io/utils/strings"
)

//go:embed templates/*.tmpl
var templates embed.FS

// pluginDomain prefixes generated plugin names; "kubernetes.io/" is kept for
// the plugins that mirror Kubernetes' own.
const pluginDomain = "volume-agent.io"

// validName is a short, lower-case Go package name with no underscore.
var validName = regexp.MustCompile(`^[a-z][a-z0-9]{0,30}$`)

// reservedNames are packages under pkg/volume that are not plugins.
var reservedNames = map[string]bool{"testing": true, "util": true, "volume": true}

// funcs are the functions the templates may call.
var funcs = template.FuncMap{"escape": utilstrings.EscapeQualifiedName}

// params fill the templates.
type params struct {
	// Module is the Go module path, read from go.mod.
	Module string
	// Package is the plugin's package name and directory under pkg/volume.
	Package string
	// PluginName is the plugin's qualified name, and the CSI driver name
	// that selects it.
	PluginName string
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the exit, for tests: it returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet("new-plugin", flag.ContinueOnError)
	flags.SetOutput(stderr)
	name := flags.String("name", "", "the new plugin's package name: lower-case letters and digits, as foo")
	root := flags.String("root", ".", "the module's root dir, where go.mod is")
	if err := flags.Parse(args); err != nil {
		return 2
	}
	if flags.NArg() > 0 {
		fmt.Fprintf(stderr, "new-plugin: unexpected arguments %q\n", flags.Args())
		return 2
	}
	dir, err := generate(*root, *name)
	if err != nil {
		fmt.Fprintf(stderr, "new-plugin: %v\n", err)
		return 1
	}
	rel, err := filepath.Rel(*root, dir)
	if err != nil {
		rel = dir
	}
	fmt.Fprintf(stdout, `Wrote %[1]s/ (doc.go, %[2]s.go, %[2]s_test.go): a skeleton of the %[3]s plugin
that builds and passes the conformance suite as generated.

Edit these three places:
  1. %[1]s/%[2]s.go, ValidateSpec and the attributes set: what a pod may ask of a %[2]s volume
     (its csi.volumeAttributes), each bad value named with its field.
  2. %[1]s/%[2]s.go, SetUpAt and TearDownAt: make the volume and remove it again, idempotently
     (see docs/writing-a-plugin.md).
  3. cmd/volume-agent/app/plugins.go, BuiltinPlugins: add
         plugins = append(plugins, %[2]s.ProbeVolumePlugins()...)
     so that the agent probes it.

Then: go test ./%[1]s/
`, filepath.ToSlash(rel), filepath.Base(dir), pluginName(*name))
	return 0
}

func pluginName(name string) string { return pluginDomain + "/" + name }

// generate writes pkg/volume/<name>/ under root and returns its path. It fails,
// writing nothing, when name is not a valid plugin package name or the
// directory exists.
func generate(root, name string) (string, error) {
	if err := validateName(name); err != nil {
		return "", err
	}
	module, err := modulePath(filepath.Join(root, "go.mod"))
	if err != nil {
		return "", err
	}
	parent := filepath.Join(root, "pkg", "volume")
	if info, err := os.Stat(parent); err != nil || !info.IsDir() {
		return "", fmt.Errorf("no pkg/volume dir under %q: run from the module's root or pass -root", root)
	}
	p := params{Module: module, Package: name, PluginName: pluginName(name)}
	files, err := render(p)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(parent, name)
	// Mkdir, not MkdirAll: an existing dir, however it got there, is not ours.
	if err := os.Mkdir(dir, 0o755); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return "", fmt.Errorf("%s already exists: refusing to overwrite it", dir)
		}
		return "", fmt.Errorf("failed to create %s: %w", dir, err)
	}
	for file, content := range files {
		if err := os.WriteFile(filepath.Join(dir, file), content, 0o644); err != nil {
			// The dir is ours: leave nothing half-written.
			_ = os.RemoveAll(dir)
			return "", fmt.Errorf("failed to write %s: %w", file, err)
		}
	}
	return dir, nil
}

func validateName(name string) error {
	switch {
	case name == "":
		return errors.New("-name is required, as -name foo")
	case !validName.MatchString(name):
		return fmt.Errorf("invalid -name %q: must be 1 to 31 lower-case letters and digits, starting with a letter (a Go package name, no underscore)", name)
	case token.IsKeyword(name):
		return fmt.Errorf("invalid -name %q: it is a Go keyword", name)
	case reservedNames[name]:
		return fmt.Errorf("invalid -name %q: pkg/volume/%s is not a plugin", name, name)
	}
	return nil
}

// modulePath reads the module path from the go.mod file at path.
func modulePath(path string) (string, error) {
	file, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("failed to read go.mod: %w (run from the module's root or pass -root)", err)
	}
	defer file.Close()
	scanner := bufio.NewScanner(file)
	for scanner.Scan() {
		if module, found := strings.CutPrefix(strings.TrimSpace(scanner.Text()), "module "); found {
			return strings.Trim(strings.TrimSpace(module), `"`), nil
		}
	}
	if err := scanner.Err(); err != nil {
		return "", fmt.Errorf("failed to read %s: %w", path, err)
	}
	return "", fmt.Errorf("%s has no module line", path)
}

// render fills every template with p and returns the files by name, gofmt'ed.
func render(p params) (map[string][]byte, error) {
	entries, err := fs.Glob(templates, "templates/*.tmpl")
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{}
	for _, entry := range entries {
		tmpl, err := template.New(filepath.Base(entry)).Funcs(funcs).ParseFS(templates, entry)
		if err != nil {
			return nil, fmt.Errorf("failed to parse template %s: %w", entry, err)
		}
		var buf bytes.Buffer
		if err := tmpl.Execute(&buf, p); err != nil {
			return nil, fmt.Errorf("failed to render %s: %w", entry, err)
		}
		src, err := format.Source(buf.Bytes())
		if err != nil {
			return nil, fmt.Errorf("template %s made invalid Go: %w", entry, err)
		}
		// templates/plugin.go.tmpl becomes <name>.go, plugin_test.go.tmpl
		// <name>_test.go.
		file := strings.TrimSuffix(filepath.Base(entry), ".tmpl")
		file = strings.Replace(file, "plugin", p.Package, 1)
		files[file] = src
	}
	return files, nil
}
