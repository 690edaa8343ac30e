package flocker

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/klog/v2"
	"k8s.io/mount-utils"
	"k8s.io/utils/clock"
)

// Version is the Flocker version the emulator reports on /v1/version.
const Version = "1.15.0"

// DefaultMoveDelay is the flocker-emulator command's default state lag.
const DefaultMoveDelay = time.Second

// DefaultPort is the port of the real Flocker control service.
const DefaultPort = 4523

// Node is a Flocker node (a dataset agent) as listed by /v1/state/nodes.
type Node struct {
	// UUID is the node's uuid. When empty in a Config, it is derived from Host (stable across runs).
	UUID string
	// Host is the node's IP address, which flocker-go compares with its client IP.
	Host string
	// Era is the node's era for /v1/state/nodes/by_era; derived from UUID when empty.
	Era string
}

// Config configures an Emulator. Only StateDir is required.
type Config struct {
	// ListenAddress is where the HTTPS API listens. Default "127.0.0.1:0" (a free port).
	ListenAddress string
	// StateDir holds the persisted configuration (configuration.json), the datasets' backing
	// directories (backing/<id>) and, by default, the certificates and mount points.
	StateDir string
	// CertDir holds the PKI (see CertFilesIn). Default <StateDir>/certs. Missing files are generated.
	CertDir string
	// MountRoot is where datasets on the local node are bind-mounted (<MountRoot>/<id>, the state's
	// "path"). Default <StateDir>/flocker.
	MountRoot string
	// MoveDelay is how long a created or moved dataset is listed in the state without primary and
	// path before it shows up mounted on its new primary. Zero settles at the next request.
	MoveDelay time.Duration
	// LocalNode is this host's node: its datasets are real bind mounts. Host defaults to 127.0.0.1.
	LocalNode Node
	// RemoteNodes are fake nodes listed next to the local one; their datasets are not mounted.
	RemoteNodes []Node
	// Lenient accepts dataset ids and primaries that are not uuid4s (letters, digits, '.', '_' and
	// '-' only, as they become directory names), for clients whose tests use ids like "uuid1".
	Lenient bool
	// APIUserName is used when certificates are generated (CN "user-<name>").
	APIUserName string
	// Mounter performs the bind mounts. Default mount.New("").
	Mounter mount.Interface
	// Clock drives the state lag, lease expiry and injected latency. Default the real clock.
	Clock clock.Clock
	// Logger receives structured logs. Default klog.Background().
	Logger *klog.Logger
}

// Emulator is a running Flocker control service emulator. All methods are safe for concurrent use.
type Emulator struct {
	cfg    Config
	certs  CertFiles
	clock  clock.Clock
	logger klog.Logger
	tls    *tls.Config

	mu           sync.Mutex
	addr         string // host:port actually bound
	listener     net.Listener
	server       *http.Server
	serveDone    chan struct{}
	moveDelay    time.Duration
	nodes        []*nodeEntry
	datasets     map[string]*dataset
	order        []string // dataset ids in creation order
	leases       map[string]*lease
	faults       []*errorRule
	latency      time.Duration
	requests     []Request
	rejections   []string
	lastMountErr error
	closed       bool

	kick     chan struct{}
	stopLoop chan struct{}
	loopDone chan struct{}
}

type nodeEntry struct {
	Node
	local        bool
	disconnected bool
}

// Start validates cfg, prepares the state directory and certificates, restores any persisted
// configuration (datasets on the local node are mounted again) and starts serving.
// Call Close to stop it and unmount what it mounted.
func Start(cfg Config) (*Emulator, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("invalid emulator configuration: stateDir is required")
	}
	stateDir, err := filepath.Abs(cfg.StateDir)
	if err != nil {
		return nil, fmt.Errorf("invalid emulator configuration: stateDir %q: %w", cfg.StateDir, err)
	}
	cfg.StateDir = stateDir
	if cfg.ListenAddress == "" {
		cfg.ListenAddress = "127.0.0.1:0"
	}
	if cfg.CertDir == "" {
		cfg.CertDir = filepath.Join(cfg.StateDir, "certs")
	}
	if cfg.MountRoot == "" {
		cfg.MountRoot = filepath.Join(cfg.StateDir, "flocker")
	}
	if cfg.MoveDelay < 0 {
		return nil, fmt.Errorf("invalid emulator configuration: moveDelay %v must not be negative", cfg.MoveDelay)
	}
	if cfg.Mounter == nil {
		cfg.Mounter = mount.New("")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	logger := klog.Background()
	if cfg.Logger != nil {
		logger = *cfg.Logger
	}
	logger = logger.WithName("flocker-emulator")

	e := &Emulator{
		cfg:       cfg,
		clock:     cfg.Clock,
		logger:    logger,
		moveDelay: cfg.MoveDelay,
		datasets:  map[string]*dataset{},
		leases:    map[string]*lease{},
		kick:      make(chan struct{}, 1),
		stopLoop:  make(chan struct{}),
		loopDone:  make(chan struct{}),
	}
	if err := e.setNodes(cfg.LocalNode, cfg.RemoteNodes); err != nil {
		return nil, err
	}
	for _, dir := range []string{cfg.StateDir, e.backingRoot(), cfg.MountRoot} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("failed to create emulator directory: %w", err)
		}
	}
	certs, generated, err := EnsureCerts(cfg.CertDir, CertOptions{UserName: cfg.APIUserName})
	if err != nil {
		return nil, fmt.Errorf("failed to prepare certificates in %s: %w", cfg.CertDir, err)
	}
	if generated {
		logger.V(1).Info("Generated throwaway cluster certificates", "certDir", cfg.CertDir)
	}
	e.certs = certs
	if e.tls, err = e.serverTLSConfig(); err != nil {
		return nil, err
	}
	if err := e.restore(); err != nil {
		return nil, err
	}

	e.mu.Lock()
	e.reconcileLocked()
	e.mu.Unlock()
	go e.loop()

	if err := e.listen(cfg.ListenAddress); err != nil {
		_ = e.Close()
		return nil, err
	}
	logger.V(1).Info("Flocker control service emulator started", "url", e.URL(), "localNode", e.LocalNode().UUID, "stateDir", cfg.StateDir)
	return e, nil
}

// StartForTest starts an emulator for a test: StateDir defaults to t.TempDir(), and Close is
// registered with t.Cleanup, so mounts are gone even when the test fails. It fails the test on error.
func StartForTest(t testing.TB, cfg Config) *Emulator {
	t.Helper()
	if cfg.StateDir == "" {
		cfg.StateDir = t.TempDir()
	}
	e, err := Start(cfg)
	if err != nil {
		t.Fatalf("failed to start flocker emulator: %v", err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("failed to close flocker emulator: %v", err)
		}
	})
	return e
}

func (e *Emulator) setNodes(local Node, remotes []Node) error {
	if local.Host == "" {
		local.Host = "127.0.0.1"
	}
	all := append([]Node{local}, remotes...)
	seen := map[string]bool{}
	for i := range all {
		n := &all[i]
		if n.Host == "" {
			return fmt.Errorf("invalid emulator configuration: node %d has no host", i)
		}
		if n.UUID == "" {
			n.UUID = derivedUUID("node:" + n.Host)
		}
		n.UUID = strings.ToLower(n.UUID)
		if !e.validID(n.UUID) {
			return fmt.Errorf("invalid emulator configuration: node uuid %q is not a uuid4", n.UUID)
		}
		if seen[n.UUID] {
			return fmt.Errorf("invalid emulator configuration: node uuid %q is listed twice", n.UUID)
		}
		seen[n.UUID] = true
		if n.Era == "" {
			n.Era = derivedUUID("era:" + n.UUID)
		}
		e.nodes = append(e.nodes, &nodeEntry{Node: *n, local: i == 0})
	}
	return nil
}

// derivedUUID returns a uuid4-formatted id derived from name, so ids stay the same across runs.
func derivedUUID(name string) string {
	sum := sha256.Sum256([]byte(name))
	b := sum[:16]
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func (e *Emulator) serverTLSConfig() (*tls.Config, error) {
	pair, err := tls.LoadX509KeyPair(e.certs.ControlCert, e.certs.ControlKey)
	if err != nil {
		return nil, fmt.Errorf("failed to load control service certificate: %w", err)
	}
	caPEM, err := os.ReadFile(e.certs.CACert)
	if err != nil {
		return nil, fmt.Errorf("failed to read cluster CA: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("failed to parse cluster CA %s: no PEM certificate", e.certs.CACert)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{pair},
		ClientCAs:    roots,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		// Flocker accepts only API user certificates: any other client fails the handshake.
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return e.reject("no client certificate")
			}
			cn := cs.PeerCertificates[0].Subject.CommonName
			if !strings.HasPrefix(cn, apiUserCommonNamePrefix) {
				return e.reject(fmt.Sprintf("client certificate CN %q does not start with %q", cn, apiUserCommonNamePrefix))
			}
			return nil
		},
	}, nil
}

func (e *Emulator) reject(reason string) error {
	e.mu.Lock()
	e.rejections = append(e.rejections, reason)
	e.mu.Unlock()
	e.logger.V(1).Info("Refused client at the TLS handshake", "reason", reason)
	return errors.New(reason)
}

func (e *Emulator) listen(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("failed to listen on %s: %w", addr, err)
	}
	srv := &http.Server{
		Handler:           e.handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(handshakeLogWriter{e}, "", 0),
	}
	done := make(chan struct{})
	e.mu.Lock()
	e.addr, e.listener, e.server, e.serveDone = l.Addr().String(), l, srv, done
	e.mu.Unlock()
	go func() {
		defer close(done)
		if err := srv.Serve(tls.NewListener(l, e.tls)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			e.logger.Error(err, "Flocker emulator stopped serving")
		}
	}()
	return nil
}

// handshakeLogWriter sends net/http's own messages (mostly TLS handshake errors) to the logger.
type handshakeLogWriter struct{ e *Emulator }

func (w handshakeLogWriter) Write(p []byte) (int, error) {
	w.e.logger.V(2).Info("HTTP server message", "message", strings.TrimSpace(string(p)))
	return len(p), nil
}

// StopServing closes the listener and every open connection, so clients see "connection refused",
// as when the control service is down. The configuration, state and mounts are kept.
// It is a no-op when not serving.
func (e *Emulator) StopServing() error {
	e.mu.Lock()
	srv, done := e.server, e.serveDone
	e.server, e.listener, e.serveDone = nil, nil, nil
	e.mu.Unlock()
	if srv == nil {
		return nil
	}
	err := srv.Close()
	<-done
	if err != nil {
		return fmt.Errorf("failed to stop serving: %w", err)
	}
	return nil
}

// StartServing listens again on the address used before StopServing. It is a no-op when serving.
func (e *Emulator) StartServing() error {
	e.mu.Lock()
	serving, addr, closed := e.server != nil, e.addr, e.closed
	e.mu.Unlock()
	if closed {
		return errors.New("failed to start serving: emulator is closed")
	}
	if serving {
		return nil
	}
	return e.listen(addr)
}

// Close stops serving and the state loop, and unmounts every dataset mount point it made. The
// persisted configuration and backing directories are kept. It is idempotent.
func (e *Emulator) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	e.mu.Unlock()

	var errs []error
	if err := e.StopServing(); err != nil {
		errs = append(errs, err)
	}
	close(e.stopLoop)
	<-e.loopDone

	e.mu.Lock()
	defer e.mu.Unlock()
	for _, id := range e.order {
		if err := e.unmountLocked(id); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("failed to close flocker emulator: %w", err)
	}
	e.logger.V(1).Info("Flocker control service emulator stopped")
	return nil
}

// Addr returns the "host:port" the API listens on.
func (e *Emulator) Addr() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.addr
}

// Host returns the host part of Addr.
func (e *Emulator) Host() string {
	host, _, _ := net.SplitHostPort(e.Addr())
	return host
}

// Port returns the port part of Addr.
func (e *Emulator) Port() int {
	_, port, _ := net.SplitHostPort(e.Addr())
	n, _ := strconv.Atoi(port)
	return n
}

// URL returns the API's base URL, e.g. "https://127.0.0.1:4523/v1".
func (e *Emulator) URL() string {
	return "https://" + e.Addr() + "/v1"
}

// Certs returns the paths of the cluster CA, control service and API user certificates.
func (e *Emulator) Certs() CertFiles { return e.certs }

// LocalNode returns the node whose datasets are bind-mounted on this host.
func (e *Emulator) LocalNode() Node {
	return e.nodes[0].Node
}

// RemoteNodes returns the fake remote nodes.
func (e *Emulator) RemoteNodes() []Node {
	var out []Node
	for _, n := range e.nodes[1:] {
		out = append(out, n.Node)
	}
	return out
}

// MountPath returns where a dataset is mounted when its state primary is the local node: the
// state's "path".
func (e *Emulator) MountPath(datasetID string) string {
	return filepath.Join(e.cfg.MountRoot, datasetID)
}

// BackingDir returns the directory holding a dataset's data, on whichever node it is.
func (e *Emulator) BackingDir(datasetID string) string {
	return filepath.Join(e.backingRoot(), datasetID)
}

func (e *Emulator) backingRoot() string { return filepath.Join(e.cfg.StateDir, "backing") }

// SetMoveDelay changes the state lag for transitions that start from now on.
func (e *Emulator) SetMoveDelay(d time.Duration) {
	e.mu.Lock()
	e.moveDelay = d
	e.mu.Unlock()
}

// SetLatency delays every request by d before it is handled (zero removes the delay).
func (e *Emulator) SetLatency(d time.Duration) {
	e.mu.Lock()
	e.latency = d
	e.mu.Unlock()
}

// SetNodeConnected lists or hides a node in /v1/state/nodes, as when its agent connects or
// disconnects. A move to a disconnected node does not complete until it connects again.
func (e *Emulator) SetNodeConnected(nodeUUID string, connected bool) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := e.nodeLocked(nodeUUID)
	if n == nil {
		return fmt.Errorf("failed to change node connection: unknown node %q", nodeUUID)
	}
	n.disconnected = !connected
	e.kickLocked()
	return nil
}

// Rejections returns why clients were refused at the TLS handshake because of their certificate
// CN, oldest first. Clients whose certificate does not verify against the CA are refused by the
// TLS library before this check and are not listed.
func (e *Emulator) Rejections() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.rejections...)
}

func (e *Emulator) nodeLocked(nodeUUID string) *nodeEntry {
	for _, n := range e.nodes {
		if n.UUID == nodeUUID {
			return n
		}
	}
	return nil
}

func (e *Emulator) isLocal(nodeUUID string) bool {
	return nodeUUID != "" && nodeUUID == e.nodes[0].UUID
}

func (e *Emulator) kickLocked() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// loop completes state transitions and expires leases when they are due, between requests.
func (e *Emulator) loop() {
	defer close(e.loopDone)
	for {
		e.mu.Lock()
		next := e.reconcileLocked()
		e.mu.Unlock()
		var timerC <-chan time.Time
		var timer clock.Timer
		if !next.IsZero() {
			wait := next.Sub(e.clock.Now())
			if wait < time.Millisecond {
				wait = time.Millisecond
			}
			timer = e.clock.NewTimer(wait)
			timerC = timer.C()
		}
		select {
		case <-timerC:
		case <-e.kick:
		case <-e.stopLoop:
			if timer != nil {
				timer.Stop()
			}
			return
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// waitLatency sleeps for the injected latency, or until ctx is done.
func (e *Emulator) waitLatency(ctx context.Context) {
	e.mu.Lock()
	d := e.latency
	e.mu.Unlock()
	if d <= 0 {
		return
	}
	select {
	case <-e.clock.After(d):
	case <-ctx.Done():
	}
}
