// Package source holds where the agent's pods come from: a static manifest
// directory watched with fsnotify and read again periodically, and the
// local API, whose pods are kept on disk so that they survive a restart.
// Each file is a source of its own for the volume manager, so that one bad
// file never affects the pods of the others.
package source

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/volume-agent/volume-agent/pkg/manifest"
	"github.com/volume-agent/volume-agent/pkg/volumemanager"
)

// Sink receives what sources say; *volumemanager.Manager implements it.
type Sink interface {
	// UpdateSources applies updates at once.
	UpdateSources(updates ...volumemanager.SourceUpdate)
	// SourceOf returns the source that declares the pod uid, or "".
	SourceOf(uid types.UID) string
}

// DefaultResyncPeriod is how often a Dir is read again in full.
const DefaultResyncPeriod = 20 * time.Second

// eventDelay gathers the burst of file-system events that one change makes
// (create, write, chmod; or many files written at once) into one read: Run
// reads the manifests once no event came for eventDelay, and at the latest
// maxEventDelay after the first event of a burst, so that a file written
// without pause is still read.
const (
	eventDelay    = 20 * time.Millisecond
	maxEventDelay = time.Second
)

// manifestExtensions are the file name endings a Dir reads.
var manifestExtensions = []string{".yaml", ".yml", ".json"}

// DirOptions configure a Dir.
type DirOptions struct {
	// Prefix starts the source name of each file, as "file:" (the name is
	// the prefix and the file's absolute path).
	Prefix string
	// Manifest is passed to manifest.Load: the node name for derived pod
	// UIDs, and the plugins that validate volume sources.
	Manifest manifest.Options
	// ResyncPeriod is how often Run reads every file again, to catch what
	// notifications missed. Zero means DefaultResyncPeriod.
	ResyncPeriod time.Duration
	Clock        clock.Clock
}

// Dir is a static manifest source: a directory of YAML and JSON manifests
// (files whose names start with "." or lack a manifest extension are
// skipped), or a single manifest file. Every file is its own source, named
// Prefix + absolute path; a file that fails to load, or holds no object (as
// a file being rewritten in place may), keeps its previous pods and reports
// the error on its source.
type Dir struct {
	path string
	sink Sink
	opts DirOptions

	mu sync.Mutex
	// files maps each file read to the hash of its content.
	files map[string][sha256.Size]byte
	// dirErr is set while the path itself cannot be read.
	dirErr bool
}

// NewDir returns the source of the manifests at path, a directory or a file.
func NewDir(path string, sink Sink, opts DirOptions) (*Dir, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("failed to resolve manifest path %q: %w", path, err)
	}
	if opts.ResyncPeriod <= 0 {
		opts.ResyncPeriod = DefaultResyncPeriod
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	return &Dir{path: abs, sink: sink, opts: opts, files: map[string][sha256.Size]byte{}}, nil
}

// Path returns the absolute path the Dir reads.
func (d *Dir) Path() string { return d.path }

// SourceName returns the source name of the file path.
func (d *Dir) SourceName(path string) string { return d.opts.Prefix + path }

// Sync reads every manifest file and tells the sink, in one update, what
// changed: files added or changed (decoded and validated), files that fail
// (their error; their previous pods stay), and files removed. Unchanged
// files are not decoded again. A path that cannot be read is reported on the
// source named after the path, and returned.
func (d *Dir) Sync(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	paths, err := d.list()
	if err != nil {
		d.dirErr = true
		d.sink.UpdateSources(volumemanager.SourceUpdate{Source: d.SourceName(d.path), Err: err})
		return err
	}
	var updates []volumemanager.SourceUpdate
	if d.dirErr {
		d.dirErr = false
		updates = append(updates, volumemanager.SourceUpdate{Source: d.SourceName(d.path), Removed: true})
	}
	seen := make(map[string]bool, len(paths))
	for _, path := range paths {
		seen[path] = true
	}
	for _, r := range d.readAll(paths) {
		if r.changed {
			d.files[r.path] = r.hash
			updates = append(updates, r.update)
		}
	}
	for path := range d.files {
		if !seen[path] {
			delete(d.files, path)
			updates = append(updates, volumemanager.SourceUpdate{Source: d.SourceName(path), Removed: true})
		}
	}
	if len(updates) > 0 {
		klog.FromContext(ctx).V(2).Info("Manifests changed", "path", d.path, "updates", len(updates))
		d.sink.UpdateSources(updates...)
	}
	return nil
}

// readResult is what reading one file gave.
type readResult struct {
	path    string
	hash    [sha256.Size]byte
	changed bool
	update  volumemanager.SourceUpdate
}

// readAll reads paths on as many goroutines as there are CPUs: decoding is
// most of the cost of reading thousands of manifests. d.mu must be held; the
// results are in the order of paths.
func (d *Dir) readAll(paths []string) []readResult {
	results := make([]readResult, len(paths))
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(paths)) {
		wg.Go(func() {
			for i := range next {
				results[i] = d.read(paths[i])
			}
		})
	}
	for i := range paths {
		next <- i
	}
	close(next)
	wg.Wait()
	return results
}

// read loads one file, unless its content is what was read last time. It
// only reads d.files, so that reads may run at once.
func (d *Dir) read(path string) readResult {
	r := readResult{path: path}
	source := d.SourceName(path)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		// Removed between the listing and the read: the next sync sees it.
		return r
	}
	if err != nil {
		// A zero hash: the next read decodes the file whatever it holds.
		r.changed = true
		r.update = volumemanager.SourceUpdate{Source: source, Err: fmt.Errorf("failed to read manifest: %w", err)}
		return r
	}
	r.hash = sha256.Sum256(data)
	if old, ok := d.files[path]; ok && old == r.hash {
		return r
	}
	r.changed = true
	bundle, err := manifest.Load(bytes.NewReader(data), path, d.opts.Manifest)
	if err == nil && bundle.Len() == 0 {
		// Most likely a file caught while it is rewritten in place (it was
		// truncated first): its pods must not go. A file is removed to
		// remove its pods.
		err = errors.New("the manifest holds no object; its previous pods are kept (remove the file to remove them)")
	}
	if err != nil {
		r.update = volumemanager.SourceUpdate{Source: source, Err: err}
		return r
	}
	r.update = volumemanager.SourceUpdate{Source: source, Bundle: bundle}
	return r
}

// list returns the manifest files, sorted.
func (d *Dir) list() ([]string, error) {
	info, err := os.Stat(d.path)
	if err != nil {
		return nil, fmt.Errorf("failed to read manifest path: %w", err)
	}
	if !info.IsDir() {
		return []string{d.path}, nil
	}
	entries, err := os.ReadDir(d.path)
	if err != nil {
		return nil, fmt.Errorf("failed to read manifest dir: %w", err)
	}
	var paths []string
	for _, entry := range entries {
		if !isManifestName(entry.Name()) {
			continue
		}
		path := filepath.Join(d.path, entry.Name())
		if info, err := os.Stat(path); err != nil || !info.Mode().IsRegular() {
			continue
		}
		paths = append(paths, path)
	}
	sort.Strings(paths)
	return paths, nil
}

func isManifestName(name string) bool {
	if strings.HasPrefix(name, ".") {
		return false
	}
	for _, ext := range manifestExtensions {
		if strings.HasSuffix(name, ext) {
			return true
		}
	}
	return false
}

// Run keeps the sink up to date until ctx is cancelled. It first sets up the
// watch and then reads every manifest, so that no change made before the
// watch was in place is missed, such as one made after an initial Sync and
// before Run (unchanged files are only hashed again, not decoded). Then it
// syncs when fsnotify reports a change, once no event came for eventDelay (at most maxEventDelay after
// the first event of a burst, for a file written without pause), and every
// ResyncPeriod. Without notifications (the watch could not be set up, or the
// directory does not exist yet), the periodic sync still runs, and the
// watch is tried again at each one.
func (d *Dir) Run(ctx context.Context) {
	logger := klog.FromContext(ctx).WithValues("path", d.path)
	watcher, err := fsnotify.NewWatcher()
	if err != nil {
		logger.Error(err, "Failed to watch manifests; reading them periodically only")
	} else {
		defer watcher.Close()
	}
	watching := false
	watch := func() {
		if watcher == nil || watching {
			return
		}
		dir := d.path
		if info, err := os.Stat(d.path); err == nil && !info.IsDir() {
			dir = filepath.Dir(d.path)
		}
		if info, err := os.Lstat(d.path); err == nil && info.Mode()&fs.ModeSymlink != 0 {
			// A link to a directory: the watch follows the link to its
			// target, so the link's own directory is watched too, to see
			// the link swapped for one to another target.
			if err := watcher.Add(filepath.Dir(d.path)); err != nil {
				logger.V(1).Info("Cannot watch the directory of the manifest link", "err", err)
			}
		}
		if err := watcher.Add(dir); err != nil {
			logger.V(1).Info("Cannot watch manifests yet", "err", err)
			return
		}
		watching = true
	}
	sync := func() {
		if err := d.Sync(ctx); err != nil {
			logger.Error(err, "Failed to read manifests")
		}
	}
	watch()
	sync()

	var events <-chan fsnotify.Event
	var errs <-chan error
	if watcher != nil {
		events, errs = watcher.Events, watcher.Errors
	}
	resync := d.opts.Clock.NewTimer(d.opts.ResyncPeriod)
	defer resync.Stop()
	burst := &debouncer{clock: d.opts.Clock, delay: eventDelay, maxDelay: maxEventDelay}
	defer burst.stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if ev.Name != d.path && filepath.Dir(ev.Name) != d.path {
				continue
			}
			switch {
			case ev.Name != d.path:
			case ev.Has(fsnotify.Create):
				// The path was replaced, as a link swapped for one to
				// another directory: watch what it is now.
				_ = watcher.Remove(d.path)
				watching = false
				watch()
			case ev.Has(fsnotify.Remove):
				// The directory itself went: watch it again once it is back.
				watching = false
			}
			burst.event()
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			logger.Error(err, "Manifest watch failed; reading every manifest again")
			sync()
		case <-burst.C():
			burst.fired()
			sync()
		case <-resync.C():
			watch()
			sync()
			resync.Reset(d.opts.ResyncPeriod)
		}
	}
}

// debouncer gathers events into bursts: its channel fires once no event
// came for delay, or maxDelay after the first event of the burst, whichever
// is first. It is not safe for concurrent use.
type debouncer struct {
	clock           clock.Clock
	delay, maxDelay time.Duration

	timer clock.Timer
	// first is when the pending burst started; zero when none is pending.
	first time.Time
}

// event notes an event: it starts a burst, or pushes the end of the pending
// one back by delay, but never past maxDelay after its first event.
func (b *debouncer) event() {
	now := b.clock.Now()
	if b.first.IsZero() {
		b.first = now
		if b.timer == nil {
			b.timer = b.clock.NewTimer(b.delay)
		} else {
			b.timer.Reset(b.delay)
		}
		return
	}
	wait := min(b.delay, b.first.Add(b.maxDelay).Sub(now))
	if wait <= 0 {
		return // due at once: the timer has fired or is about to
	}
	if !b.timer.Stop() {
		// It fired and its time waits in the channel: the burst is over.
		return
	}
	b.timer.Reset(wait)
}

// C fires at the end of the pending burst; it is nil when none is pending.
func (b *debouncer) C() <-chan time.Time {
	if b.first.IsZero() {
		return nil
	}
	return b.timer.C()
}

// fired ends the burst once C fired.
func (b *debouncer) fired() { b.first = time.Time{} }

// stop releases the timer.
func (b *debouncer) stop() {
	if b.timer != nil {
		b.timer.Stop()
	}
}
