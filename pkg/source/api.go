package source

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/volume-agent/volume-agent/pkg/manifest"
)

// APIPrefix starts the source names of the pods added through the local API.
const APIPrefix = "api:"

// apiSourceName is the manifest name of API requests: it names them in
// errors and is hashed into the UIDs derived for their pods, so applying the
// same pod twice gives the same UID.
const apiSourceName = "api"

// ErrPodNotFound is returned by API.Delete for a pod no source declares.
var ErrPodNotFound = errors.New("pod not found")

// ErrPodNotFromAPI is returned when a pod that another source declares is
// applied or deleted through the API.
var ErrPodNotFromAPI = errors.New("pod is declared by another source")

// InvalidManifestError is returned by API.Apply for a manifest that does not
// decode or validate. Nothing was changed.
type InvalidManifestError struct{ Err error }

func (e *InvalidManifestError) Error() string { return e.Err.Error() }
func (e *InvalidManifestError) Unwrap() error { return e.Err }

// AppliedPod names a pod that Apply added or updated.
type AppliedPod struct {
	UID       types.UID `json:"uid"`
	Namespace string    `json:"namespace"`
	Name      string    `json:"name"`
}

// API is the source of the pods, PersistentVolumes and claims added through
// the local API. It keeps each object as a JSON file in its directory (pods
// with their UID set), which it reads as a Dir, so that they survive a
// restart and are desired again before anything is torn down.
type API struct {
	dir  *Dir
	sink Sink
	opts manifest.Options
	// mu serialises changes, so that a file is never written twice at once.
	mu sync.Mutex
}

// NewAPI returns the API source keeping its objects in dir, which is created
// when the first object is applied.
func NewAPI(dir string, sink Sink, opts manifest.Options) (*API, error) {
	d, err := NewDir(dir, sink, DirOptions{Prefix: APIPrefix, Manifest: opts})
	if err != nil {
		return nil, err
	}
	return &API{dir: d, sink: sink, opts: opts}, nil
}

// Sync reads the objects kept on disk, as Dir.Sync does. A missing directory
// holds no objects.
func (a *API) Sync(ctx context.Context) error {
	if _, err := os.Stat(a.dir.Path()); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return a.dir.Sync(ctx)
}

// Apply decodes and validates data, a manifest as `volume-agent validate`
// takes, and adds or replaces its objects. Invalid input is an
// *InvalidManifestError; a pod whose UID another source declares is
// ErrPodNotFromAPI. Either way nothing is changed.
func (a *API) Apply(ctx context.Context, data []byte) ([]AppliedPod, error) {
	bundle, err := manifest.Load(bytes.NewReader(data), apiSourceName, a.opts)
	if err != nil {
		return nil, &InvalidManifestError{Err: err}
	}
	if bundle.Len() == 0 {
		return nil, &InvalidManifestError{Err: errors.New("the manifest holds no object")}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	applied := make([]AppliedPod, 0, len(bundle.Pods))
	for _, pod := range bundle.Pods {
		if source := a.sink.SourceOf(pod.UID); source != "" && !strings.HasPrefix(source, APIPrefix) {
			return nil, fmt.Errorf("%w: pod %s/%s (UID %s) comes from %s", ErrPodNotFromAPI, pod.Namespace, pod.Name, pod.UID, source)
		}
		applied = append(applied, AppliedPod{UID: pod.UID, Namespace: pod.Namespace, Name: pod.Name})
	}
	if err := os.MkdirAll(a.dir.Path(), 0o750); err != nil {
		return nil, fmt.Errorf("failed to create API manifest dir: %w", err)
	}
	for _, pod := range bundle.Pods {
		pod.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}
		if err := a.write(podFileName(pod.UID), pod); err != nil {
			return nil, err
		}
	}
	for _, pv := range bundle.PersistentVolumes {
		pv.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "PersistentVolume"}
		if err := a.write("persistentvolume-"+pv.Name+".json", pv); err != nil {
			return nil, err
		}
	}
	for _, claim := range bundle.PersistentVolumeClaims {
		claim.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "PersistentVolumeClaim"}
		if err := a.write("persistentvolumeclaim-"+claim.Namespace+"-"+claim.Name+".json", claim); err != nil {
			return nil, err
		}
	}
	return applied, a.dir.Sync(ctx)
}

// Delete removes the pod uid that the API added. A pod another source
// declares is ErrPodNotFromAPI; an unknown one ErrPodNotFound.
func (a *API) Delete(ctx context.Context, uid types.UID) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if strings.ContainsAny(string(uid), "/\x00") || uid == "" || uid == "." || uid == ".." {
		return fmt.Errorf("%w: %q", ErrPodNotFound, uid)
	}
	path := filepath.Join(a.dir.Path(), podFileName(uid))
	err := os.Remove(path)
	if errors.Is(err, fs.ErrNotExist) {
		if source := a.sink.SourceOf(uid); source != "" {
			return fmt.Errorf("%w: pod %s comes from %s; remove it there", ErrPodNotFromAPI, uid, source)
		}
		return fmt.Errorf("%w: %s", ErrPodNotFound, uid)
	}
	if err != nil {
		return fmt.Errorf("failed to remove %q: %w", path, err)
	}
	return a.dir.Sync(ctx)
}

func podFileName(uid types.UID) string { return "pod-" + string(uid) + ".json" }

// write writes obj as JSON to name in the directory, atomically: a crash
// leaves the old file or the new one, never half of one.
func (a *API) write(name string, obj any) error {
	data, err := json.MarshalIndent(obj, "", "  ")
	if err != nil {
		return fmt.Errorf("failed to encode %s: %w", name, err)
	}
	tmp, err := os.CreateTemp(a.dir.Path(), ".tmp-"+name+"-")
	if err != nil {
		return fmt.Errorf("failed to write %s: %w", name, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("failed to write %s: %w", name, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("failed to sync %s: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("failed to write %s: %w", name, err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(a.dir.Path(), name)); err != nil {
		return fmt.Errorf("failed to write %s: %w", name, err)
	}
	return nil
}
