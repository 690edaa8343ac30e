package loader_test

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"sigs.k8s.io/yaml"

	"github.com/volume-agent/volume-agent/pkg/apis/config"
	"github.com/volume-agent/volume-agent/pkg/apis/config/loader"
	configscheme "github.com/volume-agent/volume-agent/pkg/apis/config/scheme"
	"github.com/volume-agent/volume-agent/pkg/apis/config/v1alpha1"
	"github.com/volume-agent/volume-agent/pkg/apis/config/validation"
)

const (
	examplePath = "testdata/agent-config.yaml"
	header      = "apiVersion: config.volumeagent.io/v1alpha1\nkind: AgentConfiguration\n"
)

func writeConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agent-config.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func noEnv(string) string { return "" }

func envOf(vars map[string]string) func(string) string {
	return func(name string) string { return vars[name] }
}

func TestDefaultIsValid(t *testing.T) {
	cfg := loader.Default()
	hostname, err := os.Hostname()
	if err != nil {
		t.Skipf("Host name unavailable: %v", err)
	}
	if want := strings.ToLower(hostname); cfg.NodeName != want {
		t.Errorf("nodeName = %q, want the lower-cased host name %q", cfg.NodeName, want)
	}
	if errs := validation.ValidateAgentConfiguration(cfg); len(errs) > 0 {
		t.Errorf("default configuration is invalid: %v", errs.ToAggregate())
	}
	if cfg.RootDir != v1alpha1.DefaultRootDir || cfg.VolumeManager.Workers != v1alpha1.DefaultWorkers || !cfg.GitRepo.Cache.Enabled {
		t.Errorf("Default() is not defaulted: %+v", cfg)
	}
	if got, want := cfg.ResolvedSocketPath(), "/var/lib/volume-agent/volume-agent.sock"; got != want {
		t.Errorf("ResolvedSocketPath() = %q, want %q", got, want)
	}
}

func TestLoadExampleEqualsDefault(t *testing.T) {
	cfg, err := loader.Load(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	if want := loader.Default(); !reflect.DeepEqual(cfg, want) {
		t.Errorf("the example no longer shows the defaults\nloaded: %+v\ndefault: %+v", cfg, want)
	}
}

func TestExampleDocumentsEveryField(t *testing.T) {
	data, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	shown := sets.KeySet(flatten("", doc))
	all := sets.New(jsonFieldPaths(reflect.TypeFor[v1alpha1.AgentConfiguration](), "")...)
	if missing := all.Difference(shown); missing.Len() > 0 {
		t.Errorf("%s does not show fields %v", examplePath, sets.List(missing))
	}
}

func TestFieldSourcesNameRealFields(t *testing.T) {
	all := sets.New(jsonFieldPaths(reflect.TypeFor[v1alpha1.AgentConfiguration](), "")...)
	for path := range config.FieldSources() {
		if !all.Has(path) {
			t.Errorf("config.FieldSources names %q, which is not a field", path)
		}
	}
}

func TestLoad(t *testing.T) {
	tests := map[string]struct {
		content string
		check   func(t *testing.T, cfg *config.AgentConfiguration)
	}{
		"only apiVersion and kind: every default": {
			content: header,
			check: func(t *testing.T, cfg *config.AgentConfiguration) {
				if !reflect.DeepEqual(cfg, loader.Default()) {
					t.Errorf("got %+v, want the defaults", cfg)
				}
			},
		},
		"set fields are kept, the rest defaulted": {
			content: header + "nodeName: node-a\nvolumeManager:\n  workers: 3\ngitRepo:\n  cache:\n    enabled: false\nhooks:\n  directories: []\n",
			check: func(t *testing.T, cfg *config.AgentConfiguration) {
				want := loader.Default()
				want.NodeName = "node-a"
				want.VolumeManager.Workers = 3
				want.GitRepo.Cache.Enabled = false
				want.Hooks.Directories = []string{}
				if !reflect.DeepEqual(cfg, want) {
					t.Errorf("got %+v\nwant %+v", cfg, want)
				}
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			cfg, err := loader.Load(writeConfig(t, tc.content))
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, cfg)
		})
	}
}

func TestLoadRejects(t *testing.T) {
	tests := map[string]struct {
		content string
		errMsgs []string
	}{
		"unknown top-level field": {
			content: header + "rootDirectory: /x\n",
			errMsgs: []string{`unknown field "rootDirectory"`},
		},
		"unknown nested field": {
			content: header + "gitRepo:\n  timout: 1m\n",
			errMsgs: []string{`unknown field "gitRepo.timout"`},
		},
		"duplicate field": {
			content: header + "rootDir: /a\nrootDir: /b\n",
			errMsgs: []string{`"rootDir" already set`},
		},
		"wrong kind": {
			content: "apiVersion: config.volumeagent.io/v1alpha1\nkind: KubeletConfiguration\n",
			errMsgs: []string{`kind "KubeletConfiguration" is not supported`, `want apiVersion "config.volumeagent.io/v1alpha1", kind "AgentConfiguration"`},
		},
		"wrong apiVersion": {
			content: "apiVersion: config.volumeagent.io/v1\nkind: AgentConfiguration\n",
			errMsgs: []string{`apiVersion "config.volumeagent.io/v1"`, "is not supported"},
		},
		"internal version": {
			content: "apiVersion: config.volumeagent.io/__internal\nkind: AgentConfiguration\n",
			errMsgs: []string{`apiVersion "config.volumeagent.io/__internal"`, "is not supported"},
		},
		"no apiVersion or kind": {
			content: "rootDir: /x\n",
			errMsgs: []string{`apiVersion "", kind "" is not supported`},
		},
		"empty file": {
			content: "",
			errMsgs: []string{`apiVersion "", kind "" is not supported`},
		},
		"wrong value type": {
			content: header + "volumeManager:\n  workers: many\n",
			errMsgs: []string{"volumeManager.workers"},
		},
		"unquoted octal socket mode": {
			content: header + "server:\n  socketMode: 0600\n",
			errMsgs: []string{"socketMode"},
		},
		"bad duration": {
			content: header + "gitRepo:\n  timeout: 2 minutes\n",
			errMsgs: []string{`gitRepo.timeout: time: unknown unit " minutes" in duration "2 minutes"`},
		},
		"not YAML": {
			content: header + "rootDir: [\n",
			errMsgs: []string{"yaml"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			path := writeConfig(t, tc.content)
			cfg, err := loader.Load(path)
			if err == nil {
				t.Fatalf("Load succeeded with %+v, want an error", cfg)
			}
			for _, msg := range append([]string{path}, tc.errMsgs...) {
				if !strings.Contains(err.Error(), msg) {
					t.Errorf("error %q does not contain %q", err, msg)
				}
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing.yaml")
	_, err := loader.Load(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Errorf("Load(%q) error = %v, want a not-exist error naming the file", path, err)
	}
}

func TestApplyFlockerEnvironment(t *testing.T) {
	tests := map[string]struct {
		env    map[string]string
		want   func(*config.FlockerConfiguration)
		errMsg string
	}{
		"no variables change nothing": {
			env:  map[string]string{},
			want: func(*config.FlockerConfiguration) {},
		},
		"empty variables change nothing": {
			env:  map[string]string{config.EnvFlockerControlServiceHost: "", config.EnvFlockerControlServicePort: ""},
			want: func(*config.FlockerConfiguration) {},
		},
		"every variable": {
			env: map[string]string{
				"FLOCKER_CONTROL_SERVICE_HOST":             "control.example",
				"FLOCKER_CONTROL_SERVICE_PORT":             "14523",
				"FLOCKER_CONTROL_SERVICE_CA_FILE":          "/pki/ca.crt",
				"FLOCKER_CONTROL_SERVICE_CLIENT_CERT_FILE": "/pki/user.crt",
				"FLOCKER_CONTROL_SERVICE_CLIENT_KEY_FILE":  "/pki/user.key",
			},
			want: func(f *config.FlockerConfiguration) {
				f.ControlServiceHost = "control.example"
				f.Port = 14523
				f.CAFile = "/pki/ca.crt"
				f.ClientCertFile = "/pki/user.crt"
				f.ClientKeyFile = "/pki/user.key"
			},
		},
		"port that is not a number": {
			env:    map[string]string{"FLOCKER_CONTROL_SERVICE_HOST": "control.example", "FLOCKER_CONTROL_SERVICE_PORT": "45xx"},
			errMsg: `invalid FLOCKER_CONTROL_SERVICE_PORT "45xx": must be a port number`,
		},
		"port out of range": {
			env:    map[string]string{"FLOCKER_CONTROL_SERVICE_PORT": "65536"},
			errMsg: `invalid FLOCKER_CONTROL_SERVICE_PORT "65536": must be between 1 and 65535, inclusive`,
		},
		"port zero": {
			env:    map[string]string{"FLOCKER_CONTROL_SERVICE_PORT": "0"},
			errMsg: `invalid FLOCKER_CONTROL_SERVICE_PORT "0": must be between 1 and 65535, inclusive`,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			cfg := loader.Default()
			want := loader.Default()
			err := loader.ApplyFlockerEnvironment(cfg, envOf(tc.env))
			if tc.errMsg != "" {
				if err == nil || err.Error() != tc.errMsg {
					t.Errorf("error = %v, want %q", err, tc.errMsg)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				tc.want(&want.Flocker)
			}
			if !reflect.DeepEqual(cfg, want) {
				t.Errorf("flocker configuration = %+v, want %+v", cfg.Flocker, want.Flocker)
			}
		})
	}
}

func TestAddFlagsRegistersTheTableFlags(t *testing.T) {
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	loader.AddFlags(fs, loader.Default())
	registered := sets.New[string]()
	fs.VisitAll(func(f *pflag.Flag) { registered.Insert(f.Name) })
	inTable := sets.New[string]()
	for _, source := range config.FieldSources() {
		if source.Flag != "" {
			inTable.Insert(source.Flag)
		}
	}
	if !registered.Equal(inTable) {
		t.Errorf("flags not in config.FieldSources: %v; in the table but not registered: %v",
			sets.List(registered.Difference(inTable)), sets.List(inTable.Difference(registered)))
	}
	for _, klogFlag := range []string{"v", "vmodule"} {
		if fs.Lookup(klogFlag) != nil {
			t.Errorf("AddFlags registered --%s, which belongs to klog", klogFlag)
		}
	}
}

// TestEachFlagSetsItsTableField proves that every flag changes exactly the
// field that config.FieldSources (and so every validation message) names.
func TestEachFlagSetsItsTableField(t *testing.T) {
	valueByType := map[string]string{
		"string":      "/changed",
		"duration":    "7s",
		"int32":       "7",
		"bool":        "true",
		"stringSlice": "file,git",
		"stringArray": "/changed",
	}
	for path, source := range config.FieldSources() {
		if source.Flag == "" {
			continue
		}
		t.Run(source.Flag, func(t *testing.T) {
			fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
			loader.AddFlags(fs, loader.Default())
			value, ok := valueByType[fs.Lookup(source.Flag).Value.Type()]
			if !ok {
				t.Fatalf("no test value for flag type %s", fs.Lookup(source.Flag).Value.Type())
			}
			if err := fs.Parse([]string{"--" + source.Flag + "=" + value}); err != nil {
				t.Fatal(err)
			}
			cfg := loader.Default()
			before := flattenConfig(t, cfg)
			if err := loader.ApplyChangedFlags(fs, cfg); err != nil {
				t.Fatal(err)
			}
			after := flattenConfig(t, cfg)
			var changed []string
			for key := range sets.KeySet(before).Union(sets.KeySet(after)) {
				if !reflect.DeepEqual(before[key], after[key]) {
					changed = append(changed, key)
				}
			}
			if !slices.Equal(changed, []string{path}) {
				t.Errorf("--%s=%s changed %v, want only %s", source.Flag, value, changed, path)
			}
		})
	}
}

func TestApplyChangedFlagsOnlyAppliesExplicitFlags(t *testing.T) {
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	fs.String("config", "", "a flag the loader does not own")
	loader.AddFlags(fs, loader.Default())
	err := fs.Parse([]string{"--config=/etc/agent.yaml", "--workers=3", "--hook-dir=/a", "--hook-dir=/b", "--git-allowed-protocols=file"})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := loader.Load(writeConfig(t, header+"rootDir: /from/file\nvolumeManager:\n  workers: 5\n  resyncPeriod: 1m\nhooks:\n  directories: [/file/hooks]\n"))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // applying twice changes nothing more
		if err := loader.ApplyChangedFlags(fs, cfg); err != nil {
			t.Fatal(err)
		}
	}
	if cfg.RootDir != "/from/file" || cfg.VolumeManager.ResyncPeriod.Duration != time.Minute {
		t.Errorf("flags that were not set overrode the file: rootDir=%q resyncPeriod=%v", cfg.RootDir, cfg.VolumeManager.ResyncPeriod)
	}
	if cfg.VolumeManager.Workers != 3 {
		t.Errorf("workers = %d, want 3 from --workers", cfg.VolumeManager.Workers)
	}
	if want := []string{"/a", "/b"}; !slices.Equal(cfg.Hooks.Directories, want) {
		t.Errorf("hook directories = %v, want %v from repeated --hook-dir", cfg.Hooks.Directories, want)
	}
	if want := []string{"file"}; !slices.Equal(cfg.GitRepo.AllowedProtocols, want) {
		t.Errorf("allowed protocols = %v, want %v", cfg.GitRepo.AllowedProtocols, want)
	}
}

func TestResolvePrecedence(t *testing.T) {
	path := writeConfig(t, header+`
rootDir: /from/file
nodeName: file-node
volumeManager:
  workers: 4
  teardownOnExit: true
flocker:
  controlServiceHost: file-host
  port: 1111
  caFile: /file/ca.crt
server:
  socketMode: "0660"
`)
	env := envOf(map[string]string{
		config.EnvFlockerControlServiceHost: "env-host",
		config.EnvFlockerControlServicePort: "2222",
		config.EnvFlockerCAFile:             "/env/ca.crt",
	})
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	loader.AddFlags(fs, loader.Default())
	args := []string{
		"--workers=16",                        // flag over file
		"--flocker-control-service-port=3333", // flag over env over file
		"--socket-mode=0600",                  // an explicit flag wins even when it equals the default
		"--teardown-on-exit=false",
	}
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}

	cfg, err := loader.Resolve(path, fs, env)
	if err != nil {
		t.Fatal(err)
	}
	want := loader.Default()
	want.RootDir = "/from/file"                  // file over default
	want.NodeName = "file-node"                  // file over host name
	want.VolumeManager.Workers = 16              // flag
	want.VolumeManager.TeardownOnExit = false    // flag
	want.Flocker.ControlServiceHost = "env-host" // env over file
	want.Flocker.Port = 3333                     // flag
	want.Flocker.CAFile = "/env/ca.crt"          // env over file
	want.Server.SocketMode = "0600"              // flag
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("got  %+v\nwant %+v", cfg, want)
	}
}

func TestResolveWithoutFileOrFlags(t *testing.T) {
	cfg, err := loader.Resolve("", nil, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, loader.Default()) {
		t.Errorf("got %+v, want the defaults", cfg)
	}
}

func TestResolveReportsEveryProblem(t *testing.T) {
	path := writeConfig(t, header+"rootDir: rel/path\nserver:\n  socketMode: \"999\"\n")
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	loader.AddFlags(fs, loader.Default())
	if err := fs.Parse([]string{"--workers=0"}); err != nil {
		t.Fatal(err)
	}
	_, err := loader.Resolve(path, fs, noEnv)
	if err == nil {
		t.Fatal("Resolve accepted an invalid configuration")
	}
	for _, msg := range []string{
		`invalid configuration:`,
		`rootDir (--root-dir): Invalid value: "rel/path": must be an absolute path`,
		`volumeManager.workers (--workers): Invalid value: 0: must be at least 1`,
		`server.socketMode (--socket-mode): Invalid value: "999"`,
	} {
		if !strings.Contains(err.Error(), msg) {
			t.Errorf("error %q does not contain %q", err, msg)
		}
	}
}

func TestResolveRejectsBadEnvironment(t *testing.T) {
	_, err := loader.Resolve("", nil, envOf(map[string]string{config.EnvFlockerControlServicePort: "https"}))
	if err == nil || !strings.Contains(err.Error(), `FLOCKER_CONTROL_SERVICE_PORT "https"`) {
		t.Errorf("error = %v, want one naming the variable and its value", err)
	}
}

// jsonFieldPaths lists the dotted JSON paths of the leaf fields of a
// versioned configuration type.
func jsonFieldPaths(typ reflect.Type, prefix string) []string {
	var paths []string
	for i := range typ.NumField() {
		field := typ.Field(i)
		name, _, _ := strings.Cut(field.Tag.Get("json"), ",")
		if name == "" { // inline TypeMeta
			paths = append(paths, jsonFieldPaths(field.Type, prefix)...)
			continue
		}
		if field.Type.Kind() == reflect.Struct && field.Type != reflect.TypeFor[metav1.Duration]() {
			paths = append(paths, jsonFieldPaths(field.Type, prefix+name+".")...)
			continue
		}
		paths = append(paths, prefix+name)
	}
	return paths
}

// flatten maps the dotted paths of the leaves of a decoded document to
// their values; lists are leaves.
func flatten(prefix string, doc map[string]any) map[string]any {
	out := map[string]any{}
	for key, value := range doc {
		if nested, ok := value.(map[string]any); ok {
			for k, v := range flatten(prefix+key+".", nested) {
				out[k] = v
			}
			continue
		}
		out[prefix+key] = value
	}
	return out
}

// flattenConfig converts cfg to v1alpha1 and flattens its JSON form.
func flattenConfig(t *testing.T, cfg *config.AgentConfiguration) map[string]any {
	t.Helper()
	scheme, _, err := configscheme.NewSchemeAndCodecs()
	if err != nil {
		t.Fatal(err)
	}
	versioned := &v1alpha1.AgentConfiguration{}
	if err := scheme.Convert(cfg, versioned, nil); err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(versioned)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	return flatten("", doc)
}

// TestRelativePathFlagsResolveAgainstTheWorkingDirectory pins down that a path
// given on the command line is taken from the working directory, as every
// other tool does, while a relative path in the file is still refused.
func TestRelativePathFlagsResolveAgainstTheWorkingDirectory(t *testing.T) {
	cwd := t.TempDir()
	t.Chdir(cwd)
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	loader.AddFlags(fs, loader.Default())
	err := fs.Parse([]string{"--root-dir=state", "--pod-manifest-path=./pods", "--socket=run/agent.sock",
		"--hook-dir=hooks.d", "--hook-dir=/abs/hooks.d", "--fault-hooks-file=../faults.yaml"})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := loader.Resolve("", fs, noEnv)
	if err != nil {
		t.Fatalf("Resolve() with relative path flags failed: %v", err)
	}
	if want := filepath.Join(cwd, "state"); cfg.RootDir != want {
		t.Errorf("rootDir = %q, want %q", cfg.RootDir, want)
	}
	if want := filepath.Join(cwd, "pods"); cfg.PodManifestPath != want {
		t.Errorf("podManifestPath = %q, want %q", cfg.PodManifestPath, want)
	}
	if want := filepath.Join(cwd, "run", "agent.sock"); cfg.Server.SocketPath != want {
		t.Errorf("socketPath = %q, want %q", cfg.Server.SocketPath, want)
	}
	if want := []string{filepath.Join(cwd, "hooks.d"), "/abs/hooks.d"}; !slices.Equal(cfg.Hooks.Directories, want) {
		t.Errorf("hook directories = %v, want %v", cfg.Hooks.Directories, want)
	}
	if want := filepath.Join(filepath.Dir(cwd), "faults.yaml"); cfg.Hooks.FaultHooksFile != want {
		t.Errorf("faultHooksFile = %q, want %q", cfg.Hooks.FaultHooksFile, want)
	}

	// An empty path flag still means "off".
	fs = pflag.NewFlagSet("test", pflag.ContinueOnError)
	loader.AddFlags(fs, loader.Default())
	if err := fs.Parse([]string{"--pod-manifest-path="}); err != nil {
		t.Fatal(err)
	}
	if cfg, err := loader.Resolve("", fs, noEnv); err != nil || cfg.PodManifestPath != "" {
		t.Errorf("Resolve() with --pod-manifest-path= gave %q, %v; want it empty", cfg.PodManifestPath, err)
	}

	// The file's paths are not the command line's: relative is refused.
	_, err = loader.Resolve(writeConfig(t, header+"rootDir: state\n"), nil, noEnv)
	if err == nil || !strings.Contains(err.Error(), `rootDir (--root-dir): Invalid value: "state": must be an absolute path`) {
		t.Errorf("Resolve() of a file with a relative rootDir = %v, want it refused", err)
	}
}
