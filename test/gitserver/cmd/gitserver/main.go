// Command gitserver generates a small example repository and serves it with
// git daemon on 127.0.0.1 until it is killed, so that an example gitRepo
// volume can be set up with no network access.
//
//	gitserver --dir DIR [--port 9418] [--http-port 0] [--ready-file FILE]
//
// It writes DIR/example.git (kept if it already exists) with a branch "main",
// a branch "dev" and an annotated tag "v1.0.0", serves every repository under
// DIR at git://127.0.0.1:PORT/<name> and, with --http-port, at
// http://127.0.0.1:HTTP-PORT/<name>, then writes the served URLs, one a line,
// to the ready file. SIGINT or SIGTERM stops it and every process it started.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/volume-agent/volume-agent/test/gitserver"
)

func main() {
	dir := flag.String("dir", "", "directory to generate the example repository in and serve (required)")
	port := flag.Int("port", 9418, "TCP port of git daemon on 127.0.0.1; 0 picks a free one")
	httpPort := flag.Int("http-port", -1, "TCP port of the smart HTTP server on 127.0.0.1; -1 serves no HTTP, 0 picks a free one")
	readyFile := flag.String("ready-file", "", "file to write the served URLs to once the server accepts connections")
	flag.Parse()
	if err := run(*dir, *port, *httpPort, *readyFile); err != nil {
		fmt.Fprintf(os.Stderr, "gitserver: %v\n", err)
		os.Exit(1)
	}
}

func run(dir string, port, httpPort int, readyFile string) error {
	if dir == "" {
		return errors.New("--dir is required")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := ensureExample(filepath.Join(dir, "example.git")); err != nil {
		return fmt.Errorf("failed to generate the example repository: %w", err)
	}
	httpAddr := fmt.Sprintf("127.0.0.1:%d", httpPort)
	if httpPort < 0 {
		httpAddr = ""
	}
	srv, err := gitserver.Start(dir, fmt.Sprintf("127.0.0.1:%d", port), httpAddr)
	if err != nil {
		return err
	}
	defer srv.Close()
	urls := srv.GitURL("example.git") + "\n"
	if httpPort >= 0 {
		urls += srv.HTTPURL("example.git") + "\n"
	}
	fmt.Print(urls)
	if readyFile != "" {
		if err := os.WriteFile(readyFile, []byte(urls), 0o644); err != nil {
			return err
		}
		defer os.Remove(readyFile)
	}
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	<-signals
	return nil
}

// ensureExample writes the example repository unless it exists.
func ensureExample(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		_, err = gitserver.Open(dir)
		return err
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	repo, err := gitserver.Init(dir)
	if err != nil {
		return err
	}
	if _, err := repo.Commit("main", "Add the example site",
		gitserver.File("README.md", "# Example\n\nServed by test/gitserver for volume-agent's gitRepo example.\n"),
		gitserver.File("index.html", "<h1>Hello from a gitRepo volume</h1>\n")); err != nil {
		return err
	}
	if err := repo.Tag("v1.0.0", "main", true); err != nil {
		return err
	}
	if err := repo.Branch("dev", "main"); err != nil {
		return err
	}
	if _, err := repo.Commit("dev", "Start the dev branch", gitserver.File("DEV.md", "work in progress\n")); err != nil {
		return err
	}
	_, err = repo.Commit("main", "Update the page", gitserver.File("index.html", "<h1>Hello from a gitRepo volume, v2</h1>\n"))
	return err
}
