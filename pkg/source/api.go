package source

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/volume-agent/volume-agent/pkg/manifest"
	"github.com/volume-agent/volume-agent/pkg/volumemanager"
)

// APIPrefix starts the source names of the pods added through the local API.
const APIPrefix = "api:"

// apiSourceName is the manifest name of API requests: it names them in
// errors and is hashed into the UIDs derived for their pods, so applying the
// same pod twice gives the same UID.
const apiSourceName = "api"

// ErrPodNotFound is returned by API.Delete for a pod no source declares.
var ErrPodNotFound = errors.New("pod not found")

// ErrObjectNotFound is returned by API.DeleteObject for an object the API
// does not keep.
var ErrObjectNotFound = errors.New("object not found")

// ErrPodNotFromAPI is returned when a pod that another source declares is
// applied or deleted through the API.
var ErrPodNotFromAPI = errors.New("pod is declared by another source")

// InvalidManifestError is returned by API.Apply for a manifest that does not
// decode or validate. Nothing was changed.
type InvalidManifestError struct{ Err error }

func (e *InvalidManifestError) Error() string { return e.Err.Error() }
func (e *InvalidManifestError) Unwrap() error { return e.Err }

// apiSecretsSource is the source name of the Secrets applied through the
// API, which are kept in memory only.
const apiSecretsSource = APIPrefix + "secrets"

// Applied is what Apply added or replaced.
type Applied struct {
	Pods []AppliedPod `json:"pods"`
	// Secrets are kept in memory only: they must be applied again after
	// the agent restarts.
	Secrets []ObjectRef `json:"secrets,omitempty"`
}

// AppliedPod names a pod that Apply added or updated.
type AppliedPod struct {
	UID       types.UID `json:"uid"`
	Namespace string    `json:"namespace"`
	Name      string    `json:"name"`
	// Replaced is the UID of the pod of the same namespace and name that
	// this one replaced, when it had another.
	Replaced types.UID `json:"replaced,omitempty"`
}

// ObjectRef names an object that the API keeps: a Pod, a PersistentVolume
// (no namespace), a PersistentVolumeClaim or a Secret.
type ObjectRef struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}

// String returns `Kind "namespace/name"`, or `Kind "name"`.
func (r ObjectRef) String() string {
	if r.Namespace == "" {
		return fmt.Sprintf("%s %q", r.Kind, r.Name)
	}
	return fmt.Sprintf("%s %q", r.Kind, r.Namespace+"/"+r.Name)
}

// maxFileNameBytes is the longest file name Linux file systems take.
const maxFileNameBytes = 255

// fileName returns the name of the file that keeps the object r:
// "<kind>_<namespace>_<name>.json", or "<kind>_<name>.json" for a
// PersistentVolume, the kind in lower case. Neither a namespace (a DNS
// label) nor a name (a DNS subdomain) holds "_", so no two objects share a
// name. A name too long for a file name is cut, and the SHA-256 of the
// whole joined after one more "_".
func (r ObjectRef) fileName() string {
	base := strings.ToLower(r.Kind) + "_" + r.Name
	if r.Namespace != "" {
		base = strings.ToLower(r.Kind) + "_" + r.Namespace + "_" + r.Name
	}
	if len(base)+len(".json") > maxFileNameBytes {
		sum := sha256.Sum256([]byte(base))
		base = base[:200] + "_" + hex.EncodeToString(sum[:16])
	}
	return base + ".json"
}

// keptObject is an object of a bundle, as the API keeps it.
type keptObject struct {
	ref ObjectRef
	obj metav1.Object
}

// keptObjects returns b's objects with their refs, their apiVersion and kind
// set so that they are written whole.
func keptObjects(b *manifest.Bundle) []keptObject {
	var out []keptObject
	for _, pod := range b.Pods {
		pod.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: manifest.KindPod}
		out = append(out, keptObject{ObjectRef{Kind: manifest.KindPod, Namespace: pod.Namespace, Name: pod.Name}, pod})
	}
	for _, pv := range b.PersistentVolumes {
		pv.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: manifest.KindPersistentVolume}
		out = append(out, keptObject{ObjectRef{Kind: manifest.KindPersistentVolume, Name: pv.Name}, pv})
	}
	for _, claim := range b.PersistentVolumeClaims {
		claim.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: manifest.KindPersistentVolumeClaim}
		out = append(out, keptObject{ObjectRef{Kind: manifest.KindPersistentVolumeClaim, Namespace: claim.Namespace, Name: claim.Name}, claim})
	}
	return out
}

// API is the source of the pods, PersistentVolumes, claims and Secrets added
// through the local API. It keeps each object but a Secret as a JSON file of
// its own in its directory (pods with their UID set), named after its kind,
// namespace and name (see ObjectRef), which it reads as a Dir, so that they
// survive a restart and are desired again before anything is torn down.
// Files of the older naming (pods by UID, claims by namespace and name joined
// with "-") are read too, and removed when their object is applied again or
// deleted.
//
// Secrets are kept in memory only, never on disk, and are one source of
// their own (APIPrefix + "secrets"): after a restart they are gone until
// they are applied again, and the volumes that need them wait.
type API struct {
	dir  *Dir
	sink Sink
	opts manifest.Options
	// mu serialises changes, so that a file is never written twice at once.
	mu sync.Mutex
	// secrets are the Secrets applied since the start.
	secrets map[ObjectRef]*v1.Secret
}

// NewAPI returns the API source keeping its objects in dir, which is created
// when the first object is applied.
func NewAPI(dir string, sink Sink, opts manifest.Options) (*API, error) {
	d, err := NewDir(dir, sink, DirOptions{Prefix: APIPrefix, Manifest: opts})
	if err != nil {
		return nil, err
	}
	return &API{dir: d, sink: sink, opts: opts, secrets: map[ObjectRef]*v1.Secret{}}, nil
}

// Sync reads the objects kept on disk, as Dir.Sync does. A missing directory
// holds no objects. It first finishes an Apply that was interrupted after it
// wrote an object's file and before it removed the files that object
// replaces: those are removed.
func (a *API) Sync(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, err := os.Stat(a.dir.Path()); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	stored, err := a.stored()
	if err != nil {
		return err
	}
	current := map[ObjectRef]bool{}
	for _, obj := range stored {
		if filepath.Base(obj.path) == obj.ref.fileName() {
			current[obj.ref] = true
		}
	}
	var replaced []storedObject
	for _, obj := range stored {
		if current[obj.ref] && filepath.Base(obj.path) != obj.ref.fileName() {
			replaced = append(replaced, obj)
		}
	}
	if err := a.remove(replaced); err != nil {
		return err
	}
	return a.dir.Sync(ctx)
}

// Apply decodes and validates data, a manifest as `volume-agent validate`
// takes, and adds or replaces its objects. An object replaces the one of the
// same kind, namespace and name; a pod also replaces a pod the API keeps
// with its UID. The replaced pod's volumes are torn down, and the new pod's
// set up, from one update: the two are never desired at once. Secrets are
// kept in memory only, and are there before the pods of the same manifest.
// Invalid input is an *InvalidManifestError; a pod whose UID another source
// declares is ErrPodNotFromAPI. Either way nothing is changed.
func (a *API) Apply(ctx context.Context, data []byte) (Applied, error) {
	bundle, err := manifest.Load(bytes.NewReader(data), apiSourceName, a.opts)
	if err != nil {
		return Applied{}, &InvalidManifestError{Err: err}
	}
	if bundle.Len() == 0 {
		return Applied{}, &InvalidManifestError{Err: errors.New("the manifest holds no object")}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, pod := range bundle.Pods {
		if source := a.sink.SourceOf(pod.UID); source != "" && !strings.HasPrefix(source, APIPrefix) {
			return Applied{}, fmt.Errorf("%w: pod %s/%s (UID %s) comes from %s", ErrPodNotFromAPI, pod.Namespace, pod.Name, pod.UID, source)
		}
	}
	applied := Applied{Pods: make([]AppliedPod, 0, len(bundle.Pods))}
	if len(bundle.Secrets) > 0 {
		for _, secret := range bundle.Secrets {
			ref := ObjectRef{Kind: manifest.KindSecret, Namespace: secret.Namespace, Name: secret.Name}
			a.secrets[ref] = secret
			applied.Secrets = append(applied.Secrets, ref)
		}
		a.updateSecrets()
		if bundle.Len() == len(bundle.Secrets) {
			return applied, nil
		}
	}
	if err := os.MkdirAll(a.dir.Path(), 0o750); err != nil {
		return applied, fmt.Errorf("failed to create API manifest dir: %w", err)
	}
	stored, err := a.stored()
	if err != nil {
		return applied, err
	}
	var replaced []storedObject
	for _, kept := range keptObjects(bundle) {
		ref, name := kept.ref, kept.ref.fileName()
		if err := a.write(name, kept.obj); err != nil {
			return applied, err
		}
		var old []storedObject
		for _, obj := range stored {
			if obj.ref == ref || (ref.Kind == manifest.KindPod && obj.uid == kept.obj.GetUID()) {
				old = append(old, obj)
			}
		}
		if ref.Kind == manifest.KindPod {
			pod := AppliedPod{UID: kept.obj.GetUID(), Namespace: ref.Namespace, Name: ref.Name}
			for _, obj := range old {
				if obj.uid != pod.UID {
					pod.Replaced = obj.uid
				}
			}
			applied.Pods = append(applied.Pods, pod)
		}
		for _, obj := range old {
			if filepath.Base(obj.path) != name {
				replaced = append(replaced, obj)
			}
		}
	}
	// The files of replaced objects go before the one Sync, which tells the
	// manager of the old and new at once.
	if err := a.remove(replaced); err != nil {
		return applied, err
	}
	return applied, a.dir.Sync(ctx)
}

// updateSecrets tells the sink of the Secrets kept; a.mu must be held.
func (a *API) updateSecrets() {
	if len(a.secrets) == 0 {
		a.sink.UpdateSources(volumemanager.SourceUpdate{Source: apiSecretsSource, Removed: true})
		return
	}
	bundle := &manifest.Bundle{}
	for _, ref := range slices.SortedFunc(maps.Keys(a.secrets), func(x, y ObjectRef) int {
		return cmp.Or(cmp.Compare(x.Namespace, y.Namespace), cmp.Compare(x.Name, y.Name))
	}) {
		bundle.Secrets = append(bundle.Secrets, a.secrets[ref])
	}
	a.sink.UpdateSources(volumemanager.SourceUpdate{Source: apiSecretsSource, Bundle: bundle})
}

// Delete removes the pod uid that the API added. A pod another source
// declares is ErrPodNotFromAPI; an unknown one ErrPodNotFound.
func (a *API) Delete(ctx context.Context, uid types.UID) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	stored, err := a.stored()
	if err != nil {
		return err
	}
	var found []storedObject
	for _, obj := range stored {
		if obj.ref.Kind == manifest.KindPod && obj.uid == uid {
			found = append(found, obj)
		}
	}
	if len(found) == 0 {
		if source := a.sink.SourceOf(uid); source != "" {
			return fmt.Errorf("%w: pod %s comes from %s; remove it there", ErrPodNotFromAPI, uid, source)
		}
		return fmt.Errorf("%w: %s", ErrPodNotFound, uid)
	}
	if err := a.remove(found); err != nil {
		return err
	}
	return a.dir.Sync(ctx)
}

// DeleteObject removes the object ref that the API added; an empty
// namespace of a Pod, claim or Secret means "default". An object the API
// does not keep (or a kind it does not take) is ErrObjectNotFound.
func (a *API) DeleteObject(ctx context.Context, ref ObjectRef) error {
	switch ref.Kind {
	case manifest.KindPod, manifest.KindPersistentVolumeClaim, manifest.KindSecret:
		if ref.Namespace == "" {
			ref.Namespace = metav1.NamespaceDefault
		}
	case manifest.KindPersistentVolume:
		ref.Namespace = ""
	default:
		return fmt.Errorf("%w: the API keeps no objects of kind %q, only %s, %s, %s and %s", ErrObjectNotFound, ref.Kind,
			manifest.KindPod, manifest.KindPersistentVolume, manifest.KindPersistentVolumeClaim, manifest.KindSecret)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if ref.Kind == manifest.KindSecret {
		if a.secrets[ref] == nil {
			return fmt.Errorf("%w: %s was not applied through the API since the agent started (it keeps Secrets in memory only)", ErrObjectNotFound, ref)
		}
		delete(a.secrets, ref)
		a.updateSecrets()
		return nil
	}
	stored, err := a.stored()
	if err != nil {
		return err
	}
	var found []storedObject
	for _, obj := range stored {
		if obj.ref == ref {
			found = append(found, obj)
		}
	}
	if len(found) == 0 {
		return fmt.Errorf("%w: %s was not added through the API", ErrObjectNotFound, ref)
	}
	if err := a.remove(found); err != nil {
		return err
	}
	return a.dir.Sync(ctx)
}

// storedObject is an object the API keeps, in a file of its own.
type storedObject struct {
	path string
	ref  ObjectRef
	// uid is a pod's UID.
	uid types.UID
}

// stored returns the objects kept in the directory, each in a file that
// holds it alone; a missing directory holds none. Files that do not decode,
// or hold several objects or a Secret (put there by hand), are left out:
// they are never replaced or removed.
func (a *API) stored() ([]storedObject, error) {
	entries, err := os.ReadDir(a.dir.Path())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("failed to read API manifest dir: %w", err)
	}
	var out []storedObject
	for _, entry := range entries {
		if !entry.Type().IsRegular() || !isManifestName(entry.Name()) {
			continue
		}
		path := filepath.Join(a.dir.Path(), entry.Name())
		bundle, err := manifest.DecodeFile(path, manifest.Options{NodeName: a.opts.NodeName})
		if err != nil || bundle.Len() != 1 || len(bundle.Secrets) > 0 {
			continue
		}
		obj := storedObject{path: path, ref: keptObjects(bundle)[0].ref}
		if len(bundle.Pods) == 1 {
			obj.uid = bundle.Pods[0].UID
		}
		out = append(out, obj)
	}
	return out, nil
}

// remove removes the files of objs.
func (a *API) remove(objs []storedObject) error {
	for _, obj := range objs {
		if err := os.Remove(obj.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("failed to remove %q: %w", obj.path, err)
		}
	}
	return nil
}

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
