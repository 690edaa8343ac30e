package csi

import (
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/volume-agent/volume-agent/pkg/volume"
)

// isFinalCode reports whether a CSI call that failed with code certainly did
// not change anything, as the kubelet decides (csi_client.go isFinalError):
// every code is final but Canceled, DeadlineExceeded, Unavailable,
// ResourceExhausted and Aborted, which leave the operation possibly still
// running in the driver.
func isFinalCode(code codes.Code) bool {
	switch code {
	case codes.Canceled, codes.DeadlineExceeded, codes.Unavailable, codes.ResourceExhausted, codes.Aborted:
		return false
	}
	return true
}

// callError wraps err, the failure of the CSI call what (as "NodePublishVolume
// of volume X"), in volume-agent's error class:
//   - a gRPC status with a final code (Unknown included: a driver's plain Go
//     error) is Final: not retried until the spec changes;
//   - a non-final code, or an error without a status (the socket went away,
//     the context ended before the call), is Uncertain when the call may have
//     changed the node (mayChange: a stage or publish), and Transient
//     otherwise.
func callError(err error, what string, mayChange bool) error {
	wrapped := fmt.Errorf("failed to call %s: %w", what, err)
	if st, ok := status.FromError(err); ok && isFinalCode(st.Code()) {
		return volume.NewFinalError(wrapped)
	}
	if mayChange {
		return volume.NewUncertainError(wrapped)
	}
	return volume.NewTransientError(wrapped)
}
