package csi

import (
	"path/filepath"
	"testing"

	v1 "k8s.io/api/core/v1"

	"github.com/volume-agent/volume-agent/pkg/manifest"
	"github.com/volume-agent/volume-agent/pkg/volume"
	"github.com/volume-agent/volume-agent/pkg/volume/emptydir"
	"github.com/volume-agent/volume-agent/pkg/volume/flocker"
	"github.com/volume-agent/volume-agent/pkg/volume/gitrepo"
	volumetesting "github.com/volume-agent/volume-agent/pkg/volume/testing"
)

// TestExamplesAreAccepted reads examples/csi as the kubelet would send it:
// each inline CSI volume's attributes must make a valid publish, and each
// CSI PersistentVolume's handle and attributes a valid stage.
func TestExamplesAreAccepted(t *testing.T) {
	probed := append(emptydir.ProbeVolumePlugins(), gitrepo.ProbeVolumePlugins(gitrepo.Config{AllowedProtocols: []string{"https", "ssh"}})...)
	_, plugins := volumetesting.NewFakeVolumeHost(t, t.TempDir(), append(probed, flocker.ProbeVolumePlugins(flocker.Config{})...), volumetesting.FakeHostOptions{})
	d := &Driver{cfg: Config{Plugins: plugins}}
	files, err := filepath.Glob(filepath.Join("..", "..", "examples", "csi", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	inline, persistent := 0, 0
	for _, file := range files {
		bundle, err := manifest.DecodeFile(file, manifest.Options{})
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		for _, pod := range bundle.Pods {
			for _, vol := range pod.Spec.Volumes {
				if vol.CSI == nil {
					continue
				}
				inline++
				rec := &publishRecord{VolumeID: "csi-example", TargetPath: "/var/lib/kubelet/pods/uid/volumes/kubernetes.io~csi/" + vol.Name + "/mount",
					VolumeContext: vol.CSI.VolumeAttributes, ReadOnly: vol.CSI.ReadOnly != nil && *vol.CSI.ReadOnly}
				if _, err := rec.pod(plugins); err != nil {
					t.Errorf("%s: pod %s volume %s: %v", file, pod.Name, vol.Name, err)
				}
			}
		}
		for _, pv := range bundle.PersistentVolumes {
			persistent++
			checkPersistentExample(t, d, file, pv)
		}
	}
	if inline < 3 || persistent == 0 {
		t.Errorf("found %d inline CSI volumes and %d PersistentVolumes; want the gitRepo and emptyDir pods and the static PV", inline, persistent)
	}
}

func checkPersistentExample(t *testing.T, d *Driver, file string, pv *v1.PersistentVolume) {
	t.Helper()
	src := pv.Spec.CSI
	if src == nil {
		t.Errorf("%s: PersistentVolume %s has no csi source", file, pv.Name)
		return
	}
	volumeContext, err := persistentContext(src.VolumeHandle, src.VolumeAttributes)
	if err != nil {
		t.Errorf("%s: PersistentVolume %s: %v", file, pv.Name, err)
		return
	}
	rec := &publishRecord{VolumeID: src.VolumeHandle, TargetPath: "/var/lib/kubelet/plugins/kubernetes.io/csi/volume-agent.io/x/globalmount", VolumeContext: volumeContext}
	pod, err := rec.stagePod(d)
	if err != nil {
		t.Errorf("%s: PersistentVolume %s: %v", file, pv.Name, err)
		return
	}
	if _, err := d.cfg.Plugins.FindPluginBySpec(volume.NewSpecFromVolume(&pod.Spec.Volumes[0])); err != nil {
		t.Errorf("%s: PersistentVolume %s: %v", file, pv.Name, err)
	}
}
