package csi

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/volume-agent/volume-agent/pkg/volume"
)

func secret(namespace, name string, data map[string]string) *v1.Secret {
	s := &v1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}, Data: map[string][]byte{}}
	for key, value := range data {
		s.Data[key] = []byte(value)
	}
	return s
}

// TestSecrets sets volumes with secret references up: each call gets the
// data of its Secret; a missing Secret is a transient error that names the
// reference, and the set-up succeeds once the Secret is there.
func TestSecrets(t *testing.T) {
	stageData := map[string]string{"user": "stage-user", "password": "stage-pw"}
	publishData := map[string]string{"token": "publish-token"}
	withRefs := func(stage, publish *v1.SecretReference) *volume.Spec {
		s := pvSpec("pv", "h")
		s.PersistentVolume.Spec.CSI.NodeStageSecretRef = stage
		s.PersistentVolume.Spec.CSI.NodePublishSecretRef = publish
		return s
	}
	inline := inlineSpec("v")
	inline.Volume.CSI.NodePublishSecretRef = &v1.LocalObjectReference{Name: "publish"}

	for _, tc := range []struct {
		name string
		spec *volume.Spec
		caps []csipb.NodeServiceCapability_RPC_Type
		// secrets are the Secrets there from the start; missing the one
		// added after the first set-up failed, or nil.
		secrets []*v1.Secret
		missing *v1.Secret
		// wantErr is in the error of the first set-up, when missing is set.
		wantErr                string
		wantStage, wantPublish map[string]string
	}{
		{
			name:        "pv with both refs",
			spec:        withRefs(&v1.SecretReference{Namespace: "storage", Name: "stage"}, &v1.SecretReference{Namespace: "storage", Name: "publish"}),
			caps:        stageCaps,
			secrets:     []*v1.Secret{secret("storage", "stage", stageData), secret("storage", "publish", publishData)},
			wantStage:   stageData,
			wantPublish: publishData,
		},
		{
			name:      "pv with a stage ref only",
			spec:      withRefs(&v1.SecretReference{Namespace: "storage", Name: "stage"}, nil),
			caps:      stageCaps,
			secrets:   []*v1.Secret{secret("storage", "stage", stageData)},
			wantStage: stageData,
		},
		{
			name:    "a stage ref of a driver that does not stage is not needed",
			spec:    withRefs(&v1.SecretReference{Namespace: "storage", Name: "stage"}, nil),
			secrets: nil,
		},
		{
			name:        "inline volume: the Secret is in the pod's namespace",
			spec:        inline,
			secrets:     []*v1.Secret{secret("other", "publish", map[string]string{"token": "wrong"})},
			missing:     secret("ns", "publish", publishData),
			wantErr:     `failed to get Secret "ns/publish" of csi.nodePublishSecretRef: secret not found`,
			wantPublish: publishData,
		},
		{
			name:        "missing stage Secret",
			spec:        withRefs(&v1.SecretReference{Namespace: "storage", Name: "stage"}, &v1.SecretReference{Namespace: "storage", Name: "publish"}),
			caps:        stageCaps,
			secrets:     []*v1.Secret{secret("storage", "publish", publishData)},
			missing:     secret("storage", "stage", stageData),
			wantErr:     `failed to get Secret "storage/stage" of spec.csi.nodeStageSecretRef: secret not found`,
			wantStage:   stageData,
			wantPublish: publishData,
		},
		{
			name:        "missing publish Secret: nothing is staged",
			spec:        withRefs(&v1.SecretReference{Namespace: "storage", Name: "stage"}, &v1.SecretReference{Namespace: "storage", Name: "publish"}),
			caps:        stageCaps,
			secrets:     []*v1.Secret{secret("storage", "stage", stageData)},
			missing:     secret("storage", "publish", publishData),
			wantErr:     `failed to get Secret "storage/publish" of spec.csi.nodePublishSecretRef: secret not found`,
			wantStage:   stageData,
			wantPublish: publishData,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, newFakeDriver(testDriver, tc.caps...))
			for _, s := range tc.secrets {
				e.secrets.Store(s.Namespace+"/"+s.Name, s)
			}
			pod := testPod("a")
			if tc.missing != nil {
				err := e.setUp(tc.spec, pod)
				if err == nil || volume.ClassOf(err) != volume.Transient || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("SetUp() without the Secret error = %v (%v), want a transient error containing %q", err, volume.ClassOf(err), tc.wantErr)
				}
				if calls := e.driver.takeCalls(); len(calls) > 0 {
					t.Errorf("the driver was called without the Secret: %q", calls)
				}
				e.secrets.Store(tc.missing.Namespace+"/"+tc.missing.Name, tc.missing)
			}
			if err := e.setUp(tc.spec, pod); err != nil {
				t.Fatalf("SetUp() error = %v", err)
			}
			e.driver.mu.Lock()
			defer e.driver.mu.Unlock()
			if tc.wantStage != nil {
				if len(e.driver.stages) != 1 || !maps.Equal(e.driver.stages[0].Secrets, tc.wantStage) {
					t.Errorf("NodeStageVolume secrets = %v, want %v", stageSecrets(e.driver.stages), tc.wantStage)
				}
			} else if len(e.driver.stages) > 0 && len(e.driver.stages[0].Secrets) > 0 {
				t.Errorf("NodeStageVolume secrets = %v, want none", e.driver.stages[0].Secrets)
			}
			if len(e.driver.publishes) != 1 || !maps.Equal(e.driver.publishes[0].Secrets, tc.wantPublish) {
				t.Fatalf("NodePublishVolume requests = %v, want one with secrets %v", e.driver.publishes, tc.wantPublish)
			}
			// Nothing the plugin wrote holds a value.
			for _, data := range []map[string]string{stageData, publishData} {
				for _, value := range data {
					assertNoFileHolds(t, e.root, value)
				}
			}
		})
	}
}

func stageSecrets(reqs []*csipb.NodeStageVolumeRequest) []map[string]string {
	var out []map[string]string
	for _, r := range reqs {
		out = append(out, r.Secrets)
	}
	return out
}

// assertNoFileHolds fails t when a file under root holds value.
func assertNoFileHolds(t *testing.T, root, value string) {
	t.Helper()
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if strings.Contains(string(data), value) {
			t.Errorf("%s holds a secret value", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestTearDownNeedsNoSecret: NodeUnpublishVolume and NodeUnstageVolume take
// no secrets (CSI spec), so a volume whose Secrets are gone is torn down.
func TestTearDownNeedsNoSecret(t *testing.T) {
	e := newEnv(t, newFakeDriver(testDriver, stageCaps...))
	spec := pvSpec("pv", "h")
	spec.PersistentVolume.Spec.CSI.NodeStageSecretRef = &v1.SecretReference{Namespace: "storage", Name: "stage"}
	e.secrets.Store("storage/stage", secret("storage", "stage", map[string]string{"k": "v"}))
	if err := e.setUp(spec, testPod("a")); err != nil {
		t.Fatal(err)
	}
	e.secrets.Delete("storage/stage")
	e.restart()
	if err := e.tearDown("pv", "a-uid"); err != nil {
		t.Fatalf("TearDown() without the Secret error = %v", err)
	}
	if got := e.driver.takeCalls(); !slices.Equal(got, []string{"NodeStageVolume h", "NodePublishVolume h", "NodeUnpublishVolume h", "NodeUnstageVolume h"}) {
		t.Errorf("calls = %q", got)
	}
	mustNotExist(t, e.stagingDir("h"))
}
