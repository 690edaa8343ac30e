package gitrepo

import (
	"errors"
	"net/url"
	"regexp"
	"strings"
)

// redacted replaces credentials in what the plugin shows.
const redacted = "xxxxx"

// userinfoInURL matches the user information of a URL: "scheme://userinfo@".
// It may hold a '/' (a password that was not percent-encoded): whatever
// comes before the first '@' is hidden, at the cost of hiding the host of a
// URL whose path holds an '@'.
var userinfoInURL = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://)([^@\s'"]+)@`)

// redactURL returns repo with its URL's user information (a user name may be
// a token) replaced, so it can be logged and returned in errors.
func redactURL(repo string) string {
	return userinfoInURL.ReplaceAllString(repo, "${1}"+redacted+"@")
}

// redactMessage redacts, in a message of git's about repo, the user
// information of every URL and the literal user name and password of repo,
// which git may print decoded or on their own.
func redactMessage(msg, repo string) string {
	msg = userinfoInURL.ReplaceAllString(msg, "${1}"+redacted+"@")
	for _, secret := range secretsOf(repo) {
		msg = strings.ReplaceAll(msg, secret, redacted)
	}
	return msg
}

// redactError returns err with its message redacted for repo.
func redactError(err error, repo string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if safe := redactMessage(msg, repo); safe != msg {
		return errors.New(safe)
	}
	return err
}

// secretsOf returns the user name and password in repo's URL, raw and
// decoded, that are long enough not to match ordinary words by accident.
func secretsOf(repo string) []string {
	m := userinfoInURL.FindStringSubmatch(repo)
	if m == nil {
		return nil
	}
	var out []string
	user, password, _ := strings.Cut(m[2], ":")
	for _, s := range []string{user, password} {
		out = append(out, s)
		if decoded, err := url.PathUnescape(s); err == nil {
			out = append(out, decoded)
		}
	}
	long := out[:0]
	for _, s := range out {
		if len(s) >= 4 {
			long = append(long, s)
		}
	}
	return long
}
