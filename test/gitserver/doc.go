// Package gitserver makes git repositories for tests and benchmarks and
// serves them on 127.0.0.1 over git's native protocol (git daemon) and git's
// smart HTTP protocol (git http-backend behind a Go httptest server).
//
// Repositories are bare and written through git fast-import, so tests can
// put any tree in them (hooks, crafted config files, symlinks pointing
// outside, gitlinks) without ever checking that tree out on the test host.
//
// Every git process this package starts runs with a clean environment (no
// system or global config, no inherited GIT_* variables), and Server.Close
// kills every process the server started.
package gitserver
