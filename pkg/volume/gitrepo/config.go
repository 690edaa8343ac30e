package gitrepo

import (
	"fmt"
	"slices"
	"strings"
	"time"

	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/version"
)

// Defaults of Config. They match the agent configuration's defaults.
const (
	// DefaultTimeout bounds one volume's set-up.
	DefaultTimeout = 2 * time.Minute
	// DefaultMinGitVersion is the oldest git accepted.
	DefaultMinGitVersion = "2.30.0"
	// DefaultCacheMaxBytes bounds the mirror cache.
	DefaultCacheMaxBytes int64 = 10 << 30
)

// DefaultAllowedProtocols returns the protocols allowed when
// Config.AllowedProtocols is empty: https and ssh.
func DefaultAllowedProtocols() []string { return []string{"https", "ssh"} }

// knownProtocols are the values AllowedProtocols may hold: git's own names
// for its transports ("file" covers local paths and file:// URLs).
var knownProtocols = sets.New("https", "http", "ssh", "git", "file")

// Config configures the gitRepo plugin. The agent maps the gitRepo section
// of its configuration onto it.
type Config struct {
	// AllowedProtocols are the transports a repository may use, among
	// "https", "ssh", "git" (git://), "http" and "file" (local paths and
	// file:// URLs). Empty means DefaultAllowedProtocols. Every other
	// transport (ext::, fd::, ftp, remote helpers) is always refused.
	AllowedProtocols []string
	// Timeout bounds one volume's set-up, the fetch and the checkout
	// included; when it passes, the running git command is killed: a clone
	// or fetch with its whole process group (every helper it started), a
	// command that starts no helper (checkout, reset, fsck) alone. Zero
	// means DefaultTimeout.
	Timeout time.Duration
	// MaxSizeBytes bounds the size on disk of one volume, and of one mirror.
	// A volume that grows past it is killed and cleaned up, and fails with a
	// final error; a mirror that does is dropped and the volume cloned
	// directly. Zero means no limit.
	MaxSizeBytes int64
	// MinGitVersion is the oldest git the plugin runs, as "2.30.0". Empty
	// means DefaultMinGitVersion.
	MinGitVersion string
	// Cache configures the node-local mirror cache.
	Cache CacheConfig
}

// CacheConfig configures the node-local mirror cache.
type CacheConfig struct {
	// Enabled turns the cache on.
	Enabled bool
	// MaxBytes is the size of all mirrors above which the least recently
	// used ones that no volume is being made from are removed. Zero means
	// no bound.
	MaxBytes int64
	// Mode is how a volume of a revision the cache holds is made:
	// CacheModeOverlay (an overlay mount over the cache's checkout),
	// CacheModeCopy (a copy of it), or CacheModeAuto (overlay where a probe
	// mount on ROOT's file system works, copy elsewhere). Empty means
	// CacheModeAuto.
	Mode string
}

// DefaultConfig returns the configuration the agent uses by default: https
// and ssh, a 2 minute timeout, no size limit, git 2.30.0 or newer, and a
// 10 GiB cache whose volumes are overlay mounts where they work.
func DefaultConfig() Config {
	return Config{
		AllowedProtocols: DefaultAllowedProtocols(),
		Timeout:          DefaultTimeout,
		MinGitVersion:    DefaultMinGitVersion,
		Cache:            CacheConfig{Enabled: true, MaxBytes: DefaultCacheMaxBytes, Mode: CacheModeAuto},
	}
}

// withDefaults returns cfg with its empty fields defaulted, its protocols
// lower-cased, sorted and deduplicated, and its minimum version parsed; an
// invalid field is an error that names it.
func (cfg Config) withDefaults() (Config, *version.Version, error) {
	var errs []error
	if len(cfg.AllowedProtocols) == 0 {
		cfg.AllowedProtocols = DefaultAllowedProtocols()
	}
	protocols := sets.New[string]()
	for _, p := range cfg.AllowedProtocols {
		p = strings.ToLower(strings.TrimSpace(p))
		if !knownProtocols.Has(p) {
			errs = append(errs, fmt.Errorf("gitRepo.allowedProtocols: unsupported protocol %q: supported values: %s", p, strings.Join(sets.List(knownProtocols), ", ")))
			continue
		}
		protocols.Insert(p)
	}
	cfg.AllowedProtocols = sets.List(protocols)
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Timeout < 0 {
		errs = append(errs, fmt.Errorf("gitRepo.timeout: %v must not be negative", cfg.Timeout))
	}
	if cfg.MaxSizeBytes < 0 {
		errs = append(errs, fmt.Errorf("gitRepo.maxSizeBytes: %d must not be negative", cfg.MaxSizeBytes))
	}
	if cfg.Cache.MaxBytes < 0 {
		errs = append(errs, fmt.Errorf("gitRepo.cache.maxBytes: %d must not be negative", cfg.Cache.MaxBytes))
	}
	switch cfg.Cache.Mode {
	case "":
		cfg.Cache.Mode = CacheModeAuto
	case CacheModeAuto, CacheModeOverlay, CacheModeCopy:
	default:
		errs = append(errs, fmt.Errorf("gitRepo.cache.mode: unsupported mode %q: supported values: %s, %s, %s", cfg.Cache.Mode, CacheModeAuto, CacheModeCopy, CacheModeOverlay))
	}
	if cfg.MinGitVersion == "" {
		cfg.MinGitVersion = DefaultMinGitVersion
	}
	minVersion, err := version.ParseGeneric(cfg.MinGitVersion)
	if err != nil {
		errs = append(errs, fmt.Errorf("gitRepo.minGitVersion: %q is not a version: %w", cfg.MinGitVersion, err))
	}
	return cfg, minVersion, utilerrors.NewAggregate(errs)
}

// allows reports whether protocol is allowed.
func (cfg Config) allows(protocol string) bool {
	return slices.Contains(cfg.AllowedProtocols, protocol)
}
