// Package csimock tests the kubernetes.io/csi plugin against Kubernetes' own
// CSI mock driver, over a real unix socket.
package csimock
