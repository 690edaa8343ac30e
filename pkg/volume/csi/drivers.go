package csi

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/volume-agent/volume-agent/pkg/volume"
)

// Where a driver was found.
const (
	sourceStatic       = "static"
	sourceRegistration = "registration"
)

// driver is one CSI driver the plugin can use, and what its last fingerprint
// found.
type driver struct {
	name     string
	endpoint string
	source   string
	// version is the CSI version of a registered driver.
	version string
	client  Client

	mu sync.Mutex
	fp fingerprint
}

// fingerprint is what a driver told about itself.
type fingerprint struct {
	// identified is true once GetPluginInfo and NodeGetInfo succeeded; they
	// are called once per driver.
	identified    bool
	vendorVersion string
	nodeID        string
	maxVolumes    int64
	// capsKnown is true once NodeGetCapabilities succeeded.
	capsKnown bool
	caps      []csipb.NodeServiceCapability_RPC_Type
	// healthy is the result of the last fingerprint; message says why not.
	healthy   bool
	message   string
	checkedAt time.Time
}

func (f fingerprint) has(c csipb.NodeServiceCapability_RPC_Type) bool {
	return slices.Contains(f.caps, c)
}

// capNames returns the capabilities' names, as "STAGE_UNSTAGE_VOLUME".
func (f fingerprint) capNames() []string {
	names := make([]string, 0, len(f.caps))
	for _, c := range f.caps {
		names = append(names, c.String())
	}
	sort.Strings(names)
	return names
}

// drivers is the set of drivers known by name. A name is taken by one
// driver at a time: a later registration replaces the earlier one.
type drivers struct {
	dial        Dialer
	clock       clock.Clock
	callTimeout time.Duration

	mu     sync.Mutex
	byName map[string]*driver
	// scanned, when not nil, is closed once the drivers in the registration
	// dir at start are registered.
	scanned chan struct{}
}

func newDrivers(dial Dialer, clk clock.Clock, callTimeout time.Duration) *drivers {
	return &drivers{dial: dial, clock: clk, callTimeout: callTimeout, byName: map[string]*driver{}}
}

// add makes name reachable at endpoint, replacing (and closing) any driver
// of that name.
func (ds *drivers) add(name, endpoint, source, version string) (*driver, error) {
	client, err := ds.dial(endpoint)
	if err != nil {
		return nil, err
	}
	d := &driver{name: name, endpoint: endpoint, source: source, version: version, client: client}
	ds.mu.Lock()
	old := ds.byName[name]
	ds.byName[name] = d
	ds.mu.Unlock()
	if old != nil {
		_ = old.client.Close()
	}
	return d, nil
}

// remove forgets d, unless another driver of its name replaced it, and
// reports whether it did.
func (ds *drivers) remove(d *driver) bool {
	ds.mu.Lock()
	if ds.byName[d.name] != d {
		ds.mu.Unlock()
		return false
	}
	delete(ds.byName, d.name)
	ds.mu.Unlock()
	_ = d.client.Close()
	return true
}

// get returns the driver called name, or a Transient error: a driver that is
// not registered yet (just after a restart of the agent or of the driver)
// may register at any time, so the volume waits for it. While the
// registration dir is read at start, it waits for that, or for ctx.
func (ds *drivers) get(ctx context.Context, name string) (*driver, error) {
	ds.mu.Lock()
	d, scanned := ds.byName[name], ds.scanned
	ds.mu.Unlock()
	if d == nil && scanned != nil {
		select {
		case <-scanned:
		case <-ctx.Done():
		}
		ds.mu.Lock()
		d = ds.byName[name]
		ds.mu.Unlock()
	}
	if d == nil {
		return nil, volume.NewTransientError(fmt.Errorf("CSI driver %q is not registered on this node (yet)", name))
	}
	return d, nil
}

// lookup returns the driver called name, or nil.
func (ds *drivers) lookup(name string) *driver {
	ds.mu.Lock()
	defer ds.mu.Unlock()
	return ds.byName[name]
}

// list returns the drivers ordered by name.
func (ds *drivers) list() []*driver {
	ds.mu.Lock()
	defer ds.mu.Unlock()
	out := make([]*driver, 0, len(ds.byName))
	for _, d := range ds.byName {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// call runs fn with the per-call timeout.
func (ds *drivers) call(ctx context.Context, fn func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, ds.callTimeout)
	defer cancel()
	return fn(ctx)
}

// fingerprint asks d who it is (GetPluginInfo and NodeGetInfo, once) and
// whether it is ready (Probe and NodeGetCapabilities, every time), and keeps
// the answers. It returns the new fingerprint.
func (ds *drivers) fingerprint(ctx context.Context, d *driver) fingerprint {
	d.mu.Lock()
	fp := d.fp
	d.mu.Unlock()
	fp.checkedAt = ds.clock.Now()
	fail := func(err error) fingerprint {
		fp.healthy, fp.message = false, err.Error()
		d.mu.Lock()
		d.fp = fp
		d.mu.Unlock()
		klog.FromContext(ctx).V(2).Info("CSI driver is not usable", "driver", d.name, "endpoint", d.endpoint, "err", err)
		return fp
	}
	if !fp.identified {
		var info *csipb.GetPluginInfoResponse
		if err := ds.call(ctx, func(ctx context.Context) (err error) { info, err = d.client.GetPluginInfo(ctx); return }); err != nil {
			return fail(fmt.Errorf("failed to call GetPluginInfo: %w", err))
		}
		if info.GetName() != d.name {
			return fail(fmt.Errorf("the driver at %s calls itself %q, not %q", d.endpoint, info.GetName(), d.name))
		}
		var node *csipb.NodeGetInfoResponse
		if err := ds.call(ctx, func(ctx context.Context) (err error) { node, err = d.client.NodeGetInfo(ctx); return }); err != nil {
			return fail(fmt.Errorf("failed to call NodeGetInfo: %w", err))
		}
		fp.identified, fp.vendorVersion, fp.nodeID, fp.maxVolumes = true, info.GetVendorVersion(), node.GetNodeId(), node.GetMaxVolumesPerNode()
	}
	var probe *csipb.ProbeResponse
	if err := ds.call(ctx, func(ctx context.Context) (err error) { probe, err = d.client.Probe(ctx); return }); err != nil {
		return fail(fmt.Errorf("failed to call Probe: %w", err))
	}
	caps, err := ds.capabilities(ctx, d)
	if err != nil {
		return fail(err)
	}
	fp.capsKnown, fp.caps = true, caps
	// A Probe without a "ready" value means ready (CSI spec).
	if r := probe.GetReady(); r != nil && !r.GetValue() {
		return fail(fmt.Errorf("the driver's Probe says it is not ready"))
	}
	fp.healthy, fp.message = true, ""
	d.mu.Lock()
	d.fp = fp
	d.mu.Unlock()
	return fp
}

// capabilities calls NodeGetCapabilities.
func (ds *drivers) capabilities(ctx context.Context, d *driver) ([]csipb.NodeServiceCapability_RPC_Type, error) {
	var resp *csipb.NodeGetCapabilitiesResponse
	if err := ds.call(ctx, func(ctx context.Context) (err error) { resp, err = d.client.NodeGetCapabilities(ctx); return }); err != nil {
		return nil, callError(err, "NodeGetCapabilities", false)
	}
	var caps []csipb.NodeServiceCapability_RPC_Type
	for _, c := range resp.GetCapabilities() {
		if t := c.GetRpc().GetType(); t != csipb.NodeServiceCapability_RPC_UNKNOWN {
			caps = append(caps, t)
		}
	}
	return caps, nil
}

// nodeCapabilities returns d's Node service capabilities: those of its last
// fingerprint, or asked now when it has none yet.
func (ds *drivers) nodeCapabilities(ctx context.Context, d *driver) (fingerprint, error) {
	d.mu.Lock()
	fp := d.fp
	d.mu.Unlock()
	if fp.capsKnown {
		return fp, nil
	}
	caps, err := ds.capabilities(ctx, d)
	if err != nil {
		return fp, err
	}
	d.mu.Lock()
	d.fp.capsKnown, d.fp.caps = true, caps
	fp = d.fp
	d.mu.Unlock()
	return fp, nil
}

// health renders d's fingerprint as the health of one driver.
func (d *driver) health() volume.Health {
	d.mu.Lock()
	fp := d.fp
	d.mu.Unlock()
	details := map[string]string{"endpoint": d.endpoint, "source": d.source}
	if d.version != "" {
		details["csiVersion"] = d.version
	}
	if fp.nodeID != "" {
		details["nodeID"] = fp.nodeID
	}
	if fp.vendorVersion != "" {
		details["vendorVersion"] = fp.vendorVersion
	}
	if fp.maxVolumes > 0 {
		details["maxVolumes"] = strconv.FormatInt(fp.maxVolumes, 10)
	}
	if fp.capsKnown {
		details["capabilities"] = strings.Join(fp.capNames(), ",")
	}
	msg := fp.message
	if fp.healthy {
		msg = fmt.Sprintf("CSI driver %s answers at %s", d.name, d.endpoint)
	} else if fp.checkedAt.IsZero() {
		msg = "not checked yet"
	}
	return volume.Health{Usable: fp.healthy, Message: msg, Details: details}
}
