package flocker

import (
	"strings"
	"testing"
	"time"

	flockerclient "github.com/clusterhq/flocker-go"
)

// newFlockerGoClient connects flocker-go to the emulator over real TLS, as the plugin does.
func newFlockerGoClient(t *testing.T, e *Emulator, clientIP string) *flockerclient.Client {
	t.Helper()
	certs := e.Certs()
	c, err := flockerclient.NewClient(e.Host(), e.Port(), clientIP, certs.CACert, certs.ClientKey, certs.ClientCert)
	if err != nil {
		t.Fatalf("flocker-go NewClient: %v", err)
	}
	c.Timeout = 30 * time.Second
	return c
}

func TestFlockerGoClient(t *testing.T) {
	e, fakeClock, _ := startFake(t, Config{MoveDelay: 5 * time.Second, RemoteNodes: []Node{{Host: "10.0.0.2", UUID: remoteUUID}}})
	c := newFlockerGoClient(t, e, "127.0.0.1")
	local := e.LocalNode().UUID

	nodes, err := c.ListNodes()
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 2 || nodes[0] != (flockerclient.NodeState{UUID: local, Host: "127.0.0.1"}) || nodes[1].UUID != remoteUUID {
		t.Fatalf("ListNodes: %+v", nodes)
	}
	primary, err := c.GetPrimaryUUID()
	if err != nil || primary != local {
		t.Fatalf("GetPrimaryUUID: %q, %v; want %s", primary, err, local)
	}
	if _, err := newFlockerGoClient(t, e, "192.0.2.99").GetPrimaryUUID(); err == nil || !strings.Contains(err.Error(), "No node found") {
		t.Fatalf("GetPrimaryUUID for an unknown IP: %v", err)
	}

	// CreateDataset fills in the primary (this node) and the default size, and returns the state,
	// which lists the new dataset without primary and path until the agents mount it.
	created, err := c.CreateDataset(&flockerclient.CreateDatasetOptions{Metadata: map[string]string{"name": "db"}})
	if err != nil {
		t.Fatalf("CreateDataset: %v", err)
	}
	if !uuid4Pattern.MatchString(created.DatasetID) || created.Primary != "" || created.Path != "" || created.MaximumSize != "107374182400" {
		t.Fatalf("CreateDataset returned %+v", created)
	}
	if _, err := c.CreateDataset(&flockerclient.CreateDatasetOptions{DatasetID: created.DatasetID}); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("CreateDataset with a used id: %v, want already exists", err)
	}

	id, err := c.GetDatasetID("db")
	if err != nil || id != created.DatasetID {
		t.Fatalf("GetDatasetID: %q, %v", id, err)
	}
	if _, err := c.GetDatasetID("nothing"); err == nil {
		t.Fatal("GetDatasetID found a dataset that does not exist")
	}

	fakeClock.Step(5 * time.Second)
	st, err := c.GetDatasetState(id)
	if err != nil || st.Primary != local || st.Path != e.MountPath(id) {
		t.Fatalf("GetDatasetState after the delay: %+v, %v", st, err)
	}

	moved, err := c.UpdatePrimaryForDataset(remoteUUID, id)
	if err != nil || moved.Primary != remoteUUID || moved.DatasetID != id {
		t.Fatalf("UpdatePrimaryForDataset: %+v, %v", moved, err)
	}
	if st, err := c.GetDatasetState(id); err != nil || st.Primary != "" || st.Path != "" {
		t.Fatalf("state during the move: %+v, %v", st, err)
	}
	fakeClock.Step(5 * time.Second)
	if st, err := c.GetDatasetState(id); err != nil || st.Primary != remoteUUID {
		t.Fatalf("state after the move: %+v, %v", st, err)
	}
	if _, err := c.UpdatePrimaryForDataset(local, "0b6f8d2e-1c3a-4e5f-8a9b-0c1d2e3f4a5b"); err == nil {
		t.Fatal("UpdatePrimaryForDataset of an unknown dataset succeeded")
	}

	if err := c.DeleteDataset(id); err != nil {
		t.Fatalf("DeleteDataset: %v", err)
	}
	if err := c.DeleteDataset(id); err != nil {
		t.Fatalf("DeleteDataset again (idempotent): %v", err)
	}
	if _, err := c.GetDatasetID("db"); err == nil {
		t.Fatal("GetDatasetID returned a deleted dataset")
	}
	if _, err := c.UpdatePrimaryForDataset(local, id); err == nil {
		t.Fatal("UpdatePrimaryForDataset of a deleted dataset succeeded")
	}
	fakeClock.Step(5 * time.Second)
	if _, err := c.GetDatasetState(id); err == nil {
		t.Fatal("GetDatasetState found a deleted dataset after it left the state")
	}
	if err := c.DeleteDataset("0b6f8d2e-1c3a-4e5f-8a9b-0c1d2e3f4a5b"); err == nil {
		t.Fatal("DeleteDataset of an unknown dataset succeeded")
	}
}

func TestFlockerGoDeletedSameNameIgnored(t *testing.T) {
	e, _, _ := startFake(t, Config{})
	old, err := e.AddDataset(DatasetSpec{Name: "web", Deleted: true})
	if err != nil {
		t.Fatal(err)
	}
	live, err := e.AddDataset(DatasetSpec{Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	id, err := newFlockerGoClient(t, e, "127.0.0.1").GetDatasetID("web")
	if err != nil || id != live {
		t.Fatalf("GetDatasetID: %q, %v; want %s, not the deleted %s", id, err, live, old)
	}
}

// TestFlockerGoLenientIDs uses the non-UUID ids of flocker-go's own tests.
func TestFlockerGoLenientIDs(t *testing.T) {
	e, _, _ := startFake(t, Config{Lenient: true, LocalNode: Node{UUID: "A-B-C-D"}})
	c := newFlockerGoClient(t, e, "127.0.0.1")
	st, err := c.CreateDataset(&flockerclient.CreateDatasetOptions{DatasetID: "uuid1", Primary: "A-B-C-D"})
	if err != nil || st.DatasetID != "uuid1" {
		t.Fatalf("CreateDataset: %+v, %v", st, err)
	}
	if err := c.DeleteDataset("uuid1"); err != nil {
		t.Fatal(err)
	}
}

func TestFlockerGoSeesInjectedErrors(t *testing.T) {
	e, _, _ := startFake(t, Config{})
	c := newFlockerGoClient(t, e, "127.0.0.1")
	e.InjectError(ErrorRule{Path: "/v1/state/nodes", Status: 503, Count: 1})
	if _, err := c.ListNodes(); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("ListNodes during an injected 503: %v", err)
	}
	if _, err := c.ListNodes(); err != nil {
		t.Fatalf("ListNodes after the burst: %v", err)
	}
}
