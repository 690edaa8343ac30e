// Package flocker implements kubernetes.io/flocker: a pod's data lives in a
// Flocker dataset, which can move between nodes. SetUp moves the dataset's
// primary to this node through the Flocker control service (REST API v1 over
// mutual TLS, via github.com/clusterhq/flocker-go), waits until the control
// service's state shows it mounted here, and bind-mounts that path into the
// pod. TearDown only unmounts the pod's bind mount: a dataset is never deleted
// and its own mount point is never touched.
//
// Flocker itself can no longer be installed (its last release, 1.15.0, is from
// 2016); the tests run against the emulator in test/flocker.
package flocker
