// Package gitrepo is the kubernetes.io/git-repo volume plugin: a wrapped
// disk emptyDir into which a git repository is cloned, with the kubelet's
// semantics (repository, revision, directory) kept, and hardened against
// hostile repositories and pod specs.
//
// Every git process runs with a clean environment, configuration given on
// the command line only (hooks, fsmonitor, credential helpers and submodules
// off; fsck on transfer; only the configured protocols allowed), an explicit
// --git-dir and --work-tree once a repository exists, and its cwd outside
// pod-controlled content. A volume is cloned into a staging directory beside
// it and renamed into place, so that a crash or a timeout never leaves a
// half-written volume marked ready.
//
// With the cache on, a bare mirror per repository URL is kept under
// ROOT/plugins/kubernetes.io~git-repo/cache and volumes are made from it
// without the network: the first volume of a revision by a local clone of the
// mirror, later ones by copying a finished checkout of that revision that the
// cache keeps beside the mirror, with the index's stat data refreshed so that
// the copy is as clean as a fresh clone. Objects are copied, never shared (no
// alternates, no hard links): a volume never depends on the cache and cannot
// change it. Concurrent volumes of one repository share one fetch; a failed,
// corrupt or full cache falls back to a direct clone.
//
// In overlay mode (CacheModeOverlay, or CacheModeAuto where a probe mount
// works) a volume of a cached revision is instead an overlay mount: the
// cache's immutable checkout of the revision (a lower layer) below an upper
// and a work dir in the volume's metadata dir. The cache counts the volumes
// using each lower layer, rebuilt from the volumes' records at start, and
// never removes one in use. docs/gitrepo.md describes both modes.
package gitrepo
