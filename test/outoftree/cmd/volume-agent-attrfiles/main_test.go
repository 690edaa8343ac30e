package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/volume-agent/volume-agent/cmd/volume-agent/app"
	"github.com/volume-agent/volume-agent/pkg/volumemanager"

	"example.com/volume-agent-outoftree/attrfiles"
)

// TestPluginIsRegistered shows the agent built through app.Run loads the
// out-of-tree plugin next to the built-in ones.
func TestPluginIsRegistered(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), []string{"plugins", "-o", "json", "--root-dir", t.TempDir()}, nil, &stdout, &stderr)
	if code != app.ExitOK {
		t.Fatalf("plugins exited %d: %s", code, stderr.String())
	}
	var statuses []volumemanager.PluginStatus
	if err := json.Unmarshal(stdout.Bytes(), &statuses); err != nil {
		t.Fatalf("plugins -o json printed %q: %v", stdout.String(), err)
	}
	names := map[string]bool{}
	for _, s := range statuses {
		names[s.Name] = true
	}
	if !names[attrfiles.PluginName] || !names["kubernetes.io/empty-dir"] {
		t.Errorf("plugins = %v, want %s next to the built-in kubernetes.io/empty-dir", statuses, attrfiles.PluginName)
	}
}

const podTemplate = `apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: default
  uid: 6c1f9d56-0000-4000-8000-000000000001
spec:
  containers:
  - name: web
    image: nginx
  volumes:
  - name: settings
    csi:
      driver: example.com/attribute-files
      volumeAttributes:
        FILE: hello
`

// TestValidateUsesThePlugin shows the agent hands the out-of-tree volume to
// the plugin's ValidateSpec.
func TestValidateUsesThePlugin(t *testing.T) {
	for name, tc := range map[string]struct {
		file string
		code int
		want string
	}{
		"valid":   {file: "motd.txt", code: app.ExitOK, want: "valid: 1 pods"},
		"invalid": {file: "../escape", code: app.ExitInvalid, want: "spec.volumes[0].csi.volumeAttributes[../escape]: Invalid value"},
	} {
		t.Run(name, func(t *testing.T) {
			manifest := filepath.Join(t.TempDir(), "pod.yaml")
			if err := os.WriteFile(manifest, []byte(strings.Replace(podTemplate, "FILE", tc.file, 1)), 0o644); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			code := run(t.Context(), []string{"validate", "-f", manifest, "--root-dir", t.TempDir()}, nil, &stdout, &stderr)
			if code != tc.code {
				t.Errorf("validate exited %d, want %d; stderr: %s", code, tc.code, stderr.String())
			}
			if out := stdout.String() + stderr.String(); !strings.Contains(out, tc.want) {
				t.Errorf("validate printed %q, want %q", out, tc.want)
			}
		})
	}
}
