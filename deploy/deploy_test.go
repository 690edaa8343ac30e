// Package deploy_test checks that the deployment files decode as the
// Kubernetes types they claim to be, and agree with each other and with the
// driver's defaults.
package deploy_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/spf13/pflag"

	"github.com/volume-agent/volume-agent/pkg/apis/config"
	"github.com/volume-agent/volume-agent/pkg/apis/config/loader"
	"github.com/volume-agent/volume-agent/pkg/apis/config/v1alpha1"
	"github.com/volume-agent/volume-agent/pkg/apis/config/validation"
	"github.com/volume-agent/volume-agent/pkg/csi"
)

// driverName is the agent's default driver name, which every file uses.
const driverName = v1alpha1.DefaultCSIDriverName

// decodeAll decodes every YAML document of path strictly into a new value
// made by newFor from the document's kind.
func decodeAll(t *testing.T, path string, newFor func(kind string) any) []any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var out []any
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		var meta struct{ APIVersion, Kind string }
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		obj := newFor(meta.APIVersion + "/" + meta.Kind)
		if obj == nil {
			t.Fatalf("%s: unexpected kind %s %s", path, meta.APIVersion, meta.Kind)
		}
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			t.Fatalf("%s: %s: %v", path, meta.Kind, err)
		}
		out = append(out, obj)
	}
	return out
}

func decodeOne[T any](t *testing.T, path, kind string) *T {
	t.Helper()
	objs := decodeAll(t, path, func(k string) any {
		if k == kind {
			return new(T)
		}
		return nil
	})
	if len(objs) != 1 {
		t.Fatalf("%s: want one %s, found %d documents", path, kind, len(objs))
	}
	return objs[0].(*T)
}

func TestCSIDriver(t *testing.T) {
	d := decodeOne[storagev1.CSIDriver](t, filepath.Join("kubernetes", "csidriver.yaml"), "storage.k8s.io/v1/CSIDriver")
	if d.Name != driverName {
		t.Errorf("name = %q, want the driver name %q", d.Name, driverName)
	}
	if d.Spec.AttachRequired == nil || *d.Spec.AttachRequired {
		t.Errorf("attachRequired = %v, want false: the driver has no ControllerPublishVolume", d.Spec.AttachRequired)
	}
	if d.Spec.PodInfoOnMount == nil || !*d.Spec.PodInfoOnMount {
		t.Errorf("podInfoOnMount = %v, want true", d.Spec.PodInfoOnMount)
	}
	modes := d.Spec.VolumeLifecycleModes
	if !slices.Contains(modes, storagev1.VolumeLifecycleEphemeral) || !slices.Contains(modes, storagev1.VolumeLifecyclePersistent) {
		t.Errorf("volumeLifecycleModes = %v, want Ephemeral and Persistent", modes)
	}
	if d.Spec.FSGroupPolicy == nil || *d.Spec.FSGroupPolicy != storagev1.FileFSGroupPolicy {
		t.Errorf("fsGroupPolicy = %v, want File", d.Spec.FSGroupPolicy)
	}
}

func TestStorageClass(t *testing.T) {
	sc := decodeOne[storagev1.StorageClass](t, filepath.Join("kubernetes", "storageclass.yaml"), "storage.k8s.io/v1/StorageClass")
	if sc.Provisioner != driverName {
		t.Errorf("provisioner = %q, want the driver name %q", sc.Provisioner, driverName)
	}
	if want := map[string]string{csi.ParameterType: string(csi.TypeFlocker)}; !equalMaps(sc.Parameters, want) {
		t.Errorf("parameters = %v, want %v", sc.Parameters, want)
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// agentConfig parses the arguments of `volume-agent run` as the agent does,
// with the Kubernetes variables $(NAME) given example values, and validates
// the configuration they make.
func agentConfig(t *testing.T, args []string) *config.AgentConfiguration {
	t.Helper()
	if len(args) == 0 || args[0] != "run" {
		t.Fatalf("args = %v, want the run command first", args)
	}
	vars := strings.NewReplacer("$(NODE_NAME)", "node-1", "$(NODE_IP)", "192.0.2.1")
	cfg := loader.Default()
	fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
	loader.AddFlags(fs, cfg)
	fs.Int("v", 0, "klog verbosity")
	expanded := make([]string, len(args)-1)
	for i, arg := range args[1:] {
		expanded[i] = vars.Replace(arg)
	}
	if err := fs.Parse(expanded); err != nil {
		t.Fatalf("the agent does not take %v: %v", args, err)
	}
	if errs := validation.ValidateAgentConfiguration(cfg); len(errs) > 0 {
		t.Fatalf("%v make an invalid configuration: %v", args, errs.ToAggregate())
	}
	return cfg
}

func TestDaemonSet(t *testing.T) {
	ds := decodeOne[appsv1.DaemonSet](t, filepath.Join("kubernetes", "daemonset.yaml"), "apps/v1/DaemonSet")
	pod := ds.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("want one container, found %d", len(pod.Containers))
	}
	c := pod.Containers[0]
	if !strings.HasPrefix(c.Image, "volume-agent:") || c.ImagePullPolicy != v1.PullNever {
		t.Errorf("image %q with pull policy %q, want volume-agent:<tag> with Never (the image is imported, not pulled)", c.Image, c.ImagePullPolicy)
	}
	if c.SecurityContext == nil || c.SecurityContext.Privileged == nil || !*c.SecurityContext.Privileged {
		t.Error("the container must be privileged to mount")
	}
	if !pod.HostNetwork {
		t.Error("hostNetwork must be true: Flocker knows the node by its IP")
	}
	cfg := agentConfig(t, c.Args)
	if cfg.CSI.DriverName != driverName {
		t.Errorf("--%s = %q, want %q", config.FlagCSIDriverName, cfg.CSI.DriverName, driverName)
	}

	hostPaths := map[string]string{} // volume name -> host path
	for _, vol := range pod.Volumes {
		if vol.HostPath == nil {
			t.Errorf("volume %q is not a hostPath", vol.Name)
			continue
		}
		hostPaths[vol.Name] = vol.HostPath.Path
	}
	mounts := map[string]v1.VolumeMount{} // mount path -> mount
	for _, m := range c.VolumeMounts {
		hostPath, ok := hostPaths[m.Name]
		if !ok {
			t.Errorf("volumeMount %q names no volume", m.Name)
		}
		// The agent hands the kubelet paths as it sees them: they must be
		// the host's paths.
		if hostPath != m.MountPath {
			t.Errorf("volume %q: host path %q is mounted at %q; the paths must be the same", m.Name, hostPath, m.MountPath)
		}
		mounts[m.MountPath] = m
	}
	// A mount nested in a Bidirectional one propagates to the host and
	// stays there after the pod is gone.
	for _, outer := range c.VolumeMounts {
		if outer.MountPropagation == nil || *outer.MountPropagation != v1.MountPropagationBidirectional {
			continue
		}
		for _, inner := range c.VolumeMounts {
			if strings.HasPrefix(inner.MountPath, outer.MountPath+"/") {
				t.Errorf("volume %q is mounted at %q, inside the Bidirectional mount %q: it would be left mounted on the host", inner.Name, inner.MountPath, outer.MountPath)
			}
		}
	}
	// onHost reports whether path in the pod is a host mount or inside one.
	onHost := func(path string) bool {
		for p := path; ; p = filepath.Dir(p) {
			if _, ok := mounts[p]; ok {
				return true
			}
			if p == filepath.Dir(p) { // "/" or "."
				return false
			}
		}
	}
	for _, path := range []string{"/var/lib/kubelet", "/var/lib/volume-agent"} {
		m, ok := mounts[path]
		if !ok || m.MountPropagation == nil || *m.MountPropagation != v1.MountPropagationBidirectional {
			t.Errorf("%s must be mounted with Bidirectional propagation", path)
		}
	}

	endpoint := cfg.CSI.Endpoint
	socket, ok := strings.CutPrefix(endpoint, "unix://")
	if !ok || !filepath.IsAbs(socket) {
		t.Fatalf("--csi-endpoint = %q, want unix:///ABS/PATH", endpoint)
	}
	if want := "/var/lib/kubelet/plugins/" + driverName; filepath.Dir(socket) != want {
		t.Errorf("the CSI socket %q is not in the plugin dir %q", socket, want)
	}
	if !onHost(socket) {
		t.Errorf("the CSI socket %q is not on a mount from the host", socket)
	}
	regDir := cfg.CSI.KubeletRegistrationDir
	if regDir != "/var/lib/kubelet/plugins_registry" {
		t.Errorf("--kubelet-registration-dir = %q, want the kubelet's /var/lib/kubelet/plugins_registry", regDir)
	}
	if !onHost(regDir) {
		t.Errorf("the registration dir %q is not on a mount from the host", regDir)
	}
	if root := cfg.RootDir; mounts[root].Name == "" {
		t.Errorf("the root dir %q is not on the host: a restarted pod would lose its state", root)
	}
}

func TestSystemdUnitAgreesWithDaemonSet(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("systemd", "volume-agent.service"))
	if err != nil {
		t.Fatal(err)
	}
	unit := strings.ReplaceAll(string(data), "\\\n", " ")
	execStart := regexp.MustCompile(`(?m)^ExecStart=(.*)$`).FindStringSubmatch(unit)
	if execStart == nil {
		t.Fatal("no ExecStart in the unit")
	}
	unitCfg := agentConfig(t, strings.Fields(execStart[1])[1:])
	ds := decodeOne[appsv1.DaemonSet](t, filepath.Join("kubernetes", "daemonset.yaml"), "apps/v1/DaemonSet")
	dsCfg := agentConfig(t, ds.Spec.Template.Spec.Containers[0].Args)
	for _, field := range []struct{ name, unit, ds string }{
		{config.FlagCSIEndpoint, unitCfg.CSI.Endpoint, dsCfg.CSI.Endpoint},
		{config.FlagCSIDriverName, unitCfg.CSI.DriverName, dsCfg.CSI.DriverName},
		{config.FlagKubeletRegistrationDir, unitCfg.CSI.KubeletRegistrationDir, dsCfg.CSI.KubeletRegistrationDir},
		{config.FlagRootDir, unitCfg.RootDir, dsCfg.RootDir},
	} {
		if field.unit != field.ds {
			t.Errorf("--%s is %q in the unit and %q in the DaemonSet", field.name, field.unit, field.ds)
		}
	}
	if !strings.Contains(unit, "KillMode=process") {
		t.Error("the unit must stop the agent alone (KillMode=process)")
	}
}

var uuidPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// TestExamples decodes every example of examples/csi and checks that each
// CSI volume names the driver and a volume type.
func TestExamples(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "examples", "csi", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples found: %v", err)
	}
	types := map[string]bool{}
	for _, file := range files {
		objs := decodeAll(t, file, func(kind string) any {
			switch kind {
			case "v1/Pod":
				return &v1.Pod{}
			case "v1/PersistentVolume":
				return &v1.PersistentVolume{}
			case "v1/PersistentVolumeClaim":
				return &v1.PersistentVolumeClaim{}
			}
			return nil
		})
		for _, obj := range objs {
			switch o := obj.(type) {
			case *v1.Pod:
				for _, vol := range o.Spec.Volumes {
					if vol.CSI == nil {
						continue
					}
					if vol.CSI.Driver != driverName {
						t.Errorf("%s: pod %s volume %s: driver %q, want %q", file, o.Name, vol.Name, vol.CSI.Driver, driverName)
					}
					types[vol.CSI.VolumeAttributes["type"]] = true
				}
			case *v1.PersistentVolume:
				src := o.Spec.CSI
				if src == nil || src.Driver != driverName {
					t.Errorf("%s: PersistentVolume %s is not a %s volume", file, o.Name, driverName)
					continue
				}
				if !uuidPattern.MatchString(src.VolumeHandle) {
					t.Errorf("%s: PersistentVolume %s: volumeHandle %q is not a dataset UUID", file, o.Name, src.VolumeHandle)
				}
				types[src.VolumeAttributes["type"]] = true
			case *v1.PersistentVolumeClaim:
				if sc := o.Spec.StorageClassName; sc != nil && *sc != "" && *sc != "flocker" {
					t.Errorf("%s: claim %s uses storage class %q, which deploy/ does not define", file, o.Name, *sc)
				}
			}
		}
	}
	for _, want := range []string{"gitRepo", "emptyDir", "flocker"} {
		if !types[want] {
			t.Errorf("no example uses a %s volume", want)
		}
	}
}
