package csi

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/volume-agent/volume-agent/pkg/volume"
)

// PluginName is the qualified name of the CSI plugin.
const PluginName = "kubernetes.io/csi"

// DefaultCallTimeout bounds each call to a driver, as the kubelet does.
const DefaultCallTimeout = 2 * time.Minute

// DriverConfig is a driver that does not register itself: its name, as its
// GetPluginInfo gives it, and its socket.
type DriverConfig struct {
	Name     string
	Endpoint string
}

// Config configures the plugin. Zero fields get defaults.
type Config struct {
	// Drivers are the drivers known without registration.
	Drivers []DriverConfig
	// RegistrationDir is the kubelet-style plugin-registration dir watched
	// for drivers' registration sockets; empty means none is watched.
	RegistrationDir string
	// CallTimeout bounds each call to a driver; zero means DefaultCallTimeout.
	CallTimeout time.Duration
	// Dialer reaches a driver; nil means DialGRPC.
	Dialer Dialer
}

// ProbeVolumePlugins returns the CSI plugin configured with cfg. Drivers are
// not contacted until the plugin runs, checks its health, or sets a volume
// up.
func ProbeVolumePlugins(cfg Config) []volume.VolumePlugin {
	return []volume.VolumePlugin{newPlugin(cfg)}
}

func newPlugin(cfg Config) *plugin {
	if cfg.CallTimeout == 0 {
		cfg.CallTimeout = DefaultCallTimeout
	}
	if cfg.Dialer == nil {
		cfg.Dialer = DialGRPC
	}
	return &plugin{cfg: cfg}
}

type plugin struct {
	cfg     Config
	host    volume.VolumeHost
	drivers *drivers
	// stageLocks serializes the claims and the stage and unstage calls of
	// one staged volume.
	stageLocks keyedMutex
}

var (
	_ volume.PersistentVolumePlugin     = &plugin{}
	_ volume.SpecValidatingPlugin       = &plugin{}
	_ volume.DriverHealthCheckingPlugin = &plugin{}
	_ volume.RunningPlugin              = &plugin{}
	_ volume.FallbackPlugin             = &plugin{}
)

// Init checks the configuration and makes the static drivers known.
func (p *plugin) Init(host volume.VolumeHost) error {
	if p.cfg.CallTimeout < 0 {
		return fmt.Errorf("invalid csi configuration: callTimeout %v must not be negative", p.cfg.CallTimeout)
	}
	if p.cfg.RegistrationDir != "" && !filepath.IsAbs(p.cfg.RegistrationDir) {
		return fmt.Errorf("invalid csi configuration: pluginRegistrationDir %q must be an absolute path", p.cfg.RegistrationDir)
	}
	p.host = host
	p.drivers = newDrivers(p.cfg.Dialer, host.GetClock(), p.cfg.CallTimeout)
	for i, d := range p.cfg.Drivers {
		if errs := validateDriverName(d.Name, field.NewPath("csi", "drivers").Index(i).Child("name")); len(errs) > 0 {
			return fmt.Errorf("invalid csi configuration: %w", errs.ToAggregate())
		}
		if _, err := socketPath(d.Endpoint); err != nil {
			return fmt.Errorf("invalid csi configuration: csi.drivers[%d].endpoint: %w", i, err)
		}
		if _, err := p.drivers.add(d.Name, d.Endpoint, sourceStatic, ""); err != nil {
			return fmt.Errorf("failed to add CSI driver %q: %w", d.Name, err)
		}
	}
	return nil
}

func (p *plugin) Name() string { return PluginName }

// CanSupport reports whether spec is an inline csi volume or a
// PersistentVolume with a csi source.
func (p *plugin) CanSupport(spec *volume.Spec) bool {
	switch {
	case spec == nil:
		return false
	case spec.Volume != nil:
		return spec.Volume.CSI != nil
	case spec.PersistentVolume != nil:
		return spec.PersistentVolume.Spec.CSI != nil
	}
	return false
}

// GetAccessModes returns every mode: which ones a volume allows is the
// driver's business, and the mode is passed to it.
func (p *plugin) GetAccessModes() []v1.PersistentVolumeAccessMode {
	return []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce, v1.ReadOnlyMany, v1.ReadWriteMany, v1.ReadWriteOncePod}
}

// ValidateSpec requires a driver name that is a DNS subdomain of at most 63
// characters and, for a PersistentVolume, a volume handle; its secret
// references need a name and a namespace, and an inline volume's
// nodePublishSecretRef a name (its namespace is the pod's). Block volumes
// are not supported.
func (p *plugin) ValidateSpec(spec *volume.Spec, fldPath *field.Path) field.ErrorList {
	switch {
	case spec != nil && spec.Volume != nil && spec.Volume.CSI != nil:
		errs := validateDriverName(spec.Volume.CSI.Driver, fldPath.Child("driver"))
		if ref := spec.Volume.CSI.NodePublishSecretRef; ref != nil {
			errs = append(errs, validateSecretName(ref.Name, fldPath.Child("nodePublishSecretRef", "name"))...)
		}
		return errs
	case spec != nil && spec.PersistentVolume != nil && spec.PersistentVolume.Spec.CSI != nil:
		src := spec.PersistentVolume.Spec.CSI
		errs := validateDriverName(src.Driver, fldPath.Child("driver"))
		if src.VolumeHandle == "" {
			errs = append(errs, field.Required(fldPath.Child("volumeHandle"), "the driver's volume ID is required"))
		}
		errs = append(errs, validateSecretRef(src.NodeStageSecretRef, fldPath.Child("nodeStageSecretRef"))...)
		errs = append(errs, validateSecretRef(src.NodePublishSecretRef, fldPath.Child("nodePublishSecretRef"))...)
		if mode := spec.PersistentVolume.Spec.VolumeMode; mode != nil && *mode == v1.PersistentVolumeBlock {
			errs = append(errs, field.NotSupported(field.NewPath("spec", "volumeMode"), *mode, []string{string(v1.PersistentVolumeFilesystem)}))
		}
		return errs
	}
	return field.ErrorList{field.Required(fldPath, "a csi volume source is required")}
}

// validateSecretRef checks a PersistentVolume's secret reference, as
// Kubernetes does: a name and a namespace are required.
func validateSecretRef(ref *v1.SecretReference, fldPath *field.Path) field.ErrorList {
	if ref == nil {
		return nil
	}
	errs := validateSecretName(ref.Name, fldPath.Child("name"))
	namespacePath := fldPath.Child("namespace")
	if ref.Namespace == "" {
		return append(errs, field.Required(namespacePath, "the Secret's namespace is required"))
	}
	for _, msg := range validation.IsDNS1123Label(ref.Namespace) {
		errs = append(errs, field.Invalid(namespacePath, ref.Namespace, msg))
	}
	return errs
}

func validateSecretName(name string, fldPath *field.Path) field.ErrorList {
	if name == "" {
		return field.ErrorList{field.Required(fldPath, "the Secret's name is required")}
	}
	var errs field.ErrorList
	for _, msg := range validation.IsDNS1123Subdomain(name) {
		errs = append(errs, field.Invalid(fldPath, name, msg))
	}
	return errs
}

// maxDriverNameLength is the CSI spec's limit on a driver's name.
const maxDriverNameLength = 63

func validateDriverName(name string, fldPath *field.Path) field.ErrorList {
	if name == "" {
		return field.ErrorList{field.Required(fldPath, "the CSI driver's name is required")}
	}
	var errs field.ErrorList
	if len(name) > maxDriverNameLength {
		errs = append(errs, field.TooLong(fldPath, name, maxDriverNameLength))
	}
	for _, msg := range validation.IsDNS1123Subdomain(name) {
		errs = append(errs, field.Invalid(fldPath, name, msg))
	}
	return errs
}

// NewBuilder returns a Builder for spec in pod. An invalid spec is a Final
// error naming the field and the value. The driver is looked up at SetUp, so
// a volume whose driver registers later waits for it.
func (p *plugin) NewBuilder(spec *volume.Spec, pod *v1.Pod, opts volume.VolumeOptions) (volume.Builder, error) {
	if errs := p.ValidateSpec(spec, field.NewPath("csi")); len(errs) > 0 {
		return nil, volume.NewFinalError(fmt.Errorf("invalid csi volume %q: %w", spec.Name(), errs.ToAggregate()))
	}
	return &builder{
		volumeRef: p.volumeRef(pod.UID, spec.Name()),
		spec:      spec,
		pod:       pod,
		ctx:       opts.ContextOrBackground(),
	}, nil
}

// NewCleaner returns a Cleaner for the volume, built from its vol_data.json
// when TearDown runs.
func (p *plugin) NewCleaner(volName string, podUID types.UID) (volume.Cleaner, error) {
	return &cleaner{volumeRef: p.volumeRef(podUID, volName)}, nil
}

func (p *plugin) volumeRef(podUID types.UID, volName string) volumeRef {
	dirs := volume.NewVolumeDirs(p.host, PluginName, podUID, volName)
	return volumeRef{
		plugin:      p,
		podUID:      podUID,
		volName:     volName,
		volDir:      dirs.Path,
		metadataDir: dirs.MetadataDir,
	}
}

// volumeRef is what a Builder and a Cleaner share: the plugin, and where the
// volume is. Its path, the publish target, is <volDir>/mount, as the
// kubelet's; <volDir> holds vol_data.json.
type volumeRef struct {
	plugin      *plugin
	podUID      types.UID
	volName     string
	volDir      string
	metadataDir string
}

// GetPath returns the publish target, ROOT/pods/<uid>/volumes/kubernetes.io~csi/<volume>/mount.
func (r volumeRef) GetPath() string { return filepath.Join(r.volDir, publishDirName) }

// FingerprintPeriod is how often Run probes each driver (Probe and
// NodeGetCapabilities), as Nomad does.
const FingerprintPeriod = 30 * time.Second

// Run follows the registration dir, if one is configured, and fingerprints
// every driver now and every FingerprintPeriod, until ctx is done.
func (p *plugin) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	if p.cfg.RegistrationDir != "" {
		scanned := make(chan struct{})
		p.drivers.mu.Lock()
		p.drivers.scanned = scanned
		p.drivers.mu.Unlock()
		r := &registrar{dir: p.cfg.RegistrationDir, drivers: p.drivers, bySocket: map[string]*driver{}}
		wg.Go(func() { r.run(ctx, sync.OnceFunc(func() { close(scanned) })) })
	}
	clk := p.host.GetClock()
	for {
		for _, d := range p.drivers.list() {
			p.drivers.fingerprint(ctx, d)
		}
		timer := clk.NewTimer(FingerprintPeriod)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C():
		}
	}
}

// CheckHealth fingerprints every driver not fingerprinted within
// FingerprintPeriod (Run does it otherwise), and reports the plugin usable
// when every driver is; DriverHealth has each driver's health. With no
// driver known it is usable, and says so.
func (p *plugin) CheckHealth(ctx context.Context) volume.Health {
	ds := p.drivers.list()
	if len(ds) == 0 {
		return volume.Health{Usable: true, Message: "no CSI driver is registered"}
	}
	now := p.host.GetClock().Now()
	healthy := 0
	for _, d := range ds {
		d.mu.Lock()
		fp := d.fp
		d.mu.Unlock()
		if fp.checkedAt.IsZero() || now.Sub(fp.checkedAt) >= FingerprintPeriod {
			fp = p.drivers.fingerprint(ctx, d)
		}
		if fp.healthy {
			healthy++
		}
	}
	return volume.Health{Usable: healthy == len(ds), Message: fmt.Sprintf("%d of %d CSI drivers are usable", healthy, len(ds))}
}

// DriverHealth returns each driver's last fingerprint: its health, node ID
// and capabilities.
func (p *plugin) DriverHealth() []volume.DriverHealth {
	var out []volume.DriverHealth
	for _, d := range p.drivers.list() {
		out = append(out, volume.DriverHealth{Name: d.name, Health: d.health()})
	}
	return out
}

// keyedMutex is a mutex per key, kept only while in use.
type keyedMutex struct {
	mu    sync.Mutex
	locks map[string]*refMutex
}

type refMutex struct {
	sync.Mutex
	refs int
}

// lock locks key and returns its unlock.
func (k *keyedMutex) lock(key string) func() {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]*refMutex{}
	}
	m := k.locks[key]
	if m == nil {
		m = &refMutex{}
		k.locks[key] = m
	}
	m.refs++
	k.mu.Unlock()
	m.Lock()
	return func() {
		m.Unlock()
		k.mu.Lock()
		if m.refs--; m.refs == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
}

// IsFallback returns true: a plugin made for one CSI driver's volumes takes
// them from this one (volume.FallbackPlugin).
func (p *plugin) IsFallback() bool { return true }
