package app

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/types"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/volume-agent/volume-agent/pkg/manifest"
	"github.com/volume-agent/volume-agent/pkg/volumemanager"
)

func (a *App) newTeardownCommand() *cobra.Command {
	var files, podUIDs []string
	var output string
	var attempts int
	cmd := &cobra.Command{
		Use:   "teardown (-f FILE | --pod-uid UID) [-o text|json]",
		Short: "Tear down every volume of some pods, once",
		Long: `Tear down every volume found on disk of the pods in FILE, or of the pods
given by UID, through the same volume manager as "volume-agent run", then
remove their pod directories; other pods are not touched. The Cleaners work
from what is on disk alone, so no manifest is needed with --pod-uid, and
FILE gives only the pods' identity: a pod whose volumes no longer validate
(a gitRepo protocol allowed at set-up and not now) is still torn down, and
the problems are printed as a warning.

One line is printed per volume as it is torn down (state tornDown) or fails;
-o json prints one JSON array, as setup does.

Exit codes: 0 every volume is torn down; 1 some volume failed; 2 the input is
invalid (FILE does not decode, or a pod's UID cannot name a directory), and
nothing on disk was touched.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, "text", "json"); err != nil {
				return err
			}
			if attempts < 1 {
				return invalidInput(fmt.Errorf("invalid value %d for --attempts: must be at least 1", attempts))
			}
			if (len(files) == 0) == (len(podUIDs) == 0) {
				return invalidInput(errors.New("give either -f FILE or --pod-uid UID"))
			}
			uids := sets.New[types.UID]()
			for _, uid := range podUIDs {
				if err := validatePodUID(uid, field.NewPath("--pod-uid")); err != nil {
					return invalidInput(err)
				}
				uids.Insert(types.UID(uid))
			}
			if err := a.load(cmd); err != nil {
				return err
			}
			var bundle *manifest.Bundle
			if len(files) > 0 {
				var err error
				if bundle, err = a.loadPodsToTearDown(files); err != nil {
					return err
				}
				for _, pod := range bundle.Pods {
					uids.Insert(pod.UID)
				}
			}
			return a.runOnce(cmd.Context(), uids, bundle, volumemanager.OneShotOptions{Mode: volumemanager.OneShotTearDown, MaxAttempts: attempts}, output)
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "manifest file (YAML or JSON, several documents); - reads standard input; repeatable")
	cmd.Flags().StringArrayVar(&podUIDs, "pod-uid", nil, "UID of a pod to tear down (as setup printed it); repeatable")
	addOneShotFlags(cmd, &output, &attempts)
	return cmd
}

// loadPodsToTearDown decodes files for their pods' identity, all a tear-down
// needs: the Cleaners work from what is on disk. A pod whose spec no longer
// validates (a gitRepo protocol allowed at set-up and not now) is still torn
// down, with a warning. A file that does not decode, or a pod whose UID cannot
// name a pod directory, is invalid input.
func (a *App) loadPodsToTearDown(files []string) (*manifest.Bundle, error) {
	bundle := &manifest.Bundle{}
	var problems []error
	for _, file := range files {
		b, err := manifest.DecodeFile(file, manifest.Options{NodeName: a.Config.NodeName, Stdin: a.Stdin})
		if err != nil {
			problems = append(problems, err)
			continue
		}
		bundle.Append(b)
	}
	for _, pod := range bundle.Pods {
		if err := validatePodUID(string(pod.UID), field.NewPath("metadata", "uid")); err != nil {
			problems = append(problems, fmt.Errorf("%s: Pod %q: %w", bundle.Origin(pod), pod.Namespace+"/"+pod.Name, err))
		}
	}
	if len(problems) > 0 {
		return nil, invalidInput(fmt.Errorf("%s", problemLines(utilerrors.NewAggregate(problems))))
	}
	if err := manifest.Validate(bundle, a.Plugins); err != nil {
		fmt.Fprintf(a.Stderr, "Warning: tearing the pods down although their manifest is not valid now: %s\n", problemLines(err))
	}
	return bundle, nil
}

// validatePodUID checks that uid, given at fldPath, can name a pod directory.
// It is looser than the manifests' rule (manifest.IsValidPodUID) on purpose:
// a pod set up before that rule was tightened can still be torn down.
func validatePodUID(uid string, fldPath *field.Path) error {
	if uid == "" || uid == "." || uid == ".." || len(uid) > 255 || strings.ContainsAny(uid, "/\x00") {
		return field.Invalid(fldPath, uid, "must name a pod directory, as the UIDs setup prints do")
	}
	return nil
}
