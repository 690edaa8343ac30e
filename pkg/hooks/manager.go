package hooks

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/volume-agent/volume-agent/pkg/volume"
)

// reloadDelay gathers the burst of events that one edit makes into one reload.
const reloadDelay = 100 * time.Millisecond

// Options configure a Manager.
type Options struct {
	// Directories are read in order: a file overrides the file with the same
	// name in an earlier directory. Missing directories are skipped.
	Directories []string
	// OnLoad, when set, is called after every load, the first one included,
	// with the new status, so that the caller can report problems (as events).
	// It is called with no lock held, one call at a time.
	OnLoad func(Status)
	// Clock stamps Status.LoadedAt. Nil means the real clock.
	Clock clock.PassiveClock
}

// Status is what a Manager loaded, as shown at the agent's /hooks endpoint.
// Its slices must not be modified.
type Status struct {
	// Directories are the hook directories, in order.
	Directories []string `json:"directories"`
	// Hooks are the valid hooks, in the order they run.
	Hooks []*Hook `json:"hooks"`
	// Problems are the files and directories that were skipped.
	Problems []Problem `json:"problems,omitempty"`
	// Ignored are the files skipped because their name does not end in .json.
	Ignored []string `json:"ignored,omitempty"`
	// Masked are the empty files that disable a same-named hook.
	Masked []string `json:"masked,omitempty"`
	// LoadedAt is when the directories were last read.
	LoadedAt time.Time `json:"loadedAt"`
}

// Manager holds the hooks loaded from the hook directories and runs them. It
// is safe for concurrent use.
type Manager struct {
	dirs   []string
	onLoad func(Status)
	clock  clock.PassiveClock

	// loadMu serialises loads, so that OnLoad sees them in order.
	loadMu sync.Mutex
	mu     sync.RWMutex
	status Status
}

// New returns a Manager with the hooks of opts.Directories loaded. It does not
// fail: invalid files and unreadable directories are logged, listed in
// Status().Problems and skipped.
func New(ctx context.Context, opts Options) *Manager {
	m := &Manager{onLoad: opts.OnLoad, clock: opts.Clock}
	for _, dir := range opts.Directories {
		m.dirs = append(m.dirs, filepath.Clean(dir))
	}
	if m.clock == nil {
		m.clock = clock.RealClock{}
	}
	m.Reload(ctx)
	return m
}

// Reload reads the hook directories again and returns the new status. A run
// that already started keeps the hooks it started with.
func (m *Manager) Reload(ctx context.Context) Status {
	m.loadMu.Lock()
	defer m.loadMu.Unlock()
	logger := klog.FromContext(ctx)
	result := loadDirectories(logger, m.dirs)
	status := Status{
		Directories: m.dirs,
		Hooks:       result.hooks,
		Problems:    result.problems,
		Ignored:     result.ignored,
		Masked:      result.masked,
		LoadedAt:    m.clock.Now(),
	}
	m.mu.Lock()
	m.status = status
	m.mu.Unlock()
	logger.V(1).Info("Loaded hooks", "hooks", len(status.Hooks), "problems", len(status.Problems))
	if m.onLoad != nil {
		m.onLoad(status.clone())
	}
	return status.clone()
}

// Status returns what the last load found.
func (m *Manager) Status() Status {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.status.clone()
}

func (s Status) clone() Status {
	s.Directories = slices.Clone(s.Directories)
	s.Hooks = slices.Clone(s.Hooks)
	s.Problems = slices.Clone(s.Problems)
	s.Ignored = slices.Clone(s.Ignored)
	s.Masked = slices.Clone(s.Masked)
	return s
}

// Run runs, one after the other in name order, the hooks of stage whose "when"
// matches state.
//
// At a pre-stage (PreSetUp, PreTearDown) the first failing hook stops the run:
// Run returns a transient error (volume.NewTransientError) wrapping a
// *HookError, and the caller must not go on with the operation; it retries it
// with backoff.
//
// At a post-stage (PostSetUp, PostTearDown) every matching hook runs; Run
// returns the failures as an aggregate of *HookError, with no error class, for
// the caller to report as events. They must not undo the operation.
//
// An unknown stage is an error. No matching hook is not.
func (m *Manager) Run(ctx context.Context, stage Stage, state VolumeState) error {
	if !stage.valid() {
		return fmt.Errorf("failed to run hooks: unknown stage %q", stage)
	}
	m.mu.RLock()
	all := m.status.Hooks
	m.mu.RUnlock()

	var failures []error
	for _, hook := range all {
		if !hook.Matches(stage, state) {
			continue
		}
		if err := hook.run(ctx, stage, state); err != nil {
			hookErr := &HookError{Hook: hook.Name, Stage: stage, Err: err}
			if stage.IsPre() {
				return volume.NewTransientError(hookErr)
			}
			failures = append(failures, hookErr)
		}
	}
	return utilerrors.NewAggregate(failures)
}

// Watch starts watching the hook directories and returns once the watches
// are in place. From then on, until ctx is done, any change in a directory
// (or a directory's creation or removal) reloads every hook. The returned
// channel is closed when watching has stopped. It fails only when the watcher
// cannot be created.
func (m *Manager) Watch(ctx context.Context) (<-chan struct{}, error) {
	watcher, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("failed to watch hook directories: %w", err)
	}
	m.syncWatches(ctx, watcher)
	// Catch what changed between the last load and the watches.
	m.Reload(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer watcher.Close()
		m.watchLoop(ctx, watcher)
	}()
	return done, nil
}

func (m *Manager) watchLoop(ctx context.Context, watcher *fsnotify.Watcher) {
	logger := klog.FromContext(ctx)
	timer := time.NewTimer(reloadDelay)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case event, ok := <-watcher.Events:
			if !ok {
				return
			}
			if m.concerns(event.Name) {
				logger.V(2).Info("Hook directory changed", "path", event.Name, "op", event.Op.String())
				timer.Reset(reloadDelay)
			}
		case err, ok := <-watcher.Errors:
			if !ok {
				return
			}
			logger.Error(err, "Failed to watch hook directories")
		case <-timer.C:
			m.syncWatches(ctx, watcher)
			m.Reload(ctx)
		}
	}
}

// syncWatches watches every hook directory, or the parent of one that does not
// exist, so that its creation is seen.
func (m *Manager) syncWatches(ctx context.Context, watcher *fsnotify.Watcher) {
	logger := klog.FromContext(ctx)
	for _, dir := range m.dirs {
		if err := watcher.Add(dir); err == nil {
			continue
		}
		if err := watcher.Add(filepath.Dir(dir)); err != nil {
			logger.V(2).Info("Cannot watch hook directory or its parent", "directory", dir, "err", err)
		}
	}
}

// concerns reports whether a change at path affects a hook directory.
func (m *Manager) concerns(path string) bool {
	return slices.Contains(m.dirs, path) || slices.Contains(m.dirs, filepath.Dir(path))
}
