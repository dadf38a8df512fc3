package main

import (
	"database/sql"
	"fmt"
	"os"

	_ "github.com/mattn/go-sqlite3"
)

// recordCounts is what gptapi's requests table holds, by who sent it.
type recordCounts struct {
	total                  int64
	lg, lgDistinct, lgOK   int64 // Go generator: records, distinct ids, status 200
	lgStreams              int64
	wrk, wrkOK, hey, heyOK int64
}

// readRecords counts gptapi's records after it has exited.
func readRecords(path string) (recordCounts, error) {
	var c recordCounts
	if _, err := os.Stat(path); err != nil {
		return c, fmt.Errorf("cannot find the record file: %w", err)
	}
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	if err != nil {
		return c, fmt.Errorf("cannot open %s: %w", path, err)
	}
	defer db.Close()
	row := db.QueryRow(`SELECT count(*),
		coalesce(sum(request_id LIKE 'lg-%'), 0),
		count(DISTINCT CASE WHEN request_id LIKE 'lg-%' THEN request_id END),
		coalesce(sum(request_id LIKE 'lg-%' AND status = 200), 0),
		coalesce(sum(request_id LIKE 'lg-%' AND stream = 1), 0),
		coalesce(sum(request_id = 'wrk'), 0),
		coalesce(sum(request_id = 'wrk' AND status = 200), 0),
		coalesce(sum(request_id = 'hey'), 0),
		coalesce(sum(request_id = 'hey' AND status = 200), 0)
		FROM requests`)
	if err := row.Scan(&c.total, &c.lg, &c.lgDistinct, &c.lgOK, &c.lgStreams, &c.wrk, &c.wrkOK, &c.hey, &c.heyOK); err != nil {
		return c, fmt.Errorf("cannot count records in %s: %w", path, err)
	}
	return c, nil
}

// checkRecords compares gptapi's records with what was sent through it:
// exactly one record per Go generator request, all 200, streams flagged; for
// wrk and hey, which stop with requests in flight, at least the completed
// ones and at most one more per connection; nothing else.
func checkRecords(rd *runData, path string, sent *sentThrough) {
	c, err := readRecords(path)
	if err != nil {
		rd.failf("records: %s", err)
		return
	}
	rd.Records = fmt.Sprintf("%d records: %d of %d generator requests (%d streams of %d), wrk %d for %d answered, hey %d for %d answered",
		c.total, c.lg, sent.lg, c.lgStreams, sent.streams, c.wrk, sent.wrk, c.hey, sent.hey)
	if c.lg != int64(sent.lg) || c.lgDistinct != int64(sent.lg) {
		rd.failf("records: %d generator records (%d distinct ids), want %d", c.lg, c.lgDistinct, sent.lg)
	}
	if c.lgOK != int64(sent.lgOK) {
		rd.failf("records: %d generator records with status 200, want %d", c.lgOK, sent.lgOK)
	}
	if c.lgStreams != int64(sent.streams) {
		rd.failf("records: %d stream records, want %d", c.lgStreams, sent.streams)
	}
	if c.wrkOK < sent.wrk || c.wrk > sent.wrk+int64(sent.conns) {
		rd.failf("records: %d wrk records (%d with 200), want %d..%d", c.wrk, c.wrkOK, sent.wrk, sent.wrk+int64(sent.conns))
	}
	if c.heyOK < sent.hey || c.hey > sent.hey+int64(sent.conns) {
		rd.failf("records: %d hey records (%d with 200), want %d..%d", c.hey, c.heyOK, sent.hey, sent.hey+int64(sent.conns))
	}
	if other := c.total - c.lg - c.wrk - c.hey; other != 0 {
		rd.failf("records: %d records from no known sender", other)
	}
}
