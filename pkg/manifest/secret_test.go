package manifest_test

import (
	"strings"
	"testing"

	"github.com/volume-agent/volume-agent/pkg/manifest"
)

// secretValue is the value of the test Secrets; no problem may show it, nor
// its base64 ("aHVudGVyMi1zM2NyZXQ=").
const secretValue = "hunter2-s3cret"

func TestDecodeSecret(t *testing.T) {
	input := `apiVersion: v1
kind: Secret
metadata:
  name: creds
type: Opaque
data:
  password: aHVudGVyMi1zM2NyZXQ=
stringData:
  user: ` + secretValue + `
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Secret
  metadata: {name: other, namespace: ns}
`
	bundle, err := manifest.Load(strings.NewReader(input), "test.yaml", manifest.Options{})
	if err != nil {
		t.Fatalf("Load() error = %v", err)
	}
	if len(bundle.Secrets) != 2 || bundle.Len() != 2 {
		t.Fatalf("Secrets = %d, Len() = %d, want 2 and 2", len(bundle.Secrets), bundle.Len())
	}
	creds := bundle.Secret("default", "creds")
	if creds == nil {
		t.Fatal(`Secret("default", "creds") = nil, want the Secret with the default namespace`)
	}
	if got := string(creds.Data["password"]); got != secretValue {
		t.Errorf("data.password = %q, want it decoded from base64", got)
	}
	if got := creds.StringData["user"]; got != secretValue {
		t.Errorf("stringData.user = %q, want %q", got, secretValue)
	}
	if bundle.Secret("ns", "other") == nil || bundle.Secret("default", "other") != nil {
		t.Error(`Secret "ns/other" not found in its namespace only`)
	}
}

func TestSecretProblemsNameTheFieldAndNeverTheValue(t *testing.T) {
	secret := func(body string) string {
		return "apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\n" + body
	}
	tests := []struct {
		name  string
		input string
		// want are fragments of the problems, one a problem, in order.
		want []string
	}{
		{
			name:  "data value not base64",
			input: secret("data:\n  password: " + secretValue + "\n"),
			want:  []string{`Secret "default/creds": data[password]: Invalid value: illegal base64 data`},
		},
		{
			name:  "data not a map",
			input: secret("data: " + secretValue + "\n"),
			want:  []string{`Secret "default/creds": data: Invalid value: cannot unmarshal`},
		},
		{
			name:  "stringData value not a string",
			input: secret("stringData:\n  password: [" + secretValue + "]\n"),
			want:  []string{`Secret "default/creds": stringData[password]: Invalid value: cannot unmarshal`},
		},
		{
			name:  "bad keys",
			input: secret("data:\n  bad/key: aHVudGVyMi1zM2NyZXQ=\nstringData:\n  \"\": " + secretValue + "\n"),
			want: []string{
				`data[bad/key]: Invalid value: "bad/key": a valid config key must consist of alphanumeric characters`,
				`stringData[]: Invalid value: "": a valid config key must consist of alphanumeric characters`,
			},
		},
		{
			name:  "too big",
			input: secret("stringData:\n  a: " + strings.Repeat("x", 1<<19) + "\n  b: " + strings.Repeat("y", 1<<19) + "\n  c: " + secretValue + "\n"),
			want:  []string{`data: Too long: may not be more than 1048576 bytes`},
		},
		{
			name:  "bad metadata",
			input: "apiVersion: v1\nkind: Secret\nmetadata:\n  name: Creds\n  namespace: -ns\nstringData:\n  password: " + secretValue + "\n",
			want:  []string{`metadata.name: Invalid value: "Creds"`, `metadata.namespace: Invalid value: "-ns"`},
		},
		{
			name:  "duplicate",
			input: secret("stringData:\n  password: "+secretValue+"\n") + "---\n" + secret("stringData:\n  password: x\n"),
			want:  []string{`document 2 (line 8): Secret "default/creds": metadata.name: Duplicate value: "creds"`},
		},
		{
			name:  "unknown field",
			input: secret("stringdata:\n  password: " + secretValue + "\n"),
			want:  []string{`unknown field "stringdata"`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := manifest.Load(strings.NewReader(tc.input), "test.yaml", manifest.Options{})
			got := problems(t, err)
			if len(got) != len(tc.want) {
				t.Fatalf("got %d problems, want %d:\n%v", len(got), len(tc.want), got)
			}
			for i, want := range tc.want {
				if !strings.Contains(got[i].Error(), want) {
					t.Errorf("problem %d = %q, want it to contain %q", i, got[i].Error(), want)
				}
			}
			for _, leak := range []string{secretValue, "aHVudGVyMi1zM2NyZXQ", "xxxxxxxx"} {
				if strings.Contains(err.Error(), leak) {
					t.Errorf("the problems show a secret value %q: %v", leak, err)
				}
			}
		})
	}
}
