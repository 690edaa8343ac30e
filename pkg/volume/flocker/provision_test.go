package flocker

import (
	"errors"
	"net/http"
	"sync"
	"testing"

	"github.com/volume-agent/volume-agent/pkg/volume"
	emulator "github.com/volume-agent/volume-agent/test/flocker"
)

func TestDatasetSize(t *testing.T) {
	const gi = 1 << 30
	tests := []struct {
		name            string
		required, limit int64
		want            int64
		outOfRange      bool
	}{
		{name: "nothing asked: flocker-go's default", want: 100 * gi},
		{name: "exact", required: 10 * gi, limit: 10 * gi, want: 10 * gi},
		{name: "rounded up to 1024", required: 100<<20 + 1, want: 100<<20 + 1024},
		{name: "raised to the 64 MiB minimum", required: 1, want: 64 << 20},
		{name: "limit only: the limit, rounded down", limit: 1<<30 + 1000, want: 1 << 30},
		{name: "limit only, above the default", limit: 200 * gi, want: 100 * gi},
		{name: "limit below the minimum", limit: 1 << 20, outOfRange: true},
		{name: "rounding passes the limit", required: 100<<20 + 1, limit: 100<<20 + 10, outOfRange: true},
		{name: "minimum passes the limit", required: 1, limit: 1 << 20, outOfRange: true},
		{name: "negative", required: -1, outOfRange: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DatasetSize(tt.required, tt.limit)
			if tt.outOfRange {
				if !errors.Is(err, volume.ErrCapacityOutOfRange) {
					t.Fatalf("DatasetSize(%d, %d) = %d, %v; want ErrCapacityOutOfRange", tt.required, tt.limit, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("DatasetSize(%d, %d) = %d, %v; want %d", tt.required, tt.limit, got, err, tt.want)
			}
		})
	}
}

func (env *itEnv) provisioner(t *testing.T) volume.ProvisionableVolumePlugin {
	t.Helper()
	p, err := env.plugins.FindPluginByName(PluginName)
	if err != nil {
		t.Fatal(err)
	}
	prov, ok := p.(volume.ProvisionableVolumePlugin)
	if !ok {
		t.Fatalf("%T is not a ProvisionableVolumePlugin", p)
	}
	return prov
}

func TestProvisionAndDelete(t *testing.T) {
	env := newIntegrationEnv(t, emulator.Config{}, Config{})
	prov := env.provisioner(t)
	ctx := t.Context()
	const size = 10 << 30

	vol, err := prov.Provision(ctx, volume.ProvisionOptions{Name: "pvc-1", RequiredBytes: size, Metadata: map[string]string{"createdBy": "test"}})
	if err != nil {
		t.Fatalf("Provision: %v", err)
	}
	ds, ok := env.emu.Dataset(vol.ID)
	if !ok || ds.Deleted {
		t.Fatalf("dataset %s is not in the emulator's configuration", vol.ID)
	}
	if ds.MaximumSize == nil || *ds.MaximumSize != size || vol.CapacityBytes != size {
		t.Errorf("maximum size %v, capacity %d; want %d", ds.MaximumSize, vol.CapacityBytes, size)
	}
	if ds.Metadata["name"] != "pvc-1" || ds.Metadata["createdBy"] != "test" || vol.Name != "pvc-1" {
		t.Errorf("metadata %v, name %q; want name pvc-1 and createdBy test", ds.Metadata, vol.Name)
	}
	if ds.Primary != env.emu.LocalNode().UUID {
		t.Errorf("primary %s, want this node %s", ds.Primary, env.emu.LocalNode().UUID)
	}

	again, err := prov.Provision(ctx, volume.ProvisionOptions{Name: "pvc-1", RequiredBytes: size})
	if err != nil || again.ID != vol.ID {
		t.Fatalf("second Provision = %+v, %v; want the same dataset %s", again, err, vol.ID)
	}
	if _, err := prov.Provision(ctx, volume.ProvisionOptions{Name: "pvc-1", RequiredBytes: 2 * size}); !errors.Is(err, volume.ErrVolumeExists) {
		t.Fatalf("Provision with a larger size: %v, want ErrVolumeExists", err)
	}
	if got, err := prov.GetVolume(ctx, vol.ID); err != nil || got.ID != vol.ID || got.CapacityBytes != size {
		t.Fatalf("GetVolume = %+v, %v", got, err)
	}

	if err := prov.Delete(ctx, vol.ID); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if ds, _ := env.emu.Dataset(vol.ID); !ds.Deleted {
		t.Error("the dataset is not deleted")
	}
	if err := prov.Delete(ctx, vol.ID); err != nil {
		t.Errorf("second Delete: %v, want success", err)
	}
	if _, err := prov.GetVolume(ctx, vol.ID); !errors.Is(err, volume.ErrVolumeNotFound) {
		t.Errorf("GetVolume of a deleted dataset: %v, want ErrVolumeNotFound", err)
	}
	// The name is free again once its dataset is deleted.
	fresh, err := prov.Provision(ctx, volume.ProvisionOptions{Name: "pvc-1", RequiredBytes: size})
	if err != nil || fresh.ID == vol.ID {
		t.Fatalf("Provision after Delete = %+v, %v; want a new dataset", fresh, err)
	}

	for _, id := range []string{"not-a-uuid", "3f2b9a4e-7c1d-4e8a-9b6f-2d5c8e1a7f40"} {
		if err := prov.Delete(ctx, id); err != nil {
			t.Errorf("Delete(%q): %v, want success", id, err)
		}
		if _, err := prov.GetVolume(ctx, id); !errors.Is(err, volume.ErrVolumeNotFound) {
			t.Errorf("GetVolume(%q): %v, want ErrVolumeNotFound", id, err)
		}
	}
}

func TestProvisionConcurrentCallsMakeOneDataset(t *testing.T) {
	env := newIntegrationEnv(t, emulator.Config{}, Config{})
	prov := env.provisioner(t)
	const calls = 8
	ids := make([]string, calls)
	errs := make([]error, calls)
	var wg sync.WaitGroup
	for i := range calls {
		wg.Go(func() {
			vol, err := prov.Provision(t.Context(), volume.ProvisionOptions{Name: "shared"})
			errs[i] = err
			if err == nil {
				ids[i] = vol.ID
			}
		})
	}
	wg.Wait()
	for i := range calls {
		if errs[i] != nil || ids[i] != ids[0] {
			t.Fatalf("call %d: %q, %v; want %q", i, ids[i], errs[i], ids[0])
		}
	}
	if n := env.emu.CountRequests(http.MethodPost, "/v1/configuration/datasets"); n != 1 {
		t.Errorf("%d datasets created, want 1", n)
	}
}

func TestProvisionErrors(t *testing.T) {
	env := newIntegrationEnv(t, emulator.Config{}, Config{})
	prov := env.provisioner(t)
	ctx := t.Context()

	long := make([]byte, maxDatasetNameLength+1)
	for i := range long {
		long[i] = 'a'
	}
	if _, err := prov.Provision(ctx, volume.ProvisionOptions{Name: string(long)}); !errors.Is(err, volume.ErrInvalidProvisionOptions) {
		t.Errorf("a 257-character name: %v, want ErrInvalidProvisionOptions", err)
	}
	if _, err := prov.Provision(ctx, volume.ProvisionOptions{Name: "small", LimitBytes: 1 << 20}); !errors.Is(err, volume.ErrCapacityOutOfRange) {
		t.Errorf("a 1 MiB limit: %v, want ErrCapacityOutOfRange", err)
	}

	env.emu.InjectError(emulator.ErrorRule{Method: http.MethodPost, Path: "/v1/configuration/datasets", Status: http.StatusInternalServerError, Count: 1})
	_, err := prov.Provision(ctx, volume.ProvisionOptions{Name: "flaky"})
	if err == nil || volume.ClassOf(err) != volume.Transient {
		t.Fatalf("Provision during a 500: %v, want a transient error", err)
	}
	if _, ok := env.emu.DatasetByName("flaky"); ok {
		t.Fatal("a dataset was created despite the error")
	}
	if _, err := prov.Provision(ctx, volume.ProvisionOptions{Name: "flaky"}); err != nil {
		t.Fatalf("Provision retried: %v", err)
	}
}
