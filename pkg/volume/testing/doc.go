// Package testing holds what plugin tests share: a VolumeHost over a temp
// root dir with injectable fakes, the conformance suite every plugin runs, and
// helpers for tests that make real mounts as root.
package testing
