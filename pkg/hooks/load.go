package hooks

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/klog/v2"
)

// DefaultTimeout is how long a hook may run when its file sets no timeout.
const DefaultTimeout = 30 * time.Second

// MaxTimeout is the largest timeout a hook file may set. A hook runs while a
// volume's set-up or tear-down waits for it; an hour is already far longer than
// any hook should take.
const MaxTimeout = time.Hour

// Hook is a valid hook file, ready to run. It must not be modified.
type Hook struct {
	// Name is the file's name, as "10-backup.json". It orders the hooks and
	// decides which file overrides which.
	Name string `json:"name"`
	// Source is the path the file was read from.
	Source string `json:"source"`
	// Definition is the file's content.
	Definition File `json:"definition"`

	timeout     time.Duration
	plugins     []*regexp.Regexp
	volumes     []*regexp.Regexp
	annotations []annotationMatcher
}

type annotationMatcher struct {
	key, value *regexp.Regexp
}

// Problem is a hook file, or a hook directory, that could not be used. It was
// skipped; the other hooks still run.
type Problem struct {
	// Path is the file or directory.
	Path string `json:"path"`
	// Message says what is wrong, naming the field and the value.
	Message string `json:"message"`
}

// ReadFile reads and validates the hook file at path. A file that is not valid
// is an error that names the file and every bad field with its value.
func ReadFile(path string) (*Hook, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("failed to read hook file: %w", err)
	}
	return Parse(path, data)
}

// Parse validates data, the content of the hook file at source. It checks the
// program named by hook.path on the local file system.
func Parse(source string, data []byte) (*Hook, error) {
	var def File
	decoder := json.NewDecoder(bytes.NewReader(data))
	decoder.DisallowUnknownFields()
	if err := decoder.Decode(&def); err != nil {
		return nil, fmt.Errorf("invalid hook file %q: %w", source, err)
	}
	if _, err := decoder.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("invalid hook file %q: unexpected data after the JSON object", source)
	}
	hook := &Hook{Name: filepath.Base(source), Source: source, Definition: def}
	if errs := hook.compile(); len(errs) > 0 {
		return nil, fmt.Errorf("invalid hook file %q: %w", source, errs.ToAggregate())
	}
	return hook, nil
}

// compile validates h.Definition and fills in the matchers and the timeout.
func (h *Hook) compile() field.ErrorList {
	def := h.Definition
	var errs field.ErrorList
	if def.Version != Version {
		if def.Version == "" {
			errs = append(errs, field.Required(field.NewPath("version"), fmt.Sprintf("must be %q", Version)))
		} else {
			errs = append(errs, field.NotSupported(field.NewPath("version"), def.Version, []string{Version}))
		}
	}
	errs = append(errs, validateCommand(def.Hook, field.NewPath("hook"))...)
	h.timeout = DefaultTimeout
	if def.Hook.Timeout != nil {
		h.timeout = time.Duration(*def.Hook.Timeout) * time.Second
	}

	whenPath := field.NewPath("when")
	when := def.When
	if when.Always == nil && len(when.Plugins) == 0 && len(when.Annotations) == 0 && len(when.Volumes) == 0 {
		errs = append(errs, field.Required(whenPath, "must set at least one of always, plugins, annotations, volumes"))
	}
	var regexErrs field.ErrorList
	h.plugins, regexErrs = compileAll(when.Plugins, whenPath.Child("plugins"))
	errs = append(errs, regexErrs...)
	h.volumes, regexErrs = compileAll(when.Volumes, whenPath.Child("volumes"))
	errs = append(errs, regexErrs...)
	keys := make([]string, 0, len(when.Annotations))
	for key := range when.Annotations {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	for _, key := range keys {
		entryPath := whenPath.Child("annotations").Key(key)
		keyRE, keyErr := compileAnchored(key, entryPath)
		valueRE, valueErr := compileAnchored(when.Annotations[key], entryPath)
		if keyErr != nil || valueErr != nil {
			for _, err := range []*field.Error{keyErr, valueErr} {
				if err != nil {
					errs = append(errs, err)
				}
			}
			continue
		}
		h.annotations = append(h.annotations, annotationMatcher{key: keyRE, value: valueRE})
	}

	stagesPath := field.NewPath("stages")
	if len(def.Stages) == 0 {
		errs = append(errs, field.Required(stagesPath, "must list at least one stage"))
	}
	for i, stage := range def.Stages {
		if !stage.valid() {
			supported := make([]string, len(Stages))
			for j, known := range Stages {
				supported[j] = string(known)
			}
			errs = append(errs, field.NotSupported(stagesPath.Index(i), stage, supported))
		}
	}
	return errs
}

func validateCommand(cmd Command, fldPath *field.Path) field.ErrorList {
	var errs field.ErrorList
	pathPath := fldPath.Child("path")
	switch {
	case cmd.Path == "":
		errs = append(errs, field.Required(pathPath, "the absolute path of the program to run"))
	case !filepath.IsAbs(cmd.Path):
		errs = append(errs, field.Invalid(pathPath, cmd.Path, "must be an absolute path"))
	default:
		info, err := os.Stat(cmd.Path)
		switch {
		case err != nil:
			errs = append(errs, field.Invalid(pathPath, cmd.Path, err.Error()))
		case !info.Mode().IsRegular():
			errs = append(errs, field.Invalid(pathPath, cmd.Path, "must be a regular file"))
		case info.Mode().Perm()&0o111 == 0:
			errs = append(errs, field.Invalid(pathPath, cmd.Path, "must be executable"))
		}
	}
	for i, entry := range cmd.Env {
		if name, _, found := strings.Cut(entry, "="); !found || name == "" {
			errs = append(errs, field.Invalid(fldPath.Child("env").Index(i), entry, "must be KEY=value"))
		}
	}
	if cmd.Timeout != nil {
		maxSeconds := int(MaxTimeout / time.Second)
		switch {
		case *cmd.Timeout <= 0:
			errs = append(errs, field.Invalid(fldPath.Child("timeout"), *cmd.Timeout, "must be a positive number of seconds"))
		case *cmd.Timeout > maxSeconds:
			errs = append(errs, field.Invalid(fldPath.Child("timeout"), *cmd.Timeout, fmt.Sprintf("must be at most %d seconds", maxSeconds)))
		}
	}
	return errs
}

func compileAll(exprs []string, fldPath *field.Path) ([]*regexp.Regexp, field.ErrorList) {
	var errs field.ErrorList
	out := make([]*regexp.Regexp, 0, len(exprs))
	for i, expr := range exprs {
		re, err := compileAnchored(expr, fldPath.Index(i))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, re)
	}
	return out, errs
}

// compileAnchored compiles expr so that it must match a whole string.
func compileAnchored(expr string, fldPath *field.Path) (*regexp.Regexp, *field.Error) {
	re, err := regexp.Compile(`^(?:` + expr + `)$`)
	if err != nil {
		// Compile the bare expression for the message, so that it does not
		// show the anchors this package added.
		if _, bareErr := regexp.Compile(expr); bareErr != nil {
			err = bareErr
		}
		return nil, field.Invalid(fldPath, expr, fmt.Sprintf("must be a valid regular expression: %v", err))
	}
	return re, nil
}

// Matches reports whether h runs at stage for the volume described by state.
func (h *Hook) Matches(stage Stage, state VolumeState) bool {
	if !h.runsAt(stage) {
		return false
	}
	when := h.Definition.When
	if when.Always != nil && !*when.Always {
		return false
	}
	if len(h.plugins) > 0 && !anyMatch(h.plugins, state.Plugin) {
		return false
	}
	if len(h.volumes) > 0 && !anyMatch(h.volumes, state.Volume) {
		return false
	}
	for _, matcher := range h.annotations {
		if !matcher.matchesAny(state.Annotations) {
			return false
		}
	}
	return true
}

func (h *Hook) runsAt(stage Stage) bool {
	for _, s := range h.Definition.Stages {
		if s == stage {
			return true
		}
	}
	return false
}

func anyMatch(res []*regexp.Regexp, s string) bool {
	for _, re := range res {
		if re.MatchString(s) {
			return true
		}
	}
	return false
}

func (m annotationMatcher) matchesAny(annotations map[string]string) bool {
	for key, value := range annotations {
		if m.key.MatchString(key) && m.value.MatchString(value) {
			return true
		}
	}
	return false
}

// loaded is the result of reading the hook directories once.
type loaded struct {
	hooks    []*Hook
	problems []Problem
	ignored  []string
	masked   []string
}

// loadDirectories reads dirs in order. A file overrides the file with the same
// name in an earlier directory; an empty one masks it. Missing directories are
// skipped; nothing here is fatal.
func loadDirectories(logger klog.Logger, dirs []string) loaded {
	var result loaded
	chosen := map[string]string{}
	for _, dir := range dirs {
		entries, err := os.ReadDir(dir)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				logger.V(2).Info("Hook directory does not exist", "directory", dir)
				continue
			}
			logger.Error(err, "Failed to read hook directory", "directory", dir)
			result.problems = append(result.problems, Problem{Path: dir, Message: fmt.Sprintf("failed to read hook directory: %v", err)})
			continue
		}
		for _, entry := range entries {
			path := filepath.Join(dir, entry.Name())
			if !strings.HasSuffix(entry.Name(), ".json") {
				logger.Info("Ignoring file in hook directory: its name does not end in .json", "path", path)
				result.ignored = append(result.ignored, path)
				continue
			}
			chosen[entry.Name()] = path
		}
	}

	names := make([]string, 0, len(chosen))
	for name := range chosen {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		path := chosen[name]
		data, err := os.ReadFile(path)
		if err == nil && len(data) == 0 {
			logger.V(1).Info("Hook is masked by an empty file", "path", path)
			result.masked = append(result.masked, path)
			continue
		}
		var hook *Hook
		if err == nil {
			hook, err = Parse(path, data)
		} else {
			err = fmt.Errorf("failed to read hook file: %w", err)
		}
		if err != nil {
			logger.Error(err, "Skipping invalid hook file", "path", path)
			result.problems = append(result.problems, Problem{Path: path, Message: err.Error()})
			continue
		}
		result.hooks = append(result.hooks, hook)
	}
	return result
}
