package flocker

import (
	"net/http"
	"testing"
	"time"
)

func TestInjectErrorFailsTheNextRequests(t *testing.T) {
	e, _, _ := startFake(t, Config{})
	c := newAPIClient(t, e)
	e.InjectError(ErrorRule{Method: http.MethodGet, Path: "/v1/state/datasets", Status: http.StatusServiceUnavailable, Count: 2})

	expectStatus(t, c.do(http.MethodGet, "/v1/version", nil), http.StatusOK) // other paths unaffected
	for range 2 {
		r := c.do(http.MethodGet, "/v1/state/datasets", nil)
		expectStatus(t, r, http.StatusServiceUnavailable)
		if d := r.description(t); d != "Injected failure." {
			t.Errorf("description %q", d)
		}
	}
	expectStatus(t, c.do(http.MethodGet, "/v1/state/datasets", nil), http.StatusOK)

	if got := e.CountRequests(http.MethodGet, "/v1/state/datasets"); got != 3 {
		t.Errorf("counted %d state requests, want 3", got)
	}
	if got := e.CountRequests("", "/v1/"); got != 4 {
		t.Errorf("counted %d requests under /v1/, want 4", got)
	}
	injected := 0
	for _, r := range e.Requests() {
		if r.Injected {
			injected++
			if r.Status != http.StatusServiceUnavailable {
				t.Errorf("injected request logged with status %d", r.Status)
			}
		}
	}
	if injected != 2 {
		t.Errorf("%d requests logged as injected, want 2", injected)
	}
	e.ResetRequests()
	if n := len(e.Requests()); n != 0 {
		t.Errorf("%d requests after reset", n)
	}
}

func TestInjectErrorUntilCleared(t *testing.T) {
	e, _, _ := startFake(t, Config{})
	c := newAPIClient(t, e)
	e.InjectError(ErrorRule{Path: "/v1/", Status: http.StatusInternalServerError})
	for range 3 {
		expectStatus(t, c.do(http.MethodGet, "/v1/state/nodes", nil), http.StatusInternalServerError)
	}
	e.ClearFaults()
	expectStatus(t, c.do(http.MethodGet, "/v1/state/nodes", nil), http.StatusOK)
}

func TestInjectDroppedConnection(t *testing.T) {
	e, _, _ := startFake(t, Config{})
	c := newAPIClient(t, e)
	e.InjectError(ErrorRule{Path: "/v1/version", Count: 1})
	if r, err := c.try(http.MethodGet, "/v1/version", nil, nil); err == nil {
		t.Fatalf("got status %d, want the connection dropped", r.status)
	}
	expectStatus(t, c.do(http.MethodGet, "/v1/version", nil), http.StatusOK)
	if reqs := e.Requests(); len(reqs) != 2 || reqs[0].Status != 0 || !reqs[0].Injected {
		t.Errorf("request log %+v, want the dropped request logged with status 0", reqs)
	}
}

func TestLatency(t *testing.T) {
	e, fakeClock, _ := startFake(t, Config{})
	c := newAPIClient(t, e)
	waiters := fakeClock.Waiters()
	e.SetLatency(3 * time.Second)
	done := make(chan response, 1)
	go func() {
		r, _ := c.try(http.MethodGet, "/v1/version", nil, nil)
		done <- r
	}()
	deadline := time.Now().Add(10 * time.Second)
	for fakeClock.Waiters() == waiters {
		if time.Now().After(deadline) {
			t.Fatal("the request never waited for the injected latency")
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case r := <-done:
		t.Fatalf("request finished before the latency elapsed: %d", r.status)
	default:
	}
	fakeClock.Step(3 * time.Second)
	select {
	case r := <-done:
		expectStatus(t, r, http.StatusOK)
	case <-time.After(10 * time.Second):
		t.Fatal("request did not finish after the latency elapsed")
	}
	if reqs := e.Requests(); len(reqs) != 1 || reqs[0].Duration != 3*time.Second {
		t.Errorf("request log %+v, want one request taking 3s", reqs)
	}
}

func TestHideFromState(t *testing.T) {
	e, fakeClock, _ := startFake(t, Config{})
	c := newAPIClient(t, e)
	id, err := e.AddDataset(DatasetSpec{})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.HideFromState(id, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, listed := c.stateOf(id); listed {
		t.Fatal("hidden dataset listed")
	}
	fakeClock.Step(5 * time.Second)
	if st, listed := c.stateOf(id); !listed || st.Primary != e.LocalNode().UUID {
		t.Fatalf("after the absence: state %+v listed %v", st, listed)
	}
}

func TestStopAndStartServing(t *testing.T) {
	e, _, _ := startFake(t, Config{})
	c := newAPIClient(t, e)
	id, err := e.AddDataset(DatasetSpec{Name: "kept"})
	if err != nil {
		t.Fatal(err)
	}
	addr := e.Addr()
	if err := e.StopServing(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.try(http.MethodGet, "/v1/version", nil, nil); err == nil {
		t.Fatal("request succeeded while the service is down")
	}
	if err := e.StartServing(); err != nil {
		t.Fatal(err)
	}
	if e.Addr() != addr {
		t.Errorf("came back on %s, want %s", e.Addr(), addr)
	}
	if _, listed := c.stateOf(id); !listed {
		t.Error("dataset lost across down and up")
	}
}

func TestCompleteTransitions(t *testing.T) {
	e, _, _ := startFake(t, Config{MoveDelay: time.Hour, RemoteNodes: []Node{{Host: "10.0.0.2", UUID: remoteUUID}}})
	id, err := e.AddDataset(DatasetSpec{Primary: remoteUUID})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.MoveDataset(id, e.LocalNode().UUID); err != nil {
		t.Fatal(err)
	}
	if st, _ := e.Dataset(id); !st.Pending || st.StatePrimary != "" {
		t.Fatalf("status %+v, want a pending move", st)
	}
	if err := e.CompleteTransitions(); err != nil {
		t.Fatal(err)
	}
	if st, _ := e.Dataset(id); st.Pending || st.StatePrimary != e.LocalNode().UUID || st.StatePath != e.MountPath(id) {
		t.Fatalf("status %+v, want mounted here", st)
	}
}
