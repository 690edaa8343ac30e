package testing

import (
	"net"
	"testing"
	"time"

	"k8s.io/mount-utils"
	"k8s.io/utils/clock"
	testingclock "k8s.io/utils/clock/testing"
	"k8s.io/utils/exec"
	testingexec "k8s.io/utils/exec/testing"

	"github.com/volume-agent/volume-agent/pkg/volume"
)

// FakeHostOptions choose the host's dependencies. Nil fields get fakes:
// mount.NewFakeMounter, an empty testingexec.FakeExec and a FakeClock.
type FakeHostOptions struct {
	Mounter  mount.Interface
	Exec     exec.Interface
	Clock    clock.Clock
	NodeName string
	NodeIP   net.IP
	// GetSecret is the host's secret getter; nil means no Secret is known.
	GetSecret volume.SecretGetter
}

// NewFakeVolumeHost loads plugins into a new VolumePluginMgr over a host
// rooted at root, failing t if any plugin fails to load. The host is the
// agent's own (volume.NewHost), so paths and wrapped volumes behave exactly as
// in the agent.
func NewFakeVolumeHost(t testing.TB, root string, plugins []volume.VolumePlugin, opts FakeHostOptions) (volume.VolumeHost, *volume.VolumePluginMgr) {
	t.Helper()
	if opts.Mounter == nil {
		opts.Mounter = mount.NewFakeMounter(nil)
	}
	if opts.Exec == nil {
		opts.Exec = &testingexec.FakeExec{}
	}
	if opts.Clock == nil {
		opts.Clock = testingclock.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	}
	if opts.NodeName == "" {
		opts.NodeName = "test-node"
	}
	mgr := &volume.VolumePluginMgr{}
	host := volume.NewHost(volume.HostConfig{
		Layout:    volume.Layout{Root: root},
		Mounter:   opts.Mounter,
		Exec:      opts.Exec,
		Clock:     opts.Clock,
		NodeName:  opts.NodeName,
		NodeIP:    opts.NodeIP,
		GetSecret: opts.GetSecret,
	}, mgr)
	if err := mgr.InitPlugins(plugins, host); err != nil {
		t.Fatalf("failed to init plugins: %v", err)
	}
	return host, mgr
}
