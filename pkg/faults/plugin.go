package faults

import (
	"context"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/volume-agent/volume-agent/pkg/volume"
)

// WrapPlugins returns plugins with each one wrapped by WrapPlugin. Wrap them
// before VolumePluginMgr.InitPlugins, so that the registry, and the wrapped
// volumes plugins build through the host, see the wrappers.
func WrapPlugins(plugins []volume.VolumePlugin, ic Interceptor) []volume.VolumePlugin {
	out := make([]volume.VolumePlugin, 0, len(plugins))
	for _, p := range plugins {
		out = append(out, WrapPlugin(p, ic))
	}
	return out
}

// WrapPlugin returns p with its Builders' SetUp and SetUpAt intercepted as
// OpSetUp, and its Cleaners' TearDown and TearDownAt as OpTearDown. Everything
// else is p's own, and the result implements the same optional interfaces of
// pkg/volume as p (PersistentVolumePlugin, SpecValidatingPlugin,
// HealthCheckingPlugin).
func WrapPlugin(p volume.VolumePlugin, ic Interceptor) volume.VolumePlugin {
	base := &plugin{VolumePlugin: p, ic: ic}
	modes, isPersistent := p.(volume.PersistentVolumePlugin)
	validator, isValidating := p.(volume.SpecValidatingPlugin)
	checker, isChecking := p.(volume.HealthCheckingPlugin)
	switch {
	case isPersistent && isValidating && isChecking:
		return &struct {
			*plugin
			accessModes
			specValidator
			healthChecker
		}{base, modes, validator, checker}
	case isPersistent && isValidating:
		return &struct {
			*plugin
			accessModes
			specValidator
		}{base, modes, validator}
	case isPersistent && isChecking:
		return &struct {
			*plugin
			accessModes
			healthChecker
		}{base, modes, checker}
	case isValidating && isChecking:
		return &struct {
			*plugin
			specValidator
			healthChecker
		}{base, validator, checker}
	case isPersistent:
		return &struct {
			*plugin
			accessModes
		}{base, modes}
	case isValidating:
		return &struct {
			*plugin
			specValidator
		}{base, validator}
	case isChecking:
		return &struct {
			*plugin
			healthChecker
		}{base, checker}
	}
	return base
}

// The optional methods of pkg/volume's plugin interfaces, one each, so that a
// wrapper can embed exactly those its plugin has.
type accessModes interface {
	GetAccessModes() []v1.PersistentVolumeAccessMode
}

type specValidator interface {
	ValidateSpec(spec *volume.Spec, fldPath *field.Path) field.ErrorList
}

type healthChecker interface {
	CheckHealth(ctx context.Context) volume.Health
}

// plugin intercepts the Builders and Cleaners of the plugin it embeds.
type plugin struct {
	volume.VolumePlugin
	ic Interceptor
}

// Unwrap returns the plugin that was wrapped.
func (p *plugin) Unwrap() volume.VolumePlugin { return p.VolumePlugin }

func (p *plugin) NewBuilder(spec *volume.Spec, pod *v1.Pod, opts volume.VolumeOptions) (volume.Builder, error) {
	builder, err := p.VolumePlugin.NewBuilder(spec, pod, opts)
	if err != nil {
		return nil, err
	}
	op := Operation{Name: OpSetUp, Plugin: p.Name(), Volume: spec.Name()}
	if pod != nil {
		op.PodUID, op.PodNamespace, op.PodName = pod.UID, pod.Namespace, pod.Name
	}
	return &interceptedBuilder{Builder: builder, ctx: opts.ContextOrBackground(), ic: p.ic, op: op}, nil
}

func (p *plugin) NewCleaner(volName string, podUID types.UID) (volume.Cleaner, error) {
	cleaner, err := p.VolumePlugin.NewCleaner(volName, podUID)
	if err != nil {
		return nil, err
	}
	op := Operation{Name: OpTearDown, Plugin: p.Name(), Volume: volName, PodUID: podUID}
	return &interceptedCleaner{Cleaner: cleaner, ic: p.ic, op: op}, nil
}

type interceptedBuilder struct {
	volume.Builder
	// ctx is the builder's VolumeOptions.Context: the operation's.
	ctx context.Context
	ic  Interceptor
	op  Operation
}

func (b *interceptedBuilder) SetUp(fsGroup *int64) error {
	return b.ic.around(b.ctx, b.op, func() error { return b.Builder.SetUp(fsGroup) })
}

func (b *interceptedBuilder) SetUpAt(dir string, fsGroup *int64) error {
	return b.ic.around(b.ctx, b.op, func() error { return b.Builder.SetUpAt(dir, fsGroup) })
}

type interceptedCleaner struct {
	volume.Cleaner
	ic Interceptor
	op Operation
}

// A Cleaner's methods take no context: its interceptor gets
// context.Background().

func (c *interceptedCleaner) TearDown() error {
	return c.ic.around(context.Background(), c.op, c.Cleaner.TearDown)
}

func (c *interceptedCleaner) TearDownAt(dir string) error {
	return c.ic.around(context.Background(), c.op, func() error { return c.Cleaner.TearDownAt(dir) })
}
