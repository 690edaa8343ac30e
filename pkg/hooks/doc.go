// Package hooks runs operators' lifecycle hooks around a volume's set-up and
// tear-down, in the manner of the OCI hooks of CRI-O and Podman.
//
// A hook is a JSON file in one of the hook directories (by default
// /usr/share/volume-agent/hooks.d, then /etc/volume-agent/hooks.d). It names a
// program, the stages it runs at (preSetUp, postSetUp, preTearDown,
// postTearDown) and the volumes it applies to. The schema and its rules are in
// docs/hooks.md; in short:
//
//   - Directories are read in order, and a file overrides the file with the
//     same name in an earlier directory. An empty file (or a symlink to
//     /dev/null) disables the same-named hook without replacing it.
//   - Hooks run in file-name order (byte order of the name).
//   - Files not ending in ".json" are ignored with a warning. An invalid file
//     is reported (Manager.Status, and the OnLoad callback) and skipped; it
//     never stops the other hooks.
//   - The regular expressions in "when" are anchored: each must match the whole
//     plugin name, volume name, annotation key or value.
//   - A hook gets the volume's state as JSON on standard input, only the
//     environment its file gives, and is killed with its process group when its
//     timeout expires.
//
// A Manager loads the directories, reloads them when they change (Watch), and
// runs the hooks of one stage for one volume (Run).
package hooks
