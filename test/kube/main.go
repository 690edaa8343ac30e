// Command kube-harness runs a real single-node Kubernetes on loopback (etcd,
// kube-apiserver, containerd and the kubelet, under a state dir of its own)
// and runs scenarios against volume-agent's CSI driver on it, printing one
// PASS or FAIL line per scenario and a final "N passed, N failed" line. It
// tears everything down, with no process, mount or socket left, when the
// scenarios end, fail or are interrupted (SIGINT, SIGTERM, SIGHUP), and exits
// 1 when anything failed.
//
// `make test-kube` runs it through test/kube/run.sh, which installs the
// Debian packages and builds the binaries it needs.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"syscall"
	"time"
)

func main() {
	var n node
	var runFlag, repo string
	flag.StringVar(&n.state, "state-dir", "/var/lib/volume-agent-kube", "directory for everything the node writes; removed at the end (a leftover of an interrupted run is cleaned first)")
	flag.StringVar(&n.logDir, "log-dir", "_output/kube/logs", "directory for the components' logs, kept after the run")
	flag.StringVar(&n.kubeBin, "kube-bin", "", "directory holding kube-apiserver, kubelet and kubectl (required)")
	flag.StringVar(&n.binDir, "bin-dir", "", "directory holding pause, volume-agent, gitserver and flocker-emulator (required)")
	flag.StringVar(&repo, "repo", ".", "the volume-agent repository (deploy/ and docs/ are read from it)")
	flag.StringVar(&runFlag, "run", "", "run only the scenarios whose name matches this regular expression")
	flag.Parse()
	if n.kubeBin == "" || n.binDir == "" {
		fmt.Fprintln(os.Stderr, "kube-harness: --kube-bin and --bin-dir are required")
		os.Exit(2)
	}
	filter, err := regexp.Compile(runFlag)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kube-harness: --run %q: %v\n", runFlag, err)
		os.Exit(2)
	}
	os.Exit(runAll(&n, repo, filter))
}

func runAll(n *node, repo string, filter *regexp.Regexp) int {
	var err error
	for _, p := range []*string{&n.state, &n.logDir, &n.kubeBin, &n.binDir, &repo} {
		if *p, err = filepath.Abs(*p); err != nil {
			fmt.Fprintf(os.Stderr, "kube-harness: %v\n", err)
			return 2
		}
	}
	n.name = nodeName()
	n.procs = map[string]*proc{}
	if err := os.RemoveAll(n.logDir); err != nil {
		fmt.Fprintf(os.Stderr, "kube-harness: %v\n", err)
		return 2
	}
	if err := os.MkdirAll(n.logDir, 0o755); err != nil {
		fmt.Fprintf(os.Stderr, "kube-harness: %v\n", err)
		return 2
	}

	// A signal cancels the scenarios; the teardown below still runs (a
	// second signal is ignored until it is done).
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer cancel()

	passed, failed := 0, 0
	report := func(name string, start time.Time, err error) {
		if err != nil {
			failed++
			fmt.Printf("FAIL %s (%.1fs): %v\n", name, time.Since(start).Seconds(), err)
		} else {
			passed++
			fmt.Printf("PASS %s (%.1fs)\n", name, time.Since(start).Seconds())
		}
	}

	if _, err := os.Stat(n.state); err == nil {
		fmt.Printf("cleaning up after a previous run in %s\n", n.state)
		if err := n.down(); err != nil {
			fmt.Printf("FAIL cleanup of a previous run: %v\n", err)
			fmt.Printf("0 passed, 1 failed\n")
			return 1
		}
	}

	fmt.Printf("bringing up a node (%s) under %s; logs in %s\n", n.name, n.state, n.logDir)
	start := time.Now()
	h := &harness{node: n, repo: repo}
	err = n.up(ctx)
	if err == nil {
		err = h.startServers(ctx)
	}
	report("node up: etcd, kube-apiserver, containerd, kubelet; node Ready", start, err)
	if err == nil {
		for _, s := range scenarios {
			if !filter.MatchString(s.name) {
				continue
			}
			if ctx.Err() != nil {
				report(s.name, time.Now(), errors.New("not run: interrupted"))
				continue
			}
			start := time.Now()
			report(s.name, start, h.runScenario(ctx, s))
		}
	}

	// Tear down even after a signal.
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	start = time.Now()
	report("teardown: no process, mount or socket left", start, n.down())

	fmt.Println("timings:")
	for _, t := range n.timings {
		fmt.Printf("  %-44s %6.1fs\n", t.what, t.d.Seconds())
	}
	fmt.Printf("%d passed, %d failed\n", passed, failed)
	if failed > 0 {
		return 1
	}
	return 0
}
