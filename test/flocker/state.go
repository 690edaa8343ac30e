package flocker

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"k8s.io/mount-utils"
)

// dataset is one dataset's configuration (what the API was told) and its emulated state (what the
// agents have done so far).
type dataset struct {
	datasetConfig

	// listed: the dataset appears in /v1/state/datasets.
	listed bool
	// stateNode is the node it is mounted on; "" means listed without primary and path.
	stateNode string
	// settleAt is when the pending transition (move, create or delete) completes; zero when none.
	settleAt time.Time
	// hiddenUntil is an injected absence from the state.
	hiddenUntil time.Time
}

// datasetConfig is a dataset's configuration, as the API returns it and as it is persisted.
type datasetConfig struct {
	DatasetID   string            `json:"dataset_id"`
	Primary     string            `json:"primary"`
	Deleted     bool              `json:"deleted"`
	Metadata    map[string]string `json:"metadata"`
	MaximumSize *int64            `json:"maximum_size,omitempty"`
}

// datasetState is an entry of /v1/state/datasets.
type datasetState struct {
	DatasetID   string `json:"dataset_id"`
	Primary     string `json:"primary,omitempty"`
	Path        string `json:"path,omitempty"`
	MaximumSize *int64 `json:"maximum_size,omitempty"`
}

type lease struct {
	DatasetID  string     `json:"dataset_id"`
	NodeUUID   string     `json:"node_uuid"`
	Expiration *time.Time `json:"expiration,omitempty"`
}

// persisted is the content of <StateDir>/configuration.json.
type persisted struct {
	Datasets []datasetConfig `json:"datasets"`
	Leases   []lease         `json:"leases"`
}

const configurationFile = "configuration.json"

var (
	uuid4Pattern = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-4[0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}$`)
	// lenientIDPattern keeps lenient ids usable as directory names.
	lenientIDPattern = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)
)

// validID reports whether id is acceptable as a dataset id or node uuid in this mode.
func (e *Emulator) validID(id string) bool {
	if e.cfg.Lenient {
		return lenientIDPattern.MatchString(id)
	}
	return uuid4Pattern.MatchString(id)
}

// DatasetSpec describes a dataset to add with AddDataset.
type DatasetSpec struct {
	// ID is the dataset id; generated (uuid4) when empty.
	ID string
	// Name is stored as metadata "name", the key flocker-go's GetDatasetID looks up.
	Name string
	// Metadata is stored as is (Name overrides its "name").
	Metadata map[string]string
	// Primary is the node uuid; default the local node.
	Primary string
	// MaximumSize in bytes; nil means unlimited.
	MaximumSize *int64
	// Deleted adds the dataset as already deleted (listed in the configuration, absent from the state).
	Deleted bool
	// Pending makes the dataset go through the create lag (listed without primary and path for the
	// move delay); by default it is mounted on its primary at once.
	Pending bool
}

// AddDataset adds a dataset directly, without the API and without a request log entry, and returns
// its id. A dataset on the local node is bind-mounted before AddDataset returns unless Pending.
func (e *Emulator) AddDataset(spec DatasetSpec) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if spec.ID == "" {
		id, err := newUUID4()
		if err != nil {
			return "", err
		}
		spec.ID = id
	}
	if spec.Primary == "" {
		spec.Primary = e.nodes[0].UUID
	}
	if !e.validID(spec.ID) {
		return "", fmt.Errorf("failed to add dataset: invalid id %q", spec.ID)
	}
	if !e.validID(spec.Primary) {
		return "", fmt.Errorf("failed to add dataset %s: invalid primary %q", spec.ID, spec.Primary)
	}
	if _, ok := e.datasets[spec.ID]; ok {
		return "", fmt.Errorf("failed to add dataset: id %q is already in use", spec.ID)
	}
	metadata := maps.Clone(spec.Metadata)
	if metadata == nil {
		metadata = map[string]string{}
	}
	if spec.Name != "" {
		metadata["name"] = spec.Name
	}
	if !spec.Deleted {
		if err := e.createBackingDir(spec.ID); err != nil {
			return "", err
		}
	}
	d := e.insertLocked(datasetConfig{DatasetID: spec.ID, Primary: spec.Primary, Deleted: spec.Deleted, Metadata: metadata, MaximumSize: spec.MaximumSize})
	if !spec.Pending && !spec.Deleted {
		d.listed = true
		d.stateNode = ""
		d.settleAt = e.clock.Now()
	}
	if err := e.saveLocked(); err != nil {
		return "", err
	}
	e.reconcileLocked()
	return spec.ID, e.lastMountErr
}

// insertLocked adds a configured dataset that starts its create transition now.
func (e *Emulator) insertLocked(cfg datasetConfig) *dataset {
	d := &dataset{datasetConfig: cfg}
	if !cfg.Deleted {
		d.listed = true
		d.settleAt = e.clock.Now().Add(e.moveDelay)
	}
	e.datasets[cfg.DatasetID] = d
	e.order = append(e.order, cfg.DatasetID)
	return d
}

// MoveDataset changes a dataset's primary, as a move made by another client would (no request log
// entry). The state lags as for a move through the API.
func (e *Emulator) MoveDataset(datasetID, primary string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	d, ok := e.datasets[datasetID]
	if !ok {
		return fmt.Errorf("failed to move dataset %q: not found", datasetID)
	}
	if d.Deleted {
		return fmt.Errorf("failed to move dataset %q: deleted", datasetID)
	}
	e.movePrimaryLocked(d, primary)
	return e.saveLocked()
}

func (e *Emulator) movePrimaryLocked(d *dataset, primary string) {
	if d.Primary == primary {
		return
	}
	d.Primary = primary
	d.settleAt = time.Time{} // the next reconcile starts a fresh transition
	e.kickLocked()
}

// DeleteDataset marks a dataset deleted, as a delete by another client would.
func (e *Emulator) DeleteDataset(datasetID string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	d, ok := e.datasets[datasetID]
	if !ok {
		return fmt.Errorf("failed to delete dataset %q: not found", datasetID)
	}
	e.deleteLocked(d)
	return e.saveLocked()
}

func (e *Emulator) deleteLocked(d *dataset) {
	if d.Deleted {
		return
	}
	d.Deleted = true
	d.settleAt = time.Time{}
	e.kickLocked()
}

// HideFromState makes a dataset absent from /v1/state/datasets for d, as Flocker's state can be
// while agents report. Its configuration and mounts are unchanged.
func (e *Emulator) HideFromState(datasetID string, d time.Duration) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	ds, ok := e.datasets[datasetID]
	if !ok {
		return fmt.Errorf("failed to hide dataset %q: not found", datasetID)
	}
	ds.hiddenUntil = e.clock.Now().Add(d)
	e.kickLocked()
	return nil
}

// CompleteTransitions makes every pending move, create and delete complete now (those blocked by a
// lease or by a disconnected target node stay pending). It returns the last mount error, if any.
func (e *Emulator) CompleteTransitions() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.clock.Now()
	e.reconcileLocked() // start transitions that have not started yet
	for _, d := range e.datasets {
		if !d.settleAt.IsZero() && d.settleAt.After(now) {
			d.settleAt = now
		}
	}
	e.reconcileLocked()
	return e.lastMountErr
}

// DatasetStatus is a snapshot of a dataset's configuration and emulated state.
type DatasetStatus struct {
	ID          string
	Primary     string
	Deleted     bool
	Metadata    map[string]string
	MaximumSize *int64
	// Listed reports whether /v1/state/datasets lists it.
	Listed bool
	// StatePrimary and StatePath are the state's primary and path; empty while in transition.
	StatePrimary, StatePath string
	// Pending reports a transition in progress.
	Pending bool
}

// Dataset returns a dataset's status, or false if no such dataset is configured.
func (e *Emulator) Dataset(datasetID string) (DatasetStatus, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.reconcileLocked()
	d, ok := e.datasets[datasetID]
	if !ok {
		return DatasetStatus{}, false
	}
	st, listed := e.stateOfLocked(d)
	return DatasetStatus{
		ID: d.DatasetID, Primary: d.Primary, Deleted: d.Deleted, Metadata: maps.Clone(d.Metadata), MaximumSize: d.MaximumSize,
		Listed: listed, StatePrimary: st.Primary, StatePath: st.Path, Pending: !d.settleAt.IsZero(),
	}, true
}

// DatasetByName returns the first dataset not deleted whose metadata "name" is name, as
// flocker-go's GetDatasetID finds it.
func (e *Emulator) DatasetByName(name string) (DatasetStatus, bool) {
	e.mu.Lock()
	var id string
	for _, candidate := range e.order {
		if d := e.datasets[candidate]; !d.Deleted && d.Metadata["name"] == name {
			id = candidate
			break
		}
	}
	e.mu.Unlock()
	if id == "" {
		return DatasetStatus{}, false
	}
	return e.Dataset(id)
}

func (e *Emulator) stateOfLocked(d *dataset) (datasetState, bool) {
	if !d.listed || e.clock.Now().Before(d.hiddenUntil) {
		return datasetState{}, false
	}
	st := datasetState{DatasetID: d.DatasetID, MaximumSize: d.MaximumSize}
	if d.stateNode != "" {
		st.Primary = d.stateNode
		st.Path = e.MountPath(d.DatasetID)
	}
	return st, true
}

func (e *Emulator) leasedBy(datasetID, node string, now time.Time) bool {
	l, ok := e.leases[datasetID]
	return ok && l.NodeUUID == node && (l.Expiration == nil || now.Before(*l.Expiration))
}

func (e *Emulator) connected(node string) bool {
	n := e.nodeLocked(node)
	return n != nil && !n.disconnected
}

// reconcileLocked plays the agents: it expires leases and starts and completes due transitions.
// It returns when it next has something to do (zero: nothing scheduled).
func (e *Emulator) reconcileLocked() time.Time {
	now := e.clock.Now()
	var next time.Time
	schedule := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	leasesChanged := false
	for id, l := range e.leases {
		if l.Expiration != nil && !now.Before(*l.Expiration) {
			delete(e.leases, id)
			leasesChanged = true
		} else if l.Expiration != nil {
			schedule(*l.Expiration)
		}
	}
	if leasesChanged {
		if err := e.saveLocked(); err != nil {
			e.logger.Error(err, "Failed to persist expired leases")
		}
	}

	e.lastMountErr = nil
	for _, id := range e.order {
		d := e.datasets[id]
		target := d.Primary
		if d.Deleted {
			target = ""
		}
		settled := (d.Deleted && !d.listed) || (!d.Deleted && d.listed && d.stateNode == d.Primary && d.settleAt.IsZero())
		if settled {
			continue
		}
		// Leases are enforced by the agents: a leased dataset stays mounted where it is.
		if d.stateNode != "" && e.leasedBy(id, d.stateNode, now) {
			continue
		}
		if d.settleAt.IsZero() {
			if d.stateNode != "" {
				e.logger.V(2).Info("Dataset leaves its node", "datasetID", id, "node", d.stateNode)
			}
			if err := e.unmountLocked(id); err != nil {
				e.lastMountErr = err
				e.logger.Error(err, "Failed to unmount dataset", "datasetID", id)
				schedule(now.Add(time.Second))
				continue
			}
			d.stateNode = ""
			d.listed = d.listed || !d.Deleted
			d.settleAt = now.Add(e.moveDelay)
		}
		if now.Before(d.settleAt) {
			schedule(d.settleAt)
			continue
		}
		if d.Deleted {
			d.listed, d.settleAt = false, time.Time{}
			if err := e.removeBackingLocked(id); err != nil {
				e.logger.Error(err, "Failed to remove a deleted dataset's data", "datasetID", id)
			}
			continue
		}
		if !e.connected(target) {
			continue // no agent to act on it: stays in transition until the node connects
		}
		if e.isLocal(target) {
			if err := e.mountLocked(id); err != nil {
				e.lastMountErr = err
				e.logger.Error(err, "Failed to mount dataset", "datasetID", id)
				schedule(now.Add(time.Second))
				continue
			}
		}
		d.stateNode, d.settleAt = target, time.Time{}
		e.logger.V(2).Info("Dataset mounted", "datasetID", id, "node", target)
	}
	return next
}

// createBackingDir makes the directory holding a new dataset's data, wherever the dataset is.
func (e *Emulator) createBackingDir(id string) error {
	if err := os.MkdirAll(e.BackingDir(id), 0o755); err != nil {
		return fmt.Errorf("failed to create backing directory for dataset %s: %w", id, err)
	}
	return nil
}

// mountLocked bind-mounts the dataset's backing directory onto its mount path (idempotent).
func (e *Emulator) mountLocked(id string) error {
	backing, target := e.BackingDir(id), e.MountPath(id)
	if err := e.createBackingDir(id); err != nil {
		return err
	}
	if err := os.MkdirAll(target, 0o755); err != nil {
		return fmt.Errorf("failed to create mount point for dataset %s: %w", id, err)
	}
	mounted, err := e.cfg.Mounter.IsMountPoint(target)
	if err != nil {
		return fmt.Errorf("failed to check mount point %s: %w", target, err)
	}
	if mounted {
		return nil
	}
	if err := e.cfg.Mounter.Mount(backing, target, "", []string{"bind"}); err != nil {
		return fmt.Errorf("failed to bind-mount dataset %s: %w", id, err)
	}
	return nil
}

// unmountLocked unmounts the dataset's mount path if mounted and removes the empty directory.
func (e *Emulator) unmountLocked(id string) error {
	target := e.MountPath(id)
	if _, err := os.Lstat(target); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := mount.CleanupMountPoint(target, e.cfg.Mounter, true); err != nil {
		return fmt.Errorf("failed to unmount dataset %s: %w", id, err)
	}
	return nil
}

// removeBackingLocked destroys a deleted dataset's data, unless something is mounted inside it.
func (e *Emulator) removeBackingLocked(id string) error {
	backing := e.BackingDir(id)
	mounts, err := e.cfg.Mounter.List()
	if err != nil {
		return fmt.Errorf("failed to list mounts: %w", err)
	}
	for _, m := range mounts {
		if m.Path == backing || strings.HasPrefix(m.Path, backing+string(filepath.Separator)) {
			return fmt.Errorf("failed to remove %s: %s is a mount point inside it", backing, m.Path)
		}
	}
	if err := os.RemoveAll(backing); err != nil {
		return fmt.Errorf("failed to remove %s: %w", backing, err)
	}
	return nil
}

// configurationTagLocked is the X-Configuration-Tag: a hash of the persisted configuration.
func (e *Emulator) configurationTagLocked() string {
	b, _ := json.Marshal(e.persistedLocked())
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

func (e *Emulator) persistedLocked() persisted {
	p := persisted{Datasets: []datasetConfig{}, Leases: []lease{}}
	for _, id := range e.order {
		p.Datasets = append(p.Datasets, e.datasets[id].datasetConfig)
	}
	ids := slices.Sorted(maps.Keys(e.leases))
	for _, id := range ids {
		p.Leases = append(p.Leases, *e.leases[id])
	}
	return p
}

func (e *Emulator) saveLocked() error {
	b, err := json.MarshalIndent(e.persistedLocked(), "", "  ")
	if err != nil {
		return fmt.Errorf("failed to encode configuration: %w", err)
	}
	path := filepath.Join(e.cfg.StateDir, configurationFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("failed to save configuration: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("failed to save configuration: %w", err)
	}
	return nil
}

// restore loads the persisted configuration. After a restart the agents have long converged: every
// dataset not deleted is mounted on its primary.
func (e *Emulator) restore() error {
	path := filepath.Join(e.cfg.StateDir, configurationFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("failed to read configuration: %w", err)
	}
	var p persisted
	if err := json.Unmarshal(b, &p); err != nil {
		return fmt.Errorf("failed to decode configuration %s: %w", path, err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, c := range p.Datasets {
		if !e.validID(c.DatasetID) {
			return fmt.Errorf("failed to restore configuration %s: invalid dataset id %q", path, c.DatasetID)
		}
		if c.Metadata == nil {
			c.Metadata = map[string]string{}
		}
		d := e.insertLocked(c)
		if !c.Deleted {
			d.settleAt = e.clock.Now()
		}
	}
	for _, l := range p.Leases {
		e.leases[l.DatasetID] = &l
	}
	return nil
}
