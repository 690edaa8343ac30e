package gitrepo

import (
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// A URL whose password holds a '/' does not parse; its user information
// must still be redacted in the validation error, and in what git says.
func TestMalformedURLIsRedacted(t *testing.T) {
	for _, tc := range []struct{ repo, user, password string }{
		{"http://user:pa/ss@host/x", "user", "pa"},
		{"https://deploy:sec/ret@example.com/r.git", "deploy", "sec"},
	} {
		t.Run(tc.repo, func(t *testing.T) {
			src := &v1.GitRepoVolumeSource{Repository: tc.repo}
			errs := validateSource(src, Config{AllowedProtocols: []string{"https", "http"}}, field.NewPath("gitRepo"))
			if len(errs) == 0 {
				t.Fatal("no error for a malformed URL")
			}
			got := errs.ToAggregate().Error()
			for _, secret := range []string{tc.user + ":", ":" + tc.password, tc.password + "/"} {
				if strings.Contains(got, secret) {
					t.Errorf("error %q shows %q", got, secret)
				}
			}
			if !strings.Contains(got, `Invalid value: "`+strings.SplitN(tc.repo, "://", 2)[0]+"://"+redacted+"@") {
				t.Errorf("error %q does not show the redacted URL", got)
			}
			if msg := redactMessage("fatal: unable to access '"+tc.repo+"/': bad URL", tc.repo); strings.Contains(msg, tc.user) || strings.Contains(msg, tc.password+"/") {
				t.Errorf("redactMessage() = %q", msg)
			}
		})
	}
}
