package gitrepo

import (
	"errors"
	"fmt"
	"net/url"
	"path"
	"regexp"
	"strings"
	"unicode"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// maxFieldLength bounds every field, far above any real URL or ref name.
const maxFieldLength = 4096

// validateSource returns every problem of src, each naming its field under
// fldPath and the bad value (a repository's credentials redacted).
func validateSource(src *v1.GitRepoVolumeSource, cfg Config, fldPath *field.Path) field.ErrorList {
	var errs field.ErrorList
	repoPath := fldPath.Child("repository")
	shown := redactURL(src.Repository)
	switch {
	case src.Repository == "":
		errs = append(errs, field.Required(repoPath, "the URL of the repository to clone"))
	case len(src.Repository) > maxFieldLength:
		errs = append(errs, field.TooLong(repoPath, "", maxFieldLength))
	case strings.HasPrefix(src.Repository, "-"):
		errs = append(errs, field.Invalid(repoPath, shown, "must not start with '-'"))
	case hasControlOrSpace(src.Repository):
		errs = append(errs, field.Invalid(repoPath, shown, "must not contain whitespace or control characters"))
	default:
		protocol, err := repositoryProtocol(src.Repository)
		switch {
		case err != nil:
			errs = append(errs, field.Invalid(repoPath, shown, err.Error()))
		case !cfg.allows(protocol):
			what := fmt.Sprintf("protocol %q", protocol)
			if protocol == "file" {
				what = `a local path or file:// URL (protocol "file")`
			}
			errs = append(errs, field.Invalid(repoPath, shown, fmt.Sprintf("%s is not allowed on this node; allowed protocols (gitRepo.allowedProtocols): %s",
				what, strings.Join(cfg.AllowedProtocols, ", "))))
		}
	}

	if rev := src.Revision; rev != "" {
		revPath := fldPath.Child("revision")
		switch {
		case strings.HasPrefix(rev, "-"):
			errs = append(errs, field.Invalid(revPath, rev, "must not start with '-'"))
		case len(rev) > maxFieldLength:
			errs = append(errs, field.TooLong(revPath, "", maxFieldLength))
		case hasControlOrSpace(rev):
			errs = append(errs, field.Invalid(revPath, rev, "must not contain whitespace or control characters"))
		}
	}

	if src.Directory != "" {
		if msg := checkDirectory(src.Directory); msg != "" {
			errs = append(errs, field.Invalid(fldPath.Child("directory"), src.Directory, msg))
		}
	} else if src.Repository != "" && len(errs) == 0 {
		name := defaultDirectory(src.Repository)
		if msg := checkDirectory(name); msg != "" || name == "." {
			errs = append(errs, field.Invalid(repoPath, shown, fmt.Sprintf("cannot derive a directory name from it (%q); set directory", name)))
		}
	}
	return errs
}

// checkDirectory returns why dir is not a valid directory field, or "".
// "." (also written "./.") is the volume's root; anything else must be one
// path component, neither ".." nor ".git" in any case.
func checkDirectory(dir string) string {
	switch {
	case strings.HasPrefix(dir, "-"):
		return "must not start with '-'"
	case len(dir) > 255:
		return "must be at most 255 characters"
	case hasControl(dir):
		return "must not contain control characters"
	case strings.HasPrefix(dir, "/"):
		return "must be a relative path"
	case strings.Contains(dir, `\`):
		return `must not contain '\'`
	}
	for _, part := range strings.Split(dir, "/") {
		if part == ".." {
			return "must not contain '..'"
		}
		if isDotGit(part) {
			return "must not contain '.git'"
		}
	}
	cleaned := path.Clean(dir)
	if cleaned != "." && strings.Contains(cleaned, "/") {
		return "must be a single directory name, or '.' for the volume's root"
	}
	return ""
}

// isDotGit reports whether a path component would be taken for ".git" on
// some file system: any case, trailing dots or spaces (NTFS), or the NTFS
// short name "git~1".
func isDotGit(name string) bool {
	trimmed := strings.TrimRight(name, ". ")
	return strings.EqualFold(trimmed, ".git") || strings.EqualFold(name, "git~1")
}

// checkRefName returns why rev is not a valid ref name by git's rules
// (git check-ref-format, one-level names allowed), or "". Hexadecimal
// object names are valid ref names too. A revision that is not a ref name
// is an expression (main~1, HEAD^, v1^{commit}), which is checked out as
// the commit it resolves to.
func checkRefName(rev string) string {
	switch {
	case rev == "@":
		return `"@" is not a ref name`
	case strings.HasPrefix(rev, "/") || strings.HasSuffix(rev, "/"):
		return "must not begin or end with '/'"
	case strings.HasSuffix(rev, "."):
		return "must not end with '.'"
	case strings.Contains(rev, ".."):
		return "must not contain '..'"
	case strings.Contains(rev, "//"):
		return "must not contain '//'"
	case strings.Contains(rev, "@{"):
		return "must not contain '@{'"
	}
	for _, r := range rev {
		if r < 0x20 || r == 0x7f || strings.ContainsRune(" ~^:?*[\\", r) {
			return fmt.Sprintf("must not contain %q", r)
		}
	}
	for _, part := range strings.Split(rev, "/") {
		if strings.HasPrefix(part, ".") {
			return "no part may begin with '.'"
		}
		if strings.HasSuffix(part, ".lock") {
			return "no part may end with '.lock'"
		}
	}
	return ""
}

var (
	schemeURL    = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9+.-]*)://`)
	helperPrefix = regexp.MustCompile(`^([A-Za-z0-9+.-]+)::`)
	fullObjectID = regexp.MustCompile(`^([0-9a-f]{40}|[0-9a-f]{64})$`)
)

// repositoryProtocol returns the name git gives the transport it would use
// for repo (the names protocol.<name>.allow takes): the scheme of a URL
// ("git+ssh" and "ssh+git" are "ssh"), the helper of "<transport>::<address>",
// "ssh" for scp-like "[user@]host:path", and "file" for a local path.
func repositoryProtocol(repo string) (string, error) {
	if m := schemeURL.FindStringSubmatch(repo); m != nil {
		scheme := strings.ToLower(m[1])
		if scheme == "git+ssh" || scheme == "ssh+git" {
			scheme = "ssh"
		}
		if scheme == "file" {
			return scheme, nil
		}
		u, err := url.Parse(repo)
		if err != nil && userinfoInURL.MatchString(repo) {
			// Go's message may quote a part of the user information.
			return "", errors.New("is not a valid URL: its user information may need percent-encoding (a '/', '?', '#' or ':' in a password)")
		}
		if err != nil {
			// Git accepts some URLs Go does not (a bare IPv6 host, say); they
			// cannot be checked, so they are refused.
			return "", fmt.Errorf("is not a valid URL: %v", redactError(err, repo))
		}
		if u.Host == "" {
			return "", fmt.Errorf("has no host")
		}
		if strings.HasPrefix(u.Hostname(), "-") || strings.HasPrefix(u.User.Username(), "-") {
			return "", fmt.Errorf("host and user must not start with '-'")
		}
		return scheme, nil
	}
	if m := helperPrefix.FindStringSubmatch(repo); m != nil {
		return strings.ToLower(m[1]), nil
	}
	colon := strings.IndexByte(repo, ':')
	slash := strings.IndexByte(repo, '/')
	if colon > 0 && (slash < 0 || colon < slash) {
		host := repo[:colon]
		if at := strings.LastIndexByte(host, '@'); at >= 0 {
			host = host[at+1:]
		}
		if strings.HasPrefix(strings.TrimPrefix(host, "["), "-") || strings.HasPrefix(repo, "-") {
			return "", fmt.Errorf("host and user must not start with '-'")
		}
		return "ssh", nil
	}
	return "file", nil
}

// defaultDirectory returns the directory git clone would pick for repo when
// none is given: the last path component without ".git".
func defaultDirectory(repo string) string {
	s := strings.TrimRight(repo, "/")
	s = strings.TrimRight(strings.TrimSuffix(s, "/.git"), "/")
	if m := schemeURL.FindStringIndex(s); m != nil {
		s = s[m[1]:]
		if at := strings.LastIndexByte(s, '@'); at >= 0 && !strings.Contains(s[:at], "/") {
			s = s[at+1:]
		}
		if !strings.Contains(s, "/") {
			// "scheme://host:port" clones into "host".
			if colon := strings.LastIndexByte(s, ':'); colon >= 0 && strings.Trim(s[colon+1:], "0123456789") == "" {
				s = s[:colon]
			}
		}
	}
	if i := strings.LastIndexAny(s, "/:"); i >= 0 {
		s = s[i+1:]
	}
	s = strings.TrimSuffix(s, ".git")
	return s
}

// isFullObjectID reports whether rev is a full SHA-1 or SHA-256 object id,
// which never needs the network once the mirror has it.
func isFullObjectID(rev string) bool { return fullObjectID.MatchString(rev) }

func hasControl(s string) bool {
	return strings.IndexFunc(s, unicode.IsControl) >= 0
}

func hasControlOrSpace(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool { return unicode.IsControl(r) || unicode.IsSpace(r) }) >= 0
}
