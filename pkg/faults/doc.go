// Package faults makes volume operations fail on purpose, for testing plugins
// and the agent. It is off unless asked for.
//
// Two forms give the same outcomes:
//
//   - In Go tests, an Interceptor{Pre, Post} is called around every intercepted
//     operation: Pre before it (an error it returns is returned in place of
//     running the operation) and Post after it (it returns the result to
//     report, so it may replace the real one).
//   - In the agent, --fault-hooks-file names a Script: YAML with "globals" and
//     "<operation>Start" / "<operation>End" JavaScript snippets, run in one
//     JavaScript VM (github.com/dop251/goja) shared for the agent's life and
//     locked so that concurrent operations take turns. Script.Interceptor turns
//     it into an Interceptor.
//
// The operations intercepted are:
//
//   - "setUp": Builder.SetUp and SetUpAt of every plugin wrapped by WrapPlugins;
//   - "tearDown": Cleaner.TearDown and TearDownAt of those plugins;
//   - "git<Subcommand>": every git command run through an exec.Interface
//     wrapped by WrapExec, named after its subcommand in lower camel case
//     ("gitClone", "gitCheckout", "gitRevParse").
//
// The set is open: a snippet for an operation that nothing intercepts is
// accepted (and logged at load), so names can be added without changing the
// script format.
//
// # What a snippet returns
//
// A snippet's last value selects the outcome:
//
//	undefined, null, "ok", OK          no fault: run the operation (Start) or
//	                                   keep its result (End)
//	"transient", TRANSIENT             fail with a transient error (retried)
//	"final", FINAL                     fail with a final error (not retried
//	                                   until the spec changes)
//	"uncertain", UNCERTAIN             fail with an uncertain error (torn down
//	                                   if the pod goes away)
//	{error: "final", message: "..."}   fail with that class and message
//	{delay: "2s"}                      wait (a Go duration, or a number of
//	                                   milliseconds), then no fault
//	{delay: "2s", error: "transient"}  wait, then fail
//
// Any other value, and a snippet that throws, fails that one operation with a
// transient error that names the snippet and the line; the agent goes on. At a
// Start snippet a fault replaces the operation, which does not run; at an End
// snippet it replaces the operation's result (a set-up that was done but is
// reported failed).
//
// A snippet sees the operation as the global "op": op.name, op.plugin,
// op.volume, op.podUID, op.podNamespace and op.podName (empty at tear-down),
// op.stage ("Start" or "End"), op.args (the command's arguments, for git), and
// at End op.error (the message, or null) and op.errorClass ("transient",
// "final", "uncertain", or null). console.log writes to the agent's log.
package faults
