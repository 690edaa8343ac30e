package flocker

import (
	"context"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	flockerclient "github.com/clusterhq/flocker-go"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/volume-agent/volume-agent/pkg/volume"
)

// PluginName is the qualified name of the Flocker plugin.
const PluginName = "kubernetes.io/flocker"

// The kubelet's defaults for the control service client.
const (
	DefaultControlServiceHost = "localhost"
	DefaultControlServicePort = 4523
	DefaultCAFile             = "/etc/flocker/cluster.crt"
	DefaultClientCertFile     = "/etc/flocker/apiuser.crt"
	DefaultClientKeyFile      = "/etc/flocker/apiuser.key"
	DefaultMoveTimeout        = 2 * time.Minute
)

// maxDatasetNameLength is Flocker's limit on a metadata value.
const maxDatasetNameLength = 256

// datasetUUIDPattern is a UUID in its canonical text form, any version.
var datasetUUIDPattern = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// Config is how the plugin reaches the Flocker control service. Zero fields
// get the kubelet's defaults (see DefaultConfig).
type Config struct {
	// ControlServiceHost is the control service's host name or IP address.
	ControlServiceHost string
	// Port is the control service's TCP port.
	Port int
	// CAFile is the cluster CA certificate that signs the control service's certificate.
	CAFile string
	// ClientCertFile and ClientKeyFile are the API user certificate (CN "user-<name>") and its key.
	ClientCertFile, ClientKeyFile string
	// MoveTimeout bounds the wait for a dataset to be mounted on this node.
	MoveTimeout time.Duration
}

// DefaultConfig returns the kubelet's defaults: localhost:4523, certificates
// under /etc/flocker, a two-minute move timeout.
func DefaultConfig() Config {
	return Config{
		ControlServiceHost: DefaultControlServiceHost,
		Port:               DefaultControlServicePort,
		CAFile:             DefaultCAFile,
		ClientCertFile:     DefaultClientCertFile,
		ClientKeyFile:      DefaultClientKeyFile,
		MoveTimeout:        DefaultMoveTimeout,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.ControlServiceHost == "" {
		c.ControlServiceHost = d.ControlServiceHost
	}
	if c.Port == 0 {
		c.Port = d.Port
	}
	if c.CAFile == "" {
		c.CAFile = d.CAFile
	}
	if c.ClientCertFile == "" {
		c.ClientCertFile = d.ClientCertFile
	}
	if c.ClientKeyFile == "" {
		c.ClientKeyFile = d.ClientKeyFile
	}
	if c.MoveTimeout == 0 {
		c.MoveTimeout = d.MoveTimeout
	}
	return c
}

// address is the control service's "host:port".
func (c Config) address() string {
	return net.JoinHostPort(c.ControlServiceHost, strconv.Itoa(c.Port))
}

// ProbeVolumePlugins returns the Flocker plugin configured with cfg. The
// control service is not contacted, and the certificates are not read, until
// a volume is set up or the plugin's health is checked.
func ProbeVolumePlugins(cfg Config) []volume.VolumePlugin {
	return []volume.VolumePlugin{newPlugin(cfg, newFlockerClient)}
}

func newPlugin(cfg Config, newClient clientFactory) *plugin {
	return &plugin{cfg: cfg.withDefaults(), newClient: newClient}
}

type plugin struct {
	host      volume.VolumeHost
	cfg       Config
	newClient clientFactory

	mu     sync.Mutex
	client flockerclient.Clientable // created on first use; dropped after a TLS failure
	nodeIP string

	// provisionMu serializes Provision, so that one name gets one dataset.
	provisionMu sync.Mutex
}

var (
	_ volume.PersistentVolumePlugin = &plugin{}
	_ volume.SpecValidatingPlugin   = &plugin{}
	_ volume.HealthCheckingPlugin   = &plugin{}
	_ volume.VerifyingPlugin        = &plugin{}
	_ volume.Builder                = &builder{}
	_ volume.Cleaner                = &cleaner{}
)

// Init checks the configuration's port and move timeout.
func (p *plugin) Init(host volume.VolumeHost) error {
	if p.cfg.Port < 1 || p.cfg.Port > 65535 {
		return fmt.Errorf("invalid flocker configuration: port %d must be between 1 and 65535", p.cfg.Port)
	}
	if p.cfg.MoveTimeout < 0 {
		return fmt.Errorf("invalid flocker configuration: moveTimeout %v must not be negative", p.cfg.MoveTimeout)
	}
	p.host = host
	return nil
}

func (p *plugin) Name() string { return PluginName }

// CanSupport reports whether spec is an inline flocker volume or a
// PersistentVolume with a flocker source.
func (p *plugin) CanSupport(spec *volume.Spec) bool {
	return source(spec) != nil
}

// GetAccessModes returns ReadWriteOnce: a dataset is mounted on one node at a time.
func (p *plugin) GetAccessModes() []v1.PersistentVolumeAccessMode {
	return []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce}
}

func source(spec *volume.Spec) *v1.FlockerVolumeSource {
	switch {
	case spec == nil:
		return nil
	case spec.Volume != nil:
		return spec.Volume.Flocker
	case spec.PersistentVolume != nil:
		return spec.PersistentVolume.Spec.Flocker
	}
	return nil
}

// ValidateSpec requires exactly one of datasetName and datasetUUID, a name
// without '/' of at most 256 characters, and a UUID in canonical form.
func (p *plugin) ValidateSpec(spec *volume.Spec, fldPath *field.Path) field.ErrorList {
	src := source(spec)
	if src == nil {
		return field.ErrorList{field.Required(fldPath, "a flocker volume source is required")}
	}
	var errs field.ErrorList
	switch {
	case src.DatasetName == "" && src.DatasetUUID == "":
		errs = append(errs, field.Required(fldPath, "exactly one of datasetName and datasetUUID is required"))
	case src.DatasetName != "" && src.DatasetUUID != "":
		errs = append(errs, field.Invalid(fldPath, fmt.Sprintf("datasetName=%q, datasetUUID=%q", src.DatasetName, src.DatasetUUID),
			"exactly one of datasetName and datasetUUID may be given"))
	}
	if name := src.DatasetName; name != "" {
		if strings.Contains(name, "/") {
			errs = append(errs, field.Invalid(fldPath.Child("datasetName"), name, "must not contain '/'"))
		}
		if len(name) > maxDatasetNameLength {
			errs = append(errs, field.TooLong(fldPath.Child("datasetName"), name, maxDatasetNameLength))
		}
	}
	if id := src.DatasetUUID; id != "" && !datasetUUIDPattern.MatchString(id) {
		errs = append(errs, field.Invalid(fldPath.Child("datasetUUID"), id, "must be a UUID (8-4-4-4-12 hexadecimal digits)"))
	}
	return errs
}

// NewBuilder returns a Builder for the dataset named or identified by spec.
// An invalid spec is a Final error naming the field and the value.
func (p *plugin) NewBuilder(spec *volume.Spec, pod *v1.Pod, opts volume.VolumeOptions) (volume.Builder, error) {
	if errs := p.ValidateSpec(spec, field.NewPath("flocker")); len(errs) > 0 {
		return nil, volume.NewFinalError(fmt.Errorf("invalid flocker volume %q: %w", spec.Name(), errs.ToAggregate()))
	}
	return &builder{
		volumeRef: p.volumeRef(pod.UID, spec.Name()),
		source:    *source(spec),
		readOnly:  spec.ReadOnly,
		ctx:       opts.ContextOrBackground(),
	}, nil
}

// NewCleaner returns a Cleaner for the volume, built from its path alone.
// VerifyVolume checks that path is still a mount point: the bind mount of
// the dataset. One that is gone is a Transient error, so the manager sets the
// volume up again, which bind-mounts the dataset anew (see SetUpAt). It makes
// no API call.
func (p *plugin) VerifyVolume(_ *volume.Spec, _ types.UID, path string) error {
	mounted, err := p.host.GetMounter().IsMountPoint(path)
	switch {
	case err != nil:
		return volume.NewTransientError(fmt.Errorf("failed to check the Flocker volume's bind mount at %s: %w", path, err))
	case !mounted:
		return volume.NewTransientError(fmt.Errorf("the Flocker dataset is no longer bind-mounted at %s", path))
	}
	return nil
}

func (p *plugin) NewCleaner(volName string, podUID types.UID) (volume.Cleaner, error) {
	return &cleaner{volumeRef: p.volumeRef(podUID, volName)}, nil
}

func (p *plugin) volumeRef(podUID types.UID, volName string) volumeRef {
	return volumeRef{plugin: p, VolumeDirs: volume.NewVolumeDirs(p.host, PluginName, podUID, volName)}
}

// volumeRef is what a Builder and a Cleaner share: the plugin, and where
// the volume is.
type volumeRef struct {
	volume.VolumeDirs
	plugin *plugin
}

// CheckHealth asks the control service for its nodes and looks for this
// node among them by its IP address.
func (p *plugin) CheckHealth(ctx context.Context) volume.Health {
	details := map[string]string{"controlService": p.cfg.address()}
	client, nodeIP, err := p.getClient(ctx)
	if nodeIP != "" {
		details["nodeIP"] = nodeIP
	}
	if err != nil {
		return volume.Health{Usable: false, Message: err.Error(), Details: details}
	}
	if v, ok := client.(versionReader); ok {
		if version, err := callAPI(ctx, v.Version); err == nil {
			details["flockerVersion"] = version
		}
	}
	nodes, err := callAPI(ctx, client.ListNodes)
	if err != nil {
		return volume.Health{Usable: false, Message: p.apiError(err, "list the Flocker nodes").Error(), Details: details}
	}
	details["nodes"] = strconv.Itoa(len(nodes))
	for _, n := range nodes {
		if n.Host == nodeIP {
			details["nodeUUID"] = n.UUID
			return volume.Health{Usable: true, Message: fmt.Sprintf("the Flocker control service at %s answers and lists this node (%s) as %s", p.cfg.address(), nodeIP, n.UUID), Details: details}
		}
	}
	return volume.Health{Usable: false, Message: fmt.Sprintf("the Flocker control service at %s answers, but this node (%s) is not among its %d nodes", p.cfg.address(), nodeIP, len(nodes)), Details: details}
}
