package flocker

import (
	"net/http"
	"strings"
	"time"
)

// ErrorRule makes matching requests fail before they reach the API.
type ErrorRule struct {
	// Method matches the request method; "" matches any.
	Method string
	// Path matches the URL path exactly ("/v1/state/datasets"), or as a prefix when it ends in "/"
	// ("/v1/" matches every call); "" matches any.
	Path string
	// Status is the HTTP status returned, with a {"description": "Injected failure."} body.
	// Zero closes the connection without any response, as a crashing server would.
	Status int
	// Count is how many matching requests fail; zero or less fails them until ClearFaults.
	Count int
}

type errorRule struct {
	ErrorRule
	left int // remaining failures; <0 means unlimited
}

func (r ErrorRule) matches(method, path string) bool {
	if r.Method != "" && r.Method != method {
		return false
	}
	switch {
	case r.Path == "":
		return true
	case strings.HasSuffix(r.Path, "/"):
		return strings.HasPrefix(path, r.Path)
	default:
		return path == r.Path
	}
}

// InjectError adds a rule making matching requests fail. Rules are tried in the order added; a
// request consumes at most one failure.
func (e *Emulator) InjectError(rule ErrorRule) {
	left := rule.Count
	if left <= 0 {
		left = -1
	}
	e.mu.Lock()
	e.faults = append(e.faults, &errorRule{ErrorRule: rule, left: left})
	e.mu.Unlock()
}

// ClearFaults removes every error rule and the injected latency.
func (e *Emulator) ClearFaults() {
	e.mu.Lock()
	e.faults = nil
	e.latency = 0
	e.mu.Unlock()
}

func (e *Emulator) takeFault(req *http.Request) *errorRule {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i, r := range e.faults {
		if !r.matches(req.Method, req.URL.Path) {
			continue
		}
		if r.left > 0 {
			r.left--
			if r.left == 0 {
				e.faults = append(e.faults[:i:i], e.faults[i+1:]...)
			}
		}
		return r
	}
	return nil
}

// Request is one logged API request.
type Request struct {
	// Time is when the request arrived.
	Time time.Time
	// Method and Path are the request's method and URL path.
	Method, Path string
	// Status is the response status; zero when the connection was dropped.
	Status int
	// Injected reports that an ErrorRule answered the request.
	Injected bool
	// ClientCN is the common name of the client certificate.
	ClientCN string
	// Duration is the time spent handling it, injected latency included.
	Duration time.Duration
}

func (e *Emulator) logRequest(req *http.Request, status int, injected bool, took time.Duration) {
	cn := ""
	if req.TLS != nil && len(req.TLS.PeerCertificates) > 0 {
		cn = req.TLS.PeerCertificates[0].Subject.CommonName
	}
	entry := Request{Time: e.clock.Now().Add(-took), Method: req.Method, Path: req.URL.Path, Status: status, Injected: injected, ClientCN: cn, Duration: took}
	e.mu.Lock()
	e.requests = append(e.requests, entry)
	e.mu.Unlock()
	e.logger.V(4).Info("API request", "method", entry.Method, "path", entry.Path, "status", status, "injected", injected)
}

// Requests returns the request log, oldest first.
func (e *Emulator) Requests() []Request {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Request(nil), e.requests...)
}

// CountRequests counts logged requests matching method and path ("" matches any; a path ending in
// "/" matches as a prefix).
func (e *Emulator) CountRequests(method, path string) int {
	filter := ErrorRule{Method: method, Path: path}
	n := 0
	for _, r := range e.Requests() {
		if filter.matches(r.Method, r.Path) {
			n++
		}
	}
	return n
}

// ResetRequests empties the request log.
func (e *Emulator) ResetRequests() {
	e.mu.Lock()
	e.requests = nil
	e.mu.Unlock()
}
