package gitrepo

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/volume-agent/volume-agent/pkg/volume"
)

// Files of a cache entry, ROOT/plugins/kubernetes.io~git-repo/cache/<key>/.
const (
	// mirrorDirName is the bare mirror. It appears only complete: it is
	// cloned under a temporary name and renamed.
	mirrorDirName = "mirror.git"
	// lockFileName is flock'ed: shared while a volume is copied from the
	// mirror, exclusive while the mirror is fetched, repaired or removed.
	lockFileName = "lock"
	// fetchingFileName exists while a fetch into an existing mirror runs; if
	// it is found, that fetch was cut short and the mirror is repaired.
	fetchingFileName = "fetching"
	// lastUsedFileName's mtime is the entry's last use, for eviction.
	lastUsedFileName = "last-used"
	// urlFileName names the repository, credentials redacted, for people.
	urlFileName = "url"
	// checkoutsDirName holds finished clones, one per revision asked for,
	// that volumes are copied from: <key> (the clone), <key>.state (the
	// mirror state it was made from; its mtime is its last use), <key>.seen
	// (the mirror state at the revision's first use) and <key>.lock
	// (flock'ed: shared while copied from, exclusive while made).
	checkoutsDirName = "checkouts"
	// lowersDirName holds the lower layers of overlay volumes: <key> (a
	// finished volume root: the clone at its directory, or at the root for
	// "."), named by the repository, revision, directory and mirror state it
	// was made from, so that it never changes once made; <key>.used (its
	// mtime is its last use) and <key>.lock (flock'ed: exclusive while it is
	// made, removed, or a volume takes a reference to it).
	lowersDirName = "lowers"
	// maxCheckouts bounds the finished clones, and the lower layers no
	// volume uses, kept per repository.
	maxCheckouts = 4
	// Prefixes of a mirror being made and of one being removed.
	newMirrorPrefix  = "mirror.new-"
	oldMirrorPrefix  = "mirror.old-"
	lockPollInterval = 10 * time.Millisecond
)

// errMirrorMissing means that the mirror is absent or needs repair, so the
// volume must wait for a fetch.
var errMirrorMissing = errors.New("mirror missing")

// errNotMirrored means that the mirror lacks the commit asked for.
var errNotMirrored = errors.New("commit not in mirror")

// errMirrorTooBig means that a mirror grew past MaxSizeBytes. The mirror
// only grows (git never collects its garbage), so this says nothing about
// the volume: it is cloned directly, and the mirror forgotten.
var errMirrorTooBig = errors.New("mirror grew past gitRepo.maxSizeBytes")

// mirrorSizeError is the error of a mirror that grew past the size limit:
// transient, and not errSizeLimit, which is the volume's own and final.
func mirrorSizeError(repo string, sizeErr error) error {
	return volume.NewTransientError(fmt.Errorf("failed to mirror %s: %w: %s", redactURL(repo), errMirrorTooBig, sizeErr.Error()))
}

// mirrorCache keeps a bare mirror per repository URL and makes volumes from
// them without the network.
type mirrorCache struct {
	dir       string
	maxBytes  int64
	sizeLimit int64
	git       *git
	clock     clock.Clock

	mu      sync.Mutex
	fetches map[string]*fetchCall
	// evicting is held by the one eviction pass that may run at a time.
	evicting sync.Mutex
	// grown is set when the cache may have grown (a mirror made or fetched,
	// a checkout made), so that a volume merely copied from the cache does
	// not walk it.
	grown atomic.Bool

	// usersMu guards users: how many overlay volumes use each lower layer,
	// by path. Rebuilt from the volumes' records at start (setUsers).
	usersMu sync.Mutex
	users   map[string]int
}

// fetchCall is a fetch in progress that other volumes of the same mirror
// wait for instead of fetching again.
type fetchCall struct {
	done chan struct{}
	err  error
}

func newMirrorCache(dir string, maxBytes, sizeLimit int64, g *git, clk clock.Clock) (*mirrorCache, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("failed to create cache dir: %w", err)
	}
	return &mirrorCache{dir: dir, maxBytes: maxBytes, sizeLimit: sizeLimit, git: g, clock: clk, fetches: map[string]*fetchCall{}, users: map[string]int{}}, nil
}

// cacheEntry is one repository's dir in the cache.
type cacheEntry struct {
	key string
	dir string
}

func (e cacheEntry) path(name string) string { return filepath.Join(e.dir, name) }

func (e cacheEntry) mirror() string { return e.path(mirrorDirName) }

// normalizeURL returns the form of repo that names its mirror: scheme and
// host lower-cased, a default port and trailing slashes dropped. User
// information is kept: repositories reached with different credentials never
// share a mirror.
func normalizeURL(repo string) string {
	if schemeURL.MatchString(repo) {
		u, err := url.Parse(repo)
		if err != nil {
			return repo
		}
		u.Scheme = strings.ToLower(u.Scheme)
		host, port := strings.ToLower(u.Hostname()), u.Port()
		defaultPorts := map[string]string{"https": "443", "http": "80", "git": "9418", "ssh": "22"}
		if port == "" || port == defaultPorts[u.Scheme] {
			u.Host = host
			if strings.Contains(host, ":") {
				u.Host = "[" + host + "]"
			}
		} else {
			u.Host = strings.ToLower(u.Host)
		}
		u.Path = strings.TrimRight(u.Path, "/")
		u.RawPath = ""
		return u.String()
	}
	if colon := strings.IndexByte(repo, ':'); colon > 0 {
		// scp-like "[user@]host:path": the host is case-insensitive.
		userHost := repo[:colon]
		at := strings.LastIndexByte(userHost, '@') + 1
		return userHost[:at] + strings.ToLower(userHost[at:]) + strings.TrimRight(repo[colon:], "/")
	}
	return repo
}

// entry returns repo's cache entry, creating its dir.
func (c *mirrorCache) entry(repo string) (cacheEntry, error) {
	sum := sha256.Sum256([]byte(normalizeURL(repo)))
	key := hex.EncodeToString(sum[:16])
	e := cacheEntry{key: key, dir: filepath.Join(c.dir, key)}
	if err := os.MkdirAll(e.dir, 0o700); err != nil {
		return e, fmt.Errorf("failed to create cache entry: %w", err)
	}
	if _, err := os.Stat(e.path(urlFileName)); errors.Is(err, fs.ErrNotExist) {
		_ = os.WriteFile(e.path(urlFileName), []byte(redactURL(repo)+"\n"), 0o600)
	}
	return e, nil
}

// populate makes target a clone of repo at rev (the default branch when
// empty) from repo's mirror, fetching it first unless rev is a full commit
// id the mirror has. A Final error (unknown revision, objects refused, the
// volume's own size limit) holds for a direct clone too; after any other
// error, a mirror grown past the size limit (errMirrorTooBig) included, the
// caller clones directly.
func (c *mirrorCache) populate(ctx context.Context, repo, rev, target string) error {
	return c.fromMirror(ctx, repo, rev, func(e cacheEntry, checkCommit bool) error {
		return c.produce(ctx, e, repo, rev, target, checkCommit)
	})
}

// lowerLayer returns the lower layer of an overlay volume of repo at rev
// with the clone at directory (see lower), and counts one more user of it:
// release undoes that. Its errors are populate's.
func (c *mirrorCache) lowerLayer(ctx context.Context, repo, rev, directory string) (string, error) {
	var dir string
	err := c.fromMirror(ctx, repo, rev, func(e cacheEntry, checkCommit bool) error {
		var err error
		dir, err = c.lower(ctx, e, repo, rev, directory, checkCommit)
		return err
	})
	return dir, err
}

// fromMirror runs fn on repo's mirror under its shared lock, the mirror
// fetched first unless rev is a full commit id the mirror has (fn's
// checkCommit is then true, and fn returns errNotMirrored when it must make
// something from the mirror and the mirror lacks rev).
func (c *mirrorCache) fromMirror(ctx context.Context, repo, rev string, fn func(e cacheEntry, checkCommit bool) error) error {
	e, err := c.entry(repo)
	if err != nil {
		return err
	}
	if isFullObjectID(rev) {
		err := c.withMirror(ctx, e, func(string) error { return fn(e, true) })
		if !errors.Is(err, errNotMirrored) && !errors.Is(err, errMirrorMissing) {
			return err
		}
	}
	// A mirror evicted between the fetch and the copy is fetched once more.
	for range 2 {
		if err := c.refresh(ctx, e, repo, rev == ""); err != nil {
			return err
		}
		err := c.withMirror(ctx, e, func(string) error { return fn(e, false) })
		if !errors.Is(err, errMirrorMissing) {
			return err
		}
	}
	return fmt.Errorf("mirror of %s was removed while in use", redactURL(repo))
}

// lower returns e's lower layer for an overlay volume of repo at rev with
// the clone at directory, made from the mirror if there is none for the
// mirror's current state, and counts one more user of it. A lower layer
// never changes once made: a moved branch makes another. The caller holds
// e's shared lock.
func (c *mirrorCache) lower(ctx context.Context, e cacheEntry, repo, rev, directory string, checkCommit bool) (string, error) {
	state, err := c.mirrorState(ctx, e)
	if err != nil {
		return "", err
	}
	lowers := e.path(lowersDirName)
	if err := os.MkdirAll(lowers, 0o700); err != nil {
		return "", fmt.Errorf("failed to create the lower layers dir: %w", err)
	}
	sum := sha256.Sum256([]byte(repo + "\x00" + rev + "\x00" + directory + "\x00" + state))
	dir := filepath.Join(lowers, hex.EncodeToString(sum[:12]))
	unlock, err := lockFile(ctx, dir+".lock", unix.LOCK_EX)
	if err != nil {
		return "", err
	}
	defer unlock()
	if !exists(dir) {
		if checkCommit {
			if _, err := c.git.runOnMirror(ctx, e.mirror(), "cat-file", "-e", rev+"^{commit}"); err != nil {
				return "", errNotMirrored
			}
		}
		if err := c.makeLower(ctx, e, repo, rev, directory, dir); err != nil {
			return "", err
		}
		defer c.pruneLowers(ctx, e, maxCheckouts)
	}
	if err := touch(dir+".used", c.clock.Now()); err != nil {
		klog.FromContext(ctx).V(4).Info("Failed to record the use of a lower layer", "path", dir, "err", err)
	}
	c.acquire(dir)
	return dir, nil
}

// makeLower makes dir a volume root holding a clone of repo at rev from e's
// mirror at directory: made under a temporary name and renamed. The caller
// holds dir's lock.
func (c *mirrorCache) makeLower(ctx context.Context, e cacheEntry, repo, rev, directory, dir string) error {
	leftovers, _ := filepath.Glob(dir + ".new-*")
	for _, old := range leftovers {
		if err := os.RemoveAll(old); err != nil {
			return fmt.Errorf("failed to remove an unfinished lower layer: %w", err)
		}
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), filepath.Base(dir)+".new-")
	if err != nil {
		return fmt.Errorf("failed to create a lower layer: %w", err)
	}
	target := filepath.Join(tmp, directory)
	if directory == "." {
		// Git makes the clone's dir with the mode a plain clone's has.
		err = os.Remove(tmp)
	}
	c.grown.Store(true)
	if err == nil {
		watched, stop := watchSize(ctx, c.clock, tmp, c.sizeLimit)
		err = c.copyMirror(watched, e, repo, rev, target)
		if sizeErr := stop(); sizeErr != nil {
			// The volume's own limit: the volume would be as big.
			os.RemoveAll(tmp)
			return sizeLimitError(repo, sizeErr)
		}
	}
	if err == nil {
		err = os.Rename(tmp, dir)
	}
	if err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("failed to make a lower layer of %s: %w", redactURL(repo), err)
	}
	return nil
}

// pruneLowers removes e's lower layers that no volume uses, but the keep
// most recently used ones. A layer in use is never removed.
func (c *mirrorCache) pruneLowers(ctx context.Context, e cacheEntry, keep int) {
	used, _ := filepath.Glob(filepath.Join(e.path(lowersDirName), "*.used"))
	lastUse := func(path string) time.Time {
		info, err := os.Stat(path)
		if err != nil {
			return time.Time{}
		}
		return info.ModTime()
	}
	sort.Slice(used, func(i, j int) bool { return lastUse(used[i]).After(lastUse(used[j])) })
	kept := 0
	for _, u := range used {
		dir := strings.TrimSuffix(u, ".used")
		if c.inUse(dir) {
			continue
		}
		if kept < keep {
			kept++
			continue
		}
		unlock, ok := tryLockFile(dir + ".lock")
		if !ok {
			continue
		}
		// Checked again under the lock, which a new user takes.
		if !c.inUse(dir) {
			if err := os.RemoveAll(dir); err != nil {
				klog.FromContext(ctx).Error(err, "Failed to remove a lower layer", "path", dir)
			} else {
				_ = os.Remove(u)
				_ = os.Remove(dir + ".lock")
			}
		}
		unlock()
	}
}

// acquire counts one more volume using the lower layer dir.
func (c *mirrorCache) acquire(dir string) {
	c.usersMu.Lock()
	defer c.usersMu.Unlock()
	c.users[dir]++
}

// release counts one volume less using the lower layer dir.
func (c *mirrorCache) release(dir string) {
	c.usersMu.Lock()
	defer c.usersMu.Unlock()
	if c.users[dir] <= 1 {
		delete(c.users, dir)
		return
	}
	c.users[dir]--
}

// inUse reports whether a volume uses the lower layer dir.
func (c *mirrorCache) inUse(dir string) bool {
	c.usersMu.Lock()
	defer c.usersMu.Unlock()
	return c.users[dir] > 0
}

// setUsers replaces the counts of users by those of the lower layers given,
// one per volume: the records of the overlay volumes on disk, at start.
func (c *mirrorCache) setUsers(lowers []string) {
	c.usersMu.Lock()
	defer c.usersMu.Unlock()
	c.users = map[string]int{}
	for _, dir := range lowers {
		c.users[dir]++
	}
}

// withMirror runs fn on e's mirror under a shared lock, so that no fetch or
// eviction changes the mirror meanwhile. It returns errMirrorMissing when
// the mirror is absent or was left half-fetched.
func (c *mirrorCache) withMirror(ctx context.Context, e cacheEntry, fn func(mirror string) error) error {
	unlock, err := lockFile(ctx, e.path(lockFileName), unix.LOCK_SH)
	if err != nil {
		return err
	}
	defer unlock()
	if !exists(e.mirror()) || exists(e.path(fetchingFileName)) {
		return errMirrorMissing
	}
	now := c.clock.Now()
	if err := touch(e.path(lastUsedFileName), now); err != nil {
		klog.FromContext(ctx).V(4).Info("Failed to record the use of a mirror", "path", e.dir, "err", err)
	}
	return fn(e.mirror())
}

// produce makes target a clone of repo at rev: a copy of e's finished clone
// of rev, which is first made from the mirror if there is none or the
// mirror's refs changed since it was made; but the first volume of a
// revision at a mirror state is cloned from the mirror directly. With
// checkCommit, a rev that must be made from the mirror and that the mirror
// lacks is errNotMirrored. The caller holds e's shared lock.
func (c *mirrorCache) produce(ctx context.Context, e cacheEntry, repo, rev, target string, checkCommit bool) error {
	state, err := c.mirrorState(ctx, e)
	if err != nil {
		return err
	}
	checkouts := e.path(checkoutsDirName)
	if err := os.MkdirAll(checkouts, 0o700); err != nil {
		return fmt.Errorf("failed to create the checkouts dir: %w", err)
	}
	sum := sha256.Sum256([]byte(rev))
	dir := filepath.Join(checkouts, hex.EncodeToString(sum[:8]))
	statePath := dir + ".state"
	current := func() bool {
		data, err := os.ReadFile(statePath)
		return err == nil && string(data) == state && exists(dir)
	}

	unlock, err := lockFile(ctx, dir+".lock", unix.LOCK_SH)
	if err != nil {
		return err
	}
	if !current() {
		unlock()
		if checkCommit {
			if _, err := c.git.runOnMirror(ctx, e.mirror(), "cat-file", "-e", rev+"^{commit}"); err != nil {
				return errNotMirrored
			}
		}
		if unlock, err = lockFile(ctx, dir+".lock", unix.LOCK_EX); err != nil {
			return err
		}
		if !current() {
			// The first volume of a revision at a mirror state is cloned
			// from the mirror straight away; a second one makes the
			// checkout that it and later ones are copied from. One volume
			// so writes no more than it must.
			seen, _ := os.ReadFile(dir + ".seen")
			if string(seen) != state {
				if err := os.WriteFile(dir+".seen", []byte(state), 0o600); err != nil {
					klog.FromContext(ctx).V(4).Info("Failed to record a revision's first use", "path", dir, "err", err)
				}
				unlock()
				return c.copyMirror(ctx, e, repo, rev, target)
			}
			if err := c.makeCheckout(ctx, e, repo, rev, dir, state); err != nil {
				unlock()
				return err
			}
			defer c.pruneCheckouts(ctx, e)
		}
	}
	defer unlock()
	if err := touch(statePath, c.clock.Now()); err != nil {
		klog.FromContext(ctx).V(4).Info("Failed to record the use of a checkout", "path", dir, "err", err)
	}
	if err := copyTree(ctx, dir, target); err != nil {
		return volume.NewTransientError(fmt.Errorf("failed to copy the checkout of %s: %w", redactURL(repo), err))
	}
	// The checkout names the repository as the volume that made it spelled
	// it; this volume may spell it otherwise.
	gitDir := filepath.Join(target, ".git")
	out, err := c.git.runLocal(ctx, gitDir, "", "config", "--get", "remote.origin.url")
	if err != nil {
		return commandError(ctx, "read the origin of a checkout of "+redactURL(repo), repo, out, err)
	}
	if origin := strings.TrimSpace(string(out)); origin != repo {
		if err := c.setOrigin(ctx, gitDir, anonymizeURL(origin), repo); err != nil {
			return err
		}
	}
	if err := refreshIndexStat(target); err != nil {
		klog.FromContext(ctx).V(4).Info("Left a copied index's stat data as it was", "path", target, "err", err)
	}
	return nil
}

// mirrorState names the state of e's mirror that a volume made from it
// shows: the mirror's identity (a rebuilt mirror is another), its HEAD and
// its refs. It reads the refs' files itself, and asks git only for a ref
// store it does not know.
func (c *mirrorCache) mirrorState(ctx context.Context, e cacheEntry) (string, error) {
	info, err := os.Stat(e.mirror())
	if err != nil {
		return "", errMirrorMissing
	}
	sum := sha256.New()
	fmt.Fprintf(sum, "%d\n", info.Sys().(*syscall.Stat_t).Ino)
	if exists(filepath.Join(e.mirror(), "reftable")) {
		out, err := c.git.runOnMirror(ctx, e.mirror(), "for-each-ref", "--format=%(objectname) %(refname)")
		if err != nil {
			return "", commandError(ctx, "list the refs of a mirror", "", out, err)
		}
		sum.Write(out)
		return hex.EncodeToString(sum.Sum(nil)), nil
	}
	add := func(path string) error {
		data, err := os.ReadFile(path)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		fmt.Fprintf(sum, "%s %d\n", path, len(data))
		sum.Write(data)
		return nil
	}
	err = add(filepath.Join(e.mirror(), "HEAD"))
	if err == nil {
		err = add(filepath.Join(e.mirror(), "packed-refs"))
	}
	if err == nil {
		err = filepath.WalkDir(filepath.Join(e.mirror(), "refs"), func(path string, entry fs.DirEntry, err error) error {
			if err != nil || !entry.Type().IsRegular() {
				return err
			}
			return add(path)
		})
	}
	if err != nil {
		return "", fmt.Errorf("failed to read the refs of a mirror: %w", err)
	}
	return hex.EncodeToString(sum.Sum(nil)), nil
}

// makeCheckout makes dir a clone of repo at rev from e's mirror, made under a
// temporary name and renamed, and records state. The caller holds dir's
// exclusive lock.
func (c *mirrorCache) makeCheckout(ctx context.Context, e cacheEntry, repo, rev, dir, state string) error {
	_ = os.Remove(dir + ".state")
	leftovers, _ := filepath.Glob(dir + ".new-*")
	if exists(dir) {
		leftovers = append(leftovers, dir)
	}
	for _, old := range leftovers {
		if err := os.RemoveAll(old); err != nil {
			return fmt.Errorf("failed to remove an old checkout: %w", err)
		}
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), filepath.Base(dir)+".new-")
	if err != nil {
		return fmt.Errorf("failed to create a checkout dir: %w", err)
	}
	// Git makes the dir itself, with the mode a plain clone's dir has
	// (MkdirTemp's 0700 would be copied into every volume).
	if err := os.Remove(tmp); err != nil {
		return fmt.Errorf("failed to create a checkout dir: %w", err)
	}
	c.grown.Store(true)
	if err := c.copyMirror(ctx, e, repo, rev, tmp); err != nil {
		os.RemoveAll(tmp)
		return err
	}
	if err := os.Rename(tmp, dir); err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("failed to put a checkout in place: %w", err)
	}
	return os.WriteFile(dir+".state", []byte(state), 0o600)
}

// pruneCheckouts removes the least recently used finished clones of e
// beyond maxCheckouts, skipping those in use.
func (c *mirrorCache) pruneCheckouts(ctx context.Context, e cacheEntry) {
	states, _ := filepath.Glob(filepath.Join(e.path(checkoutsDirName), "*.state"))
	if len(states) <= maxCheckouts {
		return
	}
	lastUse := func(path string) time.Time {
		info, err := os.Stat(path)
		if err != nil {
			return time.Time{}
		}
		return info.ModTime()
	}
	sort.Slice(states, func(i, j int) bool { return lastUse(states[i]).Before(lastUse(states[j])) })
	for _, state := range states[:len(states)-maxCheckouts] {
		dir := strings.TrimSuffix(state, ".state")
		unlock, ok := tryLockFile(dir + ".lock")
		if !ok {
			continue
		}
		_ = os.Remove(state)
		if err := os.RemoveAll(dir); err != nil {
			klog.FromContext(ctx).Error(err, "Failed to remove a checkout", "path", dir)
		}
		unlock()
	}
}

// copyMirror clones the mirror into target with copied (not linked)
// objects, so the volume depends on nothing outside it, then makes it look
// like a clone of repo and checks rev out. Without rev, a mirror whose HEAD
// names no commit is a transient error, so that the caller clones directly.
func (c *mirrorCache) copyMirror(ctx context.Context, e cacheEntry, repo, rev, target string) error {
	args := []string{"--quiet", "--no-hardlinks"}
	if rev != "" {
		args = append(args, "--no-checkout")
	}
	args = append(args, "--", e.mirror(), target)
	if out, err := c.git.cloneMirror(ctx, args...); err != nil {
		return commandError(ctx, "copy the mirror of "+redactURL(repo), repo, out, err)
	}
	gitDir := filepath.Join(target, ".git")
	if err := c.setOrigin(ctx, gitDir, e.mirror(), repo); err != nil {
		return err
	}
	if rev == "" {
		// The fetch never updates the mirror's HEAD: after upstream renames
		// its default branch, HEAD names a branch that --prune removed and
		// the clone has nothing checked out.
		if out, err := c.git.runLocal(ctx, gitDir, "", "rev-parse", "--verify", "--quiet", "HEAD^{commit}"); err != nil {
			return volume.NewTransientError(fmt.Errorf("the mirror of %s has no default branch (its HEAD names no commit): %w: %s",
				redactURL(repo), err, strings.TrimSpace(string(out))))
		}
		return nil
	}
	return checkoutRevision(ctx, c.git, repo, rev, target)
}

// setOrigin makes the clone at gitDir, cloned from "from", name repo as its
// origin and in its reflogs, as a direct clone of repo would.
func (c *mirrorCache) setOrigin(ctx context.Context, gitDir, from, repo string) error {
	if out, err := c.git.runLocal(ctx, gitDir, "", "config", "remote.origin.url", repo); err != nil {
		return commandError(ctx, "set the origin of "+redactURL(repo), repo, out, err)
	}
	if err := rewriteCloneReflog(gitDir, from, repo); err != nil {
		klog.FromContext(ctx).V(4).Info("Failed to rewrite a volume's reflog", "path", gitDir, "err", err)
	}
	return nil
}

// rewriteCloneReflog names repo, as a direct clone would, where the reflogs
// of a clone of source name source.
func rewriteCloneReflog(gitDir, source, repo string) error {
	from, to := "clone: from "+source, "clone: from "+anonymizeURL(repo)
	return filepath.WalkDir(filepath.Join(gitDir, "logs"), func(path string, entry fs.DirEntry, err error) error {
		if err != nil || !entry.Type().IsRegular() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil || !strings.Contains(string(data), from) {
			return err
		}
		return os.WriteFile(path, []byte(strings.ReplaceAll(string(data), from, to)), 0o644)
	})
}

// anonymizeURL drops the user information of a URL, as git does when it
// names a repository in a reflog.
func anonymizeURL(repo string) string {
	return userinfoInURL.ReplaceAllString(repo, "${1}")
}

// refresh fetches e's mirror from repo, creating it if needed; with
// followHead, the mirror's HEAD is then made to name the remote's default
// branch. A volume that asks while the same fetch of the same mirror is
// running waits for that fetch and shares its outcome.
func (c *mirrorCache) refresh(ctx context.Context, e cacheEntry, repo string, followHead bool) error {
	key := e.key
	if followHead {
		key += "+HEAD"
	}
	c.mu.Lock()
	if call, ok := c.fetches[key]; ok {
		c.mu.Unlock()
		select {
		case <-call.done:
			return call.err
		case <-ctx.Done():
			return volume.NewTransientError(fmt.Errorf("failed to wait for the fetch of %s: %w", redactURL(repo), context.Cause(ctx)))
		}
	}
	call := &fetchCall{done: make(chan struct{})}
	c.fetches[key] = call
	c.mu.Unlock()

	call.err = c.fetch(ctx, e, repo, followHead)

	c.mu.Lock()
	delete(c.fetches, key)
	c.mu.Unlock()
	close(call.done)
	return call.err
}

// fetch brings e's mirror up to date under an exclusive lock, its HEAD too
// with followHead (a new mirror's HEAD is the remote's already).
func (c *mirrorCache) fetch(ctx context.Context, e cacheEntry, repo string, followHead bool) error {
	logger := klog.FromContext(ctx)
	unlock, err := lockFile(ctx, e.path(lockFileName), unix.LOCK_EX)
	if err != nil {
		return err
	}
	defer unlock()
	c.repair(ctx, e)
	if !exists(e.mirror()) {
		return c.create(ctx, e, repo)
	}
	if err := os.WriteFile(e.path(fetchingFileName), nil, 0o600); err != nil {
		return fmt.Errorf("failed to mark a fetch in progress: %w", err)
	}
	c.grown.Store(true)
	start := c.clock.Now()
	watched, stop := watchSize(ctx, c.clock, e.mirror(), c.sizeLimit)
	out, err := c.git.runNetwork(watched, e.mirror(), "fetch", "--quiet", "--prune",
		"--", repo, "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")
	// Read before stop, which cancels watched.
	killed := watched.Err() != nil
	if err != nil {
		err = commandError(watched, "fetch "+redactURL(repo)+" into the cache", repo, out, err)
	}
	if sizeErr := stop(); sizeErr != nil {
		return mirrorSizeError(repo, sizeErr)
	}
	if err != nil {
		// A fetch that git ended itself left a consistent mirror; one that
		// was killed keeps its marker, so that the next use repairs it.
		if !killed {
			_ = os.Remove(e.path(fetchingFileName))
		}
		return err
	}
	if err := os.Remove(e.path(fetchingFileName)); err != nil {
		return fmt.Errorf("failed to clear the fetch marker: %w", err)
	}
	if followHead {
		if err := c.followHead(ctx, e, repo); err != nil {
			return err
		}
	}
	logger.V(2).Info("Fetched mirror", "repository", redactURL(repo), "duration", c.clock.Since(start))
	return nil
}

// followHead makes e's mirror's HEAD what the remote's is (git fetch never
// changes it): the branch it names, or the commit when it is detached, as a
// new clone would have it. The caller holds the exclusive lock.
func (c *mirrorCache) followHead(ctx context.Context, e cacheEntry, repo string) error {
	out, err := c.git.runNetwork(ctx, e.mirror(), "ls-remote", "--symref", "--", repo, "HEAD")
	if err != nil {
		return commandError(ctx, "read the default branch of "+redactURL(repo), repo, out, err)
	}
	var branch, commit string
	for _, line := range strings.Split(string(out), "\n") {
		// "ref: refs/heads/main\tHEAD" and "<commit>\tHEAD".
		value, name, ok := strings.Cut(line, "\t")
		if !ok || name != "HEAD" {
			continue
		}
		if ref, ok := strings.CutPrefix(value, "ref: "); ok {
			branch = ref
		} else {
			commit = value
		}
	}
	var args []string
	switch {
	case strings.HasPrefix(branch, "refs/heads/"):
		args = []string{"symbolic-ref", "HEAD", branch}
	case isFullObjectID(commit):
		args = []string{"update-ref", "--no-deref", "HEAD", commit}
	default:
		// An empty repository, or a HEAD that is neither: kept as it is.
		return nil
	}
	if out, err := c.git.runOnMirror(ctx, e.mirror(), args...); err != nil {
		return commandError(ctx, "set the default branch of the mirror of "+redactURL(repo), repo, out, err)
	}
	return nil
}

// create makes e's mirror: a bare clone under a temporary name, renamed when
// complete. The caller holds the exclusive lock.
func (c *mirrorCache) create(ctx context.Context, e cacheEntry, repo string) error {
	tmp, err := os.MkdirTemp(e.dir, newMirrorPrefix)
	if err != nil {
		return fmt.Errorf("failed to create a mirror dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	c.grown.Store(true)
	start := c.clock.Now()
	watched, stop := watchSize(ctx, c.clock, tmp, c.sizeLimit)
	out, err := c.git.runNetwork(watched, "", "clone", "--quiet", "--bare", "--", repo, tmp)
	if err != nil {
		// Classified before stop, which cancels watched.
		err = commandError(watched, "mirror "+redactURL(repo), repo, out, err)
	}
	if sizeErr := stop(); sizeErr != nil {
		return mirrorSizeError(repo, sizeErr)
	}
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, e.mirror()); err != nil {
		return fmt.Errorf("failed to put the mirror in place: %w", err)
	}
	klog.FromContext(ctx).V(2).Info("Created mirror", "repository", redactURL(repo), "path", e.mirror(), "duration", c.clock.Since(start))
	return nil
}

// repair removes what a crash left in e: half-made and half-removed
// mirrors and, after an interrupted fetch, git's stale lock and temporary
// files; a mirror that then fails a connectivity check is removed, to be
// made again. The caller holds the exclusive lock.
func (c *mirrorCache) repair(ctx context.Context, e cacheEntry) {
	logger := klog.FromContext(ctx)
	leftovers, _ := filepath.Glob(e.path(newMirrorPrefix + "*"))
	old, _ := filepath.Glob(e.path(oldMirrorPrefix + "*"))
	for _, dir := range append(leftovers, old...) {
		logger.Info("Removing a mirror left by a crash", "path", dir)
		if err := os.RemoveAll(dir); err != nil {
			logger.Error(err, "Failed to remove a mirror left by a crash", "path", dir)
		}
	}
	if !exists(e.path(fetchingFileName)) {
		return
	}
	logger.Info("Repairing a mirror whose fetch was interrupted", "path", e.mirror())
	_ = filepath.WalkDir(e.mirror(), func(path string, entry fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		name := entry.Name()
		if entry.Type().IsRegular() && (strings.HasSuffix(name, ".lock") || strings.HasPrefix(name, "tmp_")) {
			_ = os.Remove(path)
		}
		return nil
	})
	if exists(e.mirror()) {
		if out, err := c.git.runLocal(ctx, e.mirror(), "", "fsck", "--connectivity-only", "--no-dangling", "--no-progress"); err != nil {
			logger.Info("Removing a mirror that failed its check", "path", e.mirror(), "err", err, "output", tail(redactMessage(string(out), ""), 512))
			c.discardLocked(ctx, e)
		}
	}
	_ = os.Remove(e.path(fetchingFileName))
}

// discardLocked removes e's mirror and the checkouts made from it: renamed
// first, so that a crash never leaves a half-removed mirror under its real
// name; and the lower layers that no volume uses. The caller holds the
// exclusive lock.
func (c *mirrorCache) discardLocked(ctx context.Context, e cacheEntry) {
	c.pruneLowers(ctx, e, 0)
	if !exists(e.mirror()) {
		return
	}
	old, err := os.MkdirTemp(e.dir, oldMirrorPrefix)
	if err == nil {
		err = os.Rename(e.mirror(), filepath.Join(old, mirrorDirName))
	}
	if err == nil && exists(e.path(checkoutsDirName)) {
		err = os.Rename(e.path(checkoutsDirName), filepath.Join(old, checkoutsDirName))
	}
	if err == nil {
		err = os.RemoveAll(old)
	}
	if err != nil {
		klog.FromContext(ctx).Error(err, "Failed to remove a mirror", "path", e.mirror())
	}
}

// forget removes repo's mirror if no volume is using it: the mirror failed
// where a direct clone worked, so it is suspect and is made again on its
// next use.
func (c *mirrorCache) forget(ctx context.Context, repo string) {
	e, err := c.entry(repo)
	if err != nil {
		return
	}
	unlock, ok := tryLockFile(e.path(lockFileName))
	if !ok {
		return
	}
	defer unlock()
	klog.FromContext(ctx).Info("Removing a mirror that failed where a direct clone worked", "repository", redactURL(repo))
	c.discardLocked(ctx, e)
	_ = os.Remove(e.path(fetchingFileName))
}

// evict removes the least recently used mirrors that no volume is being
// made from, until the cache takes at most maxBytes. It does nothing unless
// the cache may have grown since the last pass. One pass runs at a time; a
// pass that finds another running returns at once.
func (c *mirrorCache) evict(ctx context.Context) {
	if c.maxBytes <= 0 || !c.evicting.TryLock() {
		return
	}
	defer c.evicting.Unlock()
	if !c.grown.Swap(false) {
		return
	}
	logger := klog.FromContext(ctx)
	dirs, err := os.ReadDir(c.dir)
	if err != nil {
		logger.Error(err, "Failed to list the cache", "path", c.dir)
		return
	}
	type usage struct {
		entry    cacheEntry
		size     int64
		lastUsed time.Time
	}
	var entries []usage
	var total int64
	for _, d := range dirs {
		if !d.IsDir() {
			continue
		}
		e := cacheEntry{key: d.Name(), dir: filepath.Join(c.dir, d.Name())}
		size, err := diskUsage(e.dir)
		if err != nil {
			continue
		}
		u := usage{entry: e, size: size}
		if info, err := os.Stat(e.path(lastUsedFileName)); err == nil {
			u.lastUsed = info.ModTime()
		}
		entries = append(entries, u)
		total += size
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].lastUsed.Before(entries[j].lastUsed) })
	for _, u := range entries {
		if total <= c.maxBytes {
			return
		}
		unlock, ok := tryLockFile(u.entry.path(lockFileName))
		if !ok {
			continue
		}
		c.discardLocked(ctx, u.entry)
		unlock()
		left, _ := diskUsage(u.entry.dir)
		total -= u.size - left
		logger.V(2).Info("Evicted mirror", "path", u.entry.dir, "bytes", u.size-left, "cacheBytes", total, "maxBytes", c.maxBytes)
	}
	if total > c.maxBytes {
		// Every mirror left is in use: try again after the next volume.
		c.grown.Store(true)
	}
}

// lockFile flocks path (created if needed) with how (unix.LOCK_SH or
// unix.LOCK_EX), polling until ctx ends. The returned function unlocks.
func lockFile(ctx context.Context, path string, how int) (func(), error) {
	file, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("failed to open lock %s: %w", path, err)
	}
	fd := int(file.Fd())
	err = wait.PollUntilContextCancel(ctx, lockPollInterval, true, func(context.Context) (bool, error) {
		err := unix.Flock(fd, how|unix.LOCK_NB)
		if errors.Is(err, unix.EWOULDBLOCK) {
			return false, nil
		}
		return err == nil, err
	})
	if err != nil {
		file.Close()
		if cause := context.Cause(ctx); cause != nil {
			err = cause
		}
		return nil, volume.NewTransientError(fmt.Errorf("failed to lock %s: %w", path, err))
	}
	return func() { file.Close() }, nil
}

// tryLockFile takes an exclusive flock on path if it is free at once.
func tryLockFile(path string) (func(), bool) {
	file, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, false
	}
	if err := unix.Flock(int(file.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		file.Close()
		return nil, false
	}
	return func() { file.Close() }, true
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// touch sets path's mtime to now, creating it if needed.
func touch(path string, now time.Time) error {
	if err := os.Chtimes(path, now, now); err == nil {
		return nil
	}
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		return err
	}
	return os.Chtimes(path, now, now)
}
