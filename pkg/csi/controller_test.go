package csi

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/volume-agent/volume-agent/pkg/volume"
)

// fakeProvisioner is an in-memory ProvisionableVolumePlugin whose next
// error can be set.
type fakeProvisioner struct {
	volumes map[string]*volume.ProvisionedVolume // by ID
	err     error
	last    volume.ProvisionOptions
}

func (f *fakeProvisioner) Init(volume.VolumeHost) error                    { return nil }
func (f *fakeProvisioner) Name() string                                    { return "example.com/fake" }
func (f *fakeProvisioner) CanSupport(*volume.Spec) bool                    { return false }
func (f *fakeProvisioner) GetAccessModes() []v1.PersistentVolumeAccessMode { return nil }
func (f *fakeProvisioner) NewBuilder(*volume.Spec, *v1.Pod, volume.VolumeOptions) (volume.Builder, error) {
	return nil, errors.New("not implemented")
}
func (f *fakeProvisioner) NewCleaner(string, types.UID) (volume.Cleaner, error) {
	return nil, errors.New("not implemented")
}

func (f *fakeProvisioner) Provision(_ context.Context, opts volume.ProvisionOptions) (*volume.ProvisionedVolume, error) {
	f.last = opts
	if f.err != nil {
		return nil, f.err
	}
	for _, v := range f.volumes {
		if v.Name == opts.Name {
			return v, nil
		}
	}
	v := &volume.ProvisionedVolume{ID: fmt.Sprintf("id-%d", len(f.volumes)), Name: opts.Name, CapacityBytes: opts.RequiredBytes}
	f.volumes[v.ID] = v
	return v, nil
}

func (f *fakeProvisioner) GetVolume(_ context.Context, id string) (*volume.ProvisionedVolume, error) {
	if f.err != nil {
		return nil, f.err
	}
	if v, ok := f.volumes[id]; ok {
		return v, nil
	}
	return nil, fmt.Errorf("%w: %s", volume.ErrVolumeNotFound, id)
}

func (f *fakeProvisioner) Delete(_ context.Context, id string) error {
	if f.err != nil {
		return f.err
	}
	delete(f.volumes, id)
	return nil
}

func mountCap(mode csi.VolumeCapability_AccessMode_Mode) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
	}
}

var writer = mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)

// expectCode fails unless err is a status with code and a message holding
// every string of wantInMessage.
func expectCode(t *testing.T, err error, code codes.Code, wantInMessage ...string) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != code {
		t.Fatalf("error %v: code %s, want %s", err, st.Code(), code)
	}
	for _, want := range wantInMessage {
		if !strings.Contains(st.Message(), want) {
			t.Errorf("message %q does not mention %q", st.Message(), want)
		}
	}
}

func TestCreateVolumeRejectsBadRequests(t *testing.T) {
	block := &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}
	flags := mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)
	flags.GetMount().MountFlags = []string{"noexec"}
	tests := []struct {
		name string
		req  *csi.CreateVolumeRequest
		want []string
	}{
		{name: "no name", req: &csi.CreateVolumeRequest{VolumeCapabilities: []*csi.VolumeCapability{writer}}, want: []string{"name"}},
		{name: "no capabilities", req: &csi.CreateVolumeRequest{Name: "v"}, want: []string{"volume_capabilities"}},
		{name: "block", req: &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: []*csi.VolumeCapability{block}}, want: []string{"volume_capabilities[0]", "block"}},
		{name: "multi-node", req: &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: []*csi.VolumeCapability{writer, mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)}},
			want: []string{"volume_capabilities[1]", "MULTI_NODE_MULTI_WRITER", "SINGLE_NODE_WRITER"}},
		{name: "mount flags", req: &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: []*csi.VolumeCapability{flags}}, want: []string{"mount_flags", "noexec"}},
		{name: "unknown parameter", req: &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: []*csi.VolumeCapability{writer}, Parameters: map[string]string{"fsType": "xfs"}},
			want: []string{`"fsType"`, `"xfs"`}},
		{name: "other type", req: &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: []*csi.VolumeCapability{writer}, Parameters: map[string]string{"type": "emptyDir"}},
			want: []string{`"type"`, `"emptyDir"`}},
		{name: "clone", req: &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: []*csi.VolumeCapability{writer},
			VolumeContentSource: &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: "x"}}}},
			want: []string{"volume_content_source"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := &fakeProvisioner{volumes: map[string]*volume.ProvisionedVolume{}}
			_, err := NewControllerServer("volume-agent.io", fake).CreateVolume(t.Context(), tt.req)
			expectCode(t, err, codes.InvalidArgument, tt.want...)
			if len(fake.volumes) != 0 {
				t.Error("a volume was created")
			}
		})
	}
}

func TestCreateVolume(t *testing.T) {
	fake := &fakeProvisioner{volumes: map[string]*volume.ProvisionedVolume{}}
	s := NewControllerServer("volume-agent.io", fake)
	req := &csi.CreateVolumeRequest{
		Name:               "pvc-1",
		VolumeCapabilities: []*csi.VolumeCapability{writer, mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY)},
		CapacityRange:      &csi.CapacityRange{RequiredBytes: 1 << 30, LimitBytes: 2 << 30},
		Parameters:         map[string]string{"type": "flocker", "csi.storage.k8s.io/pvc/name": "data"},
	}
	resp, err := s.CreateVolume(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	vol := resp.GetVolume()
	if vol.GetVolumeId() != "id-0" || vol.GetCapacityBytes() != 1<<30 {
		t.Errorf("volume %v", vol)
	}
	if got := vol.GetVolumeContext(); got[KeyType] != string(TypeFlocker) || got[ContextDatasetUUID] != "id-0" {
		t.Errorf("volume context %v, want type flocker and the dataset's UUID", got)
	}
	if fake.last.Name != "pvc-1" || fake.last.RequiredBytes != 1<<30 || fake.last.LimitBytes != 2<<30 || fake.last.Metadata["createdBy"] != "volume-agent.io" {
		t.Errorf("provision options %+v", fake.last)
	}
}

func TestProvisionErrorCodes(t *testing.T) {
	tests := []struct {
		err  error
		code codes.Code
	}{
		{fmt.Errorf("x: %w", volume.ErrInvalidProvisionOptions), codes.InvalidArgument},
		{fmt.Errorf("x: %w", volume.ErrCapacityOutOfRange), codes.OutOfRange},
		{fmt.Errorf("x: %w", volume.ErrVolumeExists), codes.AlreadyExists},
		{volume.NewTransientError(errors.New("control service unreachable")), codes.Unavailable},
		{volume.Finalf("TLS failure"), codes.Internal},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.code.String(), func(t *testing.T) {
			fake := &fakeProvisioner{volumes: map[string]*volume.ProvisionedVolume{}, err: tt.err}
			_, err := NewControllerServer("volume-agent.io", fake).CreateVolume(t.Context(),
				&csi.CreateVolumeRequest{Name: "pvc-1", VolumeCapabilities: []*csi.VolumeCapability{writer}})
			expectCode(t, err, tt.code, `"pvc-1"`, tt.err.Error())
		})
	}
}

func TestDeleteAndValidate(t *testing.T) {
	fake := &fakeProvisioner{volumes: map[string]*volume.ProvisionedVolume{"id-0": {ID: "id-0", Name: "pvc-1"}}}
	s := NewControllerServer("volume-agent.io", fake)
	ctx := t.Context()

	_, err := s.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeCapabilities: []*csi.VolumeCapability{writer}})
	expectCode(t, err, codes.InvalidArgument, "volume_id")
	_, err = s.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: "id-0"})
	expectCode(t, err, codes.InvalidArgument, "volume_capabilities")
	_, err = s.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: "gone", VolumeCapabilities: []*csi.VolumeCapability{writer}})
	expectCode(t, err, codes.NotFound, "gone")

	resp, err := s.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: "id-0", VolumeCapabilities: []*csi.VolumeCapability{writer}})
	if err != nil || resp.GetConfirmed() == nil || len(resp.GetConfirmed().GetVolumeCapabilities()) != 1 {
		t.Fatalf("single-node writer: %v, %v; want it confirmed", resp, err)
	}
	resp, err = s.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: "id-0",
		VolumeCapabilities: []*csi.VolumeCapability{mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY)}})
	if err != nil || resp.GetConfirmed() != nil || !strings.Contains(resp.GetMessage(), "MULTI_NODE_READER_ONLY") {
		t.Fatalf("multi-node reader: %v, %v; want unconfirmed with a message naming the mode", resp, err)
	}

	_, err = s.DeleteVolume(ctx, &csi.DeleteVolumeRequest{})
	expectCode(t, err, codes.InvalidArgument, "volume_id")
	for range 2 {
		if _, err := s.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: "id-0"}); err != nil {
			t.Fatalf("DeleteVolume: %v", err)
		}
	}
	if len(fake.volumes) != 0 {
		t.Error("the volume is still there")
	}
}

func TestControllerGetCapabilities(t *testing.T) {
	resp, err := NewControllerServer("volume-agent.io", &fakeProvisioner{}).ControllerGetCapabilities(t.Context(), &csi.ControllerGetCapabilitiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var got []csi.ControllerServiceCapability_RPC_Type
	for _, c := range resp.GetCapabilities() {
		got = append(got, c.GetRpc().GetType())
	}
	if len(got) != 1 || got[0] != csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME {
		t.Errorf("capabilities %v, want CREATE_DELETE_VOLUME only", got)
	}
}
