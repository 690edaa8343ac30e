package csi

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/apimachinery/pkg/util/validation/field"
	utilversion "k8s.io/apimachinery/pkg/util/version"
	"k8s.io/klog/v2"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// The kubelet's timeouts for the registration protocol.
const (
	registrationDialTimeout   = 10 * time.Second
	registrationNotifyTimeout = 5 * time.Second
)

// registrar follows the kubelet's plugin-registration protocol in one dir:
// each unix socket there is a driver's registration service, asked for the
// driver's name, endpoint and versions. A socket that appears registers its
// driver; one that goes deregisters it; one recreated at the same path
// registers it again.
type registrar struct {
	dir     string
	drivers *drivers
	// bySocket maps a registration socket to the driver it registered. Only
	// the goroutine of run uses it.
	bySocket map[string]*driver
}

// run registers the drivers whose sockets are in the dir, calls scanned,
// then follows the dir until ctx is done, when it deregisters them all.
func (r *registrar) run(ctx context.Context, scanned func()) {
	logger := klog.FromContext(ctx).WithValues("registrationDir", r.dir)
	defer func() {
		for path := range r.bySocket {
			r.deregister(ctx, path)
		}
	}()
	if err := os.MkdirAll(r.dir, 0o750); err != nil {
		logger.Error(err, "Failed to create the plugin registration dir; CSI drivers cannot register")
		scanned()
		return
	}
	watcher, err := fsnotify.NewWatcher()
	if err == nil {
		err = watcher.Add(r.dir)
	}
	if err != nil {
		logger.Error(err, "Failed to watch the plugin registration dir; CSI drivers cannot register")
		scanned()
		return
	}
	defer watcher.Close()
	r.scan(ctx)
	scanned()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-watcher.Events:
			if !ok {
				return
			}
			r.handle(ctx, ev)
		case err, ok := <-watcher.Errors:
			if !ok {
				return
			}
			// Events were lost: read the dir again.
			logger.Error(err, "Lost plugin registration dir events; scanning it again")
			r.scan(ctx)
		}
	}
}

// scan registers the sockets in the dir not registered yet, and deregisters
// those gone.
func (r *registrar) scan(ctx context.Context) {
	entries, err := os.ReadDir(r.dir)
	if err != nil {
		klog.FromContext(ctx).Error(err, "Failed to read the plugin registration dir", "registrationDir", r.dir)
		return
	}
	present := map[string]bool{}
	for _, e := range entries {
		path := filepath.Join(r.dir, e.Name())
		if isRegistrationSocket(path) {
			present[path] = true
			if r.bySocket[path] == nil {
				r.register(ctx, path)
			}
		}
	}
	for path := range r.bySocket {
		if !present[path] {
			r.deregister(ctx, path)
		}
	}
}

func (r *registrar) handle(ctx context.Context, ev fsnotify.Event) {
	path := filepath.Clean(ev.Name)
	switch {
	case ev.Has(fsnotify.Create):
		if r.bySocket[path] != nil {
			// Recreated: the driver restarted.
			r.deregister(ctx, path)
		}
		if isRegistrationSocket(path) {
			r.register(ctx, path)
		}
	case ev.Has(fsnotify.Remove), ev.Has(fsnotify.Rename):
		r.deregister(ctx, path)
	}
}

// isRegistrationSocket reports whether path is a unix socket whose name does
// not start with ".".
func isRegistrationSocket(path string) bool {
	if strings.HasPrefix(filepath.Base(path), ".") {
		return false
	}
	info, err := os.Lstat(path)
	return err == nil && info.Mode().Type() == fs.ModeSocket
}

// register runs the protocol with the registration service at path: GetInfo,
// checks, NodeGetInfo through the driver's endpoint, then
// NotifyRegistrationStatus. A failure is notified to the driver and logged.
func (r *registrar) register(ctx context.Context, path string) {
	logger := klog.FromContext(ctx).WithValues("socket", path)
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		logger.Error(err, "Failed to connect to a plugin registration socket")
		return
	}
	defer conn.Close()
	client := registerapi.NewRegistrationClient(conn)
	// Wait for the connection: the socket is created (and notified) by
	// bind(2), before the driver listens. A stale socket costs the timeout.
	infoCtx, cancel := context.WithTimeout(ctx, registrationDialTimeout)
	info, err := client.GetInfo(infoCtx, &registerapi.InfoRequest{}, grpc.WaitForReady(true))
	cancel()
	if err != nil {
		logger.Error(err, "Failed to get a plugin's registration info")
		return
	}
	if info.Type != registerapi.CSIPlugin {
		logger.V(2).Info("Ignoring a plugin that is not a CSI driver", "type", info.Type, "name", info.Name)
		return
	}
	d, err := r.validateAndAdd(ctx, path, info)
	var fp fingerprint
	if err == nil {
		if fp = r.drivers.fingerprint(ctx, d); !fp.identified {
			err = fmt.Errorf("CSI driver %q at %s did not identify itself: %s", d.name, d.endpoint, fp.message)
			r.drivers.remove(d)
		}
	}
	notifyCtx, cancel := context.WithTimeout(ctx, registrationNotifyTimeout)
	defer cancel()
	status := &registerapi.RegistrationStatus{PluginRegistered: err == nil}
	if err != nil {
		status.Error = err.Error()
		logger.Error(err, "Failed to register CSI driver", "driver", info.Name)
	}
	if _, notifyErr := client.NotifyRegistrationStatus(notifyCtx, status); notifyErr != nil && err == nil {
		logger.Error(notifyErr, "Failed to notify CSI driver of its registration; deregistering it", "driver", d.name)
		r.drivers.remove(d)
		return
	}
	if err == nil {
		r.bySocket[path] = d
		logger.Info("Registered CSI driver", "driver", d.name, "endpoint", d.endpoint, "version", d.version, "nodeID", fp.nodeID)
	}
}

// validateAndAdd checks a CSI driver's registration info as the kubelet
// does and adds the driver: a valid name, a socket endpoint (empty means the
// registration socket), and a supported version, higher than that of a
// driver of the same name registered already.
func (r *registrar) validateAndAdd(ctx context.Context, path string, info *registerapi.PluginInfo) (*driver, error) {
	if errs := validateDriverName(info.Name, field.NewPath("name")); len(errs) > 0 {
		return nil, fmt.Errorf("invalid CSI driver registration: %w", errs.ToAggregate())
	}
	endpoint := info.Endpoint
	if endpoint == "" {
		endpoint = path
	}
	if _, err := socketPath(endpoint); err != nil {
		return nil, err
	}
	version, err := highestSupportedVersion(info.SupportedVersions)
	if err != nil {
		return nil, fmt.Errorf("CSI driver %q: %w", info.Name, err)
	}
	if existing := r.drivers.lookup(info.Name); existing != nil {
		if existing.source == sourceStatic {
			return nil, fmt.Errorf("CSI driver %q is configured in csi.drivers already", info.Name)
		}
		if old, err := utilversion.ParseGeneric(existing.version); err == nil && !old.LessThan(version) {
			return nil, fmt.Errorf("CSI driver %q is registered already with version %s, not lower than %s", info.Name, existing.version, version)
		}
	}
	return r.drivers.add(info.Name, endpoint, sourceRegistration, version.String())
}

// highestSupportedVersion returns the highest 1.x version among versions.
func highestSupportedVersion(versions []string) (*utilversion.Version, error) {
	if len(versions) == 0 {
		return nil, errors.New("the registration lists no supported versions")
	}
	var highest *utilversion.Version
	for _, s := range versions {
		v, err := utilversion.ParseGeneric(s)
		if err != nil || v.Major() != 1 {
			continue
		}
		if highest == nil || highest.LessThan(v) {
			highest = v
		}
	}
	if highest == nil {
		return nil, fmt.Errorf("none of the versions %q is supported (1.x)", versions)
	}
	return highest, nil
}

// deregister forgets the driver that the socket at path registered.
func (r *registrar) deregister(ctx context.Context, path string) {
	d := r.bySocket[path]
	if d == nil {
		return
	}
	delete(r.bySocket, path)
	if r.drivers.remove(d) {
		klog.FromContext(ctx).Info("Deregistered CSI driver", "driver", d.name, "socket", path)
	}
}
