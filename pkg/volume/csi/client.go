package csi

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
)

// Client is what the plugin calls of a CSI driver: its Identity service and
// the Node service calls a node agent makes. Every method takes the deadline
// of its call from ctx and returns the driver's gRPC status error unchanged.
// Implementations are safe for concurrent use.
type Client interface {
	GetPluginInfo(ctx context.Context) (*csipb.GetPluginInfoResponse, error)
	Probe(ctx context.Context) (*csipb.ProbeResponse, error)
	NodeGetInfo(ctx context.Context) (*csipb.NodeGetInfoResponse, error)
	NodeGetCapabilities(ctx context.Context) (*csipb.NodeGetCapabilitiesResponse, error)
	NodeStageVolume(ctx context.Context, req *csipb.NodeStageVolumeRequest) error
	NodeUnstageVolume(ctx context.Context, req *csipb.NodeUnstageVolumeRequest) error
	NodePublishVolume(ctx context.Context, req *csipb.NodePublishVolumeRequest) error
	NodeUnpublishVolume(ctx context.Context, req *csipb.NodeUnpublishVolumeRequest) error
	// Close releases the connection; the Client is not used afterwards.
	Close() error
}

// Dialer returns a Client for the driver listening at endpoint, a unix socket
// path or "unix://" URL. It must not wait for the driver: a driver that is
// not listening yet fails the calls, not the dial.
type Dialer func(endpoint string) (Client, error)

// reconnectMaxDelay caps the wait between two attempts to reach a driver
// that went away, so that a restarted driver is used again within seconds
// (gRPC's default is two minutes).
const reconnectMaxDelay = 2 * time.Second

// DialGRPC is the Dialer of real drivers: a gRPC client over the unix socket
// at endpoint. The connection is made on the first call and made again,
// within seconds, after the driver restarts or its socket is recreated.
func DialGRPC(endpoint string) (Client, error) {
	path, err := socketPath(endpoint)
	if err != nil {
		return nil, err
	}
	backoffCfg := backoff.DefaultConfig
	backoffCfg.MaxDelay = reconnectMaxDelay
	conn, err := grpc.NewClient("unix://"+path,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoffCfg, MinConnectTimeout: time.Second}),
	)
	if err != nil {
		return nil, fmt.Errorf("failed to create a client for CSI endpoint %q: %w", endpoint, err)
	}
	return &grpcClient{conn: conn, identity: csipb.NewIdentityClient(conn), node: csipb.NewNodeClient(conn)}, nil
}

// socketPath returns the absolute socket path of endpoint: a path, or a
// "unix://" or "unix:" URL of one.
func socketPath(endpoint string) (string, error) {
	path := endpoint
	switch {
	case strings.HasPrefix(path, "unix://"):
		path = strings.TrimPrefix(path, "unix://")
	case strings.HasPrefix(path, "unix:"):
		path = strings.TrimPrefix(path, "unix:")
	case strings.Contains(path, "://"):
		return "", fmt.Errorf("invalid CSI endpoint %q: only unix sockets are supported", endpoint)
	}
	if !filepath.IsAbs(path) {
		return "", fmt.Errorf("invalid CSI endpoint %q: the socket path must be absolute", endpoint)
	}
	return filepath.Clean(path), nil
}

type grpcClient struct {
	conn     *grpc.ClientConn
	identity csipb.IdentityClient
	node     csipb.NodeClient
}

func (c *grpcClient) GetPluginInfo(ctx context.Context) (*csipb.GetPluginInfoResponse, error) {
	return c.identity.GetPluginInfo(ctx, &csipb.GetPluginInfoRequest{})
}

func (c *grpcClient) Probe(ctx context.Context) (*csipb.ProbeResponse, error) {
	return c.identity.Probe(ctx, &csipb.ProbeRequest{})
}

func (c *grpcClient) NodeGetInfo(ctx context.Context) (*csipb.NodeGetInfoResponse, error) {
	return c.node.NodeGetInfo(ctx, &csipb.NodeGetInfoRequest{})
}

func (c *grpcClient) NodeGetCapabilities(ctx context.Context) (*csipb.NodeGetCapabilitiesResponse, error) {
	return c.node.NodeGetCapabilities(ctx, &csipb.NodeGetCapabilitiesRequest{})
}

func (c *grpcClient) NodeStageVolume(ctx context.Context, req *csipb.NodeStageVolumeRequest) error {
	_, err := c.node.NodeStageVolume(ctx, req)
	return err
}

func (c *grpcClient) NodeUnstageVolume(ctx context.Context, req *csipb.NodeUnstageVolumeRequest) error {
	_, err := c.node.NodeUnstageVolume(ctx, req)
	return err
}

func (c *grpcClient) NodePublishVolume(ctx context.Context, req *csipb.NodePublishVolumeRequest) error {
	_, err := c.node.NodePublishVolume(ctx, req)
	return err
}

func (c *grpcClient) NodeUnpublishVolume(ctx context.Context, req *csipb.NodeUnpublishVolumeRequest) error {
	_, err := c.node.NodeUnpublishVolume(ctx, req)
	return err
}

func (c *grpcClient) Close() error { return c.conn.Close() }
