package gitserver

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Request is one request the server received.
type Request struct {
	// Protocol is "git" or "http".
	Protocol string
	// Repo is the repository path asked for, as "/name.git".
	Repo string
	// Service is the git service, as "git-upload-pack"; empty for an HTTP
	// request that names none.
	Service string
	// Method and Path are the HTTP request's; empty for git.
	Method, Path string
}

// Server serves every repository under a root dir over git://127.0.0.1 and
// http://127.0.0.1. Its methods are safe for concurrent use.
type Server struct {
	root string

	git  *switchListener
	http *switchListener
	web  *httptest.Server

	mu       sync.Mutex
	requests []Request
	held     chan struct{} // closed when requests may proceed; nil when not holding
	waiting  int
	procs    map[*exec.Cmd]struct{}
	closed   bool
	wg       sync.WaitGroup
}

// Start serves the repositories under root until Close. Either address may
// be "" for a free port on 127.0.0.1.
func Start(root, gitAddr, httpAddr string) (*Server, error) {
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	execPath, err := runGit("", nil, "--exec-path")
	if err != nil {
		return nil, err
	}
	backend := filepath.Join(execPath, "git-http-backend")
	if _, err := os.Stat(backend); err != nil {
		return nil, fmt.Errorf("git http-backend not found: %w", err)
	}
	s := &Server{root: root, procs: map[*exec.Cmd]struct{}{}}
	if gitAddr == "" {
		gitAddr = "127.0.0.1:0"
	}
	if httpAddr == "" {
		httpAddr = "127.0.0.1:0"
	}
	if s.git, err = listen(gitAddr); err != nil {
		return nil, err
	}
	if s.http, err = listen(httpAddr); err != nil {
		s.git.Close()
		return nil, err
	}
	s.web = httptest.NewUnstartedServer(s.httpHandler(backend))
	s.web.Listener = s.http
	s.web.Start()
	s.wg.Add(1)
	go s.acceptGit()
	return s, nil
}

// Root returns the dir whose repositories are served.
func (s *Server) Root() string { return s.root }

// GitAddr returns the git daemon's host:port.
func (s *Server) GitAddr() string { return s.git.Addr().String() }

// HTTPAddr returns the HTTP server's host:port.
func (s *Server) HTTPAddr() string { return s.http.Addr().String() }

// GitURL returns the git:// URL of the repository at path under the root,
// as "name.git".
func (s *Server) GitURL(path string) string {
	return "git://" + s.GitAddr() + "/" + strings.TrimPrefix(path, "/")
}

// HTTPURL returns the http:// URL of the repository at path under the root.
func (s *Server) HTTPURL(path string) string {
	return "http://" + s.HTTPAddr() + "/" + strings.TrimPrefix(path, "/")
}

// Requests returns every request received so far, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Fetches returns how many fetch or clone sessions (git-upload-pack over
// git://, or its info/refs discovery over HTTP) asked for the repository at
// path, over both protocols.
func (s *Server) Fetches(path string) int {
	want := "/" + strings.TrimPrefix(path, "/")
	n := 0
	for _, r := range s.Requests() {
		if r.Repo == want && r.Service == "git-upload-pack" && (r.Protocol == "git" || r.Method == http.MethodGet) {
			n++
		}
	}
	return n
}

// Hold makes new requests wait, after they are logged, until the returned
// release function is called (or the server is closed). Waiting tells how
// many are waiting.
func (s *Server) Hold() (release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held == nil {
		s.held = make(chan struct{})
	}
	held := s.held
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.held == held {
			close(held)
			s.held = nil
		}
	}
}

// Waiting returns how many requests are waiting on Hold.
func (s *Server) Waiting() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.waiting
}

// waitWhileHeld blocks while requests are held.
func (s *Server) waitWhileHeld() {
	s.mu.Lock()
	held := s.held
	if held == nil {
		s.mu.Unlock()
		return
	}
	s.waiting++
	s.mu.Unlock()
	<-held
	s.mu.Lock()
	s.waiting--
	s.mu.Unlock()
}

// Down closes both listening sockets, so that connections are refused, until
// Up.
func (s *Server) Down() {
	s.git.down()
	s.http.down()
}

// Up listens again on the same addresses after Down.
func (s *Server) Up() error {
	if err := s.git.up(); err != nil {
		return err
	}
	return s.http.up()
}

// Close stops serving, kills every process the server started and waits for
// them. It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	if s.held != nil {
		close(s.held)
		s.held = nil
	}
	s.mu.Unlock()

	s.git.Close()
	s.web.CloseClientConnections()
	s.web.Close()
	s.mu.Lock()
	for cmd := range s.procs {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// StartForTest starts a server for t over a fresh root dir (Root), and closes
// it when t ends.
func StartForTest(t testing.TB) *Server {
	t.Helper()
	s, err := Start(t.TempDir(), "", "")
	if err != nil {
		t.Fatalf("failed to start git server: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// NewRepo creates an empty bare repository at name (as "name.git") under
// the server's root.
func (s *Server) NewRepo(name string) (*Repo, error) {
	dir := filepath.Join(s.root, name)
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, err
	}
	return Init(dir)
}

func (s *Server) record(r Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, r)
}

// start starts cmd in its own process group and tracks it until wait.
func (s *Server) start(cmd *exec.Cmd) error {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("server closed")
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	s.procs[cmd] = struct{}{}
	return nil
}

func (s *Server) reap(cmd *exec.Cmd) error {
	err := cmd.Wait()
	s.mu.Lock()
	delete(s.procs, cmd)
	s.mu.Unlock()
	return err
}

func (s *Server) acceptGit() {
	defer s.wg.Done()
	for {
		conn, err := s.git.Accept()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveGit(conn)
		}()
	}
}

// serveGit logs the session's request, then hands conn to
// "git daemon --inetd", which serves it.
func (s *Server) serveGit(conn net.Conn) {
	defer conn.Close()
	tcp := conn.(*net.TCPConn)
	if req, ok := peekGitRequest(tcp); ok {
		s.record(req)
	}
	s.waitWhileHeld()
	file, err := tcp.File()
	if err != nil {
		return
	}
	defer file.Close()
	cmd := gitCommand(s.root, "daemon", "--inetd", "--export-all", "--base-path="+s.root,
		"--informative-errors", "--log-destination=none", s.root)
	cmd.Stdin, cmd.Stdout = file, file
	if err := s.start(cmd); err != nil {
		return
	}
	_ = s.reap(cmd)
}

// peekGitRequest reads, without consuming it, the first pkt-line of a git://
// session: "git-upload-pack /repo.git\x00host=...\x00".
func peekGitRequest(conn *net.TCPConn) (Request, bool) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return Request{}, false
	}
	buf := make([]byte, 4+0xffff)
	want, have := 4, 0
	deadline := time.Now().Add(5 * time.Second)
	for have < want && time.Now().Before(deadline) {
		var n int
		var rerr error
		err := raw.Read(func(fd uintptr) bool {
			n, _, rerr = syscall.Recvfrom(int(fd), buf, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			return !errors.Is(rerr, syscall.EAGAIN)
		})
		if err != nil || rerr != nil || n == 0 {
			return Request{}, false
		}
		have = n
		if have >= 4 {
			size, err := strconv.ParseUint(string(buf[:4]), 16, 16)
			if err != nil || size < 4 {
				return Request{}, false
			}
			want = int(size)
		}
		if have < want {
			time.Sleep(time.Millisecond)
		}
	}
	if have < want {
		return Request{}, false
	}
	line, _, _ := strings.Cut(string(buf[4:want]), "\x00")
	service, repo, ok := strings.Cut(line, " ")
	if !ok {
		return Request{}, false
	}
	return Request{Protocol: "git", Repo: repo, Service: service}, true
}

// httpHandler serves git's smart HTTP protocol through git http-backend.
func (s *Server) httpHandler(backend string) http.Handler {
	env := append(cleanEnv(), "GIT_PROJECT_ROOT="+s.root, "GIT_HTTP_EXPORT_ALL=1")
	cgiHandler := &cgi.Handler{Path: backend, Root: "/", Dir: s.root, Env: env}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req := Request{Protocol: "http", Method: r.Method, Path: r.URL.Path, Service: r.URL.Query().Get("service")}
		switch {
		case strings.HasSuffix(r.URL.Path, "/info/refs"):
			req.Repo = strings.TrimSuffix(r.URL.Path, "/info/refs")
		case strings.HasSuffix(r.URL.Path, "/git-upload-pack"):
			req.Repo = strings.TrimSuffix(r.URL.Path, "/git-upload-pack")
			req.Service = "git-upload-pack"
		case strings.HasSuffix(r.URL.Path, "/git-receive-pack"):
			req.Repo = strings.TrimSuffix(r.URL.Path, "/git-receive-pack")
			req.Service = "git-receive-pack"
		}
		s.record(req)
		s.waitWhileHeld()
		if req.Service == "git-receive-pack" {
			http.Error(w, "pushing is not served", http.StatusForbidden)
			return
		}
		cgiHandler.ServeHTTP(w, r)
	})
}

// switchListener is a net.Listener whose socket can be closed (Down) and
// opened again on the same address (Up) while its user keeps calling Accept.
type switchListener struct {
	addr  *net.TCPAddr
	conns chan net.Conn
	done  chan struct{}

	mu      sync.Mutex
	current net.Listener
	once    sync.Once
}

func listen(addr string) (*switchListener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("failed to listen on %s: %w", addr, err)
	}
	sl := &switchListener{addr: l.Addr().(*net.TCPAddr), conns: make(chan net.Conn), done: make(chan struct{})}
	sl.serve(l)
	return sl, nil
}

func (l *switchListener) serve(inner net.Listener) {
	l.current = inner
	go func() {
		for {
			conn, err := inner.Accept()
			if err != nil {
				return
			}
			select {
			case l.conns <- conn:
			case <-l.done:
				conn.Close()
				return
			}
		}
	}()
}

func (l *switchListener) down() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.current != nil {
		l.current.Close()
		l.current = nil
	}
}

func (l *switchListener) up() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.current != nil {
		return nil
	}
	var inner net.Listener
	var err error
	// The port was ours a moment ago; retry briefly while the kernel lets go
	// of it.
	for range 50 {
		if inner, err = net.Listen("tcp", l.addr.String()); err == nil {
			l.serve(inner)
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("failed to listen again on %s: %w", l.addr, err)
}

// Accept waits for the next connection, across Down and Up.
func (l *switchListener) Accept() (net.Conn, error) {
	select {
	case conn := <-l.conns:
		return conn, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops listening for good.
func (l *switchListener) Close() error {
	l.once.Do(func() { close(l.done) })
	l.down()
	return nil
}

// Addr returns the address listened on.
func (l *switchListener) Addr() net.Addr { return l.addr }
