// Package csisanity runs csi-sanity (csi-test v5.6.0, pkg/sanity) against
// the built volume-agent serving CSI on a unix socket, backed by the
// project's Flocker emulator: the Identity, Controller and Node specs, the
// node specs staging and publishing real Flocker datasets on real mounts.
package csisanity

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/ginkgo/v2/types"
	"github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/mount-utils"

	volumetesting "github.com/volume-agent/volume-agent/pkg/volume/testing"
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
	volumetesting.RequiresRoot(t)
	// A short path: unix socket addresses are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "va-sanity")
	if err != nil {
		t.Fatal(err)
	}
	mounter := mount.New("")
	t.Cleanup(func() {
		volumetesting.UnmountAllBeneath(t, mounter, dir)
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("failed to remove %s: %v", dir, err)
		}
	})
	// Registered after the cleanup above, so it runs first: the agent stops
	// before the emulator, whose mounts go before the dir.
	emu := emulator.StartForTest(t, emulator.Config{StateDir: filepath.Join(dir, "flocker")})
	socket := filepath.Join(dir, "csi.sock")
	stopAgent := startAgent(t, dir, socket, emu)

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

	// Everything the specs staged and published must be gone by now.
	stopAgent()
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

// startAgent runs `volume-agent run` in CSI mode alone, its Flocker client
// pointed at emu, and waits for its socket. The returned function stops it
// (SIGTERM, leaving volumes in place, as a real stop does); it also runs at
// the end of the test.
func startAgent(t *testing.T, dir, socket string, emu *emulator.Emulator) func() {
	t.Helper()
	certs := emu.Certs()
	cmd := exec.Command(binary, "run",
		"--root-dir", filepath.Join(dir, "root"),
		"--csi-endpoint", "unix://"+socket,
		"--node-ip", emu.LocalNode().Host,
		"--flocker-control-service-host", emu.Host(),
		"--flocker-control-service-port", strconv.Itoa(emu.Port()),
		"-v", "2",
	)
	cmd.Env = append(os.Environ(),
		"FLOCKER_CONTROL_SERVICE_CA_FILE="+certs.CACert,
		"FLOCKER_CONTROL_SERVICE_CLIENT_CERT_FILE="+certs.ClientCert,
		"FLOCKER_CONTROL_SERVICE_CLIENT_KEY_FILE="+certs.ClientKey,
	)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("volume-agent log:\n%s", logs.String())
		}
	}
	t.Cleanup(stop)

	err := wait.PollUntilContextTimeout(t.Context(), 20*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		select {
		case <-done:
			return false, fmt.Errorf("volume-agent exited: %v\n%s", cmd.ProcessState, logs.String())
		default:
		}
		_, err := os.Stat(socket)
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("the CSI socket %s did not appear: %v", socket, err)
	}
	return stop
}
