package csi

import (
	"context"
	"os"
	"strings"
	"sync"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// fakeDriver is an in-memory CSI driver: it records every call, creates and
// removes the target and staging dirs as a real driver does (without
// mounting), and fails the calls it is told to.
type fakeDriver struct {
	name string
	caps []csipb.NodeServiceCapability_RPC_Type

	mu        sync.Mutex
	calls     []string
	stages    []*csipb.NodeStageVolumeRequest
	publishes []*csipb.NodePublishVolumeRequest
	// failures maps a method to the errors its next calls return, in order.
	failures map[string][]error
	notReady bool
}

func newFakeDriver(name string, caps ...csipb.NodeServiceCapability_RPC_Type) *fakeDriver {
	return &fakeDriver{name: name, caps: caps, failures: map[string][]error{}}
}

var stageCaps = []csipb.NodeServiceCapability_RPC_Type{csipb.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME}

// dialer returns a Dialer that reaches d at any endpoint.
func (d *fakeDriver) dialer() Dialer {
	return func(string) (Client, error) { return &fakeClient{d: d}, nil }
}

// failNext makes the next call of method return err.
func (d *fakeDriver) failNext(method string, code codes.Code) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.failures[method] = append(d.failures[method], status.Error(code, "injected "+code.String()))
}

// record records a call and returns its injected failure, if any.
func (d *fakeDriver) record(method, arg string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, method+" "+arg)
	if errs := d.failures[method]; len(errs) > 0 {
		d.failures[method] = errs[1:]
		return errs[0]
	}
	return nil
}

// takeCalls returns the calls of the Node service's volume methods so far
// and forgets them.
func (d *fakeDriver) takeCalls() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for _, c := range d.calls {
		if strings.HasPrefix(c, "Node") && !strings.HasPrefix(c, "NodeGet") {
			out = append(out, c)
		}
	}
	d.calls = nil
	return out
}

type fakeClient struct{ d *fakeDriver }

func (c *fakeClient) GetPluginInfo(context.Context) (*csipb.GetPluginInfoResponse, error) {
	if err := c.d.record("GetPluginInfo", ""); err != nil {
		return nil, err
	}
	return &csipb.GetPluginInfoResponse{Name: c.d.name, VendorVersion: "1.2.3"}, nil
}

func (c *fakeClient) Probe(context.Context) (*csipb.ProbeResponse, error) {
	if err := c.d.record("Probe", ""); err != nil {
		return nil, err
	}
	c.d.mu.Lock()
	defer c.d.mu.Unlock()
	return &csipb.ProbeResponse{Ready: wrapperspb.Bool(!c.d.notReady)}, nil
}

func (c *fakeClient) NodeGetInfo(context.Context) (*csipb.NodeGetInfoResponse, error) {
	if err := c.d.record("NodeGetInfo", ""); err != nil {
		return nil, err
	}
	return &csipb.NodeGetInfoResponse{NodeId: "node-1", MaxVolumesPerNode: 10}, nil
}

func (c *fakeClient) NodeGetCapabilities(context.Context) (*csipb.NodeGetCapabilitiesResponse, error) {
	if err := c.d.record("NodeGetCapabilities", ""); err != nil {
		return nil, err
	}
	resp := &csipb.NodeGetCapabilitiesResponse{}
	for _, t := range c.d.caps {
		resp.Capabilities = append(resp.Capabilities, &csipb.NodeServiceCapability{
			Type: &csipb.NodeServiceCapability_Rpc{Rpc: &csipb.NodeServiceCapability_RPC{Type: t}},
		})
	}
	return resp, nil
}

func (c *fakeClient) NodeStageVolume(_ context.Context, req *csipb.NodeStageVolumeRequest) error {
	if err := c.d.record("NodeStageVolume", req.VolumeId); err != nil {
		return err
	}
	if _, err := os.Stat(req.StagingTargetPath); err != nil {
		return status.Errorf(codes.FailedPrecondition, "staging path: %v", err)
	}
	c.d.mu.Lock()
	c.d.stages = append(c.d.stages, req)
	c.d.mu.Unlock()
	return nil
}

func (c *fakeClient) NodeUnstageVolume(_ context.Context, req *csipb.NodeUnstageVolumeRequest) error {
	return c.d.record("NodeUnstageVolume", req.VolumeId)
}

func (c *fakeClient) NodePublishVolume(_ context.Context, req *csipb.NodePublishVolumeRequest) error {
	if err := c.d.record("NodePublishVolume", req.VolumeId); err != nil {
		return err
	}
	if err := os.MkdirAll(req.TargetPath, 0o750); err != nil {
		return status.Errorf(codes.Internal, "target: %v", err)
	}
	c.d.mu.Lock()
	c.d.publishes = append(c.d.publishes, req)
	c.d.mu.Unlock()
	return nil
}

func (c *fakeClient) NodeUnpublishVolume(_ context.Context, req *csipb.NodeUnpublishVolumeRequest) error {
	if err := c.d.record("NodeUnpublishVolume", req.VolumeId); err != nil {
		return err
	}
	if err := os.RemoveAll(req.TargetPath); err != nil {
		return status.Errorf(codes.Internal, "target: %v", err)
	}
	return nil
}

func (c *fakeClient) Close() error { return nil }
