package flocker

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	flockerclient "github.com/clusterhq/flocker-go"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"
	"k8s.io/mount-utils"

	"github.com/volume-agent/volume-agent/pkg/volume"
	"github.com/volume-agent/volume-agent/pkg/volume/util"
)

// Polling of the control service's state while a dataset moves here. Moves
// usually complete within seconds, so the state is polled every 100 ms for
// the first 2 s (the volume is ready within about 100 ms of the move), then
// the interval backs off by half again each time up to 5 s, the kubelet's
// fixed interval, so that a slow move costs few calls.
const (
	initialPollInterval = 100 * time.Millisecond
	fastPollWindow      = 2 * time.Second
	pollBackoffFactor   = 1.5
	maxPollInterval     = 5 * time.Second
)

// pollDelays returns the successive waits between two reads of the state.
func pollDelays() wait.DelayFunc {
	fastPolls := int(fastPollWindow / initialPollInterval)
	backoff := wait.Backoff{Duration: initialPollInterval, Factor: pollBackoffFactor, Cap: maxPollInterval, Steps: math.MaxInt32}.DelayFunc()
	return func() time.Duration {
		if fastPolls > 0 {
			fastPolls--
			return initialPollInterval
		}
		return backoff()
	}
}

type builder struct {
	volumeRef
	source   v1.FlockerVolumeSource
	readOnly bool
	ctx      context.Context
}

// GetAttributes reports the volume read-only when the pod asked for it; the
// plugin changes the dataset's ownership (fsGroup) only when it is not.
func (b *builder) GetAttributes() volume.Attributes {
	return volume.Attributes{ReadOnly: b.readOnly, Managed: !b.readOnly}
}

// SetUp sets the volume up at GetPath(); see SetUpAt.
func (b *builder) SetUp(fsGroup *int64) error { return b.SetUpAt(b.Path, fsGroup) }

// SetUpAt makes dir a bind mount of the dataset's mount point on this node.
// It finds the dataset (by UUID, or by name among the datasets not deleted),
// moves its primary to this node unless the control service's state already
// shows it mounted here, waits for that with a backoff (bounded by the move
// timeout and by the builder's context), bind-mounts the state's path (ro for
// a read-only volume), gives fsGroup ownership unless read-only, and marks the
// volume ready. Every step is idempotent: on a ready volume that is still
// mounted it does nothing and makes no API call, and after a failure or a
// crash at any step it picks up where it stopped without moving the dataset
// again if it is already here.
//
// Errors: a dataset that does not exist, or a TLS failure, is Final; an
// unreachable control service, a 5xx, or a move that does not complete in
// time (the message gives the dataset's last seen state) is Transient; a
// failure after the bind mount is Uncertain.
func (b *builder) SetUpAt(dir string, fsGroup *int64) error {
	logger := klog.FromContext(b.ctx).WithValues("volumePath", dir, "dataset", b.datasetRef())
	mounter := b.plugin.host.GetMounter()
	if util.IsReady(b.MetadataDir) {
		mounted, err := mounter.IsMountPoint(dir)
		if err == nil && mounted {
			return nil
		}
		// Marked ready, but the mount is gone (a reboot): not ready until set up again.
		logger.Info("Flocker volume marked ready but not mounted; setting it up again")
		if err := util.RemoveMetadataDir(b.MetadataDir); err != nil {
			return err
		}
	}

	path, err := b.waitUntilMountedHere(b.ctx, logger)
	if err != nil {
		return err
	}
	if err := b.bindMount(path, dir); err != nil {
		return err
	}
	if !b.readOnly {
		if err := util.SetVolumeOwnership(dir, fsGroup, false); err != nil {
			return volume.NewUncertainError(err)
		}
	}
	if err := util.SetReady(b.MetadataDir); err != nil {
		return volume.NewUncertainError(err)
	}
	logger.V(1).Info("Set up Flocker volume", "source", path, "readOnly", b.readOnly)
	return nil
}

// datasetRef names the dataset in messages as the spec does.
func (b *builder) datasetRef() string {
	if b.source.DatasetUUID != "" {
		return fmt.Sprintf("dataset %s", b.source.DatasetUUID)
	}
	return fmt.Sprintf("dataset %q", b.source.DatasetName)
}

// datasetWithID names the dataset in messages with its id.
func (b *builder) datasetWithID(id string) string {
	if b.source.DatasetUUID != "" {
		return "dataset " + id
	}
	return fmt.Sprintf("dataset %q (%s)", b.source.DatasetName, id)
}

// waitUntilMountedHere returns the dataset's path once the control service's
// state shows it mounted on this node, moving it here first if needed.
func (b *builder) waitUntilMountedHere(ctx context.Context, logger klog.Logger) (string, error) {
	p := b.plugin
	client, nodeIP, err := p.getClient(ctx)
	if err != nil {
		return "", err
	}
	id, err := b.datasetID(ctx, client)
	if err != nil {
		return "", err
	}
	state, err := b.readState(ctx, client, id)
	if err != nil {
		return "", err
	}
	nodeUUID, err := callAPI(ctx, client.GetPrimaryUUID)
	if err != nil {
		return "", p.apiError(err, fmt.Sprintf("find this node (%s) among the Flocker nodes", nodeIP))
	}
	if mountedOn(state, nodeUUID) {
		return state.Path, nil
	}
	if state == nil {
		// Not in the state: it may not exist, or the state has not caught up.
		if err := b.checkConfigured(ctx, client, id); err != nil {
			return "", err
		}
	}

	logger.Info("Moving Flocker dataset to this node", "datasetID", id, "node", nodeUUID, "state", describeState(state))
	if _, err := callAPI(ctx, func() (*flockerclient.DatasetState, error) { return client.UpdatePrimaryForDataset(nodeUUID, id) }); err != nil {
		if err := b.checkConfigured(ctx, client, id); err != nil {
			return "", err
		}
		return "", p.apiError(err, fmt.Sprintf("move %s to this node", b.datasetWithID(id)))
	}
	return b.waitForMove(ctx, logger, client, id, nodeUUID, state)
}

// datasetID returns the spec's UUID, or looks the name up among the datasets
// that are not deleted.
func (b *builder) datasetID(ctx context.Context, client flockerclient.Clientable) (string, error) {
	if b.source.DatasetUUID != "" {
		return strings.ToLower(b.source.DatasetUUID), nil // Flocker's ids are lower-case
	}
	name := b.source.DatasetName
	id, err := callAPI(ctx, func() (string, error) { return client.GetDatasetID(name) })
	if isNameNotFound(err) {
		return "", volume.Finalf("dataset %q not found: no dataset that is not deleted has the metadata name %q in the Flocker configuration", name, name)
	}
	if err != nil {
		return "", b.plugin.apiError(err, fmt.Sprintf("look up %s", b.datasetRef()))
	}
	return id, nil
}

// readState returns the dataset's entry in the control service's state, or
// nil when the state does not list it.
func (b *builder) readState(ctx context.Context, client flockerclient.Clientable, id string) (*flockerclient.DatasetState, error) {
	state, err := callAPI(ctx, func() (*flockerclient.DatasetState, error) { return client.GetDatasetState(id) })
	if isStateNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, b.plugin.apiError(err, fmt.Sprintf("read the state of %s", b.datasetWithID(id)))
	}
	return state, nil
}

// checkConfigured returns a Final error when the configuration, if the client
// can read it, has no such dataset or has it deleted.
func (b *builder) checkConfigured(ctx context.Context, client flockerclient.Clientable, id string) error {
	reader, ok := client.(configurationReader)
	if !ok {
		return nil
	}
	cfg, err := callAPI(ctx, func() (datasetConfiguration, error) { return reader.DatasetConfiguration(id) })
	switch {
	case err != nil:
		return nil // cannot tell; the caller reports its own error
	case !cfg.Found:
		return volume.Finalf("%s not found: no dataset with id %s in the Flocker configuration", b.datasetRef(), id)
	case cfg.Deleted:
		return volume.Finalf("%s not found: dataset %s has been deleted", b.datasetRef(), id)
	}
	return nil
}

// waitForMove polls the state until it shows the dataset mounted on this
// node, until the move timeout, or until ctx is done.
func (b *builder) waitForMove(ctx context.Context, logger klog.Logger, client flockerclient.Clientable, id, nodeUUID string, last *flockerclient.DatasetState) (string, error) {
	clk := b.plugin.host.GetClock()
	timeout := b.plugin.cfg.MoveTimeout
	deadline := clk.Now().Add(timeout)
	delays := pollDelays()
	var lastErr error
	stopped := func(err error) (string, error) {
		return "", volume.NewTransientError(fmt.Errorf("stopped waiting for %s to be mounted on this node: %w; last seen state: %s",
			b.datasetWithID(id), err, describeState(last)))
	}
	for polls := 0; ; polls++ {
		if err := ctx.Err(); err != nil {
			return stopped(err)
		}
		remaining := deadline.Sub(clk.Now())
		if remaining <= 0 {
			err := fmt.Errorf("timed out after %v waiting for %s to be mounted on this node (%s); last seen state: %s",
				timeout, b.datasetWithID(id), nodeUUID, describeState(last))
			if lastErr != nil {
				err = fmt.Errorf("%w; last error: %w", err, lastErr)
			}
			return "", volume.NewTransientError(err)
		}
		timer := clk.NewTimer(min(delays(), remaining))
		select {
		case <-ctx.Done():
			timer.Stop()
			return stopped(ctx.Err())
		case <-timer.C():
		}
		state, err := b.readState(ctx, client, id)
		if err != nil {
			if volume.IsFinal(err) {
				return "", err
			}
			lastErr = err
			logger.V(2).Info("Failed to read the Flocker state; retrying", "err", err)
			continue
		}
		last = state
		if mountedOn(state, nodeUUID) {
			logger.V(1).Info("Flocker dataset mounted on this node", "datasetID", id, "path", state.Path, "polls", polls+1)
			return state.Path, nil
		}
	}
}

// mountedOn reports whether state shows the dataset mounted on node: a
// dataset listed without primary or path is moving, whatever else is set.
func mountedOn(state *flockerclient.DatasetState, node string) bool {
	return state != nil && state.Primary != "" && state.Primary == node && state.Path != ""
}

func describeState(state *flockerclient.DatasetState) string {
	switch {
	case state == nil:
		return "not listed in the control service's state"
	case state.Primary == "" || state.Path == "":
		return "listed without primary or path (moving or not mounted anywhere)"
	}
	return fmt.Sprintf("mounted on node %s at %s", state.Primary, state.Path)
}

// bindMount bind-mounts source at dir, read-only if asked. A dir that is
// already a mount point is a mount left by a set-up that stopped before
// marking the volume ready, and is kept. A failed mount is undone.
func (b *builder) bindMount(source, dir string) error {
	mounter := b.plugin.host.GetMounter()
	if !filepath.IsAbs(source) {
		return volume.NewTransientError(fmt.Errorf("failed to mount %s: the control service gave the relative path %q", b.datasetRef(), source))
	}
	info, err := os.Stat(source)
	if err != nil {
		return volume.NewTransientError(fmt.Errorf("failed to mount %s: its mount point %q, from the control service's state, is not usable on this node: %w", b.datasetRef(), source, err))
	}
	if !info.IsDir() {
		return volume.NewTransientError(fmt.Errorf("failed to mount %s: its mount point %q is not a directory", b.datasetRef(), source))
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return volume.NewTransientError(fmt.Errorf("failed to create volume dir %q: %w", dir, err))
	}
	mounted, err := mounter.IsMountPoint(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return volume.NewTransientError(fmt.Errorf("failed to check mount at %q: %w", dir, err))
	}
	if mounted {
		return nil
	}
	options := []string{"bind"}
	if b.readOnly {
		options = append(options, "ro")
	}
	if err := mounter.Mount(source, dir, "", options); err != nil {
		mountErr := fmt.Errorf("failed to bind-mount %s from %q at %q: %w", b.datasetRef(), source, dir, err)
		// A read-only bind is a bind then a remount: undo whatever happened.
		if cleanupErr := mount.CleanupMountPoint(dir, mounter, true); cleanupErr != nil {
			return volume.NewUncertainError(fmt.Errorf("%w; and failed to undo it: %w", mountErr, cleanupErr))
		}
		return volume.NewTransientError(mountErr)
	}
	return nil
}
