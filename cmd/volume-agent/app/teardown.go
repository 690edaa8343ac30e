package app

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"

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
from what is on disk alone, so no manifest is needed with --pod-uid.

One line is printed per volume as it is torn down (state tornDown) or fails;
-o json prints one JSON array, as setup does.

Exit codes: 0 every volume is torn down; 1 some volume failed; 2 the input is
invalid, and nothing on disk was touched.`,
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
				if err := validatePodUID(uid); err != nil {
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
				if bundle, err = a.loadManifests(files); err != nil {
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

// validatePodUID checks that uid can name a pod directory.
func validatePodUID(uid string) error {
	if uid == "" || uid == "." || uid == ".." || len(uid) > 253 || strings.ContainsAny(uid, "/\x00") {
		return fmt.Errorf("invalid value %q for --pod-uid: must be a pod UID, such as setup prints", uid)
	}
	return nil
}
