package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/volume-agent/volume-agent/pkg/source"
	"github.com/volume-agent/volume-agent/pkg/volumemanager"
)

// ErrNoAgent is returned by the Client when nothing answers on the socket.
var ErrNoAgent = errors.New("no volume-agent is running")

// StatusError is an error answer of the API.
type StatusError struct {
	// Code is the HTTP status code.
	Code    int
	Message string
}

func (e *StatusError) Error() string { return e.Message }

// Client talks to the agent's API on its unix socket.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a client of the agent listening on socket. Each request
// is bounded by timeout (0 means 30 s).
func NewClient(socket string, timeout time.Duration) *Client {
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	return &Client{
		socket: socket,
		http: &http.Client{
			Timeout: timeout,
			Transport: &http.Transport{
				DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					return dialer.DialContext(ctx, "unix", socket)
				},
			},
		},
	}
}

// Socket returns the socket the client talks to.
func (c *Client) Socket() string { return c.socket }

// do sends a request and decodes a JSON answer into out (when not nil).
// Errors: ErrNoAgent when the socket does not answer, *StatusError for an
// error answer.
func (c *Client) do(ctx context.Context, method, path string, body io.Reader, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://volume-agent"+path, body)
	if err != nil {
		return fmt.Errorf("failed to build request: %w", err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("%w: nothing answers on %s (start it with `volume-agent run`, or give its socket with --socket)", ErrNoAgent, c.socket)
		}
		return fmt.Errorf("failed to reach volume-agent on %s: %w", c.socket, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("failed to read the answer of %s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		var e ErrorResponse
		msg := strings.TrimSpace(string(data))
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		return &StatusError{Code: resp.StatusCode, Message: msg}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("failed to decode the answer of %s %s: %w", method, path, err)
	}
	return nil
}

// Healthz returns nil when the agent answers.
func (c *Client) Healthz(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/healthz", nil, nil)
}

// Readyz returns nil when the agent is ready, and a *StatusError with code
// 503 before.
func (c *Client) Readyz(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/readyz", nil, nil)
}

// Status returns the agent's summary.
func (c *Client) Status(ctx context.Context) (StatusResponse, error) {
	var out StatusResponse
	return out, c.do(ctx, http.MethodGet, "/status", nil, &out)
}

// Pods returns every pod's status.
func (c *Client) Pods(ctx context.Context) ([]volumemanager.PodStatus, error) {
	var out []volumemanager.PodStatus
	return out, c.do(ctx, http.MethodGet, "/pods", nil, &out)
}

// Pod returns one pod's status; a *StatusError with code 404 when unknown.
func (c *Client) Pod(ctx context.Context, uid types.UID) (volumemanager.PodStatus, error) {
	var out volumemanager.PodStatus
	return out, c.do(ctx, http.MethodGet, "/pods/"+url.PathEscape(string(uid)), nil, &out)
}

// Volumes returns every volume's status.
func (c *Client) Volumes(ctx context.Context) ([]volumemanager.VolumeStatus, error) {
	var out []volumemanager.VolumeStatus
	return out, c.do(ctx, http.MethodGet, "/volumes", nil, &out)
}

// Plugins returns the plugins and their health.
func (c *Client) Plugins(ctx context.Context) ([]volumemanager.PluginStatus, error) {
	var out []volumemanager.PluginStatus
	return out, c.do(ctx, http.MethodGet, "/plugins", nil, &out)
}

// Events returns the agent's events, oldest first.
func (c *Client) Events(ctx context.Context) ([]volumemanager.Event, error) {
	var out []volumemanager.Event
	return out, c.do(ctx, http.MethodGet, "/events", nil, &out)
}

// Apply sends a manifest to add or replace its objects. An invalid manifest
// is a *StatusError with code 422 listing every problem.
func (c *Client) Apply(ctx context.Context, manifest []byte) (ApplyResponse, error) {
	var out ApplyResponse
	return out, c.do(ctx, http.MethodPost, "/pods", bytes.NewReader(manifest), &out)
}

// DeletePod removes a pod added through Apply; a *StatusError with code 404
// when unknown, 409 when another source declares it.
func (c *Client) DeletePod(ctx context.Context, uid types.UID) error {
	return c.do(ctx, http.MethodDelete, "/pods/"+url.PathEscape(string(uid)), nil, nil)
}

// DeleteObject removes a Pod, PersistentVolume, claim or Secret added through Apply,
// by name; a *StatusError with code 404 when the API does not keep it.
func (c *Client) DeleteObject(ctx context.Context, ref source.ObjectRef) error {
	return c.do(ctx, http.MethodDelete, objectPath(ref), nil, nil)
}
