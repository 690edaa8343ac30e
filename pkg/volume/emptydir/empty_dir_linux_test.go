package emptydir

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	"k8s.io/mount-utils"
	"k8s.io/utils/ptr"

	"github.com/volume-agent/volume-agent/pkg/volume"
	volumetesting "github.com/volume-agent/volume-agent/pkg/volume/testing"
	"github.com/volume-agent/volume-agent/pkg/volume/util"
)

// realPlugin loads the plugin as the agent does, with the real mounter, over
// a temp root whose mounts are all gone when the test ends.
func realPlugin(t *testing.T) volume.VolumePlugin {
	volumetesting.RequiresRoot(t)
	root := t.TempDir()
	// Containers' users must reach the volumes, as through a bind mount.
	mustNoErr(t, os.Chmod(filepath.Dir(root), 0o755))
	mustNoErr(t, os.Chmod(root, 0o755))
	mounter := util.NewMounter()
	t.Cleanup(func() { volumetesting.UnmountAllBeneath(t, mounter, root) })
	_, mgr := volumetesting.NewFakeVolumeHost(t, root, ProbeVolumePlugins(), volumetesting.FakeHostOptions{Mounter: mounter})
	p, err := mgr.FindPluginByName(PluginName)
	mustNoErr(t, err)
	return p
}

func setUpReal(t *testing.T, p volume.VolumePlugin, spec *volume.Spec, fsGroup *int64) volume.Builder {
	t.Helper()
	b, err := p.NewBuilder(spec, testPod(), volume.VolumeOptions{Context: t.Context()})
	mustNoErr(t, err)
	mustNoErr(t, b.SetUp(fsGroup))
	return b
}

func TestConformanceRealMounts(t *testing.T) {
	volumetesting.RequiresRoot(t)
	for _, medium := range []v1.StorageMedium{"", v1.StorageMediumMemory} {
		t.Run("medium="+string(medium), func(t *testing.T) {
			volumetesting.RunConformance(t, volumetesting.ConformanceConfig{
				PluginName: PluginName,
				Plugins:    ProbeVolumePlugins,
				Spec:       func() *volume.Spec { return emptyDirSpec("vol1", medium, "") },
				NewMounter: util.NewMounter,
				StopHalfWay: func(t *testing.T, b volume.Builder) {
					// The mount is made, the marker is not.
					mustNoErr(t, os.MkdirAll(b.GetPath(), 0o777))
					if medium == v1.StorageMediumMemory {
						mustNoErr(t, mount.New("").Mount("tmpfs", b.GetPath(), "tmpfs", nil))
					}
				},
			})
		})
	}
}

// TestTmpfsSizeLimit is the kubelet's node conformance check: a Memory
// emptyDir with sizeLimit 10Mi has 10240 1K-blocks.
func TestTmpfsSizeLimit(t *testing.T) {
	p := realPlugin(t)
	b := setUpReal(t, p, emptyDirSpec("mem", v1.StorageMediumMemory, "10Mi"), nil)
	var st unix.Statfs_t
	mustNoErr(t, unix.Statfs(b.GetPath(), &st))
	if st.Type != tmpfsMagic {
		t.Errorf("file system type = %#x, want tmpfs", st.Type)
	}
	if kBlocks := st.Blocks * uint64(st.Bsize) / 1024; kBlocks != 10240 {
		t.Errorf("size = %d 1K-blocks, want 10240", kBlocks)
	}
}

// TestFileModes is the kubelet's emptyDir conformance matrix: on both media
// the root is 0777, and files created 0644, 0666 and 0777 by uid 0 and by uid
// 1001 keep their modes and owners.
func TestFileModes(t *testing.T) {
	p := realPlugin(t)
	for _, medium := range []v1.StorageMedium{"", v1.StorageMediumMemory} {
		b := setUpReal(t, p, emptyDirSpec("vol-"+strings.ToLower(string(medium)+"disk"), medium, ""), nil)
		info, err := os.Stat(b.GetPath())
		mustNoErr(t, err)
		if info.Mode().Perm() != 0o777 {
			t.Errorf("medium %q: root mode = %v, want 0777", medium, info.Mode().Perm())
		}
		for _, uid := range []uint32{0, 1001} {
			for _, mode := range []os.FileMode{0o644, 0o666, 0o777} {
				t.Run(fmt.Sprintf("medium=%q/uid=%d/mode=%o", medium, uid, mode), func(t *testing.T) {
					path := filepath.Join(b.GetPath(), fmt.Sprintf("f-%d-%o", uid, mode))
					createAs(t, uid, path, mode)
					info, err := os.Stat(path)
					mustNoErr(t, err)
					if info.Mode().Perm() != mode {
						t.Errorf("mode = %v, want %v", info.Mode().Perm(), mode)
					}
					if got := info.Sys().(*syscall.Stat_t).Uid; got != uid {
						t.Errorf("owner = %d, want %d", got, uid)
					}
					content, err := os.ReadFile(path)
					if err != nil || string(content) != "mount-tester new file\n" {
						t.Errorf("content = %q, %v", content, err)
					}
				})
			}
		}
	}
}

// createAs writes a file as uid, the way a container user would, in a
// separate process with umask 0.
func createAs(t *testing.T, uid uint32, path string, mode os.FileMode) {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", `umask 0 && echo "mount-tester new file" > "$1" && chmod "$2" "$1"`, "sh", path, strconv.FormatUint(uint64(mode), 8))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("failed to create %s as uid %d: %v: %s", path, uid, err, out)
	}
}

// TestFSGroup: with fsGroup the root has that group and setgid, and a file a
// container creates afterwards inherits the group.
func TestFSGroup(t *testing.T) {
	p := realPlugin(t)
	for _, medium := range []v1.StorageMedium{"", v1.StorageMediumMemory} {
		t.Run("medium="+string(medium), func(t *testing.T) {
			b := setUpReal(t, p, emptyDirSpec("fsgroup"+strings.ToLower(string(medium)), medium, ""), ptr.To[int64](123))
			info, err := os.Stat(b.GetPath())
			mustNoErr(t, err)
			if gid := info.Sys().(*syscall.Stat_t).Gid; gid != 123 {
				t.Errorf("root group = %d, want 123", gid)
			}
			if info.Mode()&os.ModeSetgid == 0 || info.Mode().Perm() != 0o777 {
				t.Errorf("root mode = %v, want setgid and 0777", info.Mode())
			}
			newFile := filepath.Join(b.GetPath(), "new")
			createAs(t, 1001, newFile, 0o660)
			info, err = os.Stat(newFile)
			mustNoErr(t, err)
			if gid := info.Sys().(*syscall.Stat_t).Gid; gid != 123 || info.Mode().Perm() != 0o660 {
				t.Errorf("new file: group %d mode %v, want group 123 mode 0660", gid, info.Mode().Perm())
			}
		})
	}
}

// TestTearDownSafety plants a symlink to a file outside and a bind mount
// inside: TearDown leaves both targets intact and reports the nested mount.
func TestTearDownSafety(t *testing.T) {
	for _, medium := range []v1.StorageMedium{"", v1.StorageMediumMemory} {
		t.Run("medium="+string(medium), func(t *testing.T) {
			p := realPlugin(t)
			b := setUpReal(t, p, emptyDirSpec("vol1", medium, ""), nil)
			outside := t.TempDir()
			secret := filepath.Join(outside, "secret")
			mustNoErr(t, os.WriteFile(secret, []byte("keep"), 0o600))
			mustNoErr(t, os.Symlink(secret, filepath.Join(b.GetPath(), "link")))
			mustNoErr(t, os.Mkdir(filepath.Join(b.GetPath(), "mnt"), 0o755))
			volumetesting.Mount(t, outside, filepath.Join(b.GetPath(), "mnt"), "", []string{"bind"})

			cleaner, err := p.NewCleaner("vol1", "pod-uid")
			mustNoErr(t, err)
			err = cleaner.TearDown()
			var nested *util.NestedMountError
			if !errors.As(err, &nested) || !strings.Contains(err.Error(), filepath.Join(b.GetPath(), "mnt")) {
				t.Fatalf("TearDown() error = %v, want one naming the nested mount", err)
			}
			if content, err := os.ReadFile(secret); err != nil || string(content) != "keep" {
				t.Errorf("symlink target changed: %q, %v", content, err)
			}
			if _, err := os.Lstat(filepath.Join(b.GetPath(), "link")); err != nil {
				t.Errorf("volume was partly removed: %v", err)
			}

			// Once the operator removes the planted mount, TearDown completes.
			mustNoErr(t, mount.New("").Unmount(filepath.Join(b.GetPath(), "mnt")))
			mustNoErr(t, cleaner.TearDown())
			if _, err := os.Lstat(b.GetPath()); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("volume left after TearDown: %v", err)
			}
			if content, err := os.ReadFile(secret); err != nil || string(content) != "keep" {
				t.Errorf("symlink target changed: %q, %v", content, err)
			}
		})
	}
}

// TestHugePages mounts hugetlbfs when the host has 2Mi pages reserved,
// reserving two for the test if none are.
func TestHugePages(t *testing.T) {
	volumetesting.RequiresRoot(t)
	nrPath := filepath.Join(hugePagesDir, "hugepages-2048kB", "nr_hugepages")
	raw, err := os.ReadFile(nrPath)
	if err != nil {
		t.Skipf("skipping: host has no 2Mi huge pages: %v", err)
	}
	if strings.TrimSpace(string(raw)) == "0" {
		if err := os.WriteFile(nrPath, []byte("2"), 0o644); err != nil {
			t.Skipf("skipping: cannot reserve huge pages: %v", err)
		}
		t.Cleanup(func() { _ = os.WriteFile(nrPath, raw, 0o644) })
		if got, _ := os.ReadFile(nrPath); strings.TrimSpace(string(got)) == "0" {
			t.Skip("skipping: the kernel reserved no huge pages")
		}
	}
	p := realPlugin(t)
	b := setUpReal(t, p, emptyDirSpec("huge", "HugePages-2Mi", ""), nil)
	var st unix.Statfs_t
	mustNoErr(t, unix.Statfs(b.GetPath(), &st))
	if uint32(st.Type) != hugetlbfsMagic || st.Bsize != 2<<20 {
		t.Errorf("statfs type %#x block size %d, want hugetlbfs with 2Mi pages", st.Type, st.Bsize)
	}
	cleaner, err := p.NewCleaner("huge", "pod-uid")
	mustNoErr(t, err)
	mustNoErr(t, cleaner.TearDown())
}

func TestHugePagesMissingOnHost(t *testing.T) {
	saved := hugePagesDir
	hugePagesDir = t.TempDir()
	t.Cleanup(func() { hugePagesDir = saved })
	err := hostHasHugePages("2Mi")
	if !volume.IsFinal(err) || !strings.Contains(err.Error(), "no huge pages of size 2Mi") {
		t.Errorf("hostHasHugePages() = %v, want a final error naming the size", err)
	}
}

// TestCheckHealthNamesReservedHugePages pins down that the health message
// claims the HugePages medium only when the host has huge pages reserved.
func TestCheckHealthNamesReservedHugePages(t *testing.T) {
	volumetesting.RequiresRoot(t)
	tests := map[string]struct {
		reserved map[string]string // hugepages-<n>kB dir -> nr_hugepages
		want     []string
		notWant  []string
	}{
		"no sizes": {
			want:    []string{"disk and Memory media available", "HugePages unavailable: no huge pages reserved"},
			notWant: []string{"HugePages media available"},
		},
		"sizes with none reserved": {
			reserved: map[string]string{"hugepages-2048kB": "0\n", "hugepages-1048576kB": "0\n"},
			want:     []string{"disk and Memory media available", "HugePages unavailable: no huge pages reserved"},
			notWant:  []string{"HugePages media available"},
		},
		"one size reserved": {
			reserved: map[string]string{"hugepages-2048kB": "4\n", "hugepages-1048576kB": "0\n"},
			want:     []string{"disk, Memory and HugePages media available", "HugePages-2Mi: 4 pages reserved"},
			notWant:  []string{"1Gi"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			saved := hugePagesDir
			hugePagesDir = t.TempDir()
			t.Cleanup(func() { hugePagesDir = saved })
			for dir, nr := range tc.reserved {
				mustNoErr(t, os.Mkdir(filepath.Join(hugePagesDir, dir), 0o755))
				mustNoErr(t, os.WriteFile(filepath.Join(hugePagesDir, dir, "nr_hugepages"), []byte(nr), 0o644))
			}
			health := (&plugin{}).CheckHealth(t.Context())
			if !health.Usable {
				t.Errorf("CheckHealth() usable = false, want true: the disk medium always works")
			}
			for _, want := range tc.want {
				if !strings.Contains(health.Message, want) {
					t.Errorf("message %q does not contain %q", health.Message, want)
				}
			}
			for _, notWant := range tc.notWant {
				if strings.Contains(health.Message, notWant) {
					t.Errorf("message %q contains %q", health.Message, notWant)
				}
			}
		})
	}
}

// TestVerifyVolumeFindsALostTmpfs pins down that a Memory volume whose tmpfs
// was unmounted behind the agent's back fails verification with a Transient
// error, and that setting it up again mounts a tmpfs there again.
func TestVerifyVolumeFindsALostTmpfs(t *testing.T) {
	p := realPlugin(t)
	verifier := p.(volume.VerifyingPlugin)
	for _, medium := range []v1.StorageMedium{"", v1.StorageMediumMemory} {
		t.Run("medium="+string(medium), func(t *testing.T) {
			spec := emptyDirSpec("v-"+strings.ToLower(string(medium)), medium, "")
			b := setUpReal(t, p, spec, nil)
			path := b.GetPath()
			mustNoErr(t, verifier.VerifyVolume(spec, "pod-uid", path))

			if medium == v1.StorageMediumMemory {
				mustNoErr(t, unix.Unmount(path, 0))
			} else {
				mustNoErr(t, os.Remove(path))
			}
			err := verifier.VerifyVolume(spec, "pod-uid", path)
			if err == nil || volume.ClassOf(err) != volume.Transient || !strings.Contains(err.Error(), path) {
				t.Fatalf("VerifyVolume() of a lost volume = %v, want a transient error naming %s", err, path)
			}

			mustNoErr(t, b.SetUp(nil))
			mustNoErr(t, verifier.VerifyVolume(spec, "pod-uid", path))
			if medium == v1.StorageMediumMemory {
				var st unix.Statfs_t
				mustNoErr(t, unix.Statfs(path, &st))
				if uint32(st.Type) != tmpfsMagic {
					t.Errorf("after set-up again, %s is on fs %#x, want tmpfs", path, st.Type)
				}
			}
			cleaner, err := p.NewCleaner(spec.Name(), "pod-uid")
			mustNoErr(t, err)
			mustNoErr(t, cleaner.TearDown())
		})
	}
}
