package flocker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	flockerclient "github.com/clusterhq/flocker-go"

	"github.com/volume-agent/volume-agent/pkg/volume"
)

// Flocker's limits on a dataset's maximum size and metadata.
const (
	// MinDatasetSize is the smallest maximum_size Flocker accepts (64 MiB).
	MinDatasetSize = 64 << 20
	// datasetSizeUnit: a maximum_size must be a multiple of 1024.
	datasetSizeUnit = 1024
	// DefaultDatasetSize is the size of a dataset provisioned with no
	// capacity asked for: flocker-go's default, 100 GiB.
	DefaultDatasetSize = 100 << 30
	// maxMetadataPairs is Flocker's limit on a dataset's metadata.
	maxMetadataPairs = 16
)

// MetadataName is the metadata key of a dataset's name, the one flocker-go's
// GetDatasetID and the datasetName of a volume source look up.
const MetadataName = "name"

var _ volume.ProvisionableVolumePlugin = &plugin{}

// datasetAdmin is implemented by clients that can read every dataset's
// configuration and create a dataset without waiting for the state, which
// flocker-go cannot (its CreateDataset waits up to two minutes for the state
// and deletes the dataset when it does not show up).
type datasetAdmin interface {
	ListDatasetConfigurations() ([]DatasetConfig, error)
	CreateDatasetConfiguration(opts flockerclient.CreateDatasetOptions) (DatasetConfig, error)
}

// DatasetConfig is a dataset's entry in /v1/configuration/datasets.
type DatasetConfig struct {
	DatasetID   string            `json:"dataset_id"`
	Primary     string            `json:"primary"`
	Deleted     bool              `json:"deleted"`
	Metadata    map[string]string `json:"metadata"`
	MaximumSize *int64            `json:"maximum_size,omitempty"`
}

var _ datasetAdmin = &apiClient{}

// ListDatasetConfigurations reads /v1/configuration/datasets, deleted
// datasets included.
func (c *apiClient) ListDatasetConfigurations() ([]DatasetConfig, error) {
	var list []DatasetConfig
	err := c.getJSON("/configuration/datasets", &list)
	return list, err
}

// CreateDatasetConfiguration POSTs a dataset to /v1/configuration/datasets
// and returns its configuration, without waiting for the state.
func (c *apiClient) CreateDatasetConfiguration(opts flockerclient.CreateDatasetOptions) (DatasetConfig, error) {
	body, err := json.Marshal(opts)
	if err != nil {
		return DatasetConfig{}, err
	}
	req, err := http.NewRequest(http.MethodPost, c.baseURL+"/configuration/datasets", bytes.NewReader(body))
	if err != nil {
		return DatasetConfig{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Client.Do(req)
	if err != nil {
		return DatasetConfig{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return DatasetConfig{}, err
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Description string `json:"description"`
		}
		_ = json.Unmarshal(data, &e)
		return DatasetConfig{}, fmt.Errorf("expected 201 from POST /configuration/datasets, got %d: %s", resp.StatusCode, e.Description)
	}
	var cfg DatasetConfig
	if err := json.Unmarshal(data, &cfg); err != nil {
		return DatasetConfig{}, fmt.Errorf("failed to decode the created dataset: %w", err)
	}
	return cfg, nil
}

// admin returns the client as a datasetAdmin.
func (p *plugin) admin(ctx context.Context) (datasetAdmin, flockerclient.Clientable, error) {
	client, _, err := p.getClient(ctx)
	if err != nil {
		return nil, nil, err
	}
	admin, ok := client.(datasetAdmin)
	if !ok {
		return nil, nil, volume.Finalf("the Flocker client %T cannot create datasets", client)
	}
	return admin, client, nil
}

// DatasetSize returns the maximum_size of a dataset for a capacity between
// required and limit bytes (zero: unbounded): required rounded up to a
// multiple of 1024 and to at least 64 MiB; the limit rounded down when only
// a limit is given; 100 GiB when neither is. It wraps
// volume.ErrCapacityOutOfRange when no size Flocker accepts fits.
func DatasetSize(required, limit int64) (int64, error) {
	switch {
	case required < 0 || limit < 0:
		return 0, fmt.Errorf("%w: required %d and limit %d bytes must not be negative", volume.ErrCapacityOutOfRange, required, limit)
	case required == 0 && limit == 0:
		return DefaultDatasetSize, nil
	case required == 0:
		size := min(limit/datasetSizeUnit*datasetSizeUnit, DefaultDatasetSize)
		if size < MinDatasetSize {
			return 0, fmt.Errorf("%w: the limit of %d bytes is below Flocker's minimum dataset size of %d bytes", volume.ErrCapacityOutOfRange, limit, MinDatasetSize)
		}
		return size, nil
	}
	size := max((required+datasetSizeUnit-1)/datasetSizeUnit*datasetSizeUnit, MinDatasetSize)
	if limit > 0 && size > limit {
		return 0, fmt.Errorf("%w: %d bytes are required and at most %d allowed, but a Flocker dataset's size is a multiple of 1024 bytes and at least %d bytes",
			volume.ErrCapacityOutOfRange, required, limit, MinDatasetSize)
	}
	return size, nil
}

// Provision creates a dataset whose metadata name is opts.Name and whose
// maximum size is DatasetSize(opts.RequiredBytes, opts.LimitBytes), or
// returns the dataset not deleted that has that name already, when its size
// lies within the bounds (else volume.ErrVolumeExists). Its primary is this
// node when Flocker lists it, else the first node Flocker lists; setting the
// volume up moves it anyway. Calls are serialized, so that two calls for one
// name create one dataset.
func (p *plugin) Provision(ctx context.Context, opts volume.ProvisionOptions) (*volume.ProvisionedVolume, error) {
	if opts.Name == "" || len(opts.Name) > maxDatasetNameLength {
		return nil, fmt.Errorf("%w: name %q must be 1 to %d characters (a Flocker metadata value)", volume.ErrInvalidProvisionOptions, opts.Name, maxDatasetNameLength)
	}
	metadata := map[string]string{MetadataName: opts.Name}
	for k, v := range opts.Metadata {
		if k == MetadataName || len(k) > maxDatasetNameLength || len(v) > maxDatasetNameLength {
			return nil, fmt.Errorf("%w: metadata %q=%q: keys other than %q and values of at most %d characters only", volume.ErrInvalidProvisionOptions, k, v, MetadataName, maxDatasetNameLength)
		}
		metadata[k] = v
	}
	if len(metadata) > maxMetadataPairs {
		return nil, fmt.Errorf("%w: %d metadata pairs, Flocker keeps at most %d", volume.ErrInvalidProvisionOptions, len(metadata), maxMetadataPairs)
	}
	size, err := DatasetSize(opts.RequiredBytes, opts.LimitBytes)
	if err != nil {
		return nil, err
	}

	p.provisionMu.Lock()
	defer p.provisionMu.Unlock()
	admin, client, err := p.admin(ctx)
	if err != nil {
		return nil, err
	}
	existing, err := p.datasetByName(ctx, admin, opts.Name)
	if err != nil {
		return nil, err
	}
	if existing != nil {
		got := provisioned(*existing)
		if !fits(existing.MaximumSize, opts.RequiredBytes, opts.LimitBytes) {
			return nil, fmt.Errorf("%w: dataset %s named %q has a maximum size of %s, outside %d..%d bytes",
				volume.ErrVolumeExists, existing.DatasetID, opts.Name, describeSize(existing.MaximumSize), opts.RequiredBytes, opts.LimitBytes)
		}
		return got, nil
	}
	primary, err := p.provisionPrimary(ctx, client)
	if err != nil {
		return nil, err
	}
	created, err := callAPI(ctx, func() (DatasetConfig, error) {
		return admin.CreateDatasetConfiguration(flockerclient.CreateDatasetOptions{Primary: primary, MaximumSize: size, Metadata: metadata})
	})
	if err != nil {
		return nil, p.apiError(err, fmt.Sprintf("create a dataset named %q", opts.Name))
	}
	return provisioned(created), nil
}

// GetVolume returns the dataset id unless it does not exist or is deleted.
func (p *plugin) GetVolume(ctx context.Context, id string) (*volume.ProvisionedVolume, error) {
	cfg, err := p.datasetByID(ctx, id)
	if err != nil {
		return nil, err
	}
	return provisioned(*cfg), nil
}

// Delete deletes the dataset id. An id that is not a UUID, a dataset that
// does not exist, and one already deleted are successes.
func (p *plugin) Delete(ctx context.Context, id string) error {
	cfg, err := p.datasetByID(ctx, id)
	if errors.Is(err, volume.ErrVolumeNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	_, client, err := p.admin(ctx)
	if err != nil {
		return err
	}
	if _, err := callAPI(ctx, func() (struct{}, error) { return struct{}{}, client.DeleteDataset(cfg.DatasetID) }); err != nil {
		// Deleted meanwhile by someone else: done all the same.
		if _, again := p.datasetByID(ctx, id); errors.Is(again, volume.ErrVolumeNotFound) {
			return nil
		}
		return p.apiError(err, fmt.Sprintf("delete dataset %s", cfg.DatasetID))
	}
	return nil
}

// datasetByID returns the configuration of the dataset id, or an error
// wrapping volume.ErrVolumeNotFound when it is not a UUID, not configured,
// or deleted.
func (p *plugin) datasetByID(ctx context.Context, id string) (*DatasetConfig, error) {
	if !datasetUUIDPattern.MatchString(id) {
		return nil, fmt.Errorf("%w: %q is not a Flocker dataset UUID", volume.ErrVolumeNotFound, id)
	}
	id = strings.ToLower(id)
	admin, _, err := p.admin(ctx)
	if err != nil {
		return nil, err
	}
	list, err := callAPI(ctx, admin.ListDatasetConfigurations)
	if err != nil {
		return nil, p.apiError(err, "list the Flocker datasets")
	}
	for i := range list {
		if list[i].DatasetID == id {
			if list[i].Deleted {
				return nil, fmt.Errorf("%w: dataset %s has been deleted", volume.ErrVolumeNotFound, id)
			}
			return &list[i], nil
		}
	}
	return nil, fmt.Errorf("%w: no dataset %s in the Flocker configuration", volume.ErrVolumeNotFound, id)
}

// datasetByName returns the first dataset not deleted whose metadata name
// is name, as flocker-go's GetDatasetID finds it, or nil.
func (p *plugin) datasetByName(ctx context.Context, admin datasetAdmin, name string) (*DatasetConfig, error) {
	list, err := callAPI(ctx, admin.ListDatasetConfigurations)
	if err != nil {
		return nil, p.apiError(err, "list the Flocker datasets")
	}
	for i := range list {
		if !list[i].Deleted && list[i].Metadata[MetadataName] == name {
			return &list[i], nil
		}
	}
	return nil, nil
}

// provisionPrimary returns this node's UUID when Flocker lists it, else the
// UUID of the first node Flocker lists, in UUID order.
func (p *plugin) provisionPrimary(ctx context.Context, client flockerclient.Clientable) (string, error) {
	nodes, err := callAPI(ctx, client.ListNodes)
	if err != nil {
		return "", p.apiError(err, "list the Flocker nodes")
	}
	if len(nodes) == 0 {
		return "", volume.NewTransientError(errors.New("failed to choose a primary for the dataset: the Flocker control service lists no nodes"))
	}
	_, nodeIP, _ := p.getClient(ctx)
	for _, n := range nodes {
		if n.Host == nodeIP {
			return n.UUID, nil
		}
	}
	uuids := make([]string, 0, len(nodes))
	for _, n := range nodes {
		uuids = append(uuids, n.UUID)
	}
	slices.Sort(uuids)
	return uuids[0], nil
}

func provisioned(cfg DatasetConfig) *volume.ProvisionedVolume {
	v := &volume.ProvisionedVolume{ID: cfg.DatasetID, Name: cfg.Metadata[MetadataName]}
	if cfg.MaximumSize != nil {
		v.CapacityBytes = *cfg.MaximumSize
	}
	return v
}

// fits reports whether a dataset of maximum size size (nil: unlimited) lies
// within required and limit bytes.
func fits(size *int64, required, limit int64) bool {
	if size == nil {
		return limit == 0
	}
	return *size >= required && (limit == 0 || *size <= limit)
}

func describeSize(size *int64) string {
	if size == nil {
		return "unlimited"
	}
	return fmt.Sprintf("%d bytes", *size)
}
