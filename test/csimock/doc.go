// Package csimock tests the kubernetes.io/csi plugin, alone and in a
// `volume-agent run` process, against Kubernetes' own CSI mock driver, over a
// real unix socket.
package csimock
