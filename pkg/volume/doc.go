// Package volume defines the volume plugin framework of volume-agent: the
// VolumePlugin interface and its optional capabilities, the Builder and Cleaner
// that set a volume up and tear it down, the VolumeHost that plugins use to
// reach the node, the VolumePluginMgr registry, and the typed errors that tell
// a caller whether to retry.
//
// Every volume lives at ROOT/pods/<uid>/volumes/<escaped plugin>/<volume>, its
// metadata at ROOT/pods/<uid>/plugins/<escaped plugin>/<volume>, and a
// plugin's node-global state at ROOT/plugins/<escaped plugin>, as in the
// kubelet.
package volume
