package flocker

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestGenerateCerts(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	files, err := GenerateCerts(dir, CertOptions{UserName: "alice", Hosts: []string{"flocker.example", "192.0.2.7"}})
	if err != nil {
		t.Fatal(err)
	}
	for name, path := range map[string]string{"cluster.crt": files.CACert, "control-service.crt": files.ControlCert, "control-service.key": files.ControlKey, "apiuser.crt": files.ClientCert, "apiuser.key": files.ClientKey} {
		if filepath.Base(path) != name || filepath.Dir(path) != dir {
			t.Errorf("file %s is at %s", name, path)
		}
	}
	for _, key := range []string{files.CAKey, files.ControlKey, files.ClientKey} {
		st, err := os.Stat(key)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("key %s has mode %v, want 0600", key, st.Mode().Perm())
		}
	}
	roots := x509.NewCertPool()
	caPEM, _ := os.ReadFile(files.CACert)
	roots.AppendCertsFromPEM(caPEM)

	server := loadLeaf(t, files.ControlCert, files.ControlKey)
	if server.Subject.CommonName != "control-service" {
		t.Errorf("control service CN %q", server.Subject.CommonName)
	}
	for _, host := range []string{"127.0.0.1", "localhost", "control-service", "flocker.example", "192.0.2.7"} {
		if _, err := server.Verify(x509.VerifyOptions{Roots: roots, DNSName: host}); err != nil {
			t.Errorf("control service certificate does not verify for %s: %v", host, err)
		}
	}
	client := loadLeaf(t, files.ClientCert, files.ClientKey)
	if client.Subject.CommonName != "user-alice" {
		t.Errorf("API user CN %q", client.Subject.CommonName)
	}
	if _, err := client.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("API user certificate does not verify as a client certificate: %v", err)
	}

	again, generated, err := EnsureCerts(dir, CertOptions{})
	if err != nil || generated || again != files {
		t.Errorf("EnsureCerts on a complete directory: generated=%v err=%v", generated, err)
	}
	if after, _ := os.ReadFile(files.CACert); string(after) != string(caPEM) {
		t.Error("EnsureCerts replaced an existing CA")
	}
}

func loadLeaf(t *testing.T, certFile, keyFile string) *x509.Certificate {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

func TestHandshakeRefusesNonUserCertificates(t *testing.T) {
	e, _, _ := startFake(t, Config{})
	certs := e.Certs()
	dir := t.TempDir()
	issueTo := func(cn string) (string, string) {
		cert, key := filepath.Join(dir, cn+".crt"), filepath.Join(dir, cn+".key")
		if err := IssueClientCert(certs, cn, cert, key); err != nil {
			t.Fatal(err)
		}
		return cert, key
	}
	otherCA, err := GenerateCerts(filepath.Join(dir, "other"), CertOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nodeCert, nodeKey := issueTo("node-8a7f1e2d-3c4b-4a59-8e6f-7d8c9b0a1f2e")
	controlCert, controlKey := issueTo("control-service")
	bobCert, bobKey := issueTo("user-bob")

	tests := map[string]struct {
		certFile, keyFile string
		wantOK            bool
		wantRejection     string
	}{
		"api user":              {certFile: certs.ClientCert, keyFile: certs.ClientKey, wantOK: true},
		"another api user":      {certFile: bobCert, keyFile: bobKey, wantOK: true},
		"node certificate":      {certFile: nodeCert, keyFile: nodeKey, wantRejection: `"node-8a7f1e2d`},
		"control certificate":   {certFile: controlCert, keyFile: controlKey, wantRejection: `"control-service"`},
		"user of another CA":    {certFile: otherCA.ClientCert, keyFile: otherCA.ClientKey},
		"no client certificate": {},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			before := len(e.Rejections())
			c := newAPIClientWith(t, e, certs.CACert, tc.certFile, tc.keyFile)
			r, err := c.try(http.MethodGet, "/v1/version", nil, nil)
			if tc.wantOK {
				if err != nil {
					t.Fatalf("request failed: %v", err)
				}
				expectStatus(t, r, http.StatusOK)
				return
			}
			if err == nil {
				t.Fatalf("request succeeded with status %d; want a TLS handshake failure", r.status)
			}
			var opErr *net.OpError
			if !errors.As(err, &opErr) || opErr.Op != "remote error" {
				t.Errorf("error %v is not a TLS alert from the server", err)
			}
			if tc.wantRejection != "" {
				rejections := e.Rejections()
				if len(rejections) != before+1 || !strings.Contains(rejections[len(rejections)-1], tc.wantRejection) {
					t.Errorf("rejections %q, want one naming %s", rejections, tc.wantRejection)
				}
			}
		})
	}
	if n := e.CountRequests("", ""); n != 2 {
		t.Errorf("%d requests reached the API, want only the 2 from API users", n)
	}
	for _, r := range e.Requests() {
		if !slices.Contains([]string{"user-" + DefaultAPIUserName, "user-bob"}, r.ClientCN) {
			t.Errorf("request from client CN %q reached the API", r.ClientCN)
		}
	}
}

func TestClientRefusesServerOfAnotherCA(t *testing.T) {
	e, _, _ := startFake(t, Config{})
	otherCA, err := GenerateCerts(t.TempDir(), CertOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := newAPIClientWith(t, e, otherCA.CACert, e.Certs().ClientCert, e.Certs().ClientKey)
	_, err = c.try(http.MethodGet, "/v1/version", nil, nil)
	var unknownAuthority x509.UnknownAuthorityError
	if !errors.As(err, &unknownAuthority) {
		t.Fatalf("error %v, want x509.UnknownAuthorityError", err)
	}
}
