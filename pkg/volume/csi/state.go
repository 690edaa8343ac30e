package csi

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/apimachinery/pkg/types"
)

// Names in the kubelet's layout, and the plugin's own beside them.
const (
	publishDirName  = "mount"
	globalMountName = "globalmount"
	volDataFileName = "vol_data.json"
	// claimsDirName holds one empty file per pod volume using a staged
	// volume: <podUID>_<volume>.
	claimsDirName = "claims"
	// stagedFileName records a successful NodeStageVolume; it holds the
	// boot ID, so that a stage from before a reboot is made again.
	stagedFileName = "staged"
)

// Lifecycle modes, as the kubelet writes them in vol_data.json.
const (
	modePersistent = "Persistent"
	modeEphemeral  = "Ephemeral"
)

// volumeData is a pod volume's vol_data.json, with the kubelet's keys: what
// tears the volume down after a restart, with no spec.
type volumeData struct {
	SpecVolumeID        string `json:"specVolumeID"`
	VolumeHandle        string `json:"volumeHandle"`
	DriverName          string `json:"driverName"`
	NodeName            string `json:"nodeName"`
	VolumeLifecycleMode string `json:"volumeLifecycleMode"`
}

// stagingData is a staged volume's vol_data.json, as the kubelet writes it
// beside globalmount.
type stagingData struct {
	DriverName   string `json:"driverName"`
	VolumeHandle string `json:"volumeHandle"`
}

// ephemeralVolumeHandle is the kubelet's volume ID of an inline volume:
// "csi-" and the hex SHA-256 of the pod's UID and the volume's name.
func ephemeralVolumeHandle(podUID types.UID, volName string) string {
	sum := sha256.Sum256([]byte(string(podUID) + volName))
	return "csi-" + hex.EncodeToString(sum[:])
}

// stagingDir returns ROOT/plugins/kubernetes.io/csi/<driver>/<sha256(handle)>,
// which holds globalmount, vol_data.json and the claims. As in the kubelet,
// the plugin's name is not escaped in this path.
func (p *plugin) stagingDir(driverName, volumeHandle string) string {
	pluginsDir := filepath.Dir(p.host.GetPluginDir(PluginName))
	sum := sha256.Sum256([]byte(volumeHandle))
	return filepath.Join(pluginsDir, PluginName, driverName, hex.EncodeToString(sum[:]))
}

// writeJSON writes v to path atomically: a reader, or a restart after a
// crash, sees the old file or the new one, never half of one.
func writeJSON(path string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("failed to encode %q: %w", path, err)
	}
	return writeFileAtomic(path, data)
}

func writeFileAtomic(path string, data []byte) error {
	if existing, err := os.ReadFile(path); err == nil && bytes.Equal(existing, data) {
		return nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("failed to write %q: %w", path, err)
	}
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if closeErr := tmp.Close(); err == nil {
		err = closeErr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("failed to write %q: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

// syncDir makes the entries of dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("failed to open dir %q: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("failed to sync dir %q: %w", dir, err)
	}
	return nil
}

// readJSON reads path into v, and reports false when it does not exist.
func readJSON(path string, v any) (bool, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("failed to read %q: %w", path, err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return false, fmt.Errorf("failed to decode %q: %w", path, err)
	}
	return true, nil
}

// claimName is the claim file of a pod's volume.
func claimName(podUID types.UID, volName string) string { return string(podUID) + "_" + volName }

// addClaim records, durably, that the pod's volume uses the staged volume
// at stagingDir.
func addClaim(stagingDir string, podUID types.UID, volName string) error {
	dir := filepath.Join(stagingDir, claimsDirName)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("failed to create claims dir %q: %w", dir, err)
	}
	path := filepath.Join(dir, claimName(podUID, volName))
	if _, err := os.Lstat(path); err == nil {
		return nil
	}
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		return fmt.Errorf("failed to record claim %q: %w", path, err)
	}
	return syncDir(dir)
}

// removeClaim removes the pod's claim on the staged volume at stagingDir; a
// missing claim is not an error.
func removeClaim(stagingDir string, podUID types.UID, volName string) error {
	dir := filepath.Join(stagingDir, claimsDirName)
	path := filepath.Join(dir, claimName(podUID, volName))
	if err := os.Remove(path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("failed to remove claim %q: %w", path, err)
	}
	return syncDir(dir)
}

// listClaims returns the claims on the staged volume at stagingDir, as
// "<podUID>_<volume>".
func listClaims(stagingDir string) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(stagingDir, claimsDirName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("failed to read claims of %q: %w", stagingDir, err)
	}
	var claims []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") {
			claims = append(claims, e.Name())
		}
	}
	return claims, nil
}

// bootIDPath holds an ID that changes at each boot.
const bootIDPath = "/proc/sys/kernel/random/boot_id"

func bootID() string {
	id, err := os.ReadFile(bootIDPath)
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(id))
}

// isStaged reports whether the volume at stagingDir was staged since the
// node booted.
func isStaged(stagingDir string) bool {
	id, err := os.ReadFile(filepath.Join(stagingDir, stagedFileName))
	return err == nil && string(id) == bootID()
}

func markStaged(stagingDir string) error {
	return writeFileAtomic(filepath.Join(stagingDir, stagedFileName), []byte(bootID()))
}
