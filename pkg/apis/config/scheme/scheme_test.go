package scheme

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"sigs.k8s.io/yaml"

	"github.com/volume-agent/volume-agent/pkg/apis/config"
	"github.com/volume-agent/volume-agent/pkg/apis/config/v1alpha1"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata from the current code")

const kindDir = "testdata/AgentConfiguration"

func newCodecs(t *testing.T) (*runtime.Scheme, *serializer.CodecFactory) {
	t.Helper()
	scheme, codecs, err := NewSchemeAndCodecs(serializer.EnableStrict)
	if err != nil {
		t.Fatal(err)
	}
	return scheme, codecs
}

func encodeYAML(t *testing.T, codecs *serializer.CodecFactory, obj runtime.Object, gv runtime.GroupVersioner) []byte {
	t.Helper()
	info, ok := runtime.SerializerInfoForMediaType(codecs.SupportedMediaTypes(), runtime.ContentTypeYAML)
	if !ok {
		t.Fatal("no YAML serializer")
	}
	data, err := runtime.Encode(codecs.EncoderForVersion(info.Serializer, gv), obj)
	if err != nil {
		t.Fatalf("failed to encode: %v", err)
	}
	return data
}

func decodeFile(t *testing.T, codecs *serializer.CodecFactory, path string) *config.AgentConfiguration {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := runtime.Decode(codecs.UniversalDecoder(), data)
	if err != nil {
		t.Fatalf("failed to decode %s: %v", path, err)
	}
	cfg, ok := obj.(*config.AgentConfiguration)
	if !ok {
		t.Fatalf("decoded %T from %s, want *config.AgentConfiguration", obj, path)
	}
	return cfg
}

// compareGolden compares got with the golden file, or rewrites the file
// when -update is given.
func compareGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("Updated %s", path)
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (run go test with -update to accept)\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

// TestDefaultingGolden decodes each before/<version>.yaml, which applies the
// version's defaults, and compares the result encoded back in that version
// with after/<version>.yaml.
func TestDefaultingGolden(t *testing.T) {
	_, codecs := newCodecs(t)
	for _, gv := range []schema.GroupVersion{v1alpha1.SchemeGroupVersion} {
		t.Run(gv.Version, func(t *testing.T) {
			cfg := decodeFile(t, codecs, filepath.Join(kindDir, "before", gv.Version+".yaml"))
			got := encodeYAML(t, codecs, cfg, gv)
			compareGolden(t, filepath.Join(kindDir, "after", gv.Version+".yaml"), got)
		})
	}
}

// TestRoundTripGolden decodes every roundtrip/<case>/<version>.yaml to the
// internal form and encodes it back; the bytes must not change.
func TestRoundTripGolden(t *testing.T) {
	_, codecs := newCodecs(t)
	cases, err := filepath.Glob(filepath.Join(kindDir, "roundtrip", "*"))
	if err != nil || len(cases) == 0 {
		t.Fatalf("no round-trip cases under %s: %v", kindDir, err)
	}
	for _, dir := range cases {
		for _, gv := range []schema.GroupVersion{v1alpha1.SchemeGroupVersion} {
			t.Run(filepath.Base(dir)+"/"+gv.Version, func(t *testing.T) {
				path := filepath.Join(dir, gv.Version+".yaml")
				cfg := decodeFile(t, codecs, path)
				compareGolden(t, path, encodeYAML(t, codecs, cfg, gv))
			})
		}
	}
}

// TestRoundTripEveryField converts an internal configuration whose every
// field is set to v1alpha1 and back, and checks nothing is lost.
func TestRoundTripEveryField(t *testing.T) {
	scheme, codecs := newCodecs(t)
	original := everyFieldSet()
	if zero := zeroFields(reflect.ValueOf(*original), ""); len(zero) > 0 {
		t.Fatalf("everyFieldSet leaves fields zero, set them: %v", zero)
	}

	versioned := &v1alpha1.AgentConfiguration{}
	if err := scheme.Convert(original, versioned, nil); err != nil {
		t.Fatal(err)
	}
	data := encodeYAML(t, codecs, versioned, v1alpha1.SchemeGroupVersion)
	obj, err := runtime.Decode(codecs.UniversalDecoder(), data)
	if err != nil {
		t.Fatalf("failed to decode %s: %v", data, err)
	}
	if !reflect.DeepEqual(obj, original) {
		t.Errorf("round trip changed the configuration\ngot:\n%s\nwant:\n%s", toYAML(t, obj), toYAML(t, original))
	}
}

func everyFieldSet() *config.AgentConfiguration {
	d := func(s string) metav1.Duration {
		parsed, err := time.ParseDuration(s)
		if err != nil {
			panic(err)
		}
		return metav1.Duration{Duration: parsed}
	}
	return &config.AgentConfiguration{
		RootDir:         "/srv/agent",
		PodManifestPath: "/etc/volume-agent/pods",
		NodeName:        "node-a",
		NodeIP:          "10.0.0.7",
		Logging:         config.LoggingConfiguration{Verbosity: 3, Format: "json"},
		GitRepo: config.GitRepoConfiguration{
			AllowedProtocols: []string{"git", "file"},
			Timeout:          d("45s"),
			MaxSizeBytes:     123456,
			MinGitVersion:    "2.41.0",
			Cache:            config.GitCacheConfiguration{Enabled: true, MaxBytes: 99999, Mode: "overlay"},
		},
		Flocker: config.FlockerConfiguration{
			ControlServiceHost: "flocker.example",
			Port:               14523,
			CAFile:             "/pki/ca.crt",
			ClientCertFile:     "/pki/user.crt",
			ClientKeyFile:      "/pki/user.key",
			MoveTimeout:        d("3m"),
		},
		VolumeManager: config.VolumeManagerConfiguration{
			ResyncPeriod:      d("1m"),
			Workers:           3,
			InitialBackoff:    d("1s"),
			MaxBackoff:        d("1m30s"),
			OperationTimeout:  d("4m"),
			HealthCheckPeriod: d("15s"),
			SizeCheckPeriod:   d("5s"),
			VerifyPeriod:      d("6s"),
			SourceLoadTimeout: d("7s"),

			TeardownOnExitTimeout: d("8s"),
			TeardownOnExit:        true,
		},
		Server: config.ServerConfiguration{
			SocketPath:     "/run/va.sock",
			SocketMode:     "0660",
			SocketGroup:    "volume-agent",
			MetricsAddress: ":9090",
		},
		Hooks: config.HooksConfiguration{Directories: []string{"/opt/hooks"}, FaultHooksFile: "/etc/faults.js"},
		CSI: config.CSIConfiguration{
			Endpoint:               "unix:///run/va/csi.sock",
			DriverName:             "csi.example.com",
			KubeletRegistrationDir: "/var/lib/kubelet/plugins_registry",
			PluginRegistrationDir:  "/var/lib/va/plugins_registry",
			Drivers:                []config.CSIDriverEndpoint{{Name: "hostpath.csi.k8s.io", Endpoint: "unix:///run/csi/hostpath.sock"}},
			CallTimeout:            metav1.Duration{Duration: time.Minute},
		},
	}
}

// zeroFields lists the paths of the zero-valued leaf fields of a struct,
// except TypeMeta, which the codecs own.
func zeroFields(v reflect.Value, prefix string) []string {
	var zero []string
	for i := range v.NumField() {
		field, value := v.Type().Field(i), v.Field(i)
		if field.Type == reflect.TypeFor[metav1.TypeMeta]() {
			continue
		}
		path := prefix + field.Name
		if field.Type.Kind() == reflect.Struct && field.Type != reflect.TypeFor[metav1.Duration]() {
			zero = append(zero, zeroFields(value, path+".")...)
		} else if value.IsZero() {
			zero = append(zero, path)
		}
	}
	return zero
}

func toYAML(t *testing.T, obj any) string {
	t.Helper()
	data, err := yaml.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
