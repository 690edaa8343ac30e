package gitrepo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apimachinery/pkg/util/version"
	"k8s.io/klog/v2"

	"github.com/volume-agent/volume-agent/pkg/volume"
	"github.com/volume-agent/volume-agent/pkg/volume/util"
)

// PluginName is the qualified name of the gitRepo plugin.
const PluginName = "kubernetes.io/git-repo"

// volumeMode is the mode of a volume's root, as an emptyDir's.
const volumeMode fs.FileMode = 0o777

// stagingSuffix ends the name of the dir, beside a volume, that the volume
// is cloned into before it is renamed into place: ".<volume>.staging". Volume
// names never start with ".", so it cannot clash with a volume.
const stagingSuffix = ".staging"

// ProbeVolumePlugins returns the gitRepo plugin configured by cfg. Empty
// fields of cfg take the defaults of DefaultConfig, but Cache, which is
// taken as given; an invalid cfg makes the plugin's Init fail with an error
// that names the field.
func ProbeVolumePlugins(cfg Config) []volume.VolumePlugin {
	return []volume.VolumePlugin{newPlugin(cfg, processGroupRunner{})}
}

// newPlugin returns a plugin that runs network commands through network; a
// nil network runs every command through the host's exec.Interface, as unit
// tests do with a FakeExec.
func newPlugin(cfg Config, network commandRunner) *plugin {
	return &plugin{rawConfig: cfg, network: network}
}

type plugin struct {
	rawConfig  Config
	cfg        Config
	minVersion *version.Version
	network    commandRunner
	host       volume.VolumeHost
	git        *git
	cache      *mirrorCache
	// overlay is what the overlay probe found; usable only when the cache
	// is on and its mode is not copy.
	overlay overlaySupport

	// prepareMu guards git and cache, made by prepare.
	prepareMu sync.Mutex
	// straysKilled makes the first NewBuilder, and only it, kill the git
	// processes a dead agent left (see killStraysOnce).
	straysKilled sync.Once

	// versionMu guards gitVersion, the version of the git found by the last
	// successful check.
	versionMu  sync.Mutex
	gitVersion *version.Version
}

var (
	_ volume.VolumePlugin         = &plugin{}
	_ volume.SpecValidatingPlugin = &plugin{}
	_ volume.HealthCheckingPlugin = &plugin{}
	_ volume.VerifyingPlugin      = &plugin{}
	_ volume.Builder              = &builder{}
	_ volume.Cleaner              = &cleaner{}
)

// Init checks the configuration. It touches nothing on disk, so that
// commands that only validate manifests leave the root dir alone; the
// plugin's dir is prepared when it is first used (see prepare).
func (p *plugin) Init(host volume.VolumeHost) error {
	cfg, minVersion, err := p.rawConfig.withDefaults()
	if err != nil {
		return fmt.Errorf("invalid gitRepo configuration: %w", err)
	}
	p.cfg, p.minVersion, p.host = cfg, minVersion, host
	return nil
}

// prepare makes the plugin's dir (ROOT/plugins/kubernetes.io~git-repo/
// {home,gitconfig,cache}) the first time a volume needs git. It kills no process: a health check may run beside a live agent (see
// killStraysOnce). A failure is tried again on the next use.
func (p *plugin) prepare() error {
	p.prepareMu.Lock()
	defer p.prepareMu.Unlock()
	if p.git != nil {
		return nil
	}
	local := execRunner{exec: p.host.GetExec()}
	network := p.network
	if network == nil {
		network = local
	}
	dir := p.host.GetPluginDir(PluginName)
	g, err := newGit(local, network, dir, p.cfg.AllowedProtocols)
	if err != nil {
		return err
	}
	if p.cfg.Cache.Enabled {
		if p.cache, err = newMirrorCache(filepath.Join(dir, "cache"), p.cfg.Cache.MaxBytes, p.cfg.MaxSizeBytes, g, p.host.GetClock()); err != nil {
			return err
		}
		if err := p.countLowerUsers(); err != nil {
			return err
		}
		if p.cfg.Cache.Mode != CacheModeCopy {
			p.overlay = probeOverlay(p.host.GetMounter(), filepath.Join(p.cache.dir, ".overlay-probe"))
			recordProbe(p.cache.dir, p.overlay, p.host.GetClock().Now())
			klog.InfoS("Probed overlay mounts for gitRepo volumes", "mode", p.cfg.Cache.Mode, "usable", p.overlay.usable, "reason", p.overlay.reason)
		}
	}
	p.git = g
	return nil
}

// countLowerUsers rebuilds the cache's counts of the overlay volumes using
// each lower layer from the volumes' records on disk.
func (p *plugin) countLowerUsers() error {
	records, err := filepath.Glob(filepath.Join(p.host.GetPodPluginDir("*", PluginName), "*", overlayDirName, lowerFileName))
	if err != nil {
		return fmt.Errorf("failed to list overlay volumes: %w", err)
	}
	var lowers []string
	for _, record := range records {
		lower, err := overlayVolume{dir: filepath.Dir(record)}.lower()
		if err != nil {
			return err
		}
		lowers = append(lowers, lower)
	}
	p.cache.setUsers(lowers)
	return nil
}

// useOverlay reports whether volumes of cached revisions are overlay
// mounts, and an error when the mode is overlay and overlay mounts do not
// work.
func (p *plugin) useOverlay() (bool, error) {
	if p.cache == nil || p.cfg.Cache.Mode == CacheModeCopy {
		return false, nil
	}
	if !p.overlay.usable && p.cfg.Cache.Mode == CacheModeOverlay {
		return false, volume.NewTransientError(fmt.Errorf("gitRepo.cache.mode is %s, but %s", CacheModeOverlay, p.overlay.reason))
	}
	return p.overlay.usable, nil
}

// cacheModeHealth returns how volumes are made from the cache, as the probe
// this process ran or, before any, the last one recorded says; and an error
// when the mode is overlay and overlay mounts do not work.
func (p *plugin) cacheModeHealth() (string, error) {
	mode := p.cfg.Cache.Mode
	if mode == CacheModeCopy {
		return CacheModeCopy, nil
	}
	p.prepareMu.Lock()
	support, probed := p.overlay, p.git != nil && p.cache != nil
	p.prepareMu.Unlock()
	if !probed {
		support, probed = readProbe(filepath.Join(p.host.GetPluginDir(PluginName), "cache"))
	}
	switch {
	case !probed:
		return mode + ": overlay mounts not probed yet (probed at the first volume)", nil
	case support.usable:
		return CacheModeOverlay + ": " + support.reason, nil
	case mode == CacheModeOverlay:
		return mode, fmt.Errorf("gitRepo.cache.mode is %s, but %s", CacheModeOverlay, support.reason)
	}
	return CacheModeCopy + " (" + mode + "): " + support.reason, nil
}

func (p *plugin) Name() string { return PluginName }

func (p *plugin) CanSupport(spec *volume.Spec) bool {
	return spec != nil && spec.Volume != nil && spec.Volume.GitRepo != nil
}

// ValidateSpec checks the repository (required, an allowed protocol, no
// leading '-'), the revision (no leading '-', no whitespace or control
// characters: anything else is resolved by git, as "git rev-parse
// <revision>^{commit}" resolves it, when the volume is set up) and the
// directory (".", or one component that is neither ".." nor ".git").
func (p *plugin) ValidateSpec(spec *volume.Spec, fldPath *field.Path) field.ErrorList {
	if !p.CanSupport(spec) {
		return field.ErrorList{field.Required(fldPath, "a gitRepo volume source")}
	}
	return validateSource(spec.Volume.GitRepo, p.cfg, fldPath)
}

// CheckHealth reports git's version, and that the plugin is unusable when
// git is missing or older than MinGitVersion. It creates nothing under the
// root dir (see gitForVersion), so that `volume-agent plugins` is read-only.
func (p *plugin) CheckHealth(ctx context.Context) volume.Health {
	details := map[string]string{"minGitVersion": p.minVersion.String(), "allowedProtocols": strings.Join(p.cfg.AllowedProtocols, ",")}
	var modeErr error
	if p.cfg.Cache.Enabled {
		details["cache"] = filepath.Join(p.host.GetPluginDir(PluginName), "cache")
		details["cacheMode"], modeErr = p.cacheModeHealth()
	}
	v, err := p.checkGit(ctx, true)
	if v != nil {
		details["gitVersion"] = v.String()
	}
	if err == nil {
		err = modeErr
	}
	if err != nil {
		return volume.Health{Usable: false, Message: err.Error(), Details: details}
	}
	return volume.Health{Usable: true, Message: "git " + v.String(), Details: details}
}

// VerifyVolume checks that the volume's dir is still there and not empty (a
// checkout holds the repository's dir, or .git). A checkout that is gone is a
// Final error: the manager reports it and does not clone again behind the
// pod's back.
func (p *plugin) VerifyVolume(spec *volume.Spec, _ types.UID, path string) error {
	dir, err := os.Open(path)
	if err != nil {
		return volume.Finalf("the checkout of gitRepo volume %q is gone: %w", spec.Name(), err)
	}
	defer dir.Close()
	if _, err := dir.Readdirnames(1); errors.Is(err, io.EOF) {
		return volume.Finalf("the checkout of gitRepo volume %q at %s is gone: the dir is empty", spec.Name(), path)
	} else if err != nil {
		return volume.Finalf("failed to read the checkout of gitRepo volume %q: %w", spec.Name(), err)
	}
	return nil
}

// checkGit returns git's version and an error when git cannot be run or is
// older than MinGitVersion. A good result is remembered unless again.
func (p *plugin) checkGit(ctx context.Context, again bool) (*version.Version, error) {
	p.versionMu.Lock()
	defer p.versionMu.Unlock()
	if p.gitVersion != nil && !again {
		return p.gitVersion, nil
	}
	g, done, err := p.gitForVersion()
	if err != nil {
		return nil, volume.NewTransientError(err)
	}
	out, err := g.runLocal(ctx, "", "", "version")
	done()
	if err != nil {
		return nil, volume.NewTransientError(fmt.Errorf("failed to run git: %w: %s", err, strings.TrimSpace(string(out))))
	}
	// "git version 2.39.5", or "git version 2.39.5.windows.1".
	fields := strings.Fields(string(out))
	if len(fields) < 3 {
		return nil, volume.NewTransientError(fmt.Errorf("failed to read git's version from %q", strings.TrimSpace(string(out))))
	}
	v, err := version.ParseGeneric(fields[2])
	if err != nil {
		return nil, volume.NewTransientError(fmt.Errorf("failed to parse git's version %q: %w", fields[2], err))
	}
	if v.LessThan(p.minVersion) {
		p.gitVersion = nil
		return v, volume.Finalf("git %s is older than %s, the oldest allowed (gitRepo.minGitVersion)", v, p.minVersion)
	}
	p.gitVersion = v
	return v, nil
}

// gitForVersion returns the plugin's git once a volume prepared it, and until
// then a git whose private dir is a temporary one, removed by done.
func (p *plugin) gitForVersion() (g *git, done func(), err error) {
	p.prepareMu.Lock()
	g = p.git
	p.prepareMu.Unlock()
	if g != nil {
		return g, func() {}, nil
	}
	dir, err := os.MkdirTemp("", "volume-agent-git-")
	if err != nil {
		return nil, nil, fmt.Errorf("failed to create a private dir for git: %w", err)
	}
	done = func() { _ = os.RemoveAll(dir) }
	local := execRunner{exec: p.host.GetExec()}
	if g, err = newGit(local, local, dir, p.cfg.AllowedProtocols); err != nil {
		done()
		return nil, nil, err
	}
	return g, done, nil
}

// killStraysOnce kills, the first time it is called, the git processes that
// an agent which died on this root left running. Only NewBuilder calls it:
// the commands that build volumes (run, setup, teardown) hold the root's
// exclusive lock before they build any, so no other agent's git is running
// on this root then; commands that only check health or validate (plugins,
// validate) take no lock and never build a volume.
func (p *plugin) killStraysOnce() {
	p.straysKilled.Do(func() {
		if n := killStrays(p.git.configEnv); n > 0 {
			klog.InfoS("Killed git processes left by a previous agent", "count", n)
		}
	})
}

// NewBuilder validates spec and returns its Builder; the first one kills the
// git processes a dead agent left (killStraysOnce). An invalid spec is a
// Final error listing every bad field.
func (p *plugin) NewBuilder(spec *volume.Spec, pod *v1.Pod, opts volume.VolumeOptions) (volume.Builder, error) {
	if !p.CanSupport(spec) {
		return nil, volume.Finalf("volume %q is not a gitRepo volume", spec.Name())
	}
	source := *spec.Volume.GitRepo
	if errs := p.ValidateSpec(spec, field.NewPath("gitRepo")); len(errs) > 0 {
		return nil, volume.NewFinalError(fmt.Errorf("invalid gitRepo volume %q: %w", spec.Name(), errs.ToAggregate()))
	}
	if err := p.prepare(); err != nil {
		return nil, err
	}
	p.killStraysOnce()
	directory := source.Directory
	if directory == "" {
		directory = defaultDirectory(source.Repository)
	}
	return &builder{
		gitRepoVolume: p.volume(spec.Name(), pod.UID),
		pod:           pod,
		source:        source,
		directory:     filepath.Clean(directory),
		readOnly:      spec.ReadOnly,
		opts:          opts,
	}, nil
}

// NewCleaner returns the Cleaner of volName in podUID. It prepares the
// plugin, so that the cache counts the users of its lower layers before a
// tear-down releases one; a failure to prepare does not stop a tear-down.
func (p *plugin) NewCleaner(volName string, podUID types.UID) (volume.Cleaner, error) {
	if err := p.prepare(); err != nil {
		klog.InfoS("Tearing down without the gitRepo cache", "err", err)
	}
	return &cleaner{gitRepoVolume: p.volume(volName, podUID)}, nil
}

func (p *plugin) volume(volName string, podUID types.UID) gitRepoVolume {
	return gitRepoVolume{
		VolumeDirs: volume.NewVolumeDirs(p.host, PluginName, podUID, volName),
		plugin:     p,
		volName:    volName,
		podUID:     podUID,
	}
}

// gitRepoVolume is what a Builder and a Cleaner share: where the volume is.
type gitRepoVolume struct {
	volume.VolumeDirs
	plugin  *plugin
	volName string
	podUID  types.UID
}

// wrappedSpec is the spec of the emptyDir that holds the volume.
func (v gitRepoVolume) wrappedSpec() volume.Spec {
	return volume.Spec{Volume: &v1.Volume{Name: v.volName, VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{}}}}
}

// stagingDir returns the dir beside dir that dir is cloned into.
func stagingDir(dir string) string {
	return filepath.Join(filepath.Dir(dir), "."+filepath.Base(dir)+stagingSuffix)
}

// removeStaging removes dir's staging dir, as a crash may have left it.
func (v gitRepoVolume) removeStaging(dir string) error {
	return util.RemoveVolumeDir(v.plugin.host.GetMounter(), stagingDir(dir))
}

type builder struct {
	gitRepoVolume
	pod       *v1.Pod
	source    v1.GitRepoVolumeSource
	directory string
	// readOnly makes an overlay volume a read-only mount.
	readOnly bool
	opts     volume.VolumeOptions
}

func (b *builder) GetAttributes() volume.Attributes {
	return volume.Attributes{ReadOnly: b.readOnly, Managed: true}
}

func (b *builder) SetUp(fsGroup *int64) error { return b.SetUpAt(b.Path, fsGroup) }

// SetUpAt sets the volume up at dir: a wrapped emptyDir, the repository
// cloned beside it (from the cache when it is on) and renamed into place,
// the revision checked out, fsGroup applied, and the ready marker written.
// It returns at once when the volume is ready. On failure nothing is left:
// the staging dir is removed and the wrapped emptyDir torn down; if that
// cleanup fails the error is Uncertain.
func (b *builder) SetUpAt(dir string, fsGroup *int64) error {
	if util.IsReady(b.MetadataDir) {
		mounted, err := b.remountOverlay(dir)
		if err != nil || mounted {
			return err
		}
	}
	ctx, cancel := context.WithTimeoutCause(b.opts.ContextOrBackground(), b.plugin.cfg.Timeout, errTimeout)
	defer cancel()
	logger := klog.FromContext(ctx).WithValues("volume", b.volName, "pod", klog.KObj(b.pod), "podUID", b.podUID)
	ctx = klog.NewContext(ctx, logger)

	if _, err := b.plugin.checkGit(ctx, false); err != nil {
		return err
	}
	start := b.plugin.host.GetClock().Now()
	err := b.setUp(ctx, dir, fsGroup)
	if err != nil {
		if undoErr := b.undo(dir); undoErr != nil {
			return volume.NewUncertainError(utilerrors.NewAggregate([]error{err, fmt.Errorf("failed to clean up after a failed set-up: %w", undoErr)}))
		}
		return err
	}
	logger.V(2).Info("Set up gitRepo volume", "repository", redactURL(b.source.Repository), "revision", b.source.Revision,
		"path", dir, "duration", b.plugin.host.GetClock().Since(start))
	return nil
}

func (b *builder) setUp(ctx context.Context, dir string, fsGroup *int64) error {
	if err := b.removeStaging(dir); err != nil {
		return fmt.Errorf("failed to remove a stale staging dir: %w", err)
	}
	// A set-up killed after it mounted its overlay, before the ready
	// marker, left the overlay behind: remove it, or a second one would be
	// mounted on top of it.
	if err := b.tearDownOverlay(dir); err != nil {
		return fmt.Errorf("failed to remove the overlay of an interrupted set-up: %w", err)
	}
	wrapped, err := b.plugin.host.NewWrapperBuilder(b.volName, b.wrappedSpec(), b.pod, b.opts)
	if err != nil {
		return err
	}
	if err := wrapped.SetUpAt(dir, fsGroup); err != nil {
		return err
	}
	overlay, err := b.plugin.useOverlay()
	if err != nil {
		return err
	}
	if overlay {
		err := b.setUpOverlay(ctx, dir, fsGroup)
		switch {
		case err == nil:
			b.plugin.cache.evict(ctx)
			return util.SetReady(b.MetadataDir)
		case volume.IsFinal(err) || volume.IsUncertain(err) || ctx.Err() != nil:
			return err
		}
		klog.FromContext(ctx).Info("Copying the volume after its overlay failed", "err", err)
	}
	staging := stagingDir(dir)
	if err := b.populate(ctx, staging); err != nil {
		return err
	}
	if err := os.Chmod(staging, volumeMode); err != nil {
		return fmt.Errorf("failed to chmod %q: %w", staging, err)
	}
	if err := renameIntoPlace(b.plugin.host, staging, dir); err != nil {
		return err
	}
	if err := util.SetVolumeOwnership(dir, fsGroup, false); err != nil {
		return err
	}
	return util.SetReady(b.MetadataDir)
}

// renameIntoPlace replaces the empty dir with staging. A dir that is not
// empty holds what a set-up that crashed after its rename left, and is
// removed first.
func renameIntoPlace(host volume.VolumeHost, staging, dir string) error {
	err := os.Rename(staging, dir)
	if err != nil && (errors.Is(err, fs.ErrExist) || isNotEmpty(err)) {
		if err := util.RemoveVolumeDir(host.GetMounter(), dir); err != nil {
			return fmt.Errorf("failed to remove the contents of an unfinished volume: %w", err)
		}
		err = os.Rename(staging, dir)
	}
	if err != nil {
		return fmt.Errorf("failed to move the clone into place: %w", err)
	}
	return nil
}

// populate makes staging hold the volume's content: the clone, at the
// volume's root or in its directory.
func (b *builder) populate(ctx context.Context, staging string) error {
	logger := klog.FromContext(ctx)
	repo, rev := b.source.Repository, b.source.Revision
	fresh := func() (string, error) {
		if err := util.RemoveVolumeDir(b.plugin.host.GetMounter(), staging); err != nil {
			return "", fmt.Errorf("failed to empty the staging dir: %w", err)
		}
		if err := os.Mkdir(staging, 0o700); err != nil {
			return "", fmt.Errorf("failed to create the staging dir: %w", err)
		}
		return filepath.Join(staging, b.directory), nil
	}
	target, err := fresh()
	if err != nil {
		return err
	}
	watched, stop := watchSize(ctx, b.plugin.host.GetClock(), staging, b.plugin.cfg.MaxSizeBytes)
	defer stop()
	cache := b.plugin.cache
	if cache != nil {
		err := cache.populate(watched, repo, rev, target)
		if err == nil {
			err = stop()
		}
		switch {
		case err == nil:
			cache.evict(ctx)
			return nil
		case errors.Is(err, errSizeLimit) || errors.Is(context.Cause(watched), errSizeLimit):
			return sizeLimitError(repo, err)
		case volume.IsFinal(err) || ctx.Err() != nil:
			return err
		}
		logger.Info("Cloning directly after the cache failed", "repository", redactURL(repo), "err", err)
		if target, err = fresh(); err != nil {
			return err
		}
	}
	err = directClone(watched, b.plugin.git, repo, rev, target)
	if sizeErr := stop(); err == nil {
		err = sizeErr
	}
	if errors.Is(err, errSizeLimit) || errors.Is(context.Cause(watched), errSizeLimit) {
		return sizeLimitError(repo, err)
	}
	if err == nil && cache != nil {
		cache.forget(ctx, repo)
	}
	return err
}

func sizeLimitError(repo string, err error) error {
	if volume.IsFinal(err) {
		return err
	}
	return volume.NewFinalError(fmt.Errorf("failed to clone %s: %w (gitRepo.maxSizeBytes)", redactURL(repo), err))
}

// directClone clones repo into target over the network and checks rev out.
func directClone(ctx context.Context, g *git, repo, rev, target string) error {
	args := []string{"clone", "--quiet"}
	if rev != "" {
		args = append(args, "--no-checkout")
	}
	args = append(args, "--", repo, target)
	if out, err := g.runNetwork(ctx, "", args...); err != nil {
		return commandError(ctx, "clone "+redactURL(repo), repo, out, err)
	}
	if rev == "" {
		return nil
	}
	return checkoutRevision(ctx, g, repo, rev, target)
}

// checkoutRevision checks rev out in the clone at workTree, then resets it
// hard, as the kubelet does. A branch that exists only on the remote becomes
// a local branch that tracks it. A revision that is not a ref name (main~1,
// HEAD^, v1^{commit}) is resolved as "git rev-parse <rev>^{commit}" resolves
// it and its commit checked out, detached, as "git checkout <rev>" would; one
// that names no commit is a final unknown revision error.
func checkoutRevision(ctx context.Context, g *git, repo, rev, workTree string) error {
	gitDir := filepath.Join(workTree, ".git")
	target := rev
	if checkRefName(rev) != "" {
		out, err := g.runLocal(ctx, gitDir, "", "rev-parse", "--verify", "--quiet", rev+"^{commit}")
		if err != nil {
			return volume.NewFinalError(fmt.Errorf("unknown revision: %q names no commit of %s", rev, redactURL(repo)))
		}
		target = strings.TrimSpace(string(out))
	}
	if out, err := g.runLocal(ctx, gitDir, workTree, "checkout", "--quiet", "--force", target, "--"); err != nil {
		return commandError(ctx, fmt.Sprintf("check out revision %q of %s", rev, redactURL(repo)), repo, out, err)
	}
	if out, err := g.runLocal(ctx, gitDir, workTree, "reset", "--quiet", "--hard"); err != nil {
		return commandError(ctx, fmt.Sprintf("reset to revision %q of %s", rev, redactURL(repo)), repo, out, err)
	}
	return nil
}

// undo removes what a failed set-up made: an overlay, the staging dir and
// the wrapped emptyDir.
func (b *builder) undo(dir string) error {
	var errs []error
	if err := b.tearDownOverlay(dir); err != nil {
		errs = append(errs, err)
	}
	if err := b.removeStaging(dir); err != nil {
		errs = append(errs, err)
	}
	if err := b.tearDownWrapped(dir); err != nil {
		errs = append(errs, err)
	}
	return utilerrors.NewAggregate(errs)
}

func (v gitRepoVolume) tearDownWrapped(dir string) error {
	wrapped, err := v.plugin.host.NewWrapperCleaner(v.volName, v.wrappedSpec(), v.podUID)
	if err != nil {
		return err
	}
	return wrapped.TearDownAt(dir)
}

type cleaner struct {
	gitRepoVolume
}

func (c *cleaner) TearDown() error { return c.TearDownAt(c.Path) }

// TearDownAt removes the ready marker first, so that a tear-down cut short
// never leaves a volume marked ready, then an overlay volume's mount and
// layers (see tearDownOverlay), then any staging dir, then the wrapped
// emptyDir with the clone in it (never following a symlink out, never
// crossing a mount). A volume already gone is a success.
func (c *cleaner) TearDownAt(dir string) error {
	if err := removeReadyMarker(c.MetadataDir); err != nil {
		return err
	}
	if err := c.tearDownOverlay(dir); err != nil {
		return err
	}
	if err := util.RemoveMetadataDir(c.MetadataDir); err != nil {
		return err
	}
	if err := c.removeStaging(dir); err != nil {
		return fmt.Errorf("failed to remove the staging dir: %w", err)
	}
	return c.tearDownWrapped(dir)
}

// isNotEmpty reports whether err says a directory is not empty.
func isNotEmpty(err error) bool {
	return errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.EEXIST)
}
