package main

import (
	"database/sql"
	"fmt"
	"os"

	_ "github.com/mattn/go-sqlite3"
)

// checkRecords compares gptapi's records, read after it has exited, with
// what was sent through it: exactly one record per Go generator request
// (X-Request-Id lg-…), all 200, streams flagged; for wrk, which stops with
// requests in flight, at least the completed ones and at most one more per
// connection; nothing else.
func checkRecords(rd *runData, path string, sent *sentThrough) {
	if _, err := os.Stat(path); err != nil {
		rd.failf("records: cannot find the record file: %s", err)
		return
	}
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	if err != nil {
		rd.failf("records: cannot open %s: %s", path, err)
		return
	}
	defer db.Close()
	var total, lg, lgDistinct, lgOK, lgStreams, wrk, wrkOK int64
	err = db.QueryRow(`SELECT count(*),
		coalesce(sum(request_id LIKE 'lg-%'), 0),
		count(DISTINCT CASE WHEN request_id LIKE 'lg-%' THEN request_id END),
		coalesce(sum(request_id LIKE 'lg-%' AND status = 200), 0),
		coalesce(sum(request_id LIKE 'lg-%' AND stream = 1), 0),
		coalesce(sum(request_id = 'wrk'), 0),
		coalesce(sum(request_id = 'wrk' AND status = 200), 0)
		FROM requests`).Scan(&total, &lg, &lgDistinct, &lgOK, &lgStreams, &wrk, &wrkOK)
	if err != nil {
		rd.failf("records: cannot count records in %s: %s", path, err)
		return
	}
	rd.Records = fmt.Sprintf("%d records: %d of %d generator requests (%d streams of %d), wrk %d for %d answered",
		total, lg, sent.lg, lgStreams, sent.streams, wrk, sent.wrk)
	if lg != int64(sent.lg) || lgDistinct != int64(sent.lg) {
		rd.failf("records: %d generator records (%d distinct ids), want %d", lg, lgDistinct, sent.lg)
	}
	if lgOK != int64(sent.lgOK) {
		rd.failf("records: %d generator records with status 200, want %d", lgOK, sent.lgOK)
	}
	if lgStreams != int64(sent.streams) {
		rd.failf("records: %d stream records, want %d", lgStreams, sent.streams)
	}
	if wrkOK < sent.wrk || wrk > sent.wrk+int64(sent.conns) {
		rd.failf("records: %d wrk records (%d with 200), want %d..%d", wrk, wrkOK, sent.wrk, sent.wrk+int64(sent.conns))
	}
	if other := total - lg - wrk; other != 0 {
		rd.failf("records: %d records from no known sender", other)
	}
}
