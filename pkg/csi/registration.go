package csi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"

	"google.golang.org/grpc"
	"k8s.io/klog/v2"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// SupportedVersions are the CSI versions the driver tells the kubelet it
// supports.
var SupportedVersions = []string{"1.0.0"}

// RegistrationSocket returns DIR/<driverName>-reg.sock, where the kubelet
// looks for the driver's registration socket.
func RegistrationSocket(dir, driverName string) string {
	return filepath.Join(dir, driverName+"-reg.sock")
}

// RegistrationServer serves the kubelet's plugin-registration API
// (pluginregistration/v1) for the driver, as node-driver-registrar does: the
// kubelet finds its socket in its plugins_registry dir, asks GetInfo, and
// tells NotifyRegistrationStatus whether it accepted the driver.
type RegistrationServer struct {
	registerapi.UnimplementedRegistrationServer
	// DriverName is the name the driver registers under.
	DriverName string
	// Endpoint is the path of the driver's CSI socket.
	Endpoint string
	logger   klog.Logger
}

// GetInfo returns a CSIPlugin named DriverName at Endpoint that supports
// SupportedVersions.
func (s *RegistrationServer) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	return &registerapi.PluginInfo{
		Type:              registerapi.CSIPlugin,
		Name:              s.DriverName,
		Endpoint:          s.Endpoint,
		SupportedVersions: SupportedVersions,
	}, nil
}

// NotifyRegistrationStatus logs whether the kubelet accepted the driver.
func (s *RegistrationServer) NotifyRegistrationStatus(_ context.Context, st *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	if st.GetPluginRegistered() {
		s.logger.Info("The kubelet registered the CSI driver", "driverName", s.DriverName, "endpoint", s.Endpoint)
	} else {
		s.logger.Error(errors.New(st.GetError()), "The kubelet refused to register the CSI driver", "driverName", s.DriverName, "endpoint", s.Endpoint)
	}
	return &registerapi.RegistrationStatusResponse{}, nil
}

// Serve serves the registration API on listener until ctx is cancelled,
// then closes the listener (which removes a unix socket, so that the
// kubelet deregisters the driver).
func (s *RegistrationServer) Serve(ctx context.Context, listener net.Listener) error {
	s.logger = klog.FromContext(ctx).WithValues("registrationSocket", listener.Addr().String())
	srv := grpc.NewServer()
	registerapi.RegisterRegistrationServer(srv, s)
	if err := serveGRPC(ctx, srv, listener); err != nil {
		return fmt.Errorf("failed to serve the kubelet registration API: %w", err)
	}
	return nil
}
