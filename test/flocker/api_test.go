package flocker

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

const (
	testDatasetID = "5d8b1c6e-4a1f-4e5b-9c3d-2f7a8b9c0d1e"
	remoteUUID    = "8a7f1e2d-3c4b-4a59-8e6f-7d8c9b0a1f2e"
)

func TestVersion(t *testing.T) {
	e, _, _ := startFake(t, Config{})
	r := newAPIClient(t, e).do(http.MethodGet, "/v1/version", nil)
	expectStatus(t, r, http.StatusOK)
	if got := strings.TrimSpace(string(r.body)); got != `{"flocker":"1.15.0"}` {
		t.Errorf("version body %s", got)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
}

func TestCreateDataset(t *testing.T) {
	e, _, _ := startFake(t, Config{})
	c := newAPIClient(t, e)
	local := e.LocalNode().UUID

	t.Run("generated id", func(t *testing.T) {
		r := c.do(http.MethodPost, "/v1/configuration/datasets", map[string]any{"primary": local})
		expectStatus(t, r, http.StatusCreated)
		var got configEntry
		r.decode(t, &got)
		if !uuid4Pattern.MatchString(got.DatasetID) || got.DatasetID != strings.ToLower(got.DatasetID) {
			t.Errorf("generated id %q is not a lower-case uuid4", got.DatasetID)
		}
		if got.Primary != local || got.Deleted || got.Metadata == nil || got.MaximumSize != nil {
			t.Errorf("unexpected configuration %+v", got)
		}
	})
	t.Run("given id is lower-cased, metadata and size kept", func(t *testing.T) {
		r := c.do(http.MethodPost, "/v1/configuration/datasets", map[string]any{
			"primary": local, "dataset_id": strings.ToUpper(testDatasetID),
			"maximum_size": 107374182400, "metadata": map[string]string{"name": "db"},
		})
		expectStatus(t, r, http.StatusCreated)
		var got configEntry
		r.decode(t, &got)
		if got.DatasetID != testDatasetID || got.Metadata["name"] != "db" || got.MaximumSize == nil || *got.MaximumSize != 107374182400 {
			t.Errorf("unexpected configuration %+v", got)
		}
	})
	t.Run("duplicate id", func(t *testing.T) {
		r := c.do(http.MethodPost, "/v1/configuration/datasets", map[string]any{"primary": local, "dataset_id": testDatasetID})
		expectStatus(t, r, http.StatusConflict)
		if d := r.description(t); d != "The provided dataset_id is already in use." {
			t.Errorf("description %q", d)
		}
	})
	t.Run("same name is not a conflict", func(t *testing.T) {
		r := c.do(http.MethodPost, "/v1/configuration/datasets", map[string]any{"primary": local, "metadata": map[string]string{"name": "db"}})
		expectStatus(t, r, http.StatusCreated)
	})
	t.Run("unknown primary is accepted", func(t *testing.T) {
		r := c.do(http.MethodPost, "/v1/configuration/datasets", map[string]any{"primary": "0b6f8d2e-1c3a-4e5f-8a9b-0c1d2e3f4a5b"})
		expectStatus(t, r, http.StatusCreated)
	})
}

func TestCreateDatasetValidation(t *testing.T) {
	e, _, _ := startFake(t, Config{})
	c := newAPIClient(t, e)
	local := e.LocalNode().UUID
	tests := map[string]struct {
		body       any
		wantStatus int
		wantError  string // a substring of one of the schema errors
	}{
		"not JSON":                {body: "{primary", wantStatus: 400},
		"not an object":           {body: `["x"]`, wantStatus: 400, wantError: "not of type 'object'"},
		"missing primary":         {body: map[string]any{}, wantStatus: 400, wantError: `"primary" is a required property`},
		"primary not a uuid":      {body: map[string]any{"primary": "node1"}, wantStatus: 400, wantError: "primary"},
		"primary not a uuid4":     {body: map[string]any{"primary": "5d8b1c6e-4a1f-1e5b-9c3d-2f7a8b9c0d1e"}, wantStatus: 400, wantError: "primary"},
		"dataset_id not a uuid":   {body: map[string]any{"primary": local, "dataset_id": "uuid1"}, wantStatus: 400, wantError: "dataset_id"},
		"dataset_id not a string": {body: map[string]any{"primary": local, "dataset_id": 7}, wantStatus: 400, wantError: "dataset_id"},
		"size too small":          {body: map[string]any{"primary": local, "maximum_size": 67108864 - 1024}, wantStatus: 400, wantError: "minimum"},
		"size not multiple":       {body: map[string]any{"primary": local, "maximum_size": 67108864 + 1}, wantStatus: 400, wantError: "multiple of 1024"},
		"size not integer":        {body: map[string]any{"primary": local, "maximum_size": 67108864.5}, wantStatus: 400, wantError: "integer"},
		"size a string":           {body: map[string]any{"primary": local, "maximum_size": "67108864"}, wantStatus: 400, wantError: "integer"},
		"size null":               {body: map[string]any{"primary": local, "maximum_size": nil}, wantStatus: 201},
		"unknown field":           {body: map[string]any{"primary": local, "deleted": true}, wantStatus: 400, wantError: `"deleted" was unexpected`},
		"metadata not strings":    {body: map[string]any{"primary": local, "metadata": map[string]any{"a": 1}}, wantStatus: 400, wantError: "metadata"},
		"metadata value too long": {body: map[string]any{"primary": local, "metadata": map[string]string{"a": strings.Repeat("x", 257)}}, wantStatus: 400, wantError: "metadata"},
		"metadata key too long":   {body: map[string]any{"primary": local, "metadata": map[string]string{strings.Repeat("k", 257): "v"}}, wantStatus: 400, wantError: "metadata"},
		"metadata too many":       {body: map[string]any{"primary": local, "metadata": manyMetadata(17)}, wantStatus: 400, wantError: "maximum of 16"},
		"metadata at the limit":   {body: map[string]any{"primary": local, "metadata": manyMetadata(16)}, wantStatus: 201},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := c.do(http.MethodPost, "/v1/configuration/datasets", tc.body)
			expectStatus(t, r, tc.wantStatus)
			if tc.wantStatus != 400 {
				return
			}
			var body struct {
				Description string   `json:"description"`
				Errors      []string `json:"errors"`
			}
			r.decode(t, &body)
			if tc.wantError == "" {
				if body.Description != descDecodingError {
					t.Errorf("description %q, want the decoding error", body.Description)
				}
				return
			}
			if body.Description != "The provided JSON doesn't match the required schema." {
				t.Errorf("description %q", body.Description)
			}
			if !strings.Contains(strings.Join(body.Errors, "\n"), tc.wantError) {
				t.Errorf("errors %q do not mention %q", body.Errors, tc.wantError)
			}
		})
	}
}

func manyMetadata(n int) map[string]string {
	m := map[string]string{}
	for i := range n {
		m[fmt.Sprintf("k%d", i)] = "v"
	}
	return m
}

func TestLenientModeAcceptsNonUUIDIDs(t *testing.T) {
	e, _, _ := startFake(t, Config{Lenient: true, LocalNode: Node{UUID: "A-B-C-D"}})
	c := newAPIClient(t, e)
	r := c.do(http.MethodPost, "/v1/configuration/datasets", map[string]any{"primary": "A-B-C-D", "dataset_id": "uuid1"})
	expectStatus(t, r, http.StatusCreated)
	var got configEntry
	r.decode(t, &got)
	if got.DatasetID != "uuid1" || got.Primary != "A-B-C-D" {
		t.Errorf("lenient mode changed the ids: %+v", got)
	}
	// Ids still become directory names, so path tricks are refused.
	r = c.do(http.MethodPost, "/v1/configuration/datasets", map[string]any{"primary": "A-B-C-D", "dataset_id": "../etc"})
	expectStatus(t, r, http.StatusBadRequest)
}

func TestListDatasetsIncludesDeleted(t *testing.T) {
	e, _, _ := startFake(t, Config{})
	c := newAPIClient(t, e)
	kept, err := e.AddDataset(DatasetSpec{Name: "kept"})
	if err != nil {
		t.Fatal(err)
	}
	gone, err := e.AddDataset(DatasetSpec{Name: "gone"})
	if err != nil {
		t.Fatal(err)
	}
	expectStatus(t, c.do(http.MethodDelete, "/v1/configuration/datasets/"+gone, nil), http.StatusOK)

	r := c.do(http.MethodGet, "/v1/configuration/datasets", nil)
	expectStatus(t, r, http.StatusOK)
	if r.header.Get("X-Configuration-Tag") == "" {
		t.Error("no X-Configuration-Tag header")
	}
	var list []configEntry
	r.decode(t, &list)
	got := map[string]bool{}
	for _, d := range list {
		got[d.DatasetID] = d.Deleted
	}
	if len(list) != 2 || got[kept] || !got[gone] {
		t.Errorf("configuration list %+v: want %s live and %s deleted", list, kept, gone)
	}
}

func TestMoveAndDelete(t *testing.T) {
	e, _, _ := startFake(t, Config{RemoteNodes: []Node{{Host: "10.0.0.2", UUID: remoteUUID}}})
	c := newAPIClient(t, e)
	id, err := e.AddDataset(DatasetSpec{ID: testDatasetID})
	if err != nil {
		t.Fatal(err)
	}
	path := "/v1/configuration/datasets/" + id

	r := c.do(http.MethodPost, path, map[string]string{"primary": remoteUUID})
	expectStatus(t, r, http.StatusOK)
	var moved configEntry
	r.decode(t, &moved)
	if moved.Primary != remoteUUID || moved.DatasetID != id {
		t.Errorf("move returned %+v", moved)
	}
	expectStatus(t, c.do(http.MethodPost, path, map[string]string{"primary": "nope"}), http.StatusBadRequest)
	expectStatus(t, c.do(http.MethodPost, path, map[string]string{"primary": remoteUUID, "size": "1"}), http.StatusBadRequest)

	r = c.do(http.MethodPost, "/v1/configuration/datasets/0b6f8d2e-1c3a-4e5f-8a9b-0c1d2e3f4a5b", map[string]string{"primary": remoteUUID})
	expectStatus(t, r, http.StatusNotFound)
	if d := r.description(t); d != "Dataset not found." {
		t.Errorf("description %q", d)
	}

	for range 2 { // idempotent
		r = c.do(http.MethodDelete, path, nil)
		expectStatus(t, r, http.StatusOK)
		var deleted configEntry
		r.decode(t, &deleted)
		if !deleted.Deleted {
			t.Errorf("delete returned %+v", deleted)
		}
	}
	r = c.do(http.MethodPost, path, map[string]string{"primary": remoteUUID})
	expectStatus(t, r, http.StatusMethodNotAllowed)
	if d := r.description(t); d != "The dataset has been deleted." {
		t.Errorf("description %q", d)
	}
	expectStatus(t, c.do(http.MethodDelete, "/v1/configuration/datasets/0b6f8d2e-1c3a-4e5f-8a9b-0c1d2e3f4a5b", nil), http.StatusNotFound)
}

func TestConfigurationTagPrecondition(t *testing.T) {
	e, _, _ := startFake(t, Config{})
	c := newAPIClient(t, e)
	tag := c.do(http.MethodGet, "/v1/configuration/datasets", nil).header.Get("X-Configuration-Tag")
	body := map[string]any{"primary": e.LocalNode().UUID}

	r, err := c.try(http.MethodPost, "/v1/configuration/datasets", body, map[string]string{"X-If-Configuration-Matches": "stale"})
	if err != nil {
		t.Fatal(err)
	}
	expectStatus(t, r, http.StatusPreconditionFailed)
	if d := r.description(t); !strings.Contains(d, "Tag doesn't match") {
		t.Errorf("description %q", d)
	}
	r, err = c.try(http.MethodPost, "/v1/configuration/datasets", body, map[string]string{"X-If-Configuration-Matches": tag})
	if err != nil {
		t.Fatal(err)
	}
	expectStatus(t, r, http.StatusCreated)
	if newTag := c.do(http.MethodGet, "/v1/configuration/datasets", nil).header.Get("X-Configuration-Tag"); newTag == tag {
		t.Error("the configuration tag did not change after a create")
	}
}

func TestStateLagsBehindConfiguration(t *testing.T) {
	e, fakeClock, mounter := startFake(t, Config{MoveDelay: 10 * time.Second, RemoteNodes: []Node{{Host: "10.0.0.2", UUID: remoteUUID}}})
	c := newAPIClient(t, e)
	local := e.LocalNode().UUID

	r := c.do(http.MethodPost, "/v1/configuration/datasets", map[string]any{"primary": local, "dataset_id": testDatasetID, "maximum_size": 67108864})
	expectStatus(t, r, http.StatusCreated)
	st, listed := c.stateOf(testDatasetID)
	if !listed || st.Primary != "" || st.Path != "" || st.MaximumSize == nil {
		t.Fatalf("right after create: state %+v listed %v, want listed without primary and path", st, listed)
	}
	fakeClock.Step(9 * time.Second)
	if st, _ := c.stateOf(testDatasetID); st.Primary != "" {
		t.Fatalf("before the delay: state %+v", st)
	}
	fakeClock.Step(time.Second)
	st, _ = c.stateOf(testDatasetID)
	if st.Primary != local || st.Path != e.MountPath(testDatasetID) {
		t.Fatalf("after the delay: state %+v, want primary %s path %s", st, local, e.MountPath(testDatasetID))
	}
	if mounted, _ := mounter.IsMountPoint(e.MountPath(testDatasetID)); !mounted {
		t.Fatal("the dataset on the local node is not mounted")
	}

	expectStatus(t, c.do(http.MethodPost, "/v1/configuration/datasets/"+testDatasetID, map[string]string{"primary": remoteUUID}), http.StatusOK)
	st, _ = c.stateOf(testDatasetID)
	if st.Primary != "" || st.Path != "" {
		t.Fatalf("right after the move: state %+v, want no primary and path", st)
	}
	if mounted, _ := mounter.IsMountPoint(e.MountPath(testDatasetID)); mounted {
		t.Fatal("the dataset is still mounted here after moving away")
	}
	fakeClock.Step(10 * time.Second)
	if st, _ := c.stateOf(testDatasetID); st.Primary != remoteUUID || st.Path == "" {
		t.Fatalf("after the move delay: state %+v, want on %s", st, remoteUUID)
	}

	expectStatus(t, c.do(http.MethodDelete, "/v1/configuration/datasets/"+testDatasetID, nil), http.StatusOK)
	if _, listed := c.stateOf(testDatasetID); !listed {
		t.Fatal("a deleted dataset left the state at once; it should leave later")
	}
	fakeClock.Step(10 * time.Second)
	if _, listed := c.stateOf(testDatasetID); listed {
		t.Fatal("a deleted dataset is still in the state after the delay")
	}
}

func TestMoveToDisconnectedNodeNeverCompletes(t *testing.T) {
	e, fakeClock, _ := startFake(t, Config{RemoteNodes: []Node{{Host: "10.0.0.2", UUID: remoteUUID}}})
	c := newAPIClient(t, e)
	id, err := e.AddDataset(DatasetSpec{Primary: remoteUUID})
	if err != nil {
		t.Fatal(err)
	}
	local := e.LocalNode().UUID
	if err := e.SetNodeConnected(local, false); err != nil {
		t.Fatal(err)
	}
	var nodes []nodeJSON
	c.do(http.MethodGet, "/v1/state/nodes", nil).decode(t, &nodes)
	if len(nodes) != 1 || nodes[0].UUID != remoteUUID {
		t.Fatalf("nodes %+v, want only the remote node listed", nodes)
	}
	if err := e.MoveDataset(id, local); err != nil {
		t.Fatal(err)
	}
	fakeClock.Step(time.Hour)
	if st, _ := c.stateOf(id); st.Primary != "" {
		t.Fatalf("moved to a disconnected node: state %+v", st)
	}
	if err := e.SetNodeConnected(local, true); err != nil {
		t.Fatal(err)
	}
	if st, _ := c.stateOf(id); st.Primary != local {
		t.Fatalf("after the node connected: state %+v", st)
	}
}

func TestNodes(t *testing.T) {
	e, _, _ := startFake(t, Config{LocalNode: Node{Host: "192.0.2.1"}, RemoteNodes: []Node{{Host: "10.0.0.2", UUID: remoteUUID}}})
	c := newAPIClient(t, e)
	var nodes []nodeJSON
	c.do(http.MethodGet, "/v1/state/nodes", nil).decode(t, &nodes)
	want := []nodeJSON{{Host: "192.0.2.1", UUID: e.LocalNode().UUID}, {Host: "10.0.0.2", UUID: remoteUUID}}
	if fmt.Sprint(nodes) != fmt.Sprint(want) {
		t.Errorf("nodes %+v, want %+v", nodes, want)
	}
	if !uuid4Pattern.MatchString(e.LocalNode().UUID) || e.LocalNode().UUID != derivedUUID("node:192.0.2.1") {
		t.Errorf("derived local uuid %q is not stable uuid4", e.LocalNode().UUID)
	}

	r := c.do(http.MethodGet, "/v1/state/nodes/by_era/"+e.RemoteNodes()[0].Era, nil)
	expectStatus(t, r, http.StatusOK)
	var byEra map[string]string
	r.decode(t, &byEra)
	if byEra["uuid"] != remoteUUID {
		t.Errorf("by_era returned %v", byEra)
	}
	r = c.do(http.MethodGet, "/v1/state/nodes/by_era/0b6f8d2e-1c3a-4e5f-8a9b-0c1d2e3f4a5b", nil)
	expectStatus(t, r, http.StatusNotFound)
	if d := r.description(t); d != "No node found with given era." {
		t.Errorf("description %q", d)
	}
}

func TestLeases(t *testing.T) {
	e, fakeClock, _ := startFake(t, Config{RemoteNodes: []Node{{Host: "10.0.0.2", UUID: remoteUUID}}})
	c := newAPIClient(t, e)
	local := e.LocalNode().UUID
	id, err := e.AddDataset(DatasetSpec{})
	if err != nil {
		t.Fatal(err)
	}
	acquire := func(node string, expires any) response {
		return c.do(http.MethodPost, "/v1/configuration/leases", map[string]any{"dataset_id": id, "node_uuid": node, "expires": expires})
	}

	expectStatus(t, acquire(local, nil), http.StatusCreated)
	expectStatus(t, acquire(local, 60), http.StatusOK) // renewal by the same node
	r := acquire(remoteUUID, nil)
	expectStatus(t, r, http.StatusConflict)
	if d := r.description(t); d != "Lease already held." {
		t.Errorf("description %q", d)
	}
	expectStatus(t, c.do(http.MethodPost, "/v1/configuration/leases", map[string]any{"dataset_id": id, "node_uuid": local}), http.StatusBadRequest)

	fakeClock.Step(20 * time.Second)
	var leases []leaseJSON
	c.do(http.MethodGet, "/v1/configuration/leases", nil).decode(t, &leases)
	if len(leases) != 1 || leases[0].NodeUUID != local || leases[0].Expires == nil || *leases[0].Expires != 40 {
		t.Fatalf("leases %+v, want one on %s expiring in 40s", leases, local)
	}

	// A leased, mounted dataset does not move, although the move is accepted.
	expectStatus(t, c.do(http.MethodPost, "/v1/configuration/datasets/"+id, map[string]string{"primary": remoteUUID}), http.StatusOK)
	if st, _ := c.stateOf(id); st.Primary != local {
		t.Fatalf("a leased dataset moved: state %+v", st)
	}
	fakeClock.Step(40 * time.Second) // the lease expires; the move goes ahead
	if st, _ := c.stateOf(id); st.Primary != remoteUUID {
		t.Fatalf("after the lease expired: state %+v, want on %s", st, remoteUUID)
	}
	c.do(http.MethodGet, "/v1/configuration/leases", nil).decode(t, &leases)
	if len(leases) != 0 {
		t.Fatalf("expired lease still listed: %+v", leases)
	}

	expectStatus(t, acquire(remoteUUID, nil), http.StatusCreated)
	r = c.do(http.MethodDelete, "/v1/configuration/leases/"+id, nil)
	expectStatus(t, r, http.StatusOK)
	var released leaseJSON
	r.decode(t, &released)
	if released.NodeUUID != remoteUUID || released.Expires != nil {
		t.Errorf("released lease %+v", released)
	}
	r = c.do(http.MethodDelete, "/v1/configuration/leases/"+id, nil)
	expectStatus(t, r, http.StatusNotFound)
	if d := r.description(t); d != "Lease not found." {
		t.Errorf("description %q", d)
	}
}

func TestUnknownPathIsJSON404(t *testing.T) {
	e, _, _ := startFake(t, Config{})
	r := newAPIClient(t, e).do(http.MethodGet, "/v1/nothing", nil)
	expectStatus(t, r, http.StatusNotFound)
	if r.description(t) == "" {
		t.Error("no description")
	}
}
