package volumemanager

import (
	"errors"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/volume-agent/volume-agent/pkg/manifest"
	"github.com/volume-agent/volume-agent/pkg/volume"
)

func testSecret(namespace, name, value string) *v1.Secret {
	return &v1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Data:       map[string][]byte{"data-key": []byte(value)},
		StringData: map[string]string{"string-key": value},
	}
}

func TestManagerGetSecret(t *testing.T) {
	tests := []struct {
		name string
		// sources are the Secrets of each source, by source name.
		sources map[string][]*v1.Secret
		// want is the value of the Secret "ns/creds", "" for not found.
		want         string
		wantConflict string
	}{
		{name: "no source declares it", sources: map[string][]*v1.Secret{"a": {testSecret("other", "creds", "x")}}},
		{name: "declared", sources: map[string][]*v1.Secret{"a": {testSecret("ns", "creds", "v1")}}, want: "v1"},
		{
			name:         "declared twice: the source that sorts first wins",
			sources:      map[string][]*v1.Secret{"b": {testSecret("ns", "creds", "from-b")}, "a": {testSecret("ns", "creds", "from-a")}},
			want:         "from-a",
			wantConflict: `Secret "ns/creds" is also declared by source "a", whose declaration is used`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t)
			var updates []SourceUpdate
			for source, secrets := range tc.sources {
				updates = append(updates, SourceUpdate{Source: source, Bundle: &manifest.Bundle{Secrets: secrets}})
			}
			e.m.UpdateSources(updates...)
			got, err := e.m.GetSecret("ns", "creds")
			if tc.want == "" {
				if !errors.Is(err, volume.ErrSecretNotFound) {
					t.Fatalf("GetSecret() = %v, %v; want ErrSecretNotFound", got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			// As the API server stores it: stringData merged into data.
			if string(got.Data["data-key"]) != tc.want || string(got.Data["string-key"]) != tc.want || got.StringData != nil {
				t.Errorf("GetSecret() data = %q, stringData = %q; want both keys %q in data", got.Data, got.StringData, tc.want)
			}
			got.Data["data-key"] = []byte("changed")
			if again, _ := e.m.GetSecret("ns", "creds"); string(again.Data["data-key"]) != tc.want {
				t.Error("changing the returned Secret changed the Manager's")
			}
			var conflicts []string
			for _, s := range e.m.Sources() {
				if s.Error != "" {
					conflicts = append(conflicts, s.Error)
				}
			}
			if tc.wantConflict != "" && (len(conflicts) != 1 || conflicts[0] != tc.wantConflict) {
				t.Errorf("source errors = %q, want %q", conflicts, tc.wantConflict)
			}
			for _, c := range conflicts {
				if strings.Contains(c, tc.want) {
					t.Errorf("a source error shows the Secret's value: %q", c)
				}
			}
			for source := range tc.sources {
				e.m.UpdateSources(SourceUpdate{Source: source, Removed: true})
			}
			if _, err := e.m.GetSecret("ns", "creds"); !errors.Is(err, volume.ErrSecretNotFound) {
				t.Errorf("GetSecret() after its sources went = %v, want ErrSecretNotFound", err)
			}
		})
	}
}

// TestManagerRetriesAtOnceWhenSecretsChange: a set-up that failed, as one
// missing a Secret does, is tried again as soon as the Secrets change, not
// after its backoff.
func TestManagerRetriesAtOnceWhenSecretsChange(t *testing.T) {
	e := newTestEnv(t, func(c *Config) { c.Executor.InitialBackoff = time.Hour })
	e.m.MarkSourcesSynced()
	e.plugin.script("v", &fakeBehavior{setUpErrs: []error{volume.NewTransientError(errors.New(`failed to get Secret "default/creds"`))}})
	e.start()
	e.setPods("pods", testPod("uid-1", "p", emptyDirVolume("v")))
	e.waitFor("the failed set-up", e.stateIs("uid-1", "v", StateFailed))
	// Another source's pods change: no retry.
	e.setPods("other", testPod("uid-2", "q"))
	e.never("a retry before the Secrets change", func() bool { return e.plugin.count(OperationSetUp, "v") > 1 })

	e.m.UpdateSources(SourceUpdate{Source: "secrets", Bundle: &manifest.Bundle{Secrets: []*v1.Secret{testSecret("default", "creds", "x")}}})
	e.waitFor("the retry, without the clock moving", e.stateIs("uid-1", "v", StateReady))
}
