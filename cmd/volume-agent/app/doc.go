// Package app holds volume-agent's commands. Run is the public entry point:
// an out-of-tree build calls it with its own plugins added to the built-in
// ones (see WithPlugins), and nothing in the core names them.
package app
