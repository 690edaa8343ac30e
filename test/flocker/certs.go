package flocker

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The file names Flocker's tools write and that flocker-go and the kubelet read.
const (
	CACertFileName          = "cluster.crt"
	CAKeyFileName           = "cluster.key"
	ControlCertFileName     = "control-service.crt"
	ControlKeyFileName      = "control-service.key"
	APIUserCertFileName     = "apiuser.crt"
	APIUserKeyFileName      = "apiuser.key"
	apiUserCommonNamePrefix = "user-"
)

// DefaultAPIUserName is the user name put in the API user certificate (CN "user-<name>") when CertOptions.UserName is empty.
const DefaultAPIUserName = "volume-agent"

// CertFiles holds the paths of a throwaway Flocker cluster PKI in one directory.
type CertFiles struct {
	// Dir is the directory holding the files.
	Dir string
	// CACert and CAKey are the cluster CA (cluster.crt, cluster.key).
	CACert, CAKey string
	// ControlCert and ControlKey are the control service's server certificate (CN "control-service").
	ControlCert, ControlKey string
	// ClientCert and ClientKey are the API user's client certificate (CN "user-<name>").
	ClientCert, ClientKey string
}

// CertFilesIn returns the conventional file paths inside dir. It does not touch the disk.
func CertFilesIn(dir string) CertFiles {
	return CertFiles{
		Dir:         dir,
		CACert:      filepath.Join(dir, CACertFileName),
		CAKey:       filepath.Join(dir, CAKeyFileName),
		ControlCert: filepath.Join(dir, ControlCertFileName),
		ControlKey:  filepath.Join(dir, ControlKeyFileName),
		ClientCert:  filepath.Join(dir, APIUserCertFileName),
		ClientKey:   filepath.Join(dir, APIUserKeyFileName),
	}
}

func (f CertFiles) all() []string {
	return []string{f.CACert, f.CAKey, f.ControlCert, f.ControlKey, f.ClientCert, f.ClientKey}
}

// CertOptions tunes GenerateCerts.
type CertOptions struct {
	// UserName makes the API user certificate's CN "user-<UserName>". Default DefaultAPIUserName.
	UserName string
	// Hosts are extra DNS names or IP addresses for the control service certificate, next to
	// "control-service", "localhost" and 127.0.0.1.
	Hosts []string
	// Validity is how long the certificates are valid. Default one year.
	Validity time.Duration
}

// GenerateCerts writes a new throwaway cluster CA, a control service certificate and an API user
// certificate into dir (created with mode 0700 if missing), overwriting files of the same names.
// Keys are written with mode 0600.
func GenerateCerts(dir string, opts CertOptions) (CertFiles, error) {
	files := CertFilesIn(dir)
	if opts.UserName == "" {
		opts.UserName = DefaultAPIUserName
	}
	if strings.ContainsAny(opts.UserName, "/\n") {
		return files, fmt.Errorf("invalid API user name %q: must not contain '/' or a newline", opts.UserName)
	}
	if opts.Validity <= 0 {
		opts.Validity = 365 * 24 * time.Hour
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return files, fmt.Errorf("failed to create certificate directory: %w", err)
	}

	clusterID, err := newUUID4()
	if err != nil {
		return files, err
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return files, fmt.Errorf("failed to generate CA key: %w", err)
	}
	caTemplate, err := certTemplate(pkix.Name{CommonName: "cluster-" + clusterID, OrganizationalUnit: []string{clusterID}}, opts.Validity)
	if err != nil {
		return files, err
	}
	caTemplate.IsCA = true
	caTemplate.BasicConstraintsValid = true
	caTemplate.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, caKey.Public(), caKey)
	if err != nil {
		return files, fmt.Errorf("failed to create CA certificate: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return files, fmt.Errorf("failed to parse CA certificate: %w", err)
	}
	if err := writeCertAndKey(files.CACert, files.CAKey, caDER, caKey); err != nil {
		return files, err
	}

	hosts := append([]string{"control-service", "localhost", "127.0.0.1"}, opts.Hosts...)
	if err := issue(caCert, caKey, pkix.Name{CommonName: "control-service", OrganizationalUnit: []string{clusterID}},
		x509.ExtKeyUsageServerAuth, hosts, opts.Validity, files.ControlCert, files.ControlKey); err != nil {
		return files, err
	}
	if err := issue(caCert, caKey, pkix.Name{CommonName: apiUserCommonNamePrefix + opts.UserName, OrganizationalUnit: []string{clusterID}},
		x509.ExtKeyUsageClientAuth, nil, opts.Validity, files.ClientCert, files.ClientKey); err != nil {
		return files, err
	}
	return files, nil
}

// EnsureCerts reuses the six PKI files in dir when all exist and the control service pair loads;
// otherwise it generates new ones with GenerateCerts. It reports whether it generated them.
func EnsureCerts(dir string, opts CertOptions) (CertFiles, bool, error) {
	files := CertFilesIn(dir)
	missing := false
	for _, f := range files.all() {
		if _, err := os.Stat(f); err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				return files, false, fmt.Errorf("failed to check certificate file: %w", err)
			}
			missing = true
		}
	}
	if !missing {
		if _, err := tls.LoadX509KeyPair(files.ControlCert, files.ControlKey); err == nil {
			return files, false, nil
		}
	}
	files, err := GenerateCerts(dir, opts)
	return files, err == nil, err
}

// IssueClientCert signs a client certificate with the CA in files and writes it to certPath and
// keyPath. Any commonName is accepted, so tests can make certificates the control service refuses
// (for example "node-<uuid>"), as well as additional "user-" ones.
func IssueClientCert(files CertFiles, commonName, certPath, keyPath string) error {
	caPair, err := tls.LoadX509KeyPair(files.CACert, files.CAKey)
	if err != nil {
		return fmt.Errorf("failed to load CA from %s: %w", files.Dir, err)
	}
	caCert, err := x509.ParseCertificate(caPair.Certificate[0])
	if err != nil {
		return fmt.Errorf("failed to parse CA certificate %s: %w", files.CACert, err)
	}
	return issue(caCert, caPair.PrivateKey, pkix.Name{CommonName: commonName}, x509.ExtKeyUsageClientAuth, nil,
		time.Until(caCert.NotAfter), certPath, keyPath)
}

func issue(caCert *x509.Certificate, caKey crypto.PrivateKey, subject pkix.Name, usage x509.ExtKeyUsage, hosts []string,
	validity time.Duration, certPath, keyPath string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("failed to generate key for %q: %w", subject.CommonName, err)
	}
	template, err := certTemplate(subject, validity)
	if err != nil {
		return err
	}
	template.KeyUsage = x509.KeyUsageDigitalSignature
	template.ExtKeyUsage = []x509.ExtKeyUsage{usage}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			template.IPAddresses = append(template.IPAddresses, ip)
		} else {
			template.DNSNames = append(template.DNSNames, h)
		}
	}
	signer, ok := caKey.(crypto.Signer)
	if !ok {
		return fmt.Errorf("failed to sign certificate for %q: CA key of type %T cannot sign", subject.CommonName, caKey)
	}
	der, err := x509.CreateCertificate(rand.Reader, template, caCert, key.Public(), signer)
	if err != nil {
		return fmt.Errorf("failed to create certificate for %q: %w", subject.CommonName, err)
	}
	return writeCertAndKey(certPath, keyPath, der, key)
}

func certTemplate(subject pkix.Name, validity time.Duration) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("failed to generate serial number: %w", err)
	}
	now := time.Now()
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      subject,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(validity),
	}, nil
}

func writeCertAndKey(certPath, keyPath string, der []byte, key *ecdsa.PrivateKey) error {
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("failed to marshal key for %s: %w", certPath, err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return fmt.Errorf("failed to write key: %w", err)
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return fmt.Errorf("failed to write certificate: %w", err)
	}
	return nil
}

// newUUID4 returns a random (version 4) UUID in its canonical lower-case form.
func newUUID4() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("failed to generate uuid: %w", err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]), nil
}
