package csi

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// Keys of the volume context that describe a volume; see docs/csi.md.
const (
	// KeyType names the volume source: one of the VolumeType values.
	KeyType = "type"
	// kubeletKeyPrefix starts the keys the kubelet adds (pod info,
	// ephemeral); they are read where they name the pod, never validated as
	// volume fields.
	kubeletKeyPrefix = "csi.storage.k8s.io/"
	// Keys the kubelet adds with podInfoOnMount.
	KeyPodName      = kubeletKeyPrefix + "pod.name"
	KeyPodNamespace = kubeletKeyPrefix + "pod.namespace"
	KeyPodUID       = kubeletKeyPrefix + "pod.uid"
	KeyEphemeral    = kubeletKeyPrefix + "ephemeral"
)

// VolumeType is the value of the volume context's "type".
type VolumeType string

// The volume types, named as the fields of v1.VolumeSource.
const (
	TypeGitRepo  VolumeType = "gitRepo"
	TypeEmptyDir VolumeType = "emptyDir"
	TypeFlocker  VolumeType = "flocker"
)

// volumeKeys are the keys each type takes besides "type": the JSON names of
// the fields of its Kubernetes volume source, set from strings.
var volumeKeys = map[VolumeType]map[string]func(*v1.VolumeSource, string) error{
	TypeGitRepo: {
		"repository": func(s *v1.VolumeSource, v string) error { s.GitRepo.Repository = v; return nil },
		"revision":   func(s *v1.VolumeSource, v string) error { s.GitRepo.Revision = v; return nil },
		"directory":  func(s *v1.VolumeSource, v string) error { s.GitRepo.Directory = v; return nil },
	},
	TypeEmptyDir: {
		"medium": func(s *v1.VolumeSource, v string) error { s.EmptyDir.Medium = v1.StorageMedium(v); return nil },
		"sizeLimit": func(s *v1.VolumeSource, v string) error {
			q, err := resource.ParseQuantity(v)
			if err != nil {
				return err
			}
			s.EmptyDir.SizeLimit = &q
			return nil
		},
	},
	TypeFlocker: {
		"datasetName": func(s *v1.VolumeSource, v string) error { s.Flocker.DatasetName = v; return nil },
		"datasetUUID": func(s *v1.VolumeSource, v string) error { s.Flocker.DatasetUUID = v; return nil },
	},
}

// InvalidContextError is a volume context that does not describe a volume.
// It names the key and the value.
type InvalidContextError struct {
	Key    string
	Value  string
	Detail string
}

func (e *InvalidContextError) Error() string {
	return fmt.Sprintf("volume context key %q: invalid value %q: %s", e.Key, e.Value, e.Detail)
}

// volumeSourceFromContext returns the volume source the volume context
// describes, with every field of its type that the context sets. It
// checks the keys and the syntax of the values; the manifest validator
// checks the rest.
func volumeSourceFromContext(volumeContext map[string]string) (v1.VolumeSource, error) {
	var source v1.VolumeSource
	typ, ok := volumeContext[KeyType]
	keys, known := volumeKeys[VolumeType(typ)]
	if !ok || !known {
		detail := "must be one of " + strings.Join(typeNames(), ", ")
		if !ok {
			detail = "is required and " + detail
		}
		return source, &InvalidContextError{Key: KeyType, Value: typ, Detail: detail}
	}
	switch VolumeType(typ) {
	case TypeGitRepo:
		source.GitRepo = &v1.GitRepoVolumeSource{}
	case TypeEmptyDir:
		source.EmptyDir = &v1.EmptyDirVolumeSource{}
	case TypeFlocker:
		source.Flocker = &v1.FlockerVolumeSource{}
	}
	names := make([]string, 0, len(volumeContext))
	for key := range volumeContext {
		names = append(names, key)
	}
	sort.Strings(names)
	for _, key := range names {
		value := volumeContext[key]
		if key == KeyType || strings.HasPrefix(key, kubeletKeyPrefix) {
			continue
		}
		set, ok := keys[key]
		if !ok {
			return source, &InvalidContextError{Key: key, Value: value,
				Detail: fmt.Sprintf("not a field of the %s volume source, which has %s", typ, strings.Join(sortedKeys(keys), ", "))}
		}
		if err := set(&source, value); err != nil {
			return source, &InvalidContextError{Key: key, Value: value, Detail: err.Error()}
		}
	}
	return source, nil
}

func typeNames() []string {
	out := make([]string, 0, len(volumeKeys))
	for typ := range volumeKeys {
		out = append(out, string(typ))
	}
	slices.Sort(out)
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for key := range m {
		out = append(out, key)
	}
	slices.Sort(out)
	return out
}
