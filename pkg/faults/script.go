package faults

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/dop251/goja"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	"sigs.k8s.io/yaml"

	"github.com/volume-agent/volume-agent/pkg/volume"
)

// DefaultEvalTimeout bounds one snippet's run, so that a snippet that loops
// forever fails its operation instead of holding the VM.
const DefaultEvalTimeout = 5 * time.Second

// globalsKey names the snippet run once at load.
const globalsKey = "globals"

// snippetKey is "<operation>Start" or "<operation>End", the operation in lower
// camel case.
var snippetKey = regexp.MustCompile(`^([a-z][A-Za-z0-9]*)(Start|End)$`)

// Outcome is what a snippet decided for one operation.
type Outcome struct {
	// Delay is how long to wait before going on.
	Delay time.Duration
	// Err, when not nil, is the fault: a typed error (see volume.ClassOf) that
	// replaces the operation (Start) or its result (End).
	Err error
}

// ScriptError is a snippet that threw, returned a value that selects no
// outcome, or ran out of time.
type ScriptError struct {
	// Snippet is the snippet that ran, as "setUpStart".
	Snippet string
	// Location is where it threw, as "setUpStart line 3" or "globals line 7"
	// (a function defined in globals); empty when unknown.
	Location string
	// Message is what went wrong.
	Message string
}

// Error returns "fault script snippet <snippet> failed at <location>: <message>".
func (e *ScriptError) Error() string {
	if e.Location == "" {
		return fmt.Sprintf("fault script snippet %s failed: %s", e.Snippet, e.Message)
	}
	return fmt.Sprintf("fault script snippet %s failed at %s: %s", e.Snippet, e.Location, e.Message)
}

// ScriptOptions configure a Script.
type ScriptOptions struct {
	// Clock waits out delays. Nil means the real clock.
	Clock clock.Clock
	// EvalTimeout bounds each snippet's run. Zero means DefaultEvalTimeout.
	EvalTimeout time.Duration
}

// Script is a fault script: snippets run in one JavaScript VM for the Script's
// life, so that their variables (counters) persist from call to call. It is
// safe for concurrent use: snippets take turns on the VM, and delays are waited
// out after the VM is released.
type Script struct {
	name        string
	clock       clock.Clock
	evalTimeout time.Duration

	// mu guards vm and logger: goja runtimes are not goroutine-safe.
	mu       sync.Mutex
	vm       *goja.Runtime
	logger   klog.Logger
	programs map[string]*goja.Program
}

// LoadScript reads the fault script at path (the --fault-hooks-file flag) and
// logs loudly that fault injection is on.
func LoadScript(ctx context.Context, path string, opts ScriptOptions) (*Script, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("failed to read fault script: %w", err)
	}
	script, err := ParseScript(ctx, path, data, opts)
	if err != nil {
		return nil, err
	}
	klog.FromContext(ctx).Info("FAULT INJECTION IS ON: volume operations will fail on purpose as the fault script says; never use this in production",
		"faultHooksFile", path, "snippets", script.Snippets())
	return script, nil
}

// ParseScript compiles the fault script data, read from name, and runs its
// globals. The script is YAML: a map whose keys are "globals" or
// "<operation>Start" / "<operation>End" and whose values are JavaScript. An
// unknown key, a snippet that does not compile, and globals that throw are
// errors that name the key (and the line).
func ParseScript(ctx context.Context, name string, data []byte, opts ScriptOptions) (*Script, error) {
	var snippets map[string]string
	if err := yaml.UnmarshalStrict(data, &snippets); err != nil {
		return nil, fmt.Errorf("invalid fault script %q: %w", name, err)
	}
	s := &Script{
		name:        name,
		clock:       opts.Clock,
		evalTimeout: opts.EvalTimeout,
		vm:          goja.New(),
		logger:      klog.FromContext(ctx),
		programs:    map[string]*goja.Program{},
	}
	if s.clock == nil {
		s.clock = clock.RealClock{}
	}
	if s.evalTimeout <= 0 {
		s.evalTimeout = DefaultEvalTimeout
	}

	var errs []string
	for key, src := range snippets {
		if key != globalsKey {
			match := snippetKey.FindStringSubmatch(key)
			if match == nil {
				errs = append(errs, fmt.Sprintf("key %q: must be %q, or an operation in lower camel case followed by Start or End (as setUpStart)", key, globalsKey))
				continue
			}
			if !knownOperation(match[1]) {
				s.logger.Info("Fault script has a snippet for an operation that nothing intercepts", "snippet", key, "operation", match[1])
			}
		}
		program, err := goja.Compile(key, src, false)
		if err != nil {
			errs = append(errs, fmt.Sprintf("key %q: %v", key, err))
			continue
		}
		s.programs[key] = program
	}
	if len(errs) > 0 {
		sort.Strings(errs)
		return nil, fmt.Errorf("invalid fault script %q: %s", name, strings.Join(errs, "; "))
	}

	s.installGlobals()
	if globals, ok := s.programs[globalsKey]; ok {
		if _, err := s.run(ctx, globalsKey, globals); err != nil {
			return nil, fmt.Errorf("invalid fault script %q: %w", name, err)
		}
	}
	return s, nil
}

// knownOperation reports whether something in this package intercepts name.
func knownOperation(name string) bool {
	return name == OpSetUp || name == OpTearDown || strings.HasPrefix(name, "git")
}

// installGlobals defines the outcome constants and console.log.
func (s *Script) installGlobals() {
	for name, value := range map[string]string{"OK": "ok", "TRANSIENT": "transient", "FINAL": "final", "UNCERTAIN": "uncertain"} {
		_ = s.vm.Set(name, value)
	}
	console := s.vm.NewObject()
	_ = console.Set("log", func(call goja.FunctionCall) goja.Value {
		parts := make([]string, len(call.Arguments))
		for i, arg := range call.Arguments {
			parts[i] = arg.String()
		}
		s.logger.Info("Fault script log", "message", strings.Join(parts, " "))
		return goja.Undefined()
	})
	_ = s.vm.Set("console", console)
}

// Snippets returns the names of the script's snippets, sorted.
func (s *Script) Snippets() []string {
	names := make([]string, 0, len(s.programs))
	for name := range s.programs {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// Evaluate runs the snippet for op (op.Name + op.Stage) and returns the
// outcome it selects. result is the operation's result, shown to an End
// snippet. No snippet for op is no fault. A snippet that throws or returns a
// value that selects nothing gives a transient error wrapping a *ScriptError.
func (s *Script) Evaluate(ctx context.Context, op Operation, result error) Outcome {
	key := op.Name + string(op.Stage)
	program, ok := s.programs[key]
	if !ok {
		return Outcome{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.logger = klog.FromContext(ctx)
	if err := s.vm.Set("op", s.opObject(op, result)); err != nil {
		return s.failed(&ScriptError{Snippet: key, Message: fmt.Sprintf("failed to set op: %v", err)})
	}
	value, err := s.run(ctx, key, program)
	if err != nil {
		return s.failed(err)
	}
	outcome, err := outcomeOf(key, value)
	if err != nil {
		return s.failed(err)
	}
	if outcome.Err != nil || outcome.Delay > 0 {
		s.logger.Info("Injecting fault", "snippet", key, "plugin", op.Plugin, "volume", op.Volume, "podUID", op.PodUID,
			"delay", outcome.Delay, "err", outcome.Err)
	}
	return outcome
}

func (s *Script) failed(err error) Outcome {
	s.logger.Error(err, "Fault script failed; failing the operation with a transient error", "faultHooksFile", s.name)
	return Outcome{Err: volume.NewTransientError(err)}
}

// opObject returns op as the JavaScript object the snippet sees.
func (s *Script) opObject(op Operation, result error) *goja.Object {
	obj := s.vm.NewObject()
	args := make([]any, len(op.Args))
	for i, arg := range op.Args {
		args[i] = arg
	}
	fields := map[string]any{
		"name": op.Name, "plugin": op.Plugin, "volume": op.Volume, "podUID": string(op.PodUID),
		"podNamespace": op.PodNamespace, "podName": op.PodName,
		"stage": string(op.Stage), "args": s.vm.NewArray(args...), "error": nil, "errorClass": nil,
	}
	if op.Stage == End && result != nil {
		fields["error"] = result.Error()
		fields["errorClass"] = volume.ClassOf(result).String()
	}
	for name, value := range fields {
		_ = obj.Set(name, value)
	}
	return obj
}

// run runs program, named key, on the VM, bounded by ctx and the eval timeout.
// The caller holds s.mu (or owns s alone).
func (s *Script) run(ctx context.Context, key string, program *goja.Program) (goja.Value, error) {
	evalCtx, cancel := context.WithTimeout(ctx, s.evalTimeout)
	defer cancel()
	interrupted := make(chan struct{})
	stop := context.AfterFunc(evalCtx, func() {
		defer close(interrupted)
		if ctx.Err() != nil {
			s.vm.Interrupt(fmt.Errorf("stopped: %w", ctx.Err()))
			return
		}
		s.vm.Interrupt(fmt.Errorf("stopped after %s: %w", s.evalTimeout, evalCtx.Err()))
	})
	value, err := s.vm.RunProgram(program)
	if !stop() {
		// The interrupt fired: wait for it so it cannot hit the next run.
		<-interrupted
	}
	s.vm.ClearInterrupt()
	if err != nil {
		return nil, scriptError(key, err)
	}
	return value, nil
}

// scriptError turns a goja error into a *ScriptError with the line it came
// from.
func scriptError(key string, err error) *ScriptError {
	out := &ScriptError{Snippet: key, Message: err.Error()}
	var interrupted *goja.InterruptedError
	if errors.As(err, &interrupted) {
		out.Message = fmt.Sprint(interrupted.Value())
	}
	var exception *goja.Exception
	if errors.As(err, &exception) {
		if exception.Value() != nil {
			out.Message = exception.Value().String()
		}
		for _, frame := range exception.Stack() {
			if pos := frame.Position(); pos.Filename != "" && pos.Line > 0 {
				out.Location = fmt.Sprintf("%s line %d", pos.Filename, pos.Line)
				break
			}
		}
	}
	return out
}

// outcomeOf reads the outcome a snippet's last value selects.
func outcomeOf(key string, value goja.Value) (Outcome, error) {
	if value == nil || goja.IsUndefined(value) || goja.IsNull(value) {
		return Outcome{}, nil
	}
	wrong := func(format string, args ...any) (Outcome, error) {
		return Outcome{}, &ScriptError{Snippet: key, Message: fmt.Sprintf(format, args...) +
			`; want undefined, "ok", "transient", "final", "uncertain", or {error, message, delay}`}
	}
	switch exported := value.Export().(type) {
	case string:
		if isNoFault(exported) {
			return Outcome{}, nil
		}
		if _, ok := faultClasses[exported]; !ok {
			return wrong("returned %q", exported)
		}
		return Outcome{Err: injectedError(key, exported, "")}, nil
	case map[string]any:
		var outcome Outcome
		var class, message string
		for field, v := range exported {
			switch field {
			case "error":
				s, ok := v.(string)
				if !ok {
					return wrong("returned error: %v, not a string", v)
				}
				class = s
			case "message":
				s, ok := v.(string)
				if !ok {
					return wrong("returned message: %v, not a string", v)
				}
				message = s
			case "delay":
				delay, err := parseDelay(v)
				if err != nil {
					return wrong("returned delay: %v", err)
				}
				outcome.Delay = delay
			default:
				return wrong("returned an object with the unknown field %q", field)
			}
		}
		if isNoFault(class) {
			if message != "" {
				return wrong("returned a message but no error")
			}
			return outcome, nil
		}
		if _, ok := faultClasses[class]; !ok {
			return wrong("returned error: %q", class)
		}
		outcome.Err = injectedError(key, class, message)
		return outcome, nil
	default:
		return wrong("returned %s", value.String())
	}
}

// faultClasses maps the outcome names that fail an operation to the
// constructor of their typed error.
var faultClasses = map[string]func(error) error{
	"transient": volume.NewTransientError,
	"final":     volume.NewFinalError,
	"uncertain": volume.NewUncertainError,
}

// isNoFault reports whether class selects no fault.
func isNoFault(class string) bool { return class == "" || class == "ok" }

// injectedError returns the fault of class, a key of faultClasses.
func injectedError(key, class, message string) error {
	if message == "" {
		message = fmt.Sprintf("%s returned %q", key, class)
	}
	return faultClasses[class](fmt.Errorf("injected fault: %s", message))
}

// parseDelay reads a delay: a Go duration string or a number of milliseconds.
func parseDelay(v any) (time.Duration, error) {
	var delay time.Duration
	switch d := v.(type) {
	case string:
		parsed, err := time.ParseDuration(d)
		if err != nil {
			return 0, err
		}
		delay = parsed
	case int64:
		delay = time.Duration(d) * time.Millisecond
	case float64:
		delay = time.Duration(d * float64(time.Millisecond))
	default:
		return 0, fmt.Errorf("%v is neither a duration nor a number of milliseconds", v)
	}
	if delay < 0 {
		return 0, fmt.Errorf("%s is negative", delay)
	}
	return delay, nil
}

// Interceptor returns the script as an Interceptor: Pre evaluates the
// "<operation>Start" snippet and Post the "<operation>End" snippet. Delays are
// waited out with the VM released; a context done during a delay fails the
// operation with a transient error.
func (s *Script) Interceptor() Interceptor {
	return Interceptor{
		Pre: func(ctx context.Context, op Operation) error {
			return s.apply(ctx, s.Evaluate(ctx, op, nil))
		},
		Post: func(ctx context.Context, op Operation, result error) error {
			if err := s.apply(ctx, s.Evaluate(ctx, op, result)); err != nil {
				return err
			}
			return result
		},
	}
}

// apply waits out outcome's delay and returns its error.
func (s *Script) apply(ctx context.Context, outcome Outcome) error {
	if outcome.Delay > 0 {
		select {
		case <-s.clock.After(outcome.Delay):
		case <-ctx.Done():
			return volume.NewTransientError(fmt.Errorf("injected delay of %s interrupted: %w", outcome.Delay, ctx.Err()))
		}
	}
	return outcome.Err
}
