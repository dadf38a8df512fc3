package logsink

import (
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

// appendPacked appends the row's column values in the order of columns, in
// the form the insert thread binds: a tag byte, then an integer's 8 bytes or
// a text's 4-byte length and bytes, little-endian; NULL is the tag alone.
func (rw *row) appendPacked(b []byte, storeBodies bool, node string) []byte {
	r := rw.r
	b = packText(b, r.RequestID)
	b = packInt(b, r.TsMs)
	b = packText(b, r.ClientIP)
	if r.HasKey {
		b = packText(b, rw.keyHash[:])
	} else {
		b = packText(b, "")
	}
	b = packText(b, r.Endpoint.String())
	b = packText(b, r.Model)
	b = packText(b, r.ServedModel)
	b = packText(b, r.Upstream)
	if len(r.Tried) > 0 {
		b = packText(b, r.Tried)
	} else {
		b = packText(b, "[]")
	}
	b = packInt(b, boolInt(r.Stream))
	b = packInt(b, int64(r.Status))
	b = packText(b, r.Error)
	b = rw.d.packCount(b, usagePrompt, rw.d.prompt)
	b = rw.d.packCount(b, usageCompletion, rw.d.completion)
	b = rw.d.packCount(b, usageTotal, rw.d.total)
	b = packInt(b, boolInt(rw.d.hasTools))
	b = packText(b, rw.tools)
	b = packInt(b, boolInt(rw.d.multimodal))
	b = packInt(b, r.TTFT.Milliseconds())
	b = packInt(b, r.Latency.Milliseconds())
	if storeBodies {
		b = packText(b, rw.reqBody)
		b = packText(b, rw.respBody)
	} else {
		b = append(b, tagNull, tagNull)
	}
	b = packInt(b, boolInt(rw.truncated))
	b = packText(b, r.Route.String())
	b = rw.d.packCount(b, usageCached, rw.d.cached)
	return packText(b, node)
}

// The tags of packed values.
const (
	tagNull = iota
	tagInt64
	tagText
)

func packInt(b []byte, v int64) []byte {
	return binary.LittleEndian.AppendUint64(append(b, tagInt64), uint64(v))
}

func packText[T string | []byte](b []byte, v T) []byte {
	b = binary.LittleEndian.AppendUint32(append(b, tagText), uint32(len(v)))
	return append(b, v...)
}

// packCount packs a token count, or NULL when the upstream gave none.
func (u *usage) packCount(b []byte, bit uint8, n int64) []byte {
	if u.set&bit == 0 {
		return append(b, tagNull)
	}
	return packInt(b, n)
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
