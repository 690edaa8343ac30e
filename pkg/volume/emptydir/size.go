package emptydir

import (
	"fmt"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/sets"
)

// tmpfsSize returns the tmpfs size in bytes: the smaller of sizeLimit and the
// pod's memory limit, where set, or 0 for the kernel's default.
func tmpfsSize(sizeLimit *resource.Quantity, pod *v1.Pod) int64 {
	var size int64
	if sizeLimit != nil && sizeLimit.Sign() > 0 {
		size = sizeLimit.Value()
	}
	if limit := podMemoryLimit(pod); limit > 0 && (size == 0 || limit < size) {
		size = limit
	}
	return size
}

// podMemoryLimit returns the pod's memory limit: the sum of its containers'
// limits, or the largest init container's when that is larger. A container
// without a limit means the pod has none: 0.
func podMemoryLimit(pod *v1.Pod) int64 {
	if pod == nil {
		return 0
	}
	var sum int64
	for _, c := range pod.Spec.Containers {
		limit, ok := c.Resources.Limits[v1.ResourceMemory]
		if !ok || limit.Sign() <= 0 {
			return 0
		}
		sum += limit.Value()
	}
	for _, c := range pod.Spec.InitContainers {
		if limit, ok := c.Resources.Limits[v1.ResourceMemory]; ok && limit.Value() > sum {
			sum = limit.Value()
		}
	}
	return sum
}

// hugePageSizeFromPod returns the one huge page size the pod's containers
// request, as the kubelet does for medium "HugePages".
func hugePageSizeFromPod(pod *v1.Pod) (string, error) {
	sizes := sets.New[string]()
	for _, containers := range [][]v1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range containers {
			for _, list := range []v1.ResourceList{c.Resources.Requests, c.Resources.Limits} {
				for name := range list {
					if size, ok := strings.CutPrefix(string(name), v1.ResourceHugePagesPrefix); ok {
						quantity, err := resource.ParseQuantity(size)
						if err != nil {
							return "", fmt.Errorf("invalid huge page resource %q: %w", name, err)
						}
						sizes.Insert(quantity.String())
					}
				}
			}
		}
	}
	switch sizes.Len() {
	case 0:
		return "", fmt.Errorf("medium HugePages needs a hugepages-<size> request in the pod's containers")
	case 1:
		return sizes.UnsortedList()[0], nil
	}
	return "", fmt.Errorf("pod requests several huge page sizes %v: use medium HugePages-<size>", sets.List(sizes))
}
