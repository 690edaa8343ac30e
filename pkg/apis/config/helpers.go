package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// ParseSocketMode parses an octal permission string such as "0600" or "660"
// into file-mode permission bits. It fails for anything that is not octal or
// that sets bits beyond 0777.
func ParseSocketMode(mode string) (os.FileMode, error) {
	bits, err := strconv.ParseUint(mode, 8, 32)
	if err != nil || bits > 0o777 {
		return 0, fmt.Errorf("invalid socket mode %q: must be octal permission bits between 0000 and 0777, such as \"0600\"", mode)
	}
	return os.FileMode(bits), nil
}

// ResolvedPluginRegistrationDir returns CSI.PluginRegistrationDir, or
// ROOT/plugins_registry when it is empty.
func (c *AgentConfiguration) ResolvedPluginRegistrationDir() string {
	if c.CSI.PluginRegistrationDir != "" {
		return c.CSI.PluginRegistrationDir
	}
	return filepath.Join(c.RootDir, DefaultPluginRegistrationDirName)
}

// DefaultPluginRegistrationDirName is the registration dir inside the root
// dir, as the kubelet's.
const DefaultPluginRegistrationDirName = "plugins_registry"
