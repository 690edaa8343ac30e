// Package server is the agent's local API: HTTP and JSON on a unix socket
// (health, readiness, pods, volumes, plugins, events, and adding and removing
// pods), its Go client, and the Prometheus metrics served on an optional TCP
// address.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/user"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/volume-agent/volume-agent/pkg/hooks"
	"github.com/volume-agent/volume-agent/pkg/manifest"
	"github.com/volume-agent/volume-agent/pkg/source"
	"github.com/volume-agent/volume-agent/pkg/volumemanager"
)

// maxManifestBytes bounds the body of POST /pods.
const maxManifestBytes = 4 << 20

// shutdownTimeout bounds the wait for requests in flight at shutdown.
const shutdownTimeout = 5 * time.Second

// ApplyResponse is the answer to POST /pods: the pods and Secrets applied
// (never a Secret's values).
type ApplyResponse = source.Applied

// ErrorResponse is the body of every error answer.
type ErrorResponse struct {
	Error string `json:"error"`
}

// Options are what the server serves.
type Options struct {
	// Manager is the volume manager whose state is served.
	Manager *volumemanager.Manager
	// API adds and removes pods; nil makes POST and DELETE /pods fail.
	API *source.API
	// Hooks, when set, is served at /hooks.
	Hooks *hooks.Manager
	// Version is served at /status.
	Version string
}

// StatusResponse is the answer to GET /status.
type StatusResponse struct {
	volumemanager.Summary
	Version string `json:"version,omitempty"`
	RootDir string `json:"rootDir"`
}

// Handler returns the API's HTTP handler:
//
//	GET /healthz, /readyz, /status, /pods, /pods/{uid}, /volumes, /plugins,
//	    /events, /hooks
//	POST /pods            a manifest, validated as `volume-agent validate` does
//	DELETE /pods/{uid}    a pod added through POST /pods
//	DELETE /pods/{namespace}/{name}, /persistentvolumes/{name},
//	    /persistentvolumeclaims/{namespace}/{name}
//	                      an object added through POST /pods
func Handler(opts Options) http.Handler {
	m := opts.Manager
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !m.Ready() {
			http.Error(w, "not ready: the sources are being read or the volumes reconciled for the first time", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, StatusResponse{Summary: m.Summary(), Version: opts.Version, RootDir: m.Layout().Root})
	})
	mux.HandleFunc("GET /pods", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, m.Pods())
	})
	mux.HandleFunc("GET /pods/{uid}", func(w http.ResponseWriter, r *http.Request) {
		pod, ok := m.Pod(types.UID(r.PathValue("uid")))
		if !ok {
			writeError(w, http.StatusNotFound, fmt.Errorf("pod %q not found", r.PathValue("uid")))
			return
		}
		writeJSON(w, http.StatusOK, pod)
	})
	mux.HandleFunc("GET /volumes", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, nonNil(m.Volumes()))
	})
	mux.HandleFunc("GET /plugins", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, m.Plugins())
	})
	mux.HandleFunc("GET /events", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, nonNil(m.Events()))
	})
	mux.HandleFunc("GET /hooks", func(w http.ResponseWriter, _ *http.Request) {
		if opts.Hooks == nil {
			writeJSON(w, http.StatusOK, hooks.Status{})
			return
		}
		writeJSON(w, http.StatusOK, opts.Hooks.Status())
	})
	mux.HandleFunc("POST /pods", func(w http.ResponseWriter, r *http.Request) {
		if opts.API == nil {
			writeError(w, http.StatusNotImplemented, errors.New("this agent takes no pods through its API"))
			return
		}
		data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxManifestBytes))
		if err != nil {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Errorf("failed to read the manifest: %w", err))
			return
		}
		applied, err := opts.API.Apply(r.Context(), data)
		var invalid *source.InvalidManifestError
		switch {
		case errors.As(err, &invalid):
			writeError(w, http.StatusUnprocessableEntity, err)
		case errors.Is(err, source.ErrPodNotFromAPI):
			writeError(w, http.StatusConflict, err)
		case err != nil:
			writeError(w, http.StatusInternalServerError, err)
		default:
			writeJSON(w, http.StatusCreated, applied)
		}
	})
	deleteHandler := func(remove func(r *http.Request) error) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if opts.API == nil {
				writeError(w, http.StatusNotImplemented, errors.New("this agent takes no pods through its API"))
				return
			}
			err := remove(r)
			switch {
			case errors.Is(err, source.ErrPodNotFound), errors.Is(err, source.ErrObjectNotFound):
				writeError(w, http.StatusNotFound, err)
			case errors.Is(err, source.ErrPodNotFromAPI):
				writeError(w, http.StatusConflict, err)
			case err != nil:
				writeError(w, http.StatusInternalServerError, err)
			default:
				w.WriteHeader(http.StatusNoContent)
			}
		}
	}
	mux.HandleFunc("DELETE /pods/{uid}", deleteHandler(func(r *http.Request) error {
		return opts.API.Delete(r.Context(), types.UID(r.PathValue("uid")))
	}))
	for path, kind := range objectPaths {
		mux.HandleFunc("DELETE "+path, deleteHandler(func(r *http.Request) error {
			return opts.API.DeleteObject(r.Context(), source.ObjectRef{Kind: kind, Namespace: r.PathValue("namespace"), Name: r.PathValue("name")})
		}))
	}
	return mux
}

// objectPaths are the paths of the objects DELETE removes by name, with
// their kinds.
var objectPaths = map[string]string{
	"/pods/{namespace}/{name}":                   manifest.KindPod,
	"/persistentvolumes/{name}":                  manifest.KindPersistentVolume,
	"/persistentvolumeclaims/{namespace}/{name}": manifest.KindPersistentVolumeClaim,
	"/secrets/{namespace}/{name}":                manifest.KindSecret,
}

// objectPath returns the path of the object ref, for DELETE.
func objectPath(ref source.ObjectRef) string {
	switch ref.Kind {
	case manifest.KindPod:
		return "/pods/" + url.PathEscape(ref.Namespace) + "/" + url.PathEscape(ref.Name)
	case manifest.KindPersistentVolume:
		return "/persistentvolumes/" + url.PathEscape(ref.Name)
	case manifest.KindPersistentVolumeClaim:
		return "/persistentvolumeclaims/" + url.PathEscape(ref.Namespace) + "/" + url.PathEscape(ref.Name)
	case manifest.KindSecret:
		return "/secrets/" + url.PathEscape(ref.Namespace) + "/" + url.PathEscape(ref.Name)
	}
	return "/" + url.PathEscape(strings.ToLower(ref.Kind)) + "s/" + url.PathEscape(ref.Namespace) + "/" + url.PathEscape(ref.Name)
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		klog.V(2).InfoS("Failed to write API answer", "err", err)
	}
}

func writeError(w http.ResponseWriter, status int, err error) {
	writeJSON(w, status, ErrorResponse{Error: err.Error()})
}

// SocketOptions configure the API socket.
type SocketOptions struct {
	Path string
	// Mode is the socket's permission bits; 0 means 0600.
	Mode fs.FileMode
	// Group, when set, is the group name or numeric ID given the socket.
	Group string
}

// ListenUnix listens on the unix socket opts.Path with its mode and group.
// A stale socket left by an agent that died is replaced; a socket that
// another agent answers on is an error; any other file there is left alone
// and is an error.
func ListenUnix(opts SocketOptions) (net.Listener, error) {
	if opts.Mode == 0 {
		opts.Mode = 0o600
	}
	gid := -1
	if opts.Group != "" {
		var err error
		if gid, err = lookupGroup(opts.Group); err != nil {
			return nil, err
		}
	}
	if info, err := os.Lstat(opts.Path); err == nil {
		if info.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("failed to listen on %q: it exists and is not a socket", opts.Path)
		}
		if conn, err := net.DialTimeout("unix", opts.Path, time.Second); err == nil {
			conn.Close()
			return nil, fmt.Errorf("failed to listen on %q: another agent is answering on it", opts.Path)
		}
		if err := os.Remove(opts.Path); err != nil {
			return nil, fmt.Errorf("failed to remove stale socket %q: %w", opts.Path, err)
		}
		klog.InfoS("Replaced a stale API socket", "path", opts.Path)
	}
	listener, err := net.Listen("unix", opts.Path)
	if err != nil {
		return nil, fmt.Errorf("failed to listen on %q: %w", opts.Path, err)
	}
	// The socket is removed when the listener closes.
	listener.(*net.UnixListener).SetUnlinkOnClose(true)
	if err := os.Chmod(opts.Path, opts.Mode); err != nil {
		listener.Close()
		return nil, fmt.Errorf("failed to set the mode of socket %q: %w", opts.Path, err)
	}
	if gid >= 0 {
		if err := os.Chown(opts.Path, -1, gid); err != nil {
			listener.Close()
			return nil, fmt.Errorf("failed to set the group of socket %q: %w", opts.Path, err)
		}
	}
	return listener, nil
}

func lookupGroup(group string) (int, error) {
	if gid, err := strconv.Atoi(group); err == nil && gid >= 0 {
		return gid, nil
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		return 0, fmt.Errorf("failed to look up socket group %q: %w", group, err)
	}
	return strconv.Atoi(g.Gid)
}

// Serve serves handler on listener until ctx is cancelled, then waits a
// while for requests in flight and closes the listener (which removes a
// unix socket).
func Serve(ctx context.Context, listener net.Listener, handler http.Handler) error {
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	errs := make(chan error, 1)
	go func() { errs <- srv.Serve(listener) }()
	select {
	case err := <-errs:
		return fmt.Errorf("failed to serve on %s: %w", listener.Addr(), err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		srv.Close()
	}
	<-errs
	return nil
}
