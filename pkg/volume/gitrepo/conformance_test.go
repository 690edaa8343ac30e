package gitrepo

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/utils/clock"
	utilexec "k8s.io/utils/exec"

	"github.com/volume-agent/volume-agent/pkg/volume"
	"github.com/volume-agent/volume-agent/pkg/volume/emptydir"
	volumetesting "github.com/volume-agent/volume-agent/pkg/volume/testing"
	"github.com/volume-agent/volume-agent/test/gitserver"
)

func TestConformance(t *testing.T) {
	srv := gitserver.StartForTest(t)
	newSampleRepo(t, srv, "sample.git")
	for _, cacheOn := range []bool{false, true} {
		name := "direct"
		if cacheOn {
			name = "cache"
		}
		t.Run(name, func(t *testing.T) {
			volumetesting.RunConformance(t, volumetesting.ConformanceConfig{
				PluginName: PluginName,
				Plugins: func() []volume.VolumePlugin {
					return append(ProbeVolumePlugins(realConfig(cacheOn)), emptydir.ProbeVolumePlugins()...)
				},
				Spec: func() *volume.Spec {
					return gitRepoSpec("conformance", v1.GitRepoVolumeSource{Repository: srv.GitURL("sample.git"), Revision: "dev"})
				},
				HostOptions: volumetesting.FakeHostOptions{Exec: utilexec.New(), Clock: clock.RealClock{}},
				StopHalfWay: func(t *testing.T, builder volume.Builder) {
					// A crash during the clone: the wrapped emptyDir is made and
					// the staging dir holds part of a clone.
					path := builder.GetPath()
					for _, dir := range []string{path, filepath.Join(stagingDir(path), "sample", ".git", "objects")} {
						if err := os.MkdirAll(dir, 0o755); err != nil {
							t.Fatal(err)
						}
					}
				},
			})
		})
	}
}

// TestFsGroup checks that every file and dir of the volume, .git included,
// belongs to fsGroup, and that dirs are setgid so new files inherit it.
func TestFsGroup(t *testing.T) {
	volumetesting.RequiresRoot(t)
	env := newRealEnv(t, realConfig(true))
	newSampleRepo(t, env.srv, "sample.git")
	for _, rev := range []string{"", "dev"} {
		group := int64(2345)
		uid := "pod" + rev
		path, err := env.setUp(uid, v1.GitRepoVolumeSource{Repository: env.srv.GitURL("sample.git"), Revision: rev}, &group)
		if err != nil {
			t.Fatal(err)
		}
		count := 0
		err = filepath.Walk(path, func(p string, info os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			count++
			if gid := info.Sys().(*syscall.Stat_t).Gid; gid != uint32(group) {
				t.Errorf("revision %q: %s has group %d, want %d", rev, p, gid, group)
			}
			if info.IsDir() && info.Mode()&os.ModeSetgid == 0 {
				t.Errorf("revision %q: dir %s is not setgid", rev, p)
			}
			if info.Mode().IsRegular() && info.Mode().Perm()&0o060 != 0o060 {
				t.Errorf("revision %q: %s mode %v lacks g+rw", rev, p, info.Mode())
			}
			return nil
		})
		if err != nil || count < 20 {
			t.Errorf("walked %d entries, %v", count, err)
		}
		env.tearDown(t, uid)
	}
}
