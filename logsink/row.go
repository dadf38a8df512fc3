package logsink

import (
	"database/sql/driver"
	"encoding/binary"
	"encoding/hex"
	"unicode/utf8"
)

// row is one record with its derived columns, ready for the insert. Rows are
// reused from batch to batch; a failed batch keeps its rows for the retry.
type row struct {
	r         *Record
	d         derived
	keyHash   [16]byte
	tools     []byte // the tool_calls column
	assembled []byte // a stream's answer object
	reqBody   []byte // the bodies to store, cut to MaxBodyLogBytes
	respBody  []byte
	truncated bool
}

// deriver turns records into rows. It belongs to the writer goroutine.
type deriver struct {
	p       parser
	a       assembly
	maxBody int // bytes; 0 keeps bodies whole
}

// derive fills rw from r; rw keeps r until the row is written.
func (dv *deriver) derive(rw *row, r *Record) {
	rw.r = r
	if r.UID == (UID{}) {
		r.UID = newUID(r.TsMs) // a record of a version 1 spill file
	}
	rw.d.reset()
	switch {
	case r.RequestScanned:
		rw.d.hasTools, rw.d.multimodal = r.RequestTools, r.RequestMultimodal
	case r.Endpoint == Chat && len(r.RequestBody) > 0:
		dv.p.request(r.RequestBody, &rw.d)
	}
	resp := r.ResponseBody
	if chunks := trimDone(r.Chunks); r.Stream && len(chunks) > 0 {
		dv.a.reset(r.Endpoint != Completions)
		dv.p.stream(chunks, &dv.a)
		rw.assembled = dv.a.appendJSON(rw.assembled[:0])
		rw.d.usage = dv.a.usage
		dv.a.addTools(&rw.d)
		resp = rw.assembled
	} else if len(resp) > 0 {
		dv.p.answer(resp, &rw.d)
	}
	if rw.d.nTools > 0 {
		rw.d.hasTools = true
	}
	rw.tools = rw.d.toolNamesJSON()
	var cutReq, cutResp bool
	rw.reqBody, cutReq = cutUTF8(r.RequestBody, dv.maxBody)
	rw.respBody, cutResp = cutUTF8(resp, dv.maxBody)
	rw.truncated = r.ChunksCut || cutReq || cutResp
	var kh [8]byte
	binary.BigEndian.PutUint64(kh[:], r.KeyHash)
	hex.Encode(rw.keyHash[:], kh[:])
}

// release drops the row's record once it is written.
func (rw *row) release() {
	if rw.r != nil {
		ReleaseRecord(rw.r)
	}
	rw.r, rw.reqBody, rw.respBody = nil, nil, nil
	if cap(rw.assembled) > maxPooledBytes {
		rw.assembled = nil
	}
}

// cutUTF8 returns b cut to at most max bytes at a rune boundary, and whether
// it was cut. max <= 0 means no limit.
func cutUTF8(b []byte, max int) ([]byte, bool) {
	if max <= 0 || len(b) <= max {
		return b, false
	}
	n := max
	// Step back over at most three continuation bytes to the start of
	// the rune that straddles the cut.
	for i := 0; i < utf8.UTFMax-1 && n > 0 && !utf8.RuneStart(b[n]); i++ {
		n--
	}
	return b[:n], true
}

// appendArgs appends the row's column values in the order of columns.
// Text goes in as strings viewing the record's bytes: the driver copies
// them during Exec, and the row is not touched until Exec returns.
func (rw *row) appendArgs(args []driver.NamedValue, storeBodies bool, node string) []driver.NamedValue {
	r := rw.r
	keyHash := ""
	if r.HasKey {
		keyHash = b2s(rw.keyHash[:])
	}
	tried := "[]"
	if len(r.Tried) > 0 {
		tried = b2s(r.Tried)
	}
	var reqBody, respBody any
	if storeBodies {
		reqBody, respBody = b2s(rw.reqBody), b2s(rw.respBody)
	}
	for _, v := range [len(columns)]any{
		b2s(r.RequestID),
		r.TsMs,
		b2s(r.ClientIP),
		keyHash,
		r.Endpoint.String(),
		b2s(r.Model),
		b2s(r.ServedModel),
		b2s(r.Upstream),
		tried,
		boolInt(r.Stream),
		int64(r.Status),
		b2s(r.Error),
		rw.d.count(usagePrompt, rw.d.prompt),
		rw.d.count(usageCompletion, rw.d.completion),
		rw.d.count(usageTotal, rw.d.total),
		boolInt(rw.d.hasTools),
		b2s(rw.tools),
		boolInt(rw.d.multimodal),
		r.TTFT.Milliseconds(),
		r.Latency.Milliseconds(),
		reqBody,
		respBody,
		boolInt(rw.truncated),
		r.Route.String(),
		rw.d.count(usageCached, rw.d.cached),
		node,
	} {
		args = append(args, driver.NamedValue{Ordinal: len(args) + 1, Value: v})
	}
	return args
}

// count is a token count or nil (NULL) when the upstream gave none.
func (u *usage) count(bit uint8, n int64) any {
	if u.set&bit == 0 {
		return nil
	}
	return n
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}
