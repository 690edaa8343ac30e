package loader

import (
	"fmt"
	"strconv"
	"strings"

	utilvalidation "k8s.io/apimachinery/pkg/util/validation"

	"github.com/volume-agent/volume-agent/pkg/apis/config"
)

// ApplyFlockerEnvironment overrides Flocker fields of cfg with the variables
// the Flocker tools read, looked up through getenv (os.Getenv in production):
// FLOCKER_CONTROL_SERVICE_HOST, FLOCKER_CONTROL_SERVICE_PORT,
// FLOCKER_CONTROL_SERVICE_CA_FILE, FLOCKER_CONTROL_SERVICE_CLIENT_CERT_FILE and
// FLOCKER_CONTROL_SERVICE_CLIENT_KEY_FILE. Unset or empty variables change
// nothing. A port that is not a number between 1 and 65535 is an error naming
// the variable and its value, and leaves cfg unchanged.
func ApplyFlockerEnvironment(cfg *config.AgentConfiguration, getenv func(string) string) error {
	port := cfg.Flocker.Port
	if value := getenv(config.EnvFlockerControlServicePort); value != "" {
		parsed, err := strconv.ParseInt(value, 10, 32)
		msgs := utilvalidation.IsValidPortNum(int(parsed))
		if err != nil {
			msgs = []string{"must be a port number"}
		}
		if len(msgs) > 0 {
			return fmt.Errorf("invalid %s %q: %s", config.EnvFlockerControlServicePort, value, strings.Join(msgs, "; "))
		}
		port = int32(parsed)
	}
	cfg.Flocker.Port = port
	for name, field := range map[string]*string{
		config.EnvFlockerControlServiceHost: &cfg.Flocker.ControlServiceHost,
		config.EnvFlockerCAFile:             &cfg.Flocker.CAFile,
		config.EnvFlockerClientCertFile:     &cfg.Flocker.ClientCertFile,
		config.EnvFlockerClientKeyFile:      &cfg.Flocker.ClientKeyFile,
	} {
		if value := getenv(name); value != "" {
			*field = value
		}
	}
	return nil
}
