package flocker

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"k8s.io/mount-utils"
	testingclock "k8s.io/utils/clock/testing"
)

// startFake starts an emulator with a fake mounter and a fake clock, so that no root is needed.
func startFake(t *testing.T, cfg Config) (*Emulator, *testingclock.FakeClock, *mount.FakeMounter) {
	t.Helper()
	fakeClock := testingclock.NewFakeClock(time.Date(2016, 11, 1, 12, 0, 0, 0, time.UTC))
	mounter := mount.NewFakeMounter(nil)
	if cfg.Clock == nil {
		cfg.Clock = fakeClock
	}
	if cfg.Mounter == nil {
		cfg.Mounter = mounter
	}
	return StartForTest(t, cfg), fakeClock, mounter
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: real bind mounts need root")
	}
}

// apiClient speaks HTTPS with a client certificate to an emulator.
type apiClient struct {
	t    *testing.T
	base string
	http *http.Client
}

func newAPIClient(t *testing.T, e *Emulator) *apiClient {
	t.Helper()
	c := e.Certs()
	return newAPIClientWith(t, e, c.CACert, c.ClientCert, c.ClientKey)
}

func newAPIClientWith(t *testing.T, e *Emulator, caFile, certFile, keyFile string) *apiClient {
	t.Helper()
	pool := x509.NewCertPool()
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool.AppendCertsFromPEM(caPEM)
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if certFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	transport := &http.Transport{TLSClientConfig: cfg}
	t.Cleanup(transport.CloseIdleConnections)
	return &apiClient{t: t, base: "https://" + e.Addr(), http: &http.Client{Transport: transport, Timeout: 30 * time.Second}}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("failed to decode response %q: %v", r.body, err)
	}
}

func (r response) description(t *testing.T) string {
	t.Helper()
	var body struct {
		Description string `json:"description"`
	}
	r.decode(t, &body)
	return body.Description
}

// try sends a request; body is JSON-encoded unless it is a string, which is sent as is.
func (c *apiClient) try(method, path string, body any, header map[string]string) (response, error) {
	var reader io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		reader = strings.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			return response{}, err
		}
		reader = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, c.base+path, reader)
	if err != nil {
		return response{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: data}, err
}

func (c *apiClient) do(method, path string, body any) response {
	c.t.Helper()
	r, err := c.try(method, path, body, nil)
	if err != nil {
		c.t.Fatalf("%s %s failed: %v", method, path, err)
	}
	return r
}

func expectStatus(t *testing.T, r response, want int) {
	t.Helper()
	if r.status != want {
		t.Fatalf("got status %d, want %d; body %s", r.status, want, r.body)
	}
}

type stateEntry struct {
	DatasetID   string `json:"dataset_id"`
	Primary     string `json:"primary"`
	Path        string `json:"path"`
	MaximumSize *int64 `json:"maximum_size"`
}

// stateOf returns the dataset's /v1/state/datasets entry, or false when it is not listed.
func (c *apiClient) stateOf(id string) (stateEntry, bool) {
	c.t.Helper()
	r := c.do(http.MethodGet, "/v1/state/datasets", nil)
	expectStatus(c.t, r, http.StatusOK)
	var entries []stateEntry
	r.decode(c.t, &entries)
	for _, s := range entries {
		if s.DatasetID == id {
			return s, true
		}
	}
	return stateEntry{}, false
}

type configEntry struct {
	DatasetID   string            `json:"dataset_id"`
	Primary     string            `json:"primary"`
	Deleted     bool              `json:"deleted"`
	Metadata    map[string]string `json:"metadata"`
	MaximumSize *int64            `json:"maximum_size"`
}
