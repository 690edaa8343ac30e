package volumemanager

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/volume-agent/volume-agent/pkg/volume"
	"github.com/volume-agent/volume-agent/pkg/volume/util"
)

const (
	fakePluginName   = "test.io/fake"
	fakePVPluginName = "test.io/fake-pv"
)

// fakeCall is one call a fake plugin saw.
type fakeCall struct {
	op     OperationKind
	podUID types.UID
	name   string
}

// fakeBehavior scripts the calls on one volume name.
type fakeBehavior struct {
	// setUpErrs are returned by successive SetUps (nil: success); once
	// used up, SetUp succeeds.
	setUpErrs []error
	// leaveDir makes a failing or cancelled SetUp create the volume dir
	// first.
	leaveDir bool
	// block, when set, makes SetUp wait for it to close or for the
	// operation's context to be done (then it returns the context's error).
	block chan struct{}
	// tearDownErrs are returned by successive TearDowns.
	tearDownErrs []error
}

// fakePlugin sets a volume up as a directory with a ready marker, as the
// emptyDir plugin does on disk, and does what its script says. It supports
// inline emptyDir volumes (name fakePluginName) or PersistentVolumes with a
// hostPath source (name fakePVPluginName).
type fakePlugin struct {
	name string
	host volume.VolumeHost

	mu        sync.Mutex
	calls     []fakeCall
	behaviors map[string]*fakeBehavior
	running   map[string]bool
	// overlaps counts operations that started on a volume while another
	// ran on it.
	overlaps int
	// contexts are the contexts SetUp got, by volume name.
	contexts map[string]context.Context
}

var (
	_ volume.PersistentVolumePlugin = &fakePlugin{}
	_ volume.HealthCheckingPlugin   = &fakePlugin{}
)

func newFakePlugin(name string) *fakePlugin {
	return &fakePlugin{name: name, behaviors: map[string]*fakeBehavior{}, running: map[string]bool{}, contexts: map[string]context.Context{}}
}

func (p *fakePlugin) Init(host volume.VolumeHost) error { p.host = host; return nil }
func (p *fakePlugin) Name() string                      { return p.name }
func (p *fakePlugin) GetAccessModes() []v1.PersistentVolumeAccessMode {
	return []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce}
}

func (p *fakePlugin) CanSupport(spec *volume.Spec) bool {
	if p.name == fakePVPluginName {
		return spec.PersistentVolume != nil && spec.PersistentVolume.Spec.HostPath != nil
	}
	return spec.Volume != nil && spec.Volume.EmptyDir != nil
}

func (p *fakePlugin) CheckHealth(context.Context) volume.Health {
	return volume.Health{Usable: p.name == fakePluginName, Message: "checked " + p.name}
}

func (p *fakePlugin) script(name string, b *fakeBehavior) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.behaviors[name] = b
}

func (p *fakePlugin) callLog() []fakeCall {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]fakeCall(nil), p.calls...)
}

func (p *fakePlugin) count(op OperationKind, name string) int {
	n := 0
	for _, c := range p.callLog() {
		if c.op == op && c.name == name {
			n++
		}
	}
	return n
}

func (p *fakePlugin) begin(op OperationKind, podUID types.UID, name string) *fakeBehavior {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, fakeCall{op: op, podUID: podUID, name: name})
	id := string(podUID) + "/" + name
	if p.running[id] {
		p.overlaps++
	}
	p.running[id] = true
	b := p.behaviors[name]
	if b == nil {
		b = &fakeBehavior{}
	}
	return b
}

func (p *fakePlugin) end(podUID types.UID, name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.running, string(podUID)+"/"+name)
}

func (p *fakePlugin) NewBuilder(spec *volume.Spec, pod *v1.Pod, opts volume.VolumeOptions) (volume.Builder, error) {
	return &fakeVolume{plugin: p, podUID: pod.UID, name: spec.Name(), ctx: opts.ContextOrBackground()}, nil
}

func (p *fakePlugin) NewCleaner(volName string, podUID types.UID) (volume.Cleaner, error) {
	return &fakeVolume{plugin: p, podUID: podUID, name: volName}, nil
}

type fakeVolume struct {
	plugin *fakePlugin
	podUID types.UID
	name   string
	ctx    context.Context
}

func (v *fakeVolume) GetPath() string {
	return v.plugin.host.GetPodVolumeDir(v.podUID, v.plugin.name, v.name)
}
func (v *fakeVolume) metaDir() string {
	return v.plugin.host.GetPodPluginDir(v.podUID, v.plugin.name) + "/" + v.name
}
func (v *fakeVolume) GetAttributes() volume.Attributes { return volume.Attributes{Managed: true} }
func (v *fakeVolume) SetUp(fsGroup *int64) error       { return v.SetUpAt(v.GetPath(), fsGroup) }

func (v *fakeVolume) SetUpAt(dir string, _ *int64) error {
	b := v.plugin.begin(OperationSetUp, v.podUID, v.name)
	defer v.plugin.end(v.podUID, v.name)
	v.plugin.mu.Lock()
	v.plugin.contexts[v.name] = v.ctx
	var err error
	if len(b.setUpErrs) > 0 {
		err = b.setUpErrs[0]
		b.setUpErrs = b.setUpErrs[1:]
	}
	v.plugin.mu.Unlock()
	if b.block != nil {
		select {
		case <-b.block:
		case <-v.ctx.Done():
			if b.leaveDir {
				_ = os.MkdirAll(dir, 0o750)
			}
			return v.ctx.Err()
		}
	}
	if err != nil {
		if b.leaveDir {
			_ = os.MkdirAll(dir, 0o750)
		}
		return err
	}
	if util.IsReady(v.metaDir()) {
		return nil
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	return util.SetReady(v.metaDir())
}

func (v *fakeVolume) TearDown() error { return v.TearDownAt(v.GetPath()) }

func (v *fakeVolume) TearDownAt(dir string) error {
	b := v.plugin.begin(OperationTearDown, v.podUID, v.name)
	defer v.plugin.end(v.podUID, v.name)
	v.plugin.mu.Lock()
	var err error
	if len(b.tearDownErrs) > 0 {
		err = b.tearDownErrs[0]
		b.tearDownErrs = b.tearDownErrs[1:]
	}
	v.plugin.mu.Unlock()
	if err != nil {
		return err
	}
	if err := util.RemoveMetadataDir(v.metaDir()); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("failed to remove %q: %w", dir, err)
	}
	return nil
}
