package flocker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"

	flockerclient "github.com/clusterhq/flocker-go"

	"github.com/volume-agent/volume-agent/pkg/volume"
)

// requestTimeout bounds one call to the control service; flocker-go sets none.
const requestTimeout = 30 * time.Second

// flocker-go returns these errors without exporting them; their texts are fixed
// in its source and tests.
const (
	errTextNameNotFound  = "Configuration not found by Name"
	errTextStateNotFound = "State not found by Dataset ID"
)

// clientFactory makes the control service client for this node's IP. Errors
// are volume errors: a certificate that cannot be loaded is Final and names
// the file.
type clientFactory func(cfg Config, nodeIP string) (flockerclient.Clientable, error)

// configurationReader is implemented by clients that can read a dataset's
// configuration by id, which flocker-go's Clientable cannot; it tells a
// dataset that does not exist from one the state has not caught up with.
type configurationReader interface {
	DatasetConfiguration(datasetID string) (datasetConfiguration, error)
}

// datasetConfiguration is what the configuration says about one dataset id.
type datasetConfiguration struct {
	Found, Deleted bool
	Primary        string
}

// versionReader is implemented by clients that can read the Flocker version.
type versionReader interface {
	Version() (string, error)
}

// apiClient is flocker-go's client plus the two reads it lacks.
type apiClient struct {
	*flockerclient.Client
	baseURL string
}

var (
	_ flockerclient.Clientable = &apiClient{}
	_ configurationReader      = &apiClient{}
	_ versionReader            = &apiClient{}
)

// newFlockerClient loads the CA and the API user certificate and returns a
// flocker-go client over mutual TLS.
func newFlockerClient(cfg Config, nodeIP string) (flockerclient.Clientable, error) {
	caPEM, err := os.ReadFile(cfg.CAFile)
	if err != nil {
		return nil, volume.NewFinalError(fmt.Errorf("failed to read the Flocker CA certificate (caFile) %q: %w", cfg.CAFile, err))
	}
	if !x509.NewCertPool().AppendCertsFromPEM(caPEM) {
		return nil, volume.Finalf("failed to load the Flocker CA certificate (caFile) %q: no PEM certificate in it", cfg.CAFile)
	}
	if _, err := tls.LoadX509KeyPair(cfg.ClientCertFile, cfg.ClientKeyFile); err != nil {
		return nil, volume.NewFinalError(fmt.Errorf("failed to load the Flocker client certificate (clientCertFile) %q with its key (clientKeyFile) %q: %w",
			cfg.ClientCertFile, cfg.ClientKeyFile, err))
	}
	c, err := flockerclient.NewClient(cfg.ControlServiceHost, cfg.Port, nodeIP, cfg.CAFile, cfg.ClientKeyFile, cfg.ClientCertFile)
	if err != nil {
		return nil, volume.NewFinalError(fmt.Errorf("failed to create the Flocker client: %w", err))
	}
	c.Client.Timeout = requestTimeout
	return &apiClient{Client: c, baseURL: "https://" + cfg.address() + "/v1"}, nil
}

func (c *apiClient) getJSON(path string, into any) error {
	req, err := http.NewRequest(http.MethodGet, c.baseURL+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("expected 200 from GET %s, got %d", path, resp.StatusCode)
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(into)
}

// DatasetConfiguration reads the dataset's entry in /v1/configuration/datasets.
func (c *apiClient) DatasetConfiguration(datasetID string) (datasetConfiguration, error) {
	var list []struct {
		DatasetID string `json:"dataset_id"`
		Primary   string `json:"primary"`
		Deleted   bool   `json:"deleted"`
	}
	if err := c.getJSON("/configuration/datasets", &list); err != nil {
		return datasetConfiguration{}, err
	}
	for _, d := range list {
		if d.DatasetID == datasetID {
			return datasetConfiguration{Found: true, Deleted: d.Deleted, Primary: d.Primary}, nil
		}
	}
	return datasetConfiguration{}, nil
}

// Version reads /v1/version.
func (c *apiClient) Version() (string, error) {
	var v struct {
		Flocker string `json:"flocker"`
	}
	err := c.getJSON("/version", &v)
	return v.Flocker, err
}

// getClient returns the client, creating it on first use. It also returns
// this node's IP, as the control service lists it.
func (p *plugin) getClient(ctx context.Context) (flockerclient.Clientable, string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.client != nil {
		return p.client, p.nodeIP, nil
	}
	nodeIP, err := p.resolveNodeIP(ctx)
	if err != nil {
		return nil, "", err
	}
	client, err := p.newClient(p.cfg, nodeIP)
	if err != nil {
		return nil, nodeIP, err
	}
	p.client, p.nodeIP = client, nodeIP
	return client, nodeIP, nil
}

// dropClient forgets the client, so that the next use loads the certificates again.
func (p *plugin) dropClient() {
	p.mu.Lock()
	p.client = nil
	p.mu.Unlock()
}

// resolveNodeIP returns the configured node IP or, when none is, the local
// address this host uses to reach the control service.
func (p *plugin) resolveNodeIP(ctx context.Context) (string, error) {
	if ip := p.host.GetNodeIP(); ip != nil {
		return ip.String(), nil
	}
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, "udp", p.cfg.address()) // sends nothing
	if err != nil {
		return "", volume.NewTransientError(fmt.Errorf("failed to find this node's IP: none is configured (--node-ip) and there is no route to the Flocker control service at %s: %w", p.cfg.address(), err))
	}
	defer conn.Close()
	addr, ok := conn.LocalAddr().(*net.UDPAddr)
	if !ok {
		return "", volume.Finalf("failed to find this node's IP: unexpected local address %v", conn.LocalAddr())
	}
	return addr.IP.String(), nil
}

// callAPI runs fn, a blocking flocker-go call, and returns early when ctx is
// done; the abandoned call ends within requestTimeout.
func callAPI[T any](ctx context.Context, fn func() (T, error)) (T, error) {
	var zero T
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	type result struct {
		value T
		err   error
	}
	done := make(chan result, 1)
	go func() {
		v, err := fn()
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.value, r.err
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// apiError classifies an error of a control service call made to do what: a
// TLS failure is Final and says which certificate is at fault; an unreachable
// service, a 5xx or an unexpected answer is Transient.
func (p *plugin) apiError(err error, what string) error {
	if tlsErr := p.tlsFailure(err); tlsErr != nil {
		p.dropClient()
		return volume.NewFinalError(fmt.Errorf("failed to %s: %w", what, tlsErr))
	}
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		return volume.NewTransientError(fmt.Errorf("failed to %s: the Flocker control service at %s is unreachable: %w", what, p.cfg.address(), err))
	}
	return volume.NewTransientError(fmt.Errorf("failed to %s: %w", what, err))
}

// tlsFailure describes err if it is a TLS failure, naming the certificate at fault; else nil.
func (p *plugin) tlsFailure(err error) error {
	var hostnameErr x509.HostnameError
	var unknownAuthorityErr x509.UnknownAuthorityError
	var invalidErr x509.CertificateInvalidError
	var verificationErr *tls.CertificateVerificationError
	var opErr *net.OpError
	var recordErr tls.RecordHeaderError
	switch {
	case errors.As(err, &hostnameErr):
		return fmt.Errorf("TLS failure: the control service's certificate is not valid for the host %q (controlServiceHost): %w", p.cfg.ControlServiceHost, err)
	case errors.As(err, &unknownAuthorityErr), errors.As(err, &invalidErr), errors.As(err, &verificationErr):
		return fmt.Errorf("TLS failure: the control service's certificate is not trusted by the CA certificate (caFile) %q: %w", p.cfg.CAFile, err)
	case errors.As(err, &opErr) && opErr.Op == "remote error":
		return fmt.Errorf("TLS failure: the control service refused the client certificate (clientCertFile) %q: %w", p.cfg.ClientCertFile, err)
	case errors.As(err, &recordErr):
		return fmt.Errorf("TLS failure: %s does not speak TLS: %w", p.cfg.address(), err)
	}
	return nil
}

func isNameNotFound(err error) bool  { return err != nil && err.Error() == errTextNameNotFound }
func isStateNotFound(err error) bool { return err != nil && err.Error() == errTextStateNotFound }
