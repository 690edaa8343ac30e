package csi

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/volume-agent/volume-agent/pkg/volume"
)

// ParameterType is the one CreateVolume parameter (a StorageClass's
// parameters) the controller takes; its only value is TypeFlocker.
const ParameterType = "type"

// ContextDatasetUUID is the volume context key of a Flocker dataset's UUID.
const ContextDatasetUUID = "datasetUUID"

// reservedParameterPrefix starts the parameters Kubernetes' sidecars add
// (csi.storage.k8s.io/pvc/name, ...): they are ignored.
const reservedParameterPrefix = "csi.storage.k8s.io/"

// supportedAccessModes are the access modes of a dataset: it is mounted on
// one node at a time.
var supportedAccessModes = []csi.VolumeCapability_AccessMode_Mode{
	csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER,
	csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY,
}

// ControllerServer is the CSI Controller service: CreateVolume and
// DeleteVolume of the volumes of one provisionable plugin (Flocker
// datasets), and ValidateVolumeCapabilities. Every method is idempotent; see
// docs/csi.md for the errors.
type ControllerServer struct {
	csi.UnimplementedControllerServer
	driverName string
	plugin     volume.ProvisionableVolumePlugin
}

// NewControllerServer returns the Controller service of the driver
// driverName, provisioning through plugin.
func NewControllerServer(driverName string, plugin volume.ProvisionableVolumePlugin) *ControllerServer {
	return &ControllerServer{driverName: driverName, plugin: plugin}
}

// FindProvisioner returns the loaded plugin that can provision volumes, the
// first by name if several can, or nil when none can.
func FindProvisioner(plugins *volume.VolumePluginMgr) volume.ProvisionableVolumePlugin {
	for _, p := range plugins.ListPlugins() {
		if prov, ok := p.(volume.ProvisionableVolumePlugin); ok {
			return prov
		}
	}
	return nil
}

// ControllerGetCapabilities reports CREATE_DELETE_VOLUME.
func (s *ControllerServer) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: []*csi.ControllerServiceCapability{{
		Type: &csi.ControllerServiceCapability_Rpc{Rpc: &csi.ControllerServiceCapability_RPC{
			Type: csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
		}},
	}}}, nil
}

// CreateVolume creates a dataset named req.Name whose maximum size is the
// capacity asked for, or returns the one created under that name before.
// Its volume ID is the dataset's UUID and its volume context
// {type: flocker, datasetUUID: <UUID>}. A missing name or capability, a
// capability, parameter or content source the driver does not support is
// InvalidArgument; a capacity Flocker cannot meet is OutOfRange; the name
// taken by a dataset of another size is AlreadyExists.
func (s *ControllerServer) CreateVolume(ctx context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "name is required")
	}
	if err := validateCapabilities(req.GetVolumeCapabilities()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := validateParameters(req.GetParameters()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if req.GetVolumeContentSource() != nil {
		return nil, status.Errorf(codes.InvalidArgument, "volume_content_source %v: snapshots and clones are not supported", req.GetVolumeContentSource())
	}
	if len(req.GetMutableParameters()) > 0 {
		return nil, status.Errorf(codes.InvalidArgument, "mutable_parameters %v: not supported", req.GetMutableParameters())
	}
	opts := volume.ProvisionOptions{
		Name:          req.GetName(),
		RequiredBytes: req.GetCapacityRange().GetRequiredBytes(),
		LimitBytes:    req.GetCapacityRange().GetLimitBytes(),
		Metadata:      map[string]string{"createdBy": s.driverName},
	}
	vol, err := s.plugin.Provision(ctx, opts)
	if err != nil {
		return nil, provisionStatus(ctx, fmt.Errorf("failed to create volume %q: %w", req.GetName(), err))
	}
	klog.FromContext(ctx).V(1).Info("Created volume", "name", req.GetName(), "volumeID", vol.ID, "capacityBytes", vol.CapacityBytes)
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{
		VolumeId:      vol.ID,
		CapacityBytes: vol.CapacityBytes,
		VolumeContext: map[string]string{KeyType: string(TypeFlocker), ContextDatasetUUID: vol.ID},
	}}, nil
}

// DeleteVolume deletes the dataset req.VolumeId. A volume that does not
// exist or is deleted already is a success; a missing volume ID is
// InvalidArgument.
func (s *ControllerServer) DeleteVolume(ctx context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_id is required")
	}
	if err := s.plugin.Delete(ctx, req.GetVolumeId()); err != nil {
		return nil, provisionStatus(ctx, fmt.Errorf("failed to delete volume %q: %w", req.GetVolumeId(), err))
	}
	klog.FromContext(ctx).V(1).Info("Deleted volume", "volumeID", req.GetVolumeId())
	return &csi.DeleteVolumeResponse{}, nil
}

// ValidateVolumeCapabilities confirms the capabilities (and parameters)
// when the driver supports them for the volume, and returns a message
// saying why not otherwise. A missing volume ID or capability is
// InvalidArgument; a volume that does not exist is NotFound.
func (s *ControllerServer) ValidateVolumeCapabilities(ctx context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_id is required")
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "volume_capabilities are required")
	}
	if _, err := s.plugin.GetVolume(ctx, req.GetVolumeId()); err != nil {
		return nil, provisionStatus(ctx, err)
	}
	if err := validateCapabilities(req.GetVolumeCapabilities()); err != nil {
		return &csi.ValidateVolumeCapabilitiesResponse{Message: err.Error()}, nil
	}
	if err := validateParameters(req.GetParameters()); err != nil {
		return &csi.ValidateVolumeCapabilitiesResponse{Message: err.Error()}, nil
	}
	return &csi.ValidateVolumeCapabilitiesResponse{Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeContext:      req.GetVolumeContext(),
		VolumeCapabilities: req.GetVolumeCapabilities(),
		Parameters:         req.GetParameters(),
	}}, nil
}

// validateCapabilities requires at least one capability, each a mount
// volume with an access mode of a single node and no mount flags.
func validateCapabilities(caps []*csi.VolumeCapability) error {
	if len(caps) == 0 {
		return errors.New("volume_capabilities are required")
	}
	for i, c := range caps {
		if err := validateCapability(c); err != nil {
			return fmt.Errorf("volume_capabilities[%d]: %w", i, err)
		}
	}
	return nil
}

// validateCapability checks one capability; a nil one is an error.
func validateCapability(c *csi.VolumeCapability) error {
	if c == nil {
		return errors.New("volume_capability is required")
	}
	switch {
	case c.GetBlock() != nil:
		return errors.New("access_type block: only mount volumes are supported")
	case c.GetMount() == nil:
		return errors.New("access_type is required (mount)")
	case len(c.GetMount().GetMountFlags()) > 0:
		return fmt.Errorf("mount_flags %q: not supported", c.GetMount().GetMountFlags())
	}
	mode := c.GetAccessMode().GetMode()
	if !slices.Contains(supportedAccessModes, mode) {
		names := make([]string, len(supportedAccessModes))
		for i, m := range supportedAccessModes {
			names[i] = m.String()
		}
		return fmt.Errorf("access_mode %s: not supported; supported: %s", mode, strings.Join(names, ", "))
	}
	return nil
}

// validateParameters accepts type=flocker and ignores the keys Kubernetes'
// sidecars add.
func validateParameters(params map[string]string) error {
	for k, v := range params {
		switch {
		case strings.HasPrefix(k, reservedParameterPrefix):
		case k == ParameterType && v == string(TypeFlocker):
		case k == ParameterType:
			return fmt.Errorf("parameter %q: invalid value %q: the controller creates %q volumes only", k, v, TypeFlocker)
		default:
			return fmt.Errorf("parameter %q (value %q): unknown; the only parameter is %q", k, v, ParameterType)
		}
	}
	return nil
}

// provisionStatus turns an error of a ProvisionableVolumePlugin into a gRPC
// status.
func provisionStatus(ctx context.Context, err error) error {
	code := codes.Internal
	switch {
	case errors.Is(err, volume.ErrInvalidProvisionOptions):
		code = codes.InvalidArgument
	case errors.Is(err, volume.ErrCapacityOutOfRange):
		code = codes.OutOfRange
	case errors.Is(err, volume.ErrVolumeExists):
		code = codes.AlreadyExists
	case errors.Is(err, volume.ErrVolumeNotFound):
		code = codes.NotFound
	case errors.Is(err, context.DeadlineExceeded) || ctx.Err() == context.DeadlineExceeded:
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case volume.ClassOf(err) == volume.Transient:
		code = codes.Unavailable
	}
	return status.Error(code, err.Error())
}
