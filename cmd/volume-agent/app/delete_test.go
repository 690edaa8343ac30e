package app

import (
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// fakeAgent answers every request on a unix socket with 204 and records
// "METHOD path".
func fakeAgent(t *testing.T) (string, func() []string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "va")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	socket := filepath.Join(dir, "a.sock")
	listener, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var requests []string
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		requests = append(requests, r.Method+" "+r.URL.EscapedPath())
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})}
	go srv.Serve(listener)
	t.Cleanup(func() { srv.Close() })
	return socket, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(requests)
	}
}

func TestDeleteByKindAndName(t *testing.T) {
	socket, requests := fakeAgent(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--pod-uid", "abc"}, "DELETE /pods/abc"},
		{[]string{"pod", "web"}, "DELETE /pods/default/web"},
		{[]string{"pods", "web", "-n", "team"}, "DELETE /pods/team/web"},
		{[]string{"pv", "pv-1"}, "DELETE /persistentvolumes/pv-1"},
		{[]string{"persistentvolume", "pv-1"}, "DELETE /persistentvolumes/pv-1"},
		{[]string{"pvc", "data", "--namespace", "a-b"}, "DELETE /persistentvolumeclaims/a-b/data"},
		{[]string{"persistentvolumeclaim", "data"}, "DELETE /persistentvolumeclaims/default/data"},
	} {
		before := len(requests())
		code, stdout, stderr := runApp(t, "", append(append([]string{"delete"}, tc.args...), "--socket", socket)...)
		got := requests()[before:]
		if code != ExitOK || len(got) != 1 || got[0] != tc.want || !strings.Contains(stdout, "deleted") {
			t.Errorf("delete %v: exit %d (%s), requests %q; want %q", tc.args, code, stderr, got, tc.want)
		}
	}
	before := len(requests())
	for _, args := range [][]string{
		{},
		{"pod"},
		{"node", "x"},
		{"pod", "web", "--pod-uid", "abc"},
		{"pv", "pv-1", "-n", "team"},
		{"pod", "Web"},
		{"pvc", "data", "-n", "a_b"},
	} {
		if code, _, stderr := runApp(t, "", append(append([]string{"delete"}, args...), "--socket", socket)...); code != ExitInvalid {
			t.Errorf("delete %v: exit %d (%s), want %d", args, code, stderr, ExitInvalid)
		}
	}
	if got := requests()[before:]; len(got) != 0 {
		t.Errorf("usage errors sent %q", got)
	}
}
