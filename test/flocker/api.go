package flocker

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"
)

// Flocker's error descriptions.
const (
	descDatasetIDInUse   = "The provided dataset_id is already in use."
	descDatasetNotFound  = "Dataset not found."
	descDatasetDeleted   = "The dataset has been deleted."
	descLeaseHeld        = "Lease already held."
	descLeaseNotFound    = "Lease not found."
	descNodeEraNotFound  = "No node found with given era."
	descSchemaMismatch   = "The provided JSON doesn't match the required schema."
	descDecodingError    = "The request body could not be decoded according to the value of the Content-Type header."
	descNotFound         = "The specified entity either does not exist or you are not allowed to access it."
	descInjectedFailure  = "Injected failure."
	headerConfigTag      = "X-Configuration-Tag"
	headerIfConfigTag    = "X-If-Configuration-Matches"
	minimumMaximumSize   = 67108864
	maxMetadataItems     = 16
	maxMetadataLength    = 256
	maxRequestBodyLength = 1 << 20
)

func (e *Emulator) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/version", e.getVersion)
	mux.HandleFunc("GET /v1/configuration/datasets", e.listDatasets)
	mux.HandleFunc("POST /v1/configuration/datasets", e.createDataset)
	mux.HandleFunc("POST /v1/configuration/datasets/{id}", e.updateDataset)
	mux.HandleFunc("DELETE /v1/configuration/datasets/{id}", e.deleteDataset)
	mux.HandleFunc("GET /v1/state/datasets", e.stateDatasets)
	mux.HandleFunc("GET /v1/state/nodes", e.stateNodes)
	mux.HandleFunc("GET /v1/state/nodes/by_era/{era}", e.nodeByEra)
	mux.HandleFunc("GET /v1/configuration/leases", e.listLeases)
	mux.HandleFunc("POST /v1/configuration/leases", e.acquireLease)
	mux.HandleFunc("DELETE /v1/configuration/leases/{id}", e.releaseLease)
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, descNotFound)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w}
		start := e.clock.Now()
		injected := false
		defer func() { e.logRequest(r, rec.status, injected, e.clock.Since(start)) }()
		e.waitLatency(r.Context())
		if rule := e.takeFault(r); rule != nil {
			injected = true
			if rule.Status == 0 {
				panic(http.ErrAbortHandler) // closes the connection without a response
			}
			writeError(rec, rule.Status, descInjectedFailure)
			return
		}
		mux.ServeHTTP(rec, r)
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"description":"failed to encode response"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func writeError(w http.ResponseWriter, status int, description string) {
	writeJSON(w, status, map[string]string{"description": description})
}

func writeSchemaErrors(w http.ResponseWriter, errs []string) {
	writeJSON(w, http.StatusBadRequest, map[string]any{"description": descSchemaMismatch, "errors": errs})
}

// readObject decodes a JSON object body. It writes the 400 response and returns false on failure.
func readObject(w http.ResponseWriter, r *http.Request) (map[string]json.RawMessage, bool) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBodyLength))
	if err != nil {
		writeError(w, http.StatusBadRequest, descDecodingError)
		return nil, false
	}
	var raw any
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil || dec.More() {
		writeError(w, http.StatusBadRequest, descDecodingError)
		return nil, false
	}
	if _, ok := raw.(map[string]any); !ok {
		writeSchemaErrors(w, []string{fmt.Sprintf("%s is not of type 'object'", strings.TrimSpace(string(body)))})
		return nil, false
	}
	var obj map[string]json.RawMessage
	_ = json.Unmarshal(body, &obj)
	return obj, true
}

// schema collects schema violations of one request body.
type schema struct {
	e    *Emulator
	obj  map[string]json.RawMessage
	errs []string
}

func (s *schema) failf(format string, args ...any) {
	s.errs = append(s.errs, fmt.Sprintf(format, args...))
}

func (s *schema) allow(fields ...string) {
	for k := range s.obj {
		found := false
		for _, f := range fields {
			found = found || k == f
		}
		if !found {
			s.failf("Additional properties are not allowed (%q was unexpected)", k)
		}
	}
}

// id reads a dataset id or node uuid field.
func (s *schema) id(field string, required bool) (string, bool) {
	raw, ok := s.obj[field]
	if !ok {
		if required {
			s.failf("%q is a required property", field)
		}
		return "", false
	}
	var v string
	if err := json.Unmarshal(raw, &v); err != nil {
		s.failf("%s: %s is not of type 'string'", field, raw)
		return "", false
	}
	if !s.e.validID(v) {
		if s.e.cfg.Lenient {
			s.failf("%s: %q does not match %q", field, v, lenientIDPattern.String())
		} else {
			s.failf("%s: %q does not match %q", field, v, uuid4Pattern.String())
		}
		return "", false
	}
	return v, true
}

func (s *schema) maximumSize() *int64 {
	raw, ok := s.obj["maximum_size"]
	if !ok || string(raw) == "null" {
		return nil
	}
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil {
		s.failf("maximum_size: %s is not of type 'integer', 'null'", raw)
		return nil
	}
	if f != math.Trunc(f) || f > math.MaxInt64 {
		s.failf("maximum_size: %s is not of type 'integer', 'null'", raw)
		return nil
	}
	n := int64(f)
	if n < minimumMaximumSize {
		s.failf("maximum_size: %d is less than the minimum of %d", n, minimumMaximumSize)
	}
	if n%1024 != 0 {
		s.failf("maximum_size: %d is not a multiple of 1024", n)
	}
	return &n
}

func (s *schema) metadata() map[string]string {
	out := map[string]string{}
	raw, ok := s.obj["metadata"]
	if !ok {
		return out
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		s.failf("metadata: %s is not of type 'object'", raw)
		return out
	}
	if len(m) > maxMetadataItems {
		s.failf("metadata: has %d properties, more than the maximum of %d", len(m), maxMetadataItems)
	}
	for k, v := range m {
		str, isString := v.(string)
		switch {
		case k == "" || utf8.RuneCountInString(k) > maxMetadataLength:
			s.failf("metadata: key %q must be 1 to %d characters", k, maxMetadataLength)
		case !isString:
			s.failf("metadata: %q: %v is not of type 'string'", k, v)
		case utf8.RuneCountInString(str) > maxMetadataLength:
			s.failf("metadata: %q: value is longer than %d characters", k, maxMetadataLength)
		default:
			out[k] = str
		}
	}
	return out
}

func (e *Emulator) getVersion(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"flocker": Version})
}

func (e *Emulator) listDatasets(w http.ResponseWriter, _ *http.Request) {
	e.mu.Lock()
	e.reconcileLocked()
	out := e.persistedLocked().Datasets
	tag := e.configurationTagLocked()
	e.mu.Unlock()
	w.Header().Set(headerConfigTag, tag)
	writeJSON(w, http.StatusOK, out)
}

// configurationMatchesLocked honours X-If-Configuration-Matches; it writes the 412 and returns false
// on a mismatch.
func (e *Emulator) configurationMatchesLocked(w http.ResponseWriter, r *http.Request) bool {
	want := r.Header.Values(headerIfConfigTag)
	if len(want) == 0 {
		return true
	}
	tag := e.configurationTagLocked()
	for _, v := range want {
		if v == tag {
			return true
		}
	}
	writeError(w, http.StatusPreconditionFailed, fmt.Sprintf("Tag doesn't match. Required: %s, current: %s", want[0], tag))
	return false
}

func (e *Emulator) createDataset(w http.ResponseWriter, r *http.Request) {
	obj, ok := readObject(w, r)
	if !ok {
		return
	}
	s := &schema{e: e, obj: obj}
	s.allow("primary", "dataset_id", "maximum_size", "metadata")
	primary, _ := s.id("primary", true)
	id, hasID := s.id("dataset_id", false)
	size := s.maximumSize()
	metadata := s.metadata()
	if len(s.errs) > 0 {
		writeSchemaErrors(w, s.errs)
		return
	}
	if !hasID {
		var err error
		if id, err = newUUID4(); err != nil {
			writeError(w, http.StatusInternalServerError, err.Error())
			return
		}
	}
	if !e.cfg.Lenient {
		id, primary = strings.ToLower(id), strings.ToLower(primary)
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.configurationMatchesLocked(w, r) {
		return
	}
	if _, exists := e.datasets[id]; exists {
		writeError(w, http.StatusConflict, descDatasetIDInUse)
		return
	}
	if err := e.createBackingDir(id); err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	// As in Flocker, an unknown primary is accepted (FLOC-1278); the dataset never settles there.
	d := e.insertLocked(datasetConfig{DatasetID: id, Primary: primary, Metadata: metadata, MaximumSize: size})
	if err := e.saveLocked(); err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	e.kickLocked()
	writeJSON(w, http.StatusCreated, d.datasetConfig)
}

func (e *Emulator) updateDataset(w http.ResponseWriter, r *http.Request) {
	obj, ok := readObject(w, r)
	if !ok {
		return
	}
	s := &schema{e: e, obj: obj}
	s.allow("primary")
	primary, hasPrimary := s.id("primary", false)
	if len(s.errs) > 0 {
		writeSchemaErrors(w, s.errs)
		return
	}
	if !e.cfg.Lenient {
		primary = strings.ToLower(primary)
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.configurationMatchesLocked(w, r) {
		return
	}
	d, found := e.datasets[r.PathValue("id")]
	if !found {
		writeError(w, http.StatusNotFound, descDatasetNotFound)
		return
	}
	if d.Deleted {
		writeError(w, http.StatusMethodNotAllowed, descDatasetDeleted)
		return
	}
	if hasPrimary {
		e.movePrimaryLocked(d, primary)
		if err := e.saveLocked(); err != nil {
			writeError(w, http.StatusInternalServerError, err.Error())
			return
		}
	}
	writeJSON(w, http.StatusOK, d.datasetConfig)
}

func (e *Emulator) deleteDataset(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.configurationMatchesLocked(w, r) {
		return
	}
	d, found := e.datasets[r.PathValue("id")]
	if !found {
		writeError(w, http.StatusNotFound, descDatasetNotFound)
		return
	}
	e.deleteLocked(d)
	if err := e.saveLocked(); err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, d.datasetConfig)
}

func (e *Emulator) stateDatasets(w http.ResponseWriter, _ *http.Request) {
	e.mu.Lock()
	e.reconcileLocked()
	out := []datasetState{}
	for _, id := range e.order {
		if st, listed := e.stateOfLocked(e.datasets[id]); listed {
			out = append(out, st)
		}
	}
	e.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

type nodeJSON struct {
	Host string `json:"host"`
	UUID string `json:"uuid"`
}

func (e *Emulator) stateNodes(w http.ResponseWriter, _ *http.Request) {
	e.mu.Lock()
	out := []nodeJSON{}
	for _, n := range e.nodes {
		if !n.disconnected {
			out = append(out, nodeJSON{Host: n.Host, UUID: n.UUID})
		}
	}
	e.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

func (e *Emulator) nodeByEra(w http.ResponseWriter, r *http.Request) {
	era := strings.ToLower(r.PathValue("era"))
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, n := range e.nodes {
		if !n.disconnected && n.Era == era {
			writeJSON(w, http.StatusOK, map[string]string{"uuid": n.UUID})
			return
		}
	}
	writeError(w, http.StatusNotFound, descNodeEraNotFound)
}

type leaseJSON struct {
	DatasetID string   `json:"dataset_id"`
	NodeUUID  string   `json:"node_uuid"`
	Expires   *float64 `json:"expires"`
}

func (e *Emulator) leaseResponseLocked(l *lease, now time.Time) leaseJSON {
	out := leaseJSON{DatasetID: l.DatasetID, NodeUUID: l.NodeUUID}
	if l.Expiration != nil {
		left := l.Expiration.Sub(now).Seconds()
		out.Expires = &left
	}
	return out
}

func (e *Emulator) listLeases(w http.ResponseWriter, _ *http.Request) {
	e.mu.Lock()
	e.reconcileLocked()
	now := e.clock.Now()
	out := []leaseJSON{}
	for _, l := range e.persistedLocked().Leases {
		out = append(out, e.leaseResponseLocked(&l, now))
	}
	e.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

func (e *Emulator) acquireLease(w http.ResponseWriter, r *http.Request) {
	obj, ok := readObject(w, r)
	if !ok {
		return
	}
	s := &schema{e: e, obj: obj}
	s.allow("dataset_id", "node_uuid", "expires")
	datasetID, _ := s.id("dataset_id", true)
	node, _ := s.id("node_uuid", true)
	var expires *float64
	if raw, ok := obj["expires"]; !ok {
		s.failf("%q is a required property", "expires")
	} else if string(raw) != "null" {
		var f float64
		if err := json.Unmarshal(raw, &f); err != nil {
			s.failf("expires: %s is not of type 'number', 'null'", raw)
		} else if f < 0 {
			s.failf("expires: %v is less than the minimum of 0", f)
		} else {
			expires = &f
		}
	}
	if len(s.errs) > 0 {
		writeSchemaErrors(w, s.errs)
		return
	}
	if !e.cfg.Lenient {
		datasetID, node = strings.ToLower(datasetID), strings.ToLower(node)
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	e.reconcileLocked() // drops expired leases
	now := e.clock.Now()
	status := http.StatusCreated
	if existing, held := e.leases[datasetID]; held {
		if existing.NodeUUID != node {
			writeError(w, http.StatusConflict, descLeaseHeld)
			return
		}
		status = http.StatusOK
	}
	l := &lease{DatasetID: datasetID, NodeUUID: node}
	if expires != nil {
		t := now.Add(time.Duration(*expires * float64(time.Second)))
		l.Expiration = &t
	}
	e.leases[datasetID] = l
	if err := e.saveLocked(); err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	e.kickLocked()
	writeJSON(w, status, e.leaseResponseLocked(l, now))
}

func (e *Emulator) releaseLease(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !e.cfg.Lenient {
		id = strings.ToLower(id)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.reconcileLocked()
	l, held := e.leases[id]
	if !held {
		writeError(w, http.StatusNotFound, descLeaseNotFound)
		return
	}
	delete(e.leases, id)
	if err := e.saveLocked(); err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	e.kickLocked()
	writeJSON(w, http.StatusOK, e.leaseResponseLocked(l, e.clock.Now()))
}

// Leases returns the current leases (dataset id → node uuid), without expired ones.
func (e *Emulator) Leases() map[string]string {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.reconcileLocked()
	out := map[string]string{}
	for id, l := range e.leases {
		out[id] = l.NodeUUID
	}
	return out
}
