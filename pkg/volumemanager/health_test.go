package volumemanager

import (
	"context"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/volume-agent/volume-agent/pkg/volume"
	volumetesting "github.com/volume-agent/volume-agent/pkg/volume/testing"
)

// driverPlugin uses external drivers and runs while the agent does.
type driverPlugin struct {
	mu      sync.Mutex
	drivers []volume.DriverHealth
	ran     chan struct{}
}

func (p *driverPlugin) Init(volume.VolumeHost) error { return nil }
func (p *driverPlugin) Name() string                 { return "test.io/drivers" }
func (p *driverPlugin) CanSupport(*volume.Spec) bool { return false }
func (p *driverPlugin) CheckHealth(context.Context) volume.Health {
	return volume.Health{Usable: true, Message: "drivers checked"}
}
func (p *driverPlugin) NewBuilder(*volume.Spec, *v1.Pod, volume.VolumeOptions) (volume.Builder, error) {
	return nil, nil
}
func (p *driverPlugin) NewCleaner(string, types.UID) (volume.Cleaner, error) { return nil, nil }
func (p *driverPlugin) DriverHealth() []volume.DriverHealth {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.drivers
}
func (p *driverPlugin) Run(ctx context.Context) {
	close(p.ran)
	<-ctx.Done()
}

func TestPluginsShowDriverRows(t *testing.T) {
	p := &driverPlugin{ran: make(chan struct{}), drivers: []volume.DriverHealth{
		{Name: "a.example.com", Health: volume.Health{Usable: true, Details: map[string]string{"nodeID": "n1"}}},
		{Name: "b.example.com", Health: volume.Health{Usable: false, Message: "socket gone"}},
	}}
	_, plugins := volumetesting.NewFakeVolumeHost(t, t.TempDir(), []volume.VolumePlugin{p, newFakePlugin(fakePluginName)}, volumetesting.FakeHostOptions{})
	statuses := CheckPlugins(t.Context(), plugins, time.Now)
	var got []string
	for _, st := range statuses {
		got = append(got, st.Name+"|"+st.Driver)
	}
	want := []string{"test.io/drivers|", "test.io/drivers|a.example.com", "test.io/drivers|b.example.com", "test.io/fake|"}
	if len(got) != len(want) {
		t.Fatalf("rows = %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("rows = %q, want %q", got, want)
		}
	}
	if statuses[1].Details["nodeID"] != "n1" || statuses[2].Usable || statuses[2].Message != "socket gone" {
		t.Errorf("driver rows = %+v, %+v", statuses[1], statuses[2])
	}

	e := newTestEnv(t, func(c *Config) { c.Plugins = plugins })
	e.m.CheckPluginHealth(t.Context())
	if rows := e.m.Plugins(); len(rows) != 4 || rows[2].Driver != "b.example.com" {
		t.Fatalf("Plugins() = %+v", rows)
	}
	if ev := e.m.Events(); len(ev) != 1 || ev[0].Reason != ReasonPluginUnhealthy || ev[0].Message != "volume plugin test.io/drivers driver b.example.com is not usable: socket gone" {
		t.Errorf("events = %+v", ev)
	}
	// A driver gone is gone from the rows at once.
	p.mu.Lock()
	p.drivers = p.drivers[:1]
	p.mu.Unlock()
	e.m.CheckPluginHealth(t.Context())
	if rows := e.m.Plugins(); len(rows) != 3 {
		t.Errorf("Plugins() after a driver went = %+v", rows)
	}

	e.start()
	select {
	case <-p.ran:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not start the plugin's Run")
	}
}
