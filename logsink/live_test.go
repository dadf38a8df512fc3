package logsink

import (
	"database/sql"
	"testing"
)

// SetStoreBodies takes effect for records written after it, either way.
func TestSetStoreBodiesLive(t *testing.T) {
	o := testOptions(t)
	o.StoreBodies = false
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	s.SetStoreBodies(true)
	s.Put(smallRecord(AcquireRecord(), "on", 1))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	o.StoreBodies = true
	if s, err = Open(o); err != nil {
		t.Fatal(err)
	}
	s.SetStoreBodies(false)
	s.Put(smallRecord(AcquireRecord(), "off", 2))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	f := func(id string, stored bool) {
		t.Helper()
		var req, resp sql.NullString
		if err := openDB(t, o.Path).QueryRow("SELECT request_body, response_body FROM requests WHERE request_id = ?", id).
			Scan(&req, &resp); err != nil {
			t.Fatal(err)
		}
		if req.Valid != stored || resp.Valid != stored {
			t.Fatalf("%s: bodies %v %v, want stored=%v", id, req, resp, stored)
		}
	}
	f("on", true)
	f("off", false)
}
