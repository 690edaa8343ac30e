package app

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

// TestValidatePodUIDForTearDown: a tear-down takes every UID that can name a
// pod directory, including ones the manifests refuse today (too long, with a
// space), so that pods set up before can still be torn down.
func TestValidatePodUIDForTearDown(t *testing.T) {
	for name, tc := range map[string]struct {
		uid     string
		wantErr bool
	}{
		"kubernetes UID":       {uid: "5e4a2f7c-1b7a-4c55-9d6e-3f1f2f0e9a11"},
		"200 bytes":            {uid: strings.Repeat("a", 200)},
		"a space":              {uid: "a b"},
		"empty":                {uid: "", wantErr: true},
		"dot dot":              {uid: "..", wantErr: true},
		"a slash":              {uid: "../etc", wantErr: true},
		"longer than NAME_MAX": {uid: strings.Repeat("a", 256), wantErr: true},
	} {
		t.Run(name, func(t *testing.T) {
			err := validatePodUID(tc.uid, field.NewPath("--pod-uid"))
			if (err != nil) != tc.wantErr {
				t.Fatalf("validatePodUID(%q) = %v; want error %v", tc.uid, err, tc.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), "--pod-uid") {
				t.Errorf("error %q does not name the flag", err)
			}
		})
	}
}
