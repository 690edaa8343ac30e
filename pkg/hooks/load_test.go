package hooks

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/utils/ptr"
)

// writeScript writes an executable shell script into dir and returns its path.
func writeScript(t *testing.T, dir, name, body string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestParse(t *testing.T) {
	dir := t.TempDir()
	program := writeScript(t, dir, "hook.sh", "exit 0\n")
	notExecutable := filepath.Join(dir, "plain.sh")
	if err := os.WriteFile(notExecutable, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	valid := func(extra string) string {
		return `{"version": "1.0.0", "hook": {"path": "` + program + `"` + extra + `}, "when": {"always": true}, "stages": ["preSetUp"]}`
	}

	tests := map[string]struct {
		content string
		// wantErrs are substrings the error must contain; none means valid.
		wantErrs []string
	}{
		"minimal": {content: valid("")},
		"every field": {
			content: `{"version": "1.0.0",
				"hook": {"path": "` + program + `", "args": ["hook", "-v"], "env": ["A=b"], "timeout": 5},
				"when": {"plugins": ["kubernetes\\.io/.*"], "volumes": ["data"], "annotations": {"example\\.com/backup": "true|yes"}},
				"stages": ["preSetUp", "postSetUp", "preTearDown", "postTearDown"]}`,
		},
		"missing version": {
			content:  `{"hook": {"path": "` + program + `"}, "when": {"always": true}, "stages": ["preSetUp"]}`,
			wantErrs: []string{`version: Required value: must be "1.0.0"`},
		},
		"old version": {
			content:  strings.Replace(valid(""), `"1.0.0"`, `"0.1.0"`, 1),
			wantErrs: []string{`version: Unsupported value: "0.1.0"`},
		},
		"relative path": {
			content:  strings.Replace(valid(""), program, "hook.sh", 1),
			wantErrs: []string{`hook.path: Invalid value: "hook.sh": must be an absolute path`},
		},
		"missing program": {
			content:  strings.Replace(valid(""), program, "/nonexistent/hook", 1),
			wantErrs: []string{`hook.path: Invalid value: "/nonexistent/hook"`, "no such file or directory"},
		},
		"program is a directory": {
			content:  strings.Replace(valid(""), program, dir, 1),
			wantErrs: []string{`hook.path: Invalid value: "` + dir + `": must be a regular file`},
		},
		"program not executable": {
			content:  strings.Replace(valid(""), program, notExecutable, 1),
			wantErrs: []string{`hook.path: Invalid value: "` + notExecutable + `": must be executable`},
		},
		"env entry without =": {
			content:  valid(`, "env": ["GOOD=1", "BAD"]`),
			wantErrs: []string{`hook.env[1]: Invalid value: "BAD": must be KEY=value`},
		},
		"zero timeout": {
			content:  valid(`, "timeout": 0`),
			wantErrs: []string{`hook.timeout: Invalid value: 0: must be a positive number of seconds`},
		},
		"negative timeout": {
			content:  valid(`, "timeout": -5`),
			wantErrs: []string{`hook.timeout: Invalid value: -5: must be a positive number of seconds`},
		},
		"timeout at the upper bound": {content: valid(`, "timeout": 3600`)},
		"timeout above the upper bound": {
			content:  valid(`, "timeout": 3601`),
			wantErrs: []string{`hook.timeout: Invalid value: 3601: must be at most 3600 seconds`},
		},
		"timeout that would overflow a duration": {
			content:  valid(`, "timeout": 10000000000`),
			wantErrs: []string{`hook.timeout: Invalid value: 10000000000: must be at most 3600 seconds`},
		},
		"empty when": {
			content:  `{"version": "1.0.0", "hook": {"path": "` + program + `"}, "when": {}, "stages": ["preSetUp"]}`,
			wantErrs: []string{"when: Required value: must set at least one of always, plugins, annotations, volumes"},
		},
		"bad plugin regex": {
			content:  `{"version": "1.0.0", "hook": {"path": "` + program + `"}, "when": {"plugins": ["ok", "(unclosed"]}, "stages": ["preSetUp"]}`,
			wantErrs: []string{`when.plugins[1]: Invalid value: "(unclosed": must be a valid regular expression`, "missing closing )"},
		},
		"bad annotation value regex": {
			content:  `{"version": "1.0.0", "hook": {"path": "` + program + `"}, "when": {"annotations": {"key": "[z-a]"}}, "stages": ["preSetUp"]}`,
			wantErrs: []string{`when.annotations[key]: Invalid value: "[z-a]"`},
		},
		"unknown stage": {
			content:  strings.Replace(valid(""), `["preSetUp"]`, `["preSetUp", "prestart"]`, 1),
			wantErrs: []string{`stages[1]: Unsupported value: "prestart"`, `"preSetUp"`},
		},
		"no stages": {
			content:  strings.Replace(valid(""), `["preSetUp"]`, `[]`, 1),
			wantErrs: []string{"stages: Required value"},
		},
		"misspelt field": {
			content:  strings.Replace(valid(""), `"stages"`, `"stage"`, 1),
			wantErrs: []string{`unknown field "stage"`},
		},
		"wrong type": {
			content:  strings.Replace(valid(""), `"always": true`, `"always": "yes"`, 1),
			wantErrs: []string{"cannot unmarshal string", "always"},
		},
		"trailing data": {
			content:  valid("") + `{}`,
			wantErrs: []string{"unexpected data after the JSON object"},
		},
		"every problem at once": {
			content: `{"version": "2", "hook": {"path": "rel"}, "when": {}, "stages": ["later"]}`,
			wantErrs: []string{
				`version: Unsupported value: "2"`, `hook.path: Invalid value: "rel"`,
				"when: Required value", `stages[0]: Unsupported value: "later"`,
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			source := filepath.Join(dir, "10-test.json")
			hook, err := Parse(source, []byte(tc.content))
			if len(tc.wantErrs) == 0 {
				if err != nil {
					t.Fatalf("Parse() failed: %v", err)
				}
				if hook.Name != "10-test.json" || hook.Source != source {
					t.Errorf("Parse() = name %q source %q, want 10-test.json and %s", hook.Name, hook.Source, source)
				}
				return
			}
			if err == nil {
				t.Fatalf("Parse() succeeded, want an error containing %q", tc.wantErrs)
			}
			if !strings.Contains(err.Error(), source) {
				t.Errorf("error %q does not name the file %s", err, source)
			}
			for _, want := range tc.wantErrs {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
		})
	}
}

func TestTimeoutDefault(t *testing.T) {
	program := writeScript(t, t.TempDir(), "hook.sh", "exit 0\n")
	for name, tc := range map[string]struct {
		timeout string
		want    string
	}{
		"unset": {timeout: "", want: DefaultTimeout.String()},
		"set":   {timeout: `, "timeout": 7`, want: "7s"},
	} {
		t.Run(name, func(t *testing.T) {
			hook, err := Parse("/x.json", []byte(`{"version": "1.0.0", "hook": {"path": "`+program+`"`+tc.timeout+`}, "when": {"always": true}, "stages": ["preSetUp"]}`))
			if err != nil {
				t.Fatal(err)
			}
			if got := hook.timeout.String(); got != tc.want {
				t.Errorf("timeout = %s, want %s", got, tc.want)
			}
		})
	}
}

// TestMatchesAnchored pins down that every regular expression must match the
// whole string, unlike OCI hooks, whose expressions match anywhere.
func TestMatchesAnchored(t *testing.T) {
	program := writeScript(t, t.TempDir(), "hook.sh", "exit 0\n")
	state := VolumeState{
		Plugin:      "kubernetes.io/empty-dir",
		Volume:      "cache-data",
		Annotations: map[string]string{"backup.example.com/enabled": "true", "team": "storage"},
	}
	tests := map[string]struct {
		when   When
		stages []Stage
		stage  Stage
		want   bool
	}{
		"always":                              {when: When{Always: ptr.To(true)}, want: true},
		"always false disables the hook":      {when: When{Always: ptr.To(false), Plugins: []string{".*"}}, want: false},
		"stage not listed":                    {when: When{Always: ptr.To(true)}, stage: PostTearDown, want: false},
		"plugin whole name":                   {when: When{Plugins: []string{`kubernetes\.io/empty-dir`}}, want: true},
		"plugin suffix alone does not match":  {when: When{Plugins: []string{"empty-dir"}}, want: false},
		"plugin prefix alone does not match":  {when: When{Plugins: []string{"kubernetes"}}, want: false},
		"plugin with explicit wildcard":       {when: When{Plugins: []string{".*empty-dir"}}, want: true},
		"plugin alternation is anchored too":  {when: When{Plugins: []string{"git-repo|empty"}}, want: false},
		"any plugin expression may match":     {when: When{Plugins: []string{"nope", `.*/empty-dir`}}, want: true},
		"volume whole name":                   {when: When{Volumes: []string{"cache-.*"}}, want: true},
		"volume substring does not match":     {when: When{Volumes: []string{"cache"}}, want: false},
		"annotation key and value":            {when: When{Annotations: map[string]string{`backup\.example\.com/.*`: "true"}}, want: true},
		"annotation value substring no match": {when: When{Annotations: map[string]string{`backup\.example\.com/enabled`: "tru"}}, want: false},
		"annotation key substring no match":   {when: When{Annotations: map[string]string{"backup": ".*"}}, want: false},
		"every annotation entry must match": {
			when: When{Annotations: map[string]string{"team": "storage", "missing": ".*"}}, want: false,
		},
		"key and value must match the same annotation": {
			when: When{Annotations: map[string]string{"team|backup.*": "true"}}, want: true,
		},
		"key and value of different annotations": {
			when: When{Annotations: map[string]string{"team": "true"}}, want: false,
		},
		"every condition must match": {
			when: When{Plugins: []string{".*empty-dir"}, Volumes: []string{"other"}}, want: false,
		},
		"always and a condition": {
			when: When{Always: ptr.To(true), Volumes: []string{"other"}}, want: false,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			hook := &Hook{Definition: File{
				Version: Version,
				Hook:    Command{Path: program},
				When:    tc.when,
				Stages:  []Stage{PreSetUp},
			}}
			if errs := hook.compile(); len(errs) > 0 {
				t.Fatal(errs.ToAggregate())
			}
			stage := tc.stage
			if stage == "" {
				stage = PreSetUp
			}
			if got := hook.Matches(stage, state); got != tc.want {
				t.Errorf("Matches(%s) = %v, want %v", stage, got, tc.want)
			}
		})
	}
}
