// Package emptydir implements kubernetes.io/empty-dir: a directory that
// starts empty and lives as long as its pod, on the node's disk (medium ""),
// in memory (a tmpfs mount, medium "Memory"), or on huge pages (a hugetlbfs
// mount, medium "HugePages" or "HugePages-<size>").
package emptydir
