// Package scheme builds the runtime scheme and codecs of volume-agent's
// configuration API: the internal types plus every versioned form.
package scheme

import (
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"

	"github.com/volume-agent/volume-agent/pkg/apis/config"
	"github.com/volume-agent/volume-agent/pkg/apis/config/v1alpha1"
)

// NewSchemeAndCodecs returns a new scheme holding the internal and v1alpha1
// configuration types (with their conversions and defaults), and a codec
// factory built over it with the given options, such as serializer.EnableStrict.
// Decoding with the factory's UniversalDecoder defaults and converts to the
// internal types.
func NewSchemeAndCodecs(mutators ...serializer.CodecFactoryOptionsMutator) (*runtime.Scheme, *serializer.CodecFactory, error) {
	scheme := runtime.NewScheme()
	if err := config.AddToScheme(scheme); err != nil {
		return nil, nil, fmt.Errorf("failed to add internal configuration types to scheme: %w", err)
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return nil, nil, fmt.Errorf("failed to add v1alpha1 configuration types to scheme: %w", err)
	}
	codecs := serializer.NewCodecFactory(scheme, mutators...)
	return scheme, &codecs, nil
}
