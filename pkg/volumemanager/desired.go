package volumemanager

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/volume-agent/volume-agent/pkg/manifest"
	"github.com/volume-agent/volume-agent/pkg/volume"
)

// Reasons of volumes that cannot be set up as declared.
const (
	// ReasonNoPluginMatched: no plugin supports the volume; it waits for
	// its spec to change.
	ReasonNoPluginMatched = "NoPluginMatched"
	// ReasonClaimUnsatisfiable: the claim's PersistentVolume cannot serve it
	// (its plugin lacks the access modes, or is not a persistent one).
	ReasonClaimUnsatisfiable = "ClaimUnsatisfiable"
	// ReasonInvalidSpec: the volume cannot be resolved to a plugin.
	ReasonInvalidSpec = "InvalidSpec"
	// ReasonWaitingForSources: a volume found on disk waits for every
	// source to be read before it is judged.
	ReasonWaitingForSources = "WaitingForSources"
)

// SourceUpdate is what one source says. A source is a named provider of
// pods, PersistentVolumes and claims, such as one manifest file.
type SourceUpdate struct {
	// Source names the source, as "file:/etc/pods/web.yaml" or "api:…".
	Source string
	// Bundle is the source's whole content, already validated. It replaces
	// what the source said before. Ignored when Err or Removed is set.
	Bundle *manifest.Bundle
	// Err reports that the source could not be read or is invalid: its
	// previous content stays desired and the error is shown on the source.
	Err error
	// Removed drops the source and everything it declared.
	Removed bool
	// Targets places volumes of the Bundle's pods elsewhere than under the
	// root dir, by pod UID and the pod's name for the volume. Ignored with
	// Err or Removed.
	Targets map[types.UID]map[string]Target
}

// Target is where a source wants a volume set up instead of its directory
// under the root dir: the target path of a CSI publish. The volume's
// metadata and ready marker stay under the root dir, and the Manager keeps
// the path there too (ROOT/pods/<uid>/<escaped plugin>~<name>.target)
// before the set-up starts, so that a restarted agent tears the volume down
// at its target. A volume stays at its target until it is torn down: a
// source must not move a volume that is (or may be) set up.
type Target struct {
	// Path is the absolute directory the plugin sets the volume up at
	// (Builder.SetUpAt) and tears it down at (Cleaner.TearDownAt).
	Path string
	// ReadOnly makes Path a read-only mount once the volume is set up.
	ReadOnly bool
}

type sourceState struct {
	name string
	// bundle is the last content that loaded; nil while the source never
	// loaded without error.
	bundle  *manifest.Bundle
	targets map[types.UID]map[string]Target
	err     error
	errTime time.Time
	updated time.Time
	// conflicts say what of the source is not used because another source
	// declares it too; podConflicts counts the pods among them.
	conflicts    []string
	podConflicts int
}

// desiredPod is a pod that a source declares.
type desiredPod struct {
	pod     *v1.Pod
	source  string
	volumes []*desiredVolume
}

// desiredVolume is one volume of a desired pod.
type desiredVolume struct {
	// name is the pod's name for the volume.
	name string
	spec *volume.Spec
	// plugin and key are set when the volume resolved to a plugin.
	plugin string
	key    VolumeKey
	// pending is set for a claim that is not yet bound, and failure for a
	// volume that no plugin can set up as declared. Both wait for the
	// manifests to change.
	pending *manifest.PendingError
	// claim is set for a persistentVolumeClaim volume.
	claim bool
	// target is where the volume is set up; its Path is empty for the
	// volume's directory under the root dir.
	target Target
	// kept is the record of this volume when its claim stopped resolving
	// after it was set up: it stays set up, shown pending, until the
	// claim resolves again or the pod goes.
	kept    *volumeRecord
	failure error
	reason  string
	// hash fingerprints spec, computed when needed.
	hash string
}

func (dv *desiredVolume) resolved() bool { return dv.plugin != "" }

func (dv *desiredVolume) specHash() string {
	if dv.hash == "" {
		dv.hash = hashSpec(dv.spec)
	}
	return dv.hash
}

// hashSpec fingerprints what a plugin is given of a volume.
func hashSpec(spec *volume.Spec) string {
	if spec == nil {
		return ""
	}
	h := fnv.New64a()
	var data []byte
	switch {
	case spec.Volume != nil:
		data, _ = json.Marshal(spec.Volume)
	case spec.PersistentVolume != nil:
		data, _ = json.Marshal(spec.PersistentVolume.Spec)
	}
	h.Write(data)
	if spec.ReadOnly {
		h.Write([]byte("ro"))
	}
	return fmt.Sprintf("%016x", h.Sum64())
}

// UpdateSources applies what sources say, all at once, and asks for a
// reconciler pass. Pods are identified by UID; when two sources declare the
// same UID, the source whose name sorts first wins and the other reports a
// conflict, in its status and in a SourceConflict event. PersistentVolumes
// (by name), claims and Secrets (by namespace/name) declared by several
// sources have one winner too (see claimsBundleLocked).
func (m *Manager) UpdateSources(updates ...SourceUpdate) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.cfg.Clock.Now().UTC()
	for _, u := range updates {
		s := m.sources[u.Source]
		switch {
		case u.Removed:
			delete(m.sources, u.Source)
			continue
		case s == nil:
			s = &sourceState{name: u.Source}
			m.sources[u.Source] = s
		}
		if u.Err != nil {
			s.err, s.errTime = u.Err, now
			m.recordEventLocked(Event{Type: EventWarning, Reason: ReasonSourceError, Source: u.Source, Message: u.Err.Error()})
			if m.cfg.Observer != nil {
				m.cfg.Observer.ObserveSourceError(u.Source)
			}
			continue
		}
		bundle := u.Bundle
		if bundle == nil {
			bundle = &manifest.Bundle{}
		}
		s.bundle, s.targets, s.err, s.errTime, s.updated = bundle, u.Targets, nil, time.Time{}, now
		if !m.sourcesSynced {
			for _, pod := range bundle.Pods {
				m.loadedPods.Insert(pod.UID)
			}
		}
	}
	m.recomputeDesiredLocked()
	m.updateSourcesSyncedLocked()
	m.Trigger()
}

// MarkSourcesSynced tells the Manager that every source has been read once
// (whether or not each loaded). Before, no undesired volume is torn down.
// After, the sources count as synced, and the Manager may become ready, once,
// in addition, every source known has loaded without error at least once, or
// Config.SourceLoadTimeout has passed: a manifest that failed to load since
// the start (a typo, a Deployment) may declare pods whose volumes are on
// disk, so the volumes of pods that no loaded source declared since the
// start are not torn down until it loads, is removed, or the timeout passes;
// then it is taken as declaring nothing, as the kubelet skips a file it
// cannot read, with a SourceSkipped event. A pod that a loaded source
// declared and no longer does is torn down at once. Set-ups of desired
// volumes proceed meanwhile. Calling it again is a no-op.
func (m *Manager) MarkSourcesSynced() {
	m.mu.Lock()
	if !m.sourcesRead {
		m.sourcesReadAt = m.cfg.Clock.Now()
	}
	m.sourcesRead = true
	m.updateSourcesSyncedLocked()
	m.mu.Unlock()
	m.Trigger()
}

// updateSourcesSyncedLocked sets sourcesSynced once every source has been
// read and none is still waiting for its first successful load, or
// SourceLoadTimeout after they were read. Once set, it stays set: a source
// that fails later keeps its previous content.
func (m *Manager) updateSourcesSyncedLocked() {
	if m.sourcesSynced || !m.sourcesRead {
		return
	}
	var unloaded []string
	for name, s := range m.sources {
		if s.bundle == nil {
			unloaded = append(unloaded, name)
		}
	}
	if len(unloaded) > 0 {
		if m.cfg.Clock.Since(m.sourcesReadAt) < m.cfg.SourceLoadTimeout {
			return
		}
		sort.Strings(unloaded)
		for _, name := range unloaded {
			m.recordEventLocked(Event{Type: EventWarning, Reason: ReasonSourceSkipped, Source: name,
				Message: fmt.Sprintf("source has not loaded in the %s since the start; taken as declaring no pod, so the volumes no other source declares are torn down", m.cfg.SourceLoadTimeout)})
		}
	}
	m.sourcesSynced = true
	m.loadedPods = nil
}

// holdTearDownLocked reports whether the undesired volumes of pod uid must
// wait for the sources (see MarkSourcesSynced): all of them until the sources
// are read, then those of pods that no loaded source declared, while some
// source has not loaded yet.
func (m *Manager) holdTearDownLocked(uid types.UID) bool {
	if m.sourcesSynced || m.tearDownAll {
		return false
	}
	return !m.sourcesRead || !m.loadedPods.Has(uid)
}

// recomputeDesiredLocked rebuilds the desired pods from the sources and
// links every volume record to what is desired of it.
func (m *Manager) recomputeDesiredLocked() {
	names := make([]string, 0, len(m.sources))
	previous := make(map[string][]string, len(m.sources))
	for name, s := range m.sources {
		names = append(names, name)
		previous[name] = s.conflicts
		s.conflicts, s.podConflicts = nil, 0
	}
	sort.Strings(names)
	defer m.recordNewConflictsLocked(previous)
	claims := m.claimsBundleLocked(names)
	m.updateSecretsLocked(claims.Secrets)

	pods := make(map[types.UID]*desiredPod, len(m.pods))
	for _, name := range names {
		s := m.sources[name]
		if s.bundle == nil {
			continue
		}
		for _, pod := range s.bundle.Pods {
			if other, taken := pods[pod.UID]; taken {
				s.conflicts = append(s.conflicts, fmt.Sprintf("pod %s/%s has UID %q, which source %q already declares for pod %s/%s",
					pod.Namespace, pod.Name, pod.UID, other.source, other.pod.Namespace, other.pod.Name))
				s.podConflicts++
				continue
			}
			if m.cfg.PodScope != nil && !m.cfg.PodScope(pod.UID) {
				continue
			}
			pods[pod.UID] = m.newDesiredPod(pod, name, claims, s.targets[pod.UID])
		}
	}
	m.pods = pods
	for uid := range m.podNames {
		m.prunePodNameLocked(uid)
	}

	// Unlink records that are no longer desired, then link the desired ones.
	// A volume on the host whose pod is still desired but whose claim
	// stopped resolving (claim or PersistentVolume removed, claim unbound
	// or unsatisfiable) keeps its previous want: only new set-ups wait for
	// a claim; the volume goes when its pod goes.
	for _, rec := range m.volumes {
		rec.claimPending = nil
		if rec.want == nil {
			continue
		}
		dp, ok := pods[rec.key.PodUID]
		if ok && dp.wants(rec.key) {
			continue
		}
		if ok && (rec.actual != actualNone || rec.running == OperationSetUp) {
			if dv := dp.unresolvedClaim(rec.podVolume); dv != nil && dv.kept == nil {
				dv.kept, rec.claimPending = rec, dv
				continue
			}
		}
		rec.want = nil
	}
	for uid, dp := range pods {
		m.podNames[uid] = types.NamespacedName{Namespace: dp.pod.Namespace, Name: dp.pod.Name}
		for _, dv := range dp.volumes {
			if !dv.resolved() {
				continue
			}
			rec := m.volumes[dv.key]
			if rec == nil {
				rec = m.newRecordLocked(dv.key, m.cfg.Layout.PodVolumeDir(uid, dv.plugin, dv.key.Name))
			}
			if dv.target.Path != "" && rec.actual == actualNone && rec.running == "" {
				rec.target, rec.path = dv.target.Path, dv.target.Path
			}
			rec.want = dv
			rec.podVolume = dv.name
			if rec.finalHash != "" && rec.finalHash != dv.specHash() {
				// The spec changed after a final error: try again at once.
				rec.finalHash = ""
				m.executor.ResetBackoff(rec.key, OperationSetUp)
			}
		}
	}
}

// claimsBundleLocked returns the PersistentVolumes, claims and Secrets of
// the sources named (sorted), one of each name: when several sources
// declare a PersistentVolume of one name, or a claim or Secret of one
// namespace/name, the source that won the last time keeps it while it still
// declares it, so that a volume set up from it is never moved to another
// object; otherwise the source whose name sorts first wins. Each other
// source gets a conflict. Of several claims naming one PersistentVolume in
// their spec.volumeName, the one that was first last time stays first.
func (m *Manager) claimsBundleLocked(names []string) *manifest.Bundle {
	pvKey := func(pv *v1.PersistentVolume) string { return fmt.Sprintf("PersistentVolume %q", pv.Name) }
	claimKey := func(c *v1.PersistentVolumeClaim) string {
		return fmt.Sprintf("PersistentVolumeClaim %q", c.Namespace+"/"+c.Name)
	}
	secretKey := func(s *v1.Secret) string { return fmt.Sprintf("Secret %q", s.Namespace+"/"+s.Name) }
	declared := map[string][]string{}
	for _, name := range names {
		if b := m.sources[name].bundle; b != nil {
			for _, pv := range b.PersistentVolumes {
				declared[pvKey(pv)] = append(declared[pvKey(pv)], name)
			}
			for _, c := range b.PersistentVolumeClaims {
				declared[claimKey(c)] = append(declared[claimKey(c)], name)
			}
			for _, secret := range b.Secrets {
				declared[secretKey(secret)] = append(declared[secretKey(secret)], name)
			}
		}
	}
	owners := make(map[string]string, len(declared))
	for key, sources := range declared {
		owners[key] = sources[0]
		if previous := m.owners[key]; slices.Contains(sources, previous) {
			owners[key] = previous
		}
	}
	m.owners = owners

	claims := &manifest.Bundle{}
	for _, name := range names {
		s := m.sources[name]
		if s.bundle == nil {
			continue
		}
		owns := func(key string) bool {
			if owner := owners[key]; owner != name {
				s.conflicts = append(s.conflicts, fmt.Sprintf("%s is also declared by source %q, whose declaration is used", key, owner))
				return false
			}
			return true
		}
		for _, pv := range s.bundle.PersistentVolumes {
			if owns(pvKey(pv)) {
				claims.PersistentVolumes = append(claims.PersistentVolumes, pv)
			}
		}
		for _, c := range s.bundle.PersistentVolumeClaims {
			if owns(claimKey(c)) {
				claims.PersistentVolumeClaims = append(claims.PersistentVolumeClaims, c)
			}
		}
		for _, secret := range s.bundle.Secrets {
			if owns(secretKey(secret)) {
				claims.Secrets = append(claims.Secrets, secret)
			}
		}
	}

	// Of several claims naming one PersistentVolume, the first binds (see
	// manifest.Bundle.VolumeSpec): the claim that bound it last time goes
	// first, so that a claim that comes later never takes it over.
	incumbent := func(c *v1.PersistentVolumeClaim) bool {
		return c.Spec.VolumeName != "" && m.boundClaims[c.Spec.VolumeName] == claimKey(c)
	}
	slices.SortStableFunc(claims.PersistentVolumeClaims, func(a, b *v1.PersistentVolumeClaim) int {
		switch ia, ib := incumbent(a), incumbent(b); {
		case ia && !ib:
			return -1
		case ib && !ia:
			return 1
		}
		return 0
	})
	m.boundClaims = map[string]string{}
	for _, c := range claims.PersistentVolumeClaims {
		if _, taken := m.boundClaims[c.Spec.VolumeName]; c.Spec.VolumeName != "" && !taken {
			m.boundClaims[c.Spec.VolumeName] = claimKey(c)
		}
	}
	return claims
}

// recordNewConflictsLocked records an event for every conflict of a source
// that it did not have before (previous, by source name).
func (m *Manager) recordNewConflictsLocked(previous map[string][]string) {
	for name, s := range m.sources {
		for _, conflict := range s.conflicts {
			if !slices.Contains(previous[name], conflict) {
				m.recordEventLocked(Event{Type: EventWarning, Reason: ReasonSourceConflict, Source: name, Message: conflict})
			}
		}
	}
}

func (dp *desiredPod) wants(key VolumeKey) bool {
	for _, dv := range dp.volumes {
		if dv.resolved() && dv.key == key {
			return true
		}
	}
	return false
}

// unresolvedClaim returns the pod's claim volume called name when it does
// not resolve, or nil.
func (dp *desiredPod) unresolvedClaim(name string) *desiredVolume {
	for _, dv := range dp.volumes {
		if dv.name == name && dv.claim && !dv.resolved() {
			return dv
		}
	}
	return nil
}

// newDesiredPod resolves the volumes of pod, placing them at targets (by
// the pod's name for the volume) when given.
func (m *Manager) newDesiredPod(pod *v1.Pod, source string, claims *manifest.Bundle, targets map[string]Target) *desiredPod {
	dp := &desiredPod{pod: pod, source: source, volumes: make([]*desiredVolume, 0, len(pod.Spec.Volumes))}
	seen := map[VolumeKey]bool{}
	for i := range pod.Spec.Volumes {
		vol := &pod.Spec.Volumes[i]
		dv := &desiredVolume{name: vol.Name, claim: vol.PersistentVolumeClaim != nil}
		dp.volumes = append(dp.volumes, dv)
		spec, plugin, err := claims.ResolveVolume(pod, vol, m.cfg.Plugins)
		if target, ok := targets[vol.Name]; ok && spec != nil {
			dv.target = target
			spec.ReadOnly = spec.ReadOnly || target.ReadOnly
		}
		dv.spec = spec
		var pending *manifest.PendingError
		switch {
		case errors.As(err, &pending):
			dv.pending, dv.reason = pending, string(pending.Reason)
			continue
		case err != nil && errors.Is(err, volume.ErrNoPluginMatched):
			dv.failure, dv.reason = err, ReasonNoPluginMatched
			continue
		case err != nil && vol.PersistentVolumeClaim != nil:
			dv.failure, dv.reason = err, ReasonClaimUnsatisfiable
			continue
		case err != nil:
			dv.failure, dv.reason = err, ReasonInvalidSpec
			continue
		}
		key := VolumeKey{PodUID: pod.UID, Plugin: plugin.Name(), Name: spec.Name()}
		if seen[key] {
			dv.failure, dv.reason = volume.Finalf("volume %q: another volume of the pod is set up at the same place (%s)", vol.Name, key), ReasonInvalidSpec
			continue
		}
		seen[key] = true
		dv.plugin, dv.key = plugin.Name(), key
	}
	return dp
}

// updateSecretsLocked makes secrets the Secrets that GetSecret returns.
// When they changed, the set-ups that failed are tried again at once, not
// after their backoff: one may have waited for a Secret.
func (m *Manager) updateSecretsLocked(secrets []*v1.Secret) {
	byName := make(map[types.NamespacedName]*v1.Secret, len(secrets))
	for _, secret := range secrets {
		byName[types.NamespacedName{Namespace: secret.Namespace, Name: secret.Name}] = secret
	}
	if maps.Equal(byName, m.secrets) {
		return
	}
	m.secrets = byName
	for _, rec := range m.volumes {
		if rec.want != nil && rec.lastKind == OperationSetUp && rec.lastErr != nil {
			m.executor.ResetBackoff(rec.key, OperationSetUp)
		}
	}
}

// GetSecret returns the Secret namespace/name that a source declares (of
// several, the one chosen as for a claim; see UpdateSources), as the API
// server stores it: a copy, with stringData merged into data. A Secret no
// source declares is an error wrapping volume.ErrSecretNotFound. It is the
// plugins' volume.SecretGetter; it never logs the Secret.
func (m *Manager) GetSecret(namespace, name string) (*v1.Secret, error) {
	m.mu.Lock()
	secret := m.secrets[types.NamespacedName{Namespace: namespace, Name: name}]
	m.mu.Unlock()
	if secret == nil {
		return nil, fmt.Errorf("%w: no source declares it", volume.ErrSecretNotFound)
	}
	secret = secret.DeepCopy()
	if len(secret.StringData) > 0 && secret.Data == nil {
		secret.Data = make(map[string][]byte, len(secret.StringData))
	}
	for key, value := range secret.StringData {
		secret.Data[key] = []byte(value)
	}
	secret.StringData = nil
	return secret, nil
}

// Sources returns the state of every source, by name.
func (m *Manager) Sources() []SourceStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sourcesLocked()
}

func (m *Manager) sourcesLocked() []SourceStatus {
	out := make([]SourceStatus, 0, len(m.sources))
	for _, s := range m.sources {
		out = append(out, sourceStatus(s))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func sourceStatus(s *sourceState) SourceStatus {
	st := SourceStatus{Name: s.name, Updated: s.updated}
	if s.bundle != nil {
		st.Pods = len(s.bundle.Pods) - s.podConflicts
	}
	switch {
	case s.err != nil:
		st.Error, st.ErrorTime = s.err.Error(), s.errTime
	case len(s.conflicts) > 0:
		st.Error = strings.Join(s.conflicts, "; ")
	}
	return st
}

// SourceOf returns the source that declares the pod uid, or "".
func (m *Manager) SourceOf(uid types.UID) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if dp, ok := m.pods[uid]; ok {
		return dp.source
	}
	return ""
}
