package emptydir

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/mount-utils"

	"github.com/volume-agent/volume-agent/pkg/volume"
)

// File system magic numbers from statfs(2).
const (
	tmpfsMagic     = 0x01021994
	hugetlbfsMagic = 0x958458f6
)

// mediumDetector finds what backs a volume dir.
type mediumDetector interface {
	// GetMountMedium returns the medium of path and whether it is a mount
	// point.
	GetMountMedium(mounter mount.Interface, path string) (medium, bool, error)
}

type statfsDetector struct{}

func (statfsDetector) GetMountMedium(mounter mount.Interface, path string) (medium, bool, error) {
	isMnt, err := mounter.IsMountPoint(path)
	if err != nil {
		return mediumDisk, false, err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return mediumDisk, false, fmt.Errorf("failed to statfs %q: %w", path, err)
	}
	switch uint32(st.Type) {
	case tmpfsMagic:
		return mediumMemory, isMnt, nil
	case hugetlbfsMagic:
		return mediumHugePages, isMnt, nil
	}
	return mediumDisk, isMnt, nil
}

// hugePagesDir is where the kernel lists the huge page sizes it supports.
var hugePagesDir = "/sys/kernel/mm/hugepages"

// hostHasHugePages checks that the host supports pageSize and has pages of
// that size reserved.
func hostHasHugePages(pageSize string) error {
	quantity, err := resource.ParseQuantity(pageSize)
	if err != nil {
		return volume.Finalf("invalid huge page size %q: %w", pageSize, err)
	}
	dir := filepath.Join(hugePagesDir, fmt.Sprintf("hugepages-%dkB", quantity.Value()/1024))
	raw, err := os.ReadFile(filepath.Join(dir, "nr_hugepages"))
	if errors.Is(err, os.ErrNotExist) {
		return volume.Finalf("host has no huge pages of size %s (no %s)", pageSize, dir)
	}
	if err != nil {
		return fmt.Errorf("failed to read huge page count: %w", err)
	}
	if n, _ := strconv.Atoi(strings.TrimSpace(string(raw))); n == 0 {
		return volume.NewTransientError(fmt.Errorf("host has no huge pages of size %s reserved (%s/nr_hugepages is 0)", pageSize, dir))
	}
	return nil
}

// reservedHugePages describes each huge page size of which the host has pages
// reserved, as "HugePages-2Mi: 512 pages reserved", ordered by size.
func reservedHugePages() ([]string, error) {
	entries, err := os.ReadDir(hugePagesDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("failed to list huge page sizes: %w", err)
	}
	type size struct {
		kB, pages int64
	}
	var sizes []size
	for _, entry := range entries {
		kB, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(entry.Name(), "hugepages-"), "kB"), 10, 64)
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(hugePagesDir, entry.Name(), "nr_hugepages"))
		if err != nil {
			return nil, fmt.Errorf("failed to read huge page count: %w", err)
		}
		if pages, _ := strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64); pages > 0 {
			sizes = append(sizes, size{kB: kB, pages: pages})
		}
	}
	slices.SortFunc(sizes, func(a, b size) int { return cmp.Compare(a.kB, b.kB) })
	out := make([]string, 0, len(sizes))
	for _, s := range sizes {
		out = append(out, fmt.Sprintf("HugePages-%s: %d pages reserved", resource.NewQuantity(s.kB*1024, resource.BinarySI), s.pages))
	}
	return out, nil
}
