// Package flocker is an emulator of the Flocker control service (REST API v1, Flocker 1.15.0) for
// tests, demos and `make run`: Flocker itself can no longer be installed anywhere.
//
// It follows the real service where a client can tell:
//   - HTTPS with mutual TLS against a cluster CA; a client certificate whose CN does not start
//     with "user-" is refused during the handshake (there is no HTTP 401). GenerateCerts writes a
//     throwaway PKI with the file names flocker-go and the kubelet expect.
//   - /v1/version, /v1/configuration/datasets (list including deleted, create, move, delete),
//     /v1/state/datasets, /v1/state/nodes, /v1/state/nodes/by_era/<era> and
//     /v1/configuration/leases, with Flocker's status codes, {"description": ...} error bodies,
//     schema validation (strict: ids are uuid4s; Config.Lenient accepts the non-UUID ids some
//     clients' tests use) and X-Configuration-Tag / X-If-Configuration-Matches.
//   - Configuration changes at once; the state lags behind: after a create or a move the dataset
//     is listed without primary and path for Config.MoveDelay, then with them. A dataset whose
//     state primary is the local node is a real bind mount of <StateDir>/backing/<id> onto
//     <MountRoot>/<id>, so data survives moving away and back. A leased dataset does not leave its
//     node, and a move to a node that is not connected never completes, as with Flocker's agents.
//
// For tests it adds fault injection (HTTP errors, dropped connections, latency, a dataset hidden
// from the state, moves made by someone else, the service going down and up) and a request log.
package flocker
