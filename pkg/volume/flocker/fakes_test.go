package flocker

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	flockerclient "github.com/clusterhq/flocker-go"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/mount-utils"
	"k8s.io/utils/clock"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/volume-agent/volume-agent/pkg/volume"
	volumetesting "github.com/volume-agent/volume-agent/pkg/volume/testing"
)

const (
	localIP   = "192.0.2.10"
	localNode = "0f6e1c52-7b41-4d0e-9a3c-5b2d8e1f4a60"
	otherNode = "7a1d3e9c-2b64-4f85-8c0e-1d9a6b3f2e75"
)

// fakeDataset is one dataset of a fakeClient: its configuration and state.
type fakeDataset struct {
	id, name string
	deleted  bool
	// stateNode is where the state shows it mounted; "" lists it without primary and path.
	stateNode string
	// absent: the state does not list it.
	absent bool
	// path is the state's path when mounted.
	path string
	// primaryWithoutPath makes the state list it with a primary but no path, as a client
	// library may return for a dataset that is not mounted.
	primaryWithoutPath bool
	// pollsToMove is how many state reads after a move it stays listed without primary;
	// negative: the move never completes.
	pollsToMove int
	movingTo    string
}

// fakeClient is a flockerclient.Clientable over an in-memory cluster, counting calls.
type fakeClient struct {
	mu       sync.Mutex
	clientIP string
	nodes    []flockerclient.NodeState
	datasets []*fakeDataset
	calls    []string
	// failNext holds errors returned by the next calls of a method, in order.
	failNext map[string][]error
	// onCall runs at the start of every call, outside the lock.
	onCall func(method string)
}

func newFakeClient() *fakeClient {
	return &fakeClient{
		clientIP: localIP,
		nodes:    []flockerclient.NodeState{{UUID: localNode, Host: localIP}, {UUID: otherNode, Host: "192.0.2.20"}},
		failNext: map[string][]error{},
	}
}

var _ flockerclient.Clientable = &fakeClient{}

func (f *fakeClient) add(d *fakeDataset) *fakeDataset {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.datasets = append(f.datasets, d)
	return d
}

func (f *fakeClient) fail(method string, errs ...error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failNext[method] = append(f.failNext[method], errs...)
}

// call records method and returns a queued failure, if any. It locks f.
func (f *fakeClient) call(method string) error {
	if f.onCall != nil {
		f.onCall(method)
	}
	f.mu.Lock()
	f.calls = append(f.calls, method)
	if queued := f.failNext[method]; len(queued) > 0 {
		f.failNext[method] = queued[1:]
		f.mu.Unlock()
		return queued[0]
	}
	return nil
}

func (f *fakeClient) callLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeClient) count(method string) int {
	n := 0
	for _, c := range f.callLog() {
		if c == method {
			n++
		}
	}
	return n
}

func (f *fakeClient) find(id string) *fakeDataset {
	for _, d := range f.datasets {
		if d.id == id {
			return d
		}
	}
	return nil
}

func (f *fakeClient) CreateDataset(*flockerclient.CreateDatasetOptions) (*flockerclient.DatasetState, error) {
	return nil, errors.New("CreateDataset is not used by the plugin")
}

func (f *fakeClient) DeleteDataset(string) error {
	if err := f.call("DeleteDataset"); err != nil {
		return err
	}
	defer f.mu.Unlock()
	return errors.New("the plugin must never delete a dataset")
}

func (f *fakeClient) GetDatasetState(datasetID string) (*flockerclient.DatasetState, error) {
	if err := f.call("GetDatasetState"); err != nil {
		return nil, err
	}
	defer f.mu.Unlock()
	d := f.find(datasetID)
	if d == nil || d.absent || d.deleted {
		return nil, errors.New(errTextStateNotFound)
	}
	if d.movingTo != "" {
		if d.pollsToMove == 0 {
			d.stateNode, d.movingTo = d.movingTo, ""
		} else if d.pollsToMove > 0 {
			d.pollsToMove--
		}
	}
	st := &flockerclient.DatasetState{DatasetID: d.id}
	switch {
	case d.primaryWithoutPath:
		st.Primary = d.stateNode
	case d.stateNode != "":
		st.Primary, st.Path = d.stateNode, d.path
	}
	return st, nil
}

func (f *fakeClient) GetDatasetID(name string) (string, error) {
	if err := f.call("GetDatasetID"); err != nil {
		return "", err
	}
	defer f.mu.Unlock()
	for _, d := range f.datasets {
		if d.name == name && !d.deleted {
			return d.id, nil
		}
	}
	return "", errors.New(errTextNameNotFound)
}

func (f *fakeClient) GetPrimaryUUID() (string, error) {
	nodes, err := f.ListNodes()
	if err != nil {
		return "", err
	}
	for _, n := range nodes {
		if n.Host == f.clientIP {
			return n.UUID, nil
		}
	}
	return "", errors.New("No node found with IP '" + f.clientIP + "'")
}

func (f *fakeClient) ListNodes() ([]flockerclient.NodeState, error) {
	if err := f.call("ListNodes"); err != nil {
		return nil, err
	}
	defer f.mu.Unlock()
	return append([]flockerclient.NodeState(nil), f.nodes...), nil
}

func (f *fakeClient) UpdatePrimaryForDataset(primary, datasetID string) (*flockerclient.DatasetState, error) {
	if err := f.call("UpdatePrimaryForDataset"); err != nil {
		return nil, err
	}
	defer f.mu.Unlock()
	d := f.find(datasetID)
	if d == nil || d.deleted {
		return nil, errors.New("It was impossible to update the dataset")
	}
	if d.stateNode != primary || d.primaryWithoutPath {
		d.stateNode, d.movingTo, d.primaryWithoutPath = "", primary, false
	}
	return &flockerclient.DatasetState{DatasetID: d.id, Primary: primary}, nil
}

// configReadingClient adds the optional configurationReader to fakeClient.
type configReadingClient struct{ *fakeClient }

func (c configReadingClient) DatasetConfiguration(id string) (datasetConfiguration, error) {
	if err := c.call("DatasetConfiguration"); err != nil {
		return datasetConfiguration{}, err
	}
	defer c.mu.Unlock()
	d := c.find(id)
	if d == nil {
		return datasetConfiguration{}, nil
	}
	return datasetConfiguration{Found: true, Deleted: d.deleted}, nil
}

// steppingClock is a fake clock whose timers fire at once, advancing the time
// by their duration, so waits take no real time. It records every wait.
type steppingClock struct {
	*testingclock.FakeClock
	mu    sync.Mutex
	waits []time.Duration
}

func newSteppingClock() *steppingClock {
	return &steppingClock{FakeClock: testingclock.NewFakeClock(time.Date(2016, 11, 1, 0, 0, 0, 0, time.UTC))}
}

func (c *steppingClock) NewTimer(d time.Duration) clock.Timer {
	timer := c.FakeClock.NewTimer(d)
	c.mu.Lock()
	c.waits = append(c.waits, d)
	c.mu.Unlock()
	c.Step(d)
	return timer
}

func (c *steppingClock) recorded() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.waits...)
}

func (c *steppingClock) total() time.Duration {
	var sum time.Duration
	for _, d := range c.recorded() {
		sum += d
	}
	return sum
}

// unitEnv is a plugin over a fake client, a fake mounter and a stepping clock.
type unitEnv struct {
	root         string
	client       *fakeClient
	clock        *steppingClock
	mounter      *mount.FakeMounter
	plugin       *plugin
	factoryCalls int
	pod          *v1.Pod
}

type unitOptions struct {
	cfg          Config
	configReader bool
	factoryErr   error
	mounter      mount.Interface
}

func newUnitEnv(t *testing.T, opts unitOptions) *unitEnv {
	t.Helper()
	env := &unitEnv{
		root:    t.TempDir(),
		client:  newFakeClient(),
		clock:   newSteppingClock(),
		mounter: mount.NewFakeMounter(nil),
		pod:     &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", UID: types.UID("pod-1")}},
	}
	factory := func(Config, string) (flockerclient.Clientable, error) {
		env.factoryCalls++
		if opts.factoryErr != nil {
			return nil, opts.factoryErr
		}
		if opts.configReader {
			return configReadingClient{env.client}, nil
		}
		return env.client, nil
	}
	if opts.cfg.MoveTimeout == 0 {
		opts.cfg.MoveTimeout = time.Minute
	}
	env.plugin = newPlugin(opts.cfg, factory)
	mounter := opts.mounter
	if mounter == nil {
		mounter = env.mounter
	}
	volumetesting.NewFakeVolumeHost(t, env.root, []volume.VolumePlugin{env.plugin}, volumetesting.FakeHostOptions{
		Mounter: mounter, Clock: env.clock, NodeIP: net.ParseIP(localIP),
	})
	return env
}

// dataset adds d, with its state path a real directory.
func (env *unitEnv) dataset(t *testing.T, d fakeDataset) *fakeDataset {
	t.Helper()
	if d.path == "" {
		d.path = filepath.Join(env.root, "flocker", d.id)
	}
	if err := os.MkdirAll(d.path, 0o755); err != nil {
		t.Fatal(err)
	}
	return env.client.add(&d)
}

func flockerVolume(name, id string) *volume.Spec {
	return volume.NewSpecFromVolume(&v1.Volume{Name: "data", VolumeSource: v1.VolumeSource{Flocker: &v1.FlockerVolumeSource{DatasetName: name, DatasetUUID: id}}})
}

func (env *unitEnv) builder(t *testing.T, spec *volume.Spec, opts volume.VolumeOptions) volume.Builder {
	t.Helper()
	if opts.Context == nil {
		opts.Context = t.Context()
	}
	b, err := env.plugin.NewBuilder(spec, env.pod, opts)
	if err != nil {
		t.Fatalf("NewBuilder: %v", err)
	}
	return b
}

func (env *unitEnv) metaDir() string {
	return filepath.Join(env.plugin.host.GetPodPluginDir(env.pod.UID, PluginName), "data")
}

// mountedAt returns the fake mount at path, if any.
func (env *unitEnv) mountedAt(path string) (mount.MountPoint, bool) {
	mps, _ := env.mounter.List()
	for _, mp := range mps {
		if mp.Path == path {
			return mp, true
		}
	}
	return mount.MountPoint{}, false
}
