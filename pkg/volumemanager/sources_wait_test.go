package volumemanager

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestManagerScopesAndBoundsTheWaitForASourceThatNeverLoads pins down that a
// manifest that never loads holds back only the tear-downs of what it could
// have declared (volumes found on disk that no loaded source declares), and
// those only for SourceLoadTimeout; a pod removed from a file that loaded is
// torn down at once.
func TestManagerScopesAndBoundsTheWaitForASourceThatNeverLoads(t *testing.T) {
	e := newTestEnv(t, func(c *Config) { c.SourceLoadTimeout = time.Minute })
	e.makeVolumeOnDisk("unclaimed", "v", true)
	e.m.UpdateSources(SourceUpdate{Source: "file:deployment.yaml", Err: errors.New(`kind "Deployment" is not supported`)})
	e.setPods("file:good.yaml", testPod("web", "web", emptyDirVolume("v")))
	e.m.MarkSourcesSynced()
	e.start()
	e.waitFor("web ready", e.stateIs("web", "v", StateReady))

	// A pod removed from the file that loaded goes at once.
	e.setPods("file:good.yaml")
	e.waitFor("web torn down", func() bool { return !exists(e.layout.PodDir("web")) })

	// What the bad file could declare waits, as after a restart...
	e.never("a tear-down of a volume the bad file may declare", func() bool { return e.plugin.count(OperationTearDown, "v") > 1 })
	if got := e.volume("unclaimed", "v"); got.State != StatePending || got.Reason != ReasonWaitingForSources {
		t.Errorf("volume on disk that the bad file may declare: %+v, want pending for %s", got, ReasonWaitingForSources)
	}
	if e.m.Ready() {
		t.Error("ready while a source never loaded and its wait is not over")
	}
	// ... but not for ever: the file is then taken as declaring nothing, as
	// the kubelet skips a file it cannot read.
	e.clock.Step(time.Minute)
	e.m.Trigger()
	e.waitFor("the unclaimed volume torn down", func() bool { return !exists(e.layout.PodDir("unclaimed")) })
	e.waitFor("ready", e.m.Ready)
	found := false
	for _, ev := range e.m.Events() {
		if ev.Reason == ReasonSourceSkipped && ev.Source == "file:deployment.yaml" && strings.Contains(ev.Message, "1m0s") {
			found = true
		}
	}
	if !found {
		t.Errorf("no %s event for the file that never loaded: %+v", ReasonSourceSkipped, e.m.Events())
	}
}
