package app

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"

	"github.com/volume-agent/volume-agent/pkg/manifest"
)

func (a *App) newValidateCommand() *cobra.Command {
	var files []string
	cmd := &cobra.Command{
		Use:   "validate -f FILE",
		Short: "Check pod, PersistentVolume, claim and Secret manifests without touching anything",
		Long: `Check manifests as setup would, without touching anything on disk. Each problem
names the file, the document, and the field path, as spec.volumes[1].emptyDir.medium.
Several files are also checked together, as setup takes them. Exits 0 when every file is valid and 2 otherwise.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := a.load(cmd); err != nil {
				return err
			}
			var problems []error
			all := &manifest.Bundle{}
			for _, file := range files {
				bundle, err := a.loadManifest(file)
				if err != nil {
					problems = append(problems, err)
					continue
				}
				all.Append(bundle)
				fmt.Fprintf(a.Stdout, "%s: valid: %d pods, %d persistent volumes, %d claims, %d secrets\n",
					file, len(bundle.Pods), len(bundle.PersistentVolumes), len(bundle.PersistentVolumeClaims), len(bundle.Secrets))
			}
			if len(problems) == 0 && len(files) > 1 {
				// The files together, as setup takes them: duplicates and
				// claims of one PersistentVolume across files.
				if err := manifest.Validate(all, nil); err != nil {
					problems = append(problems, err)
				}
			}
			if len(problems) > 0 {
				return invalidInput(errors.New(problemLines(utilerrors.NewAggregate(problems))))
			}
			return nil
		},
	}
	addFileFlag(cmd, &files)
	return cmd
}

// addFileFlag registers the required, repeatable -f flag.
func addFileFlag(cmd *cobra.Command, files *[]string) {
	cmd.Flags().StringArrayVarP(files, "filename", "f", nil, "manifest file (YAML or JSON, several documents); - reads standard input; repeatable")
	_ = cmd.MarkFlagRequired("filename")
}

// loadManifest decodes and validates the manifest file (- for standard
// input) with the loaded plugins. Its error lists every problem, one per
// line when printed.
func (a *App) loadManifest(file string) (*manifest.Bundle, error) {
	return manifest.LoadFile(file, manifest.Options{NodeName: a.Config.NodeName, Plugins: a.Plugins, Stdin: a.Stdin})
}

// problemLines renders an aggregate error one problem per line.
func problemLines(err error) string {
	var agg utilerrors.Aggregate
	if !errors.As(err, &agg) {
		return err.Error()
	}
	out := ""
	for _, e := range utilerrors.Flatten(agg).Errors() {
		out += "\n  " + e.Error()
	}
	n := len(utilerrors.Flatten(agg).Errors())
	noun := "problems"
	if n == 1 {
		noun = "problem"
	}
	return fmt.Sprintf("%d %s:%s", n, noun, out)
}
