package flocker

import (
	"io"
	"net/http"
	"testing"
	"time"

	"k8s.io/klog/v2"

	emulator "github.com/volume-agent/volume-agent/test/flocker"
)

// BenchmarkSetUp measures SetUp to ready over real TLS on loopback with real
// bind mounts: for a dataset already on this node, and for one that must move
// here with the emulator's move delay at 1s. It reports the API calls per
// SetUp and, for the move, the time above the move delay (overhead-ms/op).
func BenchmarkSetUp(b *testing.B) {
	// Keep the per-move log lines out of the benchmark's output.
	klog.LogToStderr(false)
	klog.SetOutput(io.Discard)
	b.Cleanup(func() { klog.LogToStderr(true) })

	b.Run("dataset-here", func(b *testing.B) {
		env := newIntegrationEnv(b, emulator.Config{}, Config{})
		env.addDataset(b, emulator.DatasetSpec{Name: "db"})
		env.emu.ResetRequests()
		b.ResetTimer()
		for range b.N {
			env.mustSetUp(b, flockerVolume("db", ""), "pod-a")
			b.StopTimer()
			env.tearDown(b, "pod-a")
			b.StartTimer()
		}
		b.ReportMetric(float64(env.emu.CountRequests("", "/v1/"))/float64(b.N), "api-calls/op")
	})

	b.Run("move-1s", func(b *testing.B) {
		const moveDelay = time.Second
		env := newIntegrationEnv(b, emulator.Config{MoveDelay: moveDelay}, Config{})
		id := env.addDataset(b, emulator.DatasetSpec{Name: "db", Primary: remoteNode})
		if err := env.emu.CompleteTransitions(); err != nil {
			b.Fatal(err)
		}
		var overhead time.Duration
		calls := 0
		b.ResetTimer()
		for range b.N {
			env.emu.ResetRequests()
			start := time.Now()
			env.mustSetUp(b, flockerVolume("db", ""), "pod-a")
			overhead += time.Since(start) - moveDelay
			b.StopTimer()
			calls += env.emu.CountRequests("", "/v1/")
			if n := env.emu.CountRequests(http.MethodPost, "/v1/configuration/datasets/"+id); n != 1 {
				b.Fatalf("%d moves in one SetUp, want 1", n)
			}
			env.tearDown(b, "pod-a")
			if err := env.emu.MoveDataset(id, remoteNode); err != nil {
				b.Fatal(err)
			}
			if err := env.emu.CompleteTransitions(); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		b.ReportMetric(float64(overhead.Milliseconds())/float64(b.N), "overhead-ms/op")
		b.ReportMetric(float64(calls)/float64(b.N), "api-calls/op")
	})
}
