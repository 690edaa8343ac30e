package config

import (
	"os"
	"testing"
)

func TestParseSocketMode(t *testing.T) {
	tests := map[string]struct {
		mode    string
		want    os.FileMode
		wantErr bool
	}{
		"leading zero":      {mode: "0600", want: 0o600},
		"no leading zero":   {mode: "660", want: 0o660},
		"no permissions":    {mode: "0", want: 0},
		"all permissions":   {mode: "0777", want: 0o777},
		"not octal":         {mode: "0800", wantErr: true},
		"symbolic":          {mode: "rw-------", wantErr: true},
		"sticky bit":        {mode: "01777", wantErr: true},
		"empty":             {mode: "", wantErr: true},
		"negative":          {mode: "-600", wantErr: true},
		"go octal prefix":   {mode: "0o600", wantErr: true},
		"surrounding space": {mode: " 0600", wantErr: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := ParseSocketMode(tc.mode)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("ParseSocketMode(%q) = %v, %v; want %v, error %v", tc.mode, got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestResolvedSocketPath(t *testing.T) {
	cfg := &AgentConfiguration{RootDir: "/var/lib/volume-agent"}
	if got, want := cfg.ResolvedSocketPath(), "/var/lib/volume-agent/volume-agent.sock"; got != want {
		t.Errorf("ResolvedSocketPath() = %q, want %q", got, want)
	}
	cfg.Server.SocketPath = "/run/agent.sock"
	if got, want := cfg.ResolvedSocketPath(), "/run/agent.sock"; got != want {
		t.Errorf("ResolvedSocketPath() = %q, want %q", got, want)
	}
}

func TestSourceOf(t *testing.T) {
	tests := map[string]string{
		"rootDir":                  "--root-dir",
		"hooks.directories[3]":     "--hook-dir",
		"flocker.port":             "--flocker-control-service-port or $FLOCKER_CONTROL_SERVICE_PORT",
		"flocker.caFile":           "$FLOCKER_CONTROL_SERVICE_CA_FILE",
		"volumeManager.maxBackoff": "",
		"unknown":                  "",
	}
	for path, want := range tests {
		if got := SourceOf(path).String(); got != want {
			t.Errorf("SourceOf(%q) = %q, want %q", path, got, want)
		}
	}
}
