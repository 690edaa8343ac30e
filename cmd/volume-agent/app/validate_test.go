package app

import (
	"strings"
	"testing"
)

const claimsOfOneVolume = `apiVersion: v1
kind: PersistentVolume
metadata: {name: pv}
spec:
  accessModes: [ReadWriteOnce]
  flocker: {datasetName: data}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: first}
spec:
  accessModes: [ReadWriteOnce]
  volumeName: pv
`

const secondClaimOfTheVolume = `apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: second}
spec:
  accessModes: [ReadWriteOnce]
  volumeName: pv
`

// validate checks several files together, as setup takes them: two claims
// naming one PersistentVolume in two files are a conflict.
func TestValidateChecksFilesTogether(t *testing.T) {
	dir := t.TempDir()
	a := writeFile(t, dir, "a.yaml", claimsOfOneVolume)
	b := writeFile(t, dir, "b.yaml", secondClaimOfTheVolume)
	code, _, stderr := runApp(t, "", "validate", "-f", a, "-f", b, "--root-dir", dir)
	if code != ExitInvalid || !strings.Contains(stderr, `PersistentVolumeClaim "default/second": spec.volumeName: Invalid value: "pv": PersistentVolume "pv" is bound to claim "default/first"`) {
		t.Errorf("exit %d, stderr %q; want %d and the conflict", code, stderr, ExitInvalid)
	}
	if code, stdout, stderr := runApp(t, "", "validate", "-f", a, "--root-dir", dir); code != 0 || !strings.Contains(stdout, "valid") {
		t.Errorf("one file: exit %d, %s %s", code, stdout, stderr)
	}
}
