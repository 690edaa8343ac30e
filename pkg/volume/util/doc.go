// Package util holds what every volume plugin needs on the host: the ready
// marker in a volume's metadata dir, fsGroup ownership, and removal of a tree
// that a container could have written, without following its symlinks or
// deleting across its mounts.
package util
