package manifest

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	serializerjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/types"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/volume-agent/volume-agent/pkg/volume"
)

// The kinds a manifest may hold, all in the core group's "v1".
const (
	apiVersionV1              = "v1"
	KindPod                   = "Pod"
	KindPersistentVolume      = "PersistentVolume"
	KindPersistentVolumeClaim = "PersistentVolumeClaim"
	KindSecret                = "Secret"
	KindList                  = "List"
)

// MaxManifestBytes is the largest manifest Decode reads.
const MaxManifestBytes = 32 << 20

// StdinSource is the source name of a manifest read from standard input,
// which DecodeFile and LoadFile read for the file name "-".
const StdinSource = "stdin"

var (
	objectKinds   = []string{KindPod, KindPersistentVolume, KindPersistentVolumeClaim, KindSecret}
	documentKinds = append(slices.Clone(objectKinds), KindList)

	scheme = newScheme()
	// Both serializers are strict: unknown and duplicate fields are errors.
	yamlSerializer = serializerjson.NewSerializerWithOptions(serializerjson.DefaultMetaFactory, scheme, scheme,
		serializerjson.SerializerOptions{Yaml: true, Strict: true})
	jsonSerializer = serializerjson.NewSerializerWithOptions(serializerjson.DefaultMetaFactory, scheme, scheme,
		serializerjson.SerializerOptions{Strict: true})
)

func newScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(v1.AddToScheme(s))
	return s
}

// Options tune Decode, DecodeFile, Load and LoadFile.
type Options struct {
	// NodeName is this node's name. It is hashed into the UIDs derived for
	// pods that set no metadata.uid, as the kubelet does for static pods.
	NodeName string
	// Plugins, when not nil, are asked by Load and LoadFile to validate the
	// volume sources they support (see Validate).
	Plugins *volume.VolumePluginMgr
	// Stdin is read for the file name "-"; nil means os.Stdin.
	Stdin io.Reader
}

// Decode reads every document of the manifest in r, YAML or JSON, and
// returns the objects that decoded, with the defaults applied:
//   - a Pod's, PersistentVolumeClaim's or Secret's empty namespace becomes "default";
//     a PersistentVolume's namespace is cleared, as the API server does for
//     objects that are not namespaced;
//   - a Pod without metadata.uid gets DerivePodUID(pod, opts.NodeName,
//     source), computed after the namespace default, so the same manifest
//     gives the same UID on every run.
//
// source names the manifest in errors, as a file name or "stdin". Documents
// that are empty (only comments or whitespace) are skipped and not counted.
//
// The returned Bundle is never nil. The error, when not nil, is a
// utilerrors.Aggregate of *Error, one for every document that could not be
// read or decoded and every unknown or duplicate field; the Bundle then
// holds the objects that did decode, so that Validate can report their
// problems too. Decode does not validate; see Load.
func Decode(r io.Reader, source string, opts Options) (*Bundle, error) {
	bundle, errs := decode(r, source, source, opts)
	return bundle, utilerrors.NewAggregate(errs)
}

// DecodeFile decodes the manifest in the file path, as Decode does; path
// "-" reads opts.Stdin with the source name "stdin". A file's UIDs are
// derived from its absolute path, so that the same file gives the same UIDs
// whatever the working directory; the source name in errors is path as
// given. A file that cannot be opened or read is an *Error too.
func DecodeFile(path string, opts Options) (*Bundle, error) {
	bundle, errs := decodeFile(path, opts)
	return bundle, utilerrors.NewAggregate(errs)
}

// Load decodes the manifest in r as Decode does, then validates the result
// as Validate does with opts.Plugins, and returns every problem from both,
// ordered by document. A non-nil error means the input is invalid and the
// Bundle must not be acted on.
func Load(r io.Reader, source string, opts Options) (*Bundle, error) {
	bundle, errs := decode(r, source, source, opts)
	return bundle, finish(bundle, errs, opts.Plugins)
}

// LoadFile is Load for the file path, read as DecodeFile does.
func LoadFile(path string, opts Options) (*Bundle, error) {
	bundle, errs := decodeFile(path, opts)
	return bundle, finish(bundle, errs, opts.Plugins)
}

func finish(bundle *Bundle, decodeErrs []error, plugins *volume.VolumePluginMgr) error {
	errs := append(decodeErrs, validate(bundle, plugins)...)
	sortErrors(errs)
	return utilerrors.NewAggregate(errs)
}

// DerivePodUID returns the UID that a pod without metadata.uid gets: the
// first 16 bytes, in hex, of the SHA-256 of the pod's JSON (with its UID
// cleared) followed by "host:<nodeName>" and "file:<source>". This is the
// kubelet's recipe for static pods (pkg/kubelet/config/common.go), with
// SHA-256 of the JSON in place of MD5 of a spew dump: the same pod, on the
// same node, from the same source, always gets the same UID, and a change
// to any field gives a new one. The error is that of json.Marshal, which a
// decoded pod never causes.
func DerivePodUID(pod *v1.Pod, nodeName, source string) (types.UID, error) {
	pod = pod.DeepCopy()
	pod.UID = ""
	data, err := json.Marshal(pod)
	if err != nil {
		return "", fmt.Errorf("failed to hash pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	hasher := sha256.New()
	hasher.Write(data)
	fmt.Fprintf(hasher, "host:%s", nodeName)
	fmt.Fprintf(hasher, "file:%s", source)
	return types.UID(hex.EncodeToString(hasher.Sum(nil)[:16])), nil
}

func decodeFile(path string, opts Options) (*Bundle, []error) {
	if path == "-" {
		stdin := opts.Stdin
		if stdin == nil {
			stdin = os.Stdin
		}
		return decode(stdin, StdinSource, StdinSource, opts)
	}
	file, err := os.Open(path)
	if err != nil {
		return &Bundle{}, []error{&Error{Source: path, Err: fmt.Errorf("failed to open manifest: %w", err)}}
	}
	defer file.Close()
	uidSource, err := filepath.Abs(path)
	if err != nil {
		return &Bundle{}, []error{&Error{Source: path, Err: fmt.Errorf("failed to find the manifest's absolute path: %w", err)}}
	}
	return decode(file, path, uidSource, opts)
}

// decoder holds the state of one decoding of one source.
type decoder struct {
	source    string
	uidSource string
	nodeName  string
	bundle    *Bundle
	errs      []error
	// document is the 1-based index of the current non-empty document.
	document int
	// line is the 1-based line where the current document starts, or 0.
	line int
}

func decode(r io.Reader, source, uidSource string, opts Options) (*Bundle, []error) {
	d := &decoder{source: source, uidSource: uidSource, nodeName: opts.NodeName, bundle: &Bundle{}}
	input, err := io.ReadAll(io.LimitReader(r, MaxManifestBytes+1))
	switch {
	case err != nil:
		d.fail(Origin{Source: source}, "", fmt.Errorf("failed to read manifest: %w", err))
	case len(input) > MaxManifestBytes:
		d.fail(Origin{Source: source}, "", fmt.Errorf("failed to read manifest: it is larger than %d bytes", MaxManifestBytes))
	case utilyaml.IsJSONBuffer(input):
		d.decodeJSONStream(input)
	default:
		d.decodeYAMLStream(input)
	}
	return d.bundle, d.errs
}

func (d *decoder) decodeYAMLStream(input []byte) {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(input)))
	offset := 0
	for {
		document, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			d.fail(Origin{Source: d.source, Document: d.document + 1}, "", fmt.Errorf("failed to read YAML: %w", err))
			return
		}
		// The reader returns each document's lines as they are in the input,
		// without the separators, so the document is found after the last.
		d.line = 0
		if i := bytes.Index(input[offset:], bytes.TrimSuffix(document, []byte("\n"))); i >= 0 {
			offset += i
			d.line = lineAt(input, offset)
			offset += len(document) - 1
		}
		data, err := yaml.YAMLToJSON(document)
		if err != nil {
			d.document++
			d.fail(d.origin(nil), "", fmt.Errorf("failed to parse YAML: %w", d.yamlError(err)))
			continue
		}
		if isEmptyDocument(data) {
			continue
		}
		d.document++
		d.decodeObject(document, data, yamlSerializer, nil)
	}
}

func (d *decoder) decodeJSONStream(input []byte) {
	stream := json.NewDecoder(bytes.NewReader(input))
	for {
		offset := int(stream.InputOffset())
		offset += len(input[offset:]) - len(bytes.TrimLeftFunc(input[offset:], unicode.IsSpace))
		var data json.RawMessage
		err := stream.Decode(&data)
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			var syntaxErr *json.SyntaxError
			if errors.As(err, &syntaxErr) {
				err = fmt.Errorf("line %d: %w", lineAt(input, int(syntaxErr.Offset)), err)
			}
			d.fail(Origin{Source: d.source, Document: d.document + 1, Line: lineAt(input, offset)}, "",
				fmt.Errorf("failed to parse JSON: %w", err))
			return
		}
		if isEmptyDocument(data) {
			continue
		}
		d.document++
		d.line = lineAt(input, offset)
		d.decodeObject(data, data, jsonSerializer, nil)
	}
}

// lineAt returns the 1-based line of input at offset.
func lineAt(input []byte, offset int) int {
	return 1 + bytes.Count(input[:min(offset, len(input))], []byte("\n"))
}

var yamlLineNumber = regexp.MustCompile(`\bline (\d+)`)

// yamlError returns err, a YAML parser's error about the current document,
// with its line numbers counted from the start of the source rather than
// of the document.
func (d *decoder) yamlError(err error) error {
	if d.line <= 1 {
		return err
	}
	return errors.New(yamlLineNumber.ReplaceAllStringFunc(err.Error(), func(match string) string {
		n, convErr := strconv.Atoi(strings.TrimPrefix(match, "line "))
		if convErr != nil {
			return match
		}
		return fmt.Sprintf("line %d", n+d.line-1)
	}))
}

func isEmptyDocument(data []byte) bool {
	data = bytes.TrimSpace(data)
	return len(data) == 0 || bytes.Equal(data, []byte("null"))
}

func (d *decoder) origin(root *field.Path) Origin {
	return Origin{Source: d.source, Document: d.document, Line: d.line, Root: root}
}

func (d *decoder) fail(origin Origin, object string, err error) {
	d.errs = append(d.errs, origin.newError(object, "", err))
}

// objectHeader is what is read of a document before it is decoded.
type objectHeader struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"metadata"`
}

// decodeObject decodes one object: a document, or an item of a List
// document (root "items[i]"). original is the object as written, data the
// same as JSON.
func (d *decoder) decodeObject(original, data []byte, serializer runtime.Decoder, root *field.Path) {
	origin := d.origin(root)
	if !bytes.HasPrefix(bytes.TrimSpace(data), []byte("{")) {
		if root == nil {
			d.fail(origin, "", fmt.Errorf("document must be an object: a %s", joinKinds(documentKinds)))
		} else {
			d.errs = append(d.errs, newFieldErrors(origin, "", field.ErrorList{
				field.TypeInvalid(root, jsonValue(data), "must be an object: a "+joinKinds(objectKinds)),
			})...)
		}
		return
	}
	var header objectHeader
	if err := json.Unmarshal(data, &header); err != nil {
		if fieldErr := locateDecodeError(data, reflect.TypeFor[objectHeader](), root); fieldErr != nil {
			d.errs = append(d.errs, origin.newError("", fieldErr.Field, fieldErr))
		} else {
			d.fail(origin, "", fmt.Errorf("failed to read apiVersion, kind and metadata: %w", err))
		}
		return
	}
	object := describe(header.Kind, defaultNamespace(header.Kind, header.Metadata.Namespace), header.Metadata.Name)
	if header.Kind == "" {
		object = describe("object", "", header.Metadata.Name)
	}
	if errs := validateTypeMeta(header, root); len(errs) > 0 {
		d.errs = append(d.errs, newFieldErrors(origin, object, errs)...)
		return
	}

	obj, _, err := serializer.Decode(original, nil, nil)
	if strictErr, ok := runtime.AsStrictDecodingError(err); ok {
		// The object decoded; only its unknown or duplicate fields are wrong.
		for _, fieldErr := range strictErr.Errors() {
			d.errs = append(d.errs, d.strictErrors(origin, object, fieldErr)...)
		}
		err = nil
	}
	if err != nil {
		d.errs = append(d.errs, decodeError(origin, object, header.Kind, data, err))
		return
	}

	switch obj := obj.(type) {
	case *v1.List:
		for i, item := range obj.Items {
			d.decodeObject(item.Raw, item.Raw, jsonSerializer, field.NewPath("items").Index(i))
		}
	case *v1.Pod:
		obj.Namespace = defaultNamespace(KindPod, obj.Namespace)
		if obj.UID == "" {
			uid, err := DerivePodUID(obj, d.nodeName, d.uidSource)
			if err != nil {
				d.fail(origin, object, err)
				return
			}
			obj.UID = uid
		}
		d.bundle.Pods = append(d.bundle.Pods, obj)
		d.bundle.setOrigin(obj, origin)
	case *v1.PersistentVolume:
		// A PersistentVolume is not namespaced: the API server drops a
		// namespace given to it, and so does the decoder.
		obj.Namespace = ""
		d.bundle.PersistentVolumes = append(d.bundle.PersistentVolumes, obj)
		d.bundle.setOrigin(obj, origin)
	case *v1.PersistentVolumeClaim:
		obj.Namespace = defaultNamespace(KindPersistentVolumeClaim, obj.Namespace)
		d.bundle.PersistentVolumeClaims = append(d.bundle.PersistentVolumeClaims, obj)
		d.bundle.setOrigin(obj, origin)
	case *v1.Secret:
		obj.Namespace = defaultNamespace(KindSecret, obj.Namespace)
		d.bundle.Secrets = append(d.bundle.Secrets, obj)
		d.bundle.setOrigin(obj, origin)
	default:
		// validateTypeMeta admits only the kinds above.
		d.fail(origin, object, fmt.Errorf("decoded an unexpected %T", obj))
	}
}

// validateTypeMeta checks apiVersion and kind: a List may be a document,
// not an item of a List.
func validateTypeMeta(header objectHeader, root *field.Path) field.ErrorList {
	var errs field.ErrorList
	kinds := documentKinds
	if root != nil {
		kinds = objectKinds
	}
	apiVersionPath := root.Child("apiVersion")
	switch header.APIVersion {
	case apiVersionV1:
	case "":
		errs = append(errs, field.Required(apiVersionPath, `must be "v1"`))
	default:
		errs = append(errs, field.NotSupported(apiVersionPath, header.APIVersion, []string{apiVersionV1}))
	}
	kindPath := root.Child("kind")
	switch {
	case header.Kind == "":
		errs = append(errs, field.Required(kindPath, "must be one of "+joinKinds(kinds)))
	case !slices.Contains(kinds, header.Kind):
		errs = append(errs, field.NotSupported(kindPath, header.Kind, kinds))
	}
	return errs
}

func joinKinds(kinds []string) string {
	var b bytes.Buffer
	for i, kind := range kinds {
		switch {
		case i == len(kinds)-1 && i > 0:
			b.WriteString(" or ")
		case i > 0:
			b.WriteString(", ")
		}
		b.WriteString(kind)
	}
	return b.String()
}

// defaultNamespace returns "default" for a namespaced kind with no
// namespace, and namespace otherwise.
func defaultNamespace(kind, namespace string) string {
	if namespace == "" && (kind == KindPod || kind == KindPersistentVolumeClaim || kind == KindSecret) {
		return metav1.NamespaceDefault
	}
	return namespace
}

// strictErrors turns an unknown or duplicate field, reported by the strict
// decoder with a path from the object's root, into an Error whose path is
// from the document's root; several duplicate YAML keys, reported as one
// error, become one Error each.
func (d *decoder) strictErrors(origin Origin, object string, err error) []error {
	withPath, ok := err.(interface {
		FieldPath() string
		SetFieldPath(path string)
	})
	if !ok {
		// Duplicate keys in YAML, reported by the YAML parser as one error
		// of several lines: "yaml: unmarshal errors:\n  line 5: …\n  line 9: …".
		var errs []error
		for _, line := range strings.Split(err.Error(), "\n")[1:] {
			if line = strings.TrimSpace(line); line != "" {
				errs = append(errs, origin.newError(object, "", d.yamlError(errors.New("yaml: "+line))))
			}
		}
		if len(errs) == 0 {
			errs = append(errs, origin.newError(object, "", d.yamlError(err)))
		}
		return errs
	}
	fieldPath := withPath.FieldPath()
	if origin.Root != nil {
		fieldPath = origin.Root.String() + "." + fieldPath
		withPath.SetFieldPath(fieldPath)
	}
	return []error{origin.newError(object, fieldPath, err)}
}

// decodeError turns a failure to decode data into kind's type into an Error
// that names the bad field and value, found by locateDecodeError; the JSON
// decoder does not name them for a value that a type's UnmarshalJSON
// refuses, as a resource quantity. A Secret's bad value is not shown: it
// may be the secret.
func decodeError(origin Origin, object, kind string, data []byte, err error) error {
	if obj, newErr := scheme.New(v1.SchemeGroupVersion.WithKind(kind)); newErr == nil {
		if fieldErr := locateDecodeError(data, reflect.TypeOf(obj).Elem(), origin.Root); fieldErr != nil {
			if kind == KindSecret {
				fieldErr.BadValue = field.OmitValueType{}
			}
			return origin.newError(object, fieldErr.Field, fieldErr)
		}
	}
	return origin.newError(object, "", fmt.Errorf("failed to decode %s: %w", kind, err))
}
