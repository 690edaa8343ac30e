// Package csisanity runs csi-sanity (csi-test v5.6.0, pkg/sanity) against
// the built volume-agent serving CSI on a unix socket, backed by the
// project's Flocker emulator: the Identity, Controller and Node specs, the
// node specs staging and publishing real Flocker datasets on real mounts.
package csisanity

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/ginkgo/v2/types"
	"github.com/onsi/gomega"
	"k8s.io/mount-utils"

	emulator "github.com/volume-agent/volume-agent/test/flocker"
	"github.com/volume-agent/volume-agent/test/testbin"
)

// binary is the volume-agent built for this test run.
var binary string

func TestMain(m *testing.M) { testbin.Main(m, &binary) }

// capabilitySkips are the reasons csi-sanity gives for skipping a spec that
// the driver's capabilities rule out. Any other skip fails the test.
var capabilitySkips = []string{
	"GetCapacity not supported",
	"ListVolumes not supported",
	"Snapshot not supported",
	"Volume Cloning not supported",
	"Modify volume not supported",
	"Modify Volume not supported",
	"ControllerPublishVolume not supported",
	"Controller Publish, UnpublishVolume not supported",
	"ControllerUnpublishVolume not supported",
	"ControllerExpandVolume not supported",
	"ControllerModifyVolume not supported",
	"ControllerGetVolumeHealth not supported",
	"ControllerListVolumeHealth not supported",
	"CreateSnapshot not supported",
	"DeleteSnapshot not supported",
	"ListSnapshots not supported",
	"GetSnapshot not supported",
	"GroupControllerService not supported",
	"NodeGetVolume not supported", // NodeGetVolumeStats
	"NodeExpandVolume not supported",
	"NodeGetVolumeHealth not supported",
	"NodeGetStorageHealth not supported",
	"Service does not have single node multi writer capability",
}

// TestSanity runs the whole csi-sanity suite once. csi-sanity creates the
// target and staging dirs before each spec and removes them after it; the
// driver must leave them empty and unmounted.
func TestSanity(t *testing.T) {
	dir, mounter := newTestDir(t)
	// Registered after the cleanup above, so it runs first: the agent stops
	// before the emulator, whose mounts go before the dir.
	emu := emulator.StartForTest(t, emulator.Config{StateDir: filepath.Join(dir, "flocker")})
	socket := filepath.Join(dir, "csi.sock")
	agent := startAgent(t, dir, socket, emu)

	cfg := sanity.NewTestConfig()
	cfg.Address = "unix://" + socket
	cfg.TargetPath = filepath.Join(dir, "target")
	cfg.StagingPath = filepath.Join(dir, "staging")
	cfg.IdempotentCount = 10

	var report types.Report
	ginkgo.ReportAfterSuite("collect", func(r types.Report) { report = r })
	sc := sanity.GinkgoTest(&cfg)
	gomega.RegisterFailHandler(ginkgo.Fail)
	suiteConfig, reporterConfig := ginkgo.GinkgoConfiguration()
	suiteConfig.Timeout = 5 * time.Minute
	reporterConfig.Succinct = true
	reporterConfig.NoColor = true
	start := time.Now()
	passed := ginkgo.RunSpecs(t, "volume-agent CSI sanity", suiteConfig, reporterConfig)
	sc.Finalize()
	took := time.Since(start)

	var ran, skipped int
	for _, spec := range report.SpecReports {
		if spec.LeafNodeType != types.NodeTypeIt {
			continue
		}
		switch spec.State {
		case types.SpecStatePassed, types.SpecStateFailed:
			ran++
		case types.SpecStateSkipped:
			skipped++
			if !ruledOutByCapabilities(spec.Failure.Message) {
				t.Errorf("spec skipped for a reason the driver's capabilities do not explain: %q: %s", spec.FullText(), spec.Failure.Message)
			}
		}
	}
	t.Logf("csi-sanity: %d specs ran, %d skipped by the driver's capabilities, in %v", ran, skipped, took.Round(time.Millisecond))
	if !passed {
		t.Error("csi-sanity failed")
	}
	if ran == 0 {
		t.Error("csi-sanity ran no spec")
	}

	// The node specs staged datasets for real: the agent printed each stage
	// set up at the staging path, then torn down.
	logs := agent.stop()
	setUps := strings.Count(logs, "Normal SetUp pod=default/csi-stage-")
	tornDowns := strings.Count(logs, "Normal TornDown pod=default/csi-stage-")
	if setUps < 3 || tornDowns != setUps {
		t.Errorf("the agent set %d stages up and tore %d down; want at least 3, each torn down", setUps, tornDowns)
	}
	// Everything the specs staged and published must be gone by now.
	for _, path := range mountsBeneath(t, mounter, dir) {
		if !strings.HasPrefix(path, filepath.Join(dir, "flocker")+string(filepath.Separator)) {
			t.Errorf("%s is still mounted after the suite", path)
		}
	}
}

func ruledOutByCapabilities(reason string) bool {
	for _, r := range capabilitySkips {
		if reason == r {
			return true
		}
	}
	return false
}

func mountsBeneath(t *testing.T, mounter mount.Interface, dir string) []string {
	t.Helper()
	mps, err := mounter.List()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mp := range mps {
		if strings.HasPrefix(mp.Path, dir+string(filepath.Separator)) {
			out = append(out, mp.Path)
		}
	}
	return out
}
