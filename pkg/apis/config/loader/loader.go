// Package loader builds volume-agent's effective configuration from its
// sources, in increasing precedence: defaults, the configuration file, the
// Flocker environment variables, and command-line flags set explicitly.
//
// A command typically does:
//
//	flagValues := loader.Default()
//	loader.AddFlags(cmd.Flags(), flagValues) // before parsing
//	...
//	cfg, err := loader.Resolve(configFile, cmd.Flags(), os.Getenv) // after parsing
package loader

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/spf13/pflag"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"sigs.k8s.io/yaml"

	"github.com/volume-agent/volume-agent/pkg/apis/config"
	configscheme "github.com/volume-agent/volume-agent/pkg/apis/config/scheme"
	"github.com/volume-agent/volume-agent/pkg/apis/config/v1alpha1"
	"github.com/volume-agent/volume-agent/pkg/apis/config/validation"
)

var (
	scheme *runtime.Scheme
	codecs *serializer.CodecFactory
)

func init() {
	var err error
	scheme, codecs, err = configscheme.NewSchemeAndCodecs(serializer.EnableStrict)
	utilruntime.Must(err)
}

// Load reads the configuration file at path, decodes it strictly (unknown or
// duplicate fields, and any kind or apiVersion other than a registered
// AgentConfiguration version, are errors that name the file and the field),
// applies the defaults of its version and converts it to the internal form.
// An empty nodeName is filled from the host name. Load does not validate.
func Load(path string) (*config.AgentConfiguration, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("failed to read configuration file: %w", err)
	}
	cfg, err := decode(data)
	if err != nil {
		return nil, fmt.Errorf("failed to load configuration file %q: %w", path, err)
	}
	fillNodeName(cfg)
	return cfg, nil
}

func decode(data []byte) (*config.AgentConfiguration, error) {
	// Check the type first: the decoder's own messages for a missing or
	// unknown kind quote the whole document.
	var typeMeta metav1.TypeMeta
	if err := yaml.Unmarshal(data, &typeMeta); err != nil {
		return nil, err
	}
	gvk := schema.FromAPIVersionAndKind(typeMeta.APIVersion, typeMeta.Kind)
	if gvk.Version == runtime.APIVersionInternal || !scheme.Recognizes(gvk) {
		return nil, fmt.Errorf("apiVersion %q, kind %q is not supported: want apiVersion %q, kind %q",
			typeMeta.APIVersion, typeMeta.Kind, v1alpha1.SchemeGroupVersion, "AgentConfiguration")
	}
	obj, _, err := codecs.UniversalDecoder().Decode(data, nil, nil)
	if err != nil {
		// Some decoding errors, such as a malformed duration, do not say
		// which field holds the bad value.
		if path := badField(data, gvk); path != "" && !strings.Contains(err.Error(), path) {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return nil, err
	}
	cfg, ok := obj.(*config.AgentConfiguration)
	if !ok {
		return nil, fmt.Errorf("decoded unexpected type %T", obj)
	}
	return cfg, nil
}

// badField returns the dotted path of the first field (in sorted order) whose
// value alone does not decode into a gvk object, or "" if there is none.
func badField(data []byte, gvk schema.GroupVersionKind) string {
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return ""
	}
	decodes := func(doc any) bool {
		single, err := json.Marshal(doc)
		if err != nil {
			return false
		}
		obj, err := scheme.New(gvk)
		return err == nil && json.Unmarshal(single, obj) == nil
	}
	return findBadField(doc, func(v any) any { return v }, "", decodes)
}

// findBadField walks doc depth-first; wrap rebuilds the document path above
// doc around a single value.
func findBadField(doc map[string]any, wrap func(any) any, prefix string, decodes func(any) bool) string {
	for _, key := range slices.Sorted(maps.Keys(doc)) {
		wrapKey := func(v any) any { return wrap(map[string]any{key: v}) }
		if nested, ok := doc[key].(map[string]any); ok {
			if path := findBadField(nested, wrapKey, prefix+key+".", decodes); path != "" {
				return path
			}
			continue
		}
		if !decodes(wrapKey(doc[key])) {
			return prefix + key
		}
	}
	return ""
}

// Default returns the configuration used when no file is given: every field
// at the default of the newest version, nodeName from the host name.
func Default() *config.AgentConfiguration {
	versioned := &v1alpha1.AgentConfiguration{}
	scheme.Default(versioned)
	cfg := &config.AgentConfiguration{}
	// Generated conversions between registered types do not fail.
	utilruntime.Must(scheme.Convert(versioned, cfg, nil))
	fillNodeName(cfg)
	return cfg
}

// fillNodeName sets an empty NodeName to the lower-cased host name. When the
// host name cannot be read it stays empty and validation reports it.
func fillNodeName(cfg *config.AgentConfiguration) {
	if cfg.NodeName != "" {
		return
	}
	if hostname, err := os.Hostname(); err == nil {
		cfg.NodeName = strings.ToLower(strings.TrimSpace(hostname))
	}
}

// Resolve builds the effective, validated configuration. It starts from the
// file at path, or Default when path is empty, then applies the Flocker
// environment variables read through getenv, then every flag of fs that was
// set explicitly (see ApplyChangedFlags; fs may be nil). The error lists
// every validation problem.
func Resolve(path string, fs *pflag.FlagSet, getenv func(string) string) (*config.AgentConfiguration, error) {
	var cfg *config.AgentConfiguration
	if path == "" {
		cfg = Default()
	} else {
		var err error
		if cfg, err = Load(path); err != nil {
			return nil, err
		}
	}
	if err := ApplyFlockerEnvironment(cfg, getenv); err != nil {
		return nil, err
	}
	if fs != nil {
		if err := ApplyChangedFlags(fs, cfg); err != nil {
			return nil, err
		}
	}
	if errs := validation.ValidateAgentConfiguration(cfg); len(errs) > 0 {
		return nil, fmt.Errorf("invalid configuration: %w", errs.ToAggregate())
	}
	return cfg, nil
}
