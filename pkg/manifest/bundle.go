package manifest

import (
	"fmt"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Bundle holds the objects decoded from one or more manifests, in the order
// they were found. Objects are stored with the defaults applied (see Decode).
// A Bundle is not safe for concurrent modification; it may be read
// concurrently once built.
type Bundle struct {
	// Pods have a namespace and a UID (see Decode).
	Pods []*v1.Pod
	// PersistentVolumes have no namespace.
	PersistentVolumes []*v1.PersistentVolume
	// PersistentVolumeClaims have a namespace.
	PersistentVolumeClaims []*v1.PersistentVolumeClaim
	// Secrets have a namespace. They supply the secrets of CSI volumes
	// (nodeStageSecretRef, nodePublishSecretRef); their data and stringData
	// must never be logged, shown or written to disk.
	Secrets []*v1.Secret

	// origins maps each decoded object (by pointer) to where it came from.
	origins map[metav1.Object]Origin
}

// Origin says where in its manifest an object was found.
type Origin struct {
	// Source names the manifest: a file name, "stdin", or the name a caller
	// gave to Decode.
	Source string
	// Document is the 1-based index of the object's document in Source,
	// counting the documents that are not empty.
	Document int
	// Line is the 1-based line of Source where the document starts, or 0
	// when it is not known.
	Line int
	// Root is the object's path in its document: nil for a document that is
	// the object, "items[2]" for an item of a List. Field paths of the
	// object's errors start with it.
	Root *field.Path
}

// String returns "<source>, document <n> (line <l>)", followed by the root
// path for an item of a List.
func (o Origin) String() string {
	s := fmt.Sprintf("%s, document %d", o.Source, o.Document)
	if o.Line > 0 {
		s += fmt.Sprintf(" (line %d)", o.Line)
	}
	if o.Root != nil {
		s += ", " + o.Root.String()
	}
	return s
}

// newError returns the Error for a problem with the object at o.
func (o Origin) newError(object, fieldPath string, err error) *Error {
	return &Error{Source: o.Source, Document: o.Document, Line: o.Line, Object: object, Field: fieldPath, Err: err}
}

// Origin returns where obj, an object of b, was found, or the zero Origin
// for an object b did not decode.
func (b *Bundle) Origin(obj metav1.Object) Origin { return b.origins[obj] }

// Len returns the number of objects in b.
func (b *Bundle) Len() int {
	return len(b.Pods) + len(b.PersistentVolumes) + len(b.PersistentVolumeClaims) + len(b.Secrets)
}

// Append adds other's objects, with their origins, to b. Validate the
// result to find duplicates across the two.
func (b *Bundle) Append(other *Bundle) {
	b.Pods = append(b.Pods, other.Pods...)
	b.PersistentVolumes = append(b.PersistentVolumes, other.PersistentVolumes...)
	b.PersistentVolumeClaims = append(b.PersistentVolumeClaims, other.PersistentVolumeClaims...)
	b.Secrets = append(b.Secrets, other.Secrets...)
	for obj, origin := range other.origins {
		b.setOrigin(obj, origin)
	}
}

// PersistentVolume returns the PersistentVolume called name, or nil.
func (b *Bundle) PersistentVolume(name string) *v1.PersistentVolume {
	for _, pv := range b.PersistentVolumes {
		if pv.Name == name {
			return pv
		}
	}
	return nil
}

// PersistentVolumeClaim returns the claim namespace/name, or nil.
func (b *Bundle) PersistentVolumeClaim(namespace, name string) *v1.PersistentVolumeClaim {
	for _, claim := range b.PersistentVolumeClaims {
		if claim.Namespace == namespace && claim.Name == name {
			return claim
		}
	}
	return nil
}

// Secret returns the Secret namespace/name, or nil.
func (b *Bundle) Secret(namespace, name string) *v1.Secret {
	for _, secret := range b.Secrets {
		if secret.Namespace == namespace && secret.Name == name {
			return secret
		}
	}
	return nil
}

func (b *Bundle) setOrigin(obj metav1.Object, origin Origin) {
	if b.origins == nil {
		b.origins = map[metav1.Object]Origin{}
	}
	b.origins[obj] = origin
}

// fieldErrors turns field errors on obj, whose field paths start at the
// object's root, into Errors that name obj's source and document.
func (b *Bundle) fieldErrors(obj metav1.Object, kind string, errs field.ErrorList) []error {
	return newFieldErrors(b.Origin(obj), describe(kind, obj.GetNamespace(), obj.GetName()), errs)
}

// describe names an object for an error message, as `Pod "default/web"`.
func describe(kind, namespace, name string) string {
	switch {
	case name == "":
		return kind
	case namespace == "":
		return fmt.Sprintf("%s %q", kind, name)
	}
	return fmt.Sprintf("%s %q", kind, namespace+"/"+name)
}
