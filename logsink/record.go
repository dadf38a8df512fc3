package logsink

import (
	"encoding/binary"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/zeebo/xxh3"
)

// Endpoint is the API a request was made to.
type Endpoint uint8

// The endpoints a record can name; the zero value is none.
const (
	Chat Endpoint = iota + 1
	Completions
	Embeddings
	Rerank
)

// String is the name stored in the endpoint column; "" for an unknown value.
func (e Endpoint) String() string {
	switch e {
	case Chat:
		return "chat"
	case Completions:
		return "completions"
	case Embeddings:
		return "embeddings"
	case Rerank:
		return "rerank"
	}
	return ""
}

// Route says why the first upstream tried for the requested model was
// first (the route column). The zero value is none: no upstream was tried.
type Route uint8

// The routes of SPEC 4.5.
const (
	RouteWeighted       Route = iota + 1 // A-Res weighted random order
	RouteLeastLoaded                     // the least loaded candidate
	RoutePrefixHit                       // it held part of this prompt
	RoutePrefixNew                       // placed by hash
	RoutePrefixBalanced                  // the holder was overloaded or in cooldown
	RouteStandby                         // only standbys were left
)

// String is the name stored in the route column and used as the metric
// label; "" for none or an unknown value.
func (r Route) String() string {
	switch r {
	case RouteWeighted:
		return "weighted"
	case RouteLeastLoaded:
		return "least_loaded"
	case RoutePrefixHit:
		return "prefix_hit"
	case RoutePrefixNew:
		return "prefix_new"
	case RoutePrefixBalanced:
		return "prefix_balanced"
	case RouteStandby:
		return "standby"
	}
	return ""
}

// UID is a record's key, unique to it: the request's start in Unix
// milliseconds (48 bits, big-endian, so keys of one period sort together)
// then 80 random bits. A store that cannot know whether a commit landed
// (PostgreSQL after a lost connection) lets the database refuse a second
// copy by it; the caller's X-Request-Id is not unique enough for that.
type UID [16]byte

// newUID makes the key of a record that started at tsMs. The random bits
// come from the runtime's per-thread ChaCha8 generator, seeded by the OS:
// no lock, no system call.
func newUID(tsMs int64) UID {
	var u UID
	binary.BigEndian.PutUint64(u[:8], uint64(tsMs)<<16|rand.Uint64()&0xffff)
	binary.BigEndian.PutUint64(u[8:], rand.Uint64())
	return u
}

// Record is one request. The proxy fills it on the request path with cheap
// copies only; every JSON parse happens later in the writer.
//
// The byte slices are owned by the Record: the proxy appends into them
// (AcquireRecord hands them out empty with the capacity of an earlier use) and
// must not keep them after Put.
type Record struct {
	RequestID []byte
	TsMs      int64 // request start, Unix milliseconds
	ClientIP  []byte
	// KeyHash is HashKey of the caller's bearer key, so that the raw key never
	// leaves the request path.
	KeyHash     uint64
	HasKey      bool
	Endpoint    Endpoint
	Model       []byte // requested
	ServedModel []byte // model routed on by the client that answered (differs after fallback)
	Upstream    []byte // client name that answered, empty if none
	Tried       []byte // JSON array text, e.g. ["fleet-a/qwen","fleet-b/qwen"]; empty means []
	Stream      bool
	Status      int
	Error       []byte
	// TTFT is the time from the request's start to the first byte of the
	// answer (first content chunk of a stream); Latency to its last byte.
	// They stay durations until they are stored, where a column or spill
	// frame takes whole milliseconds.
	TTFT    time.Duration
	Latency time.Duration
	// RequestBody is the body as sent upstream (after preprocessing).
	RequestBody []byte
	// RequestScanned says the proxy, which parses every request anyway, set
	// RequestTools (the request offers tools or functions) and
	// RequestMultimodal (a message has a part that is not text), so the
	// writer does not parse RequestBody again. Without it (records from an
	// older spill file) the writer reads them from RequestBody.
	RequestScanned, RequestTools, RequestMultimodal bool
	// ResponseBody is the answer as given to the caller when it was not a
	// stream (or a stream that failed before its first event).
	ResponseBody []byte
	// Chunks holds, one per line, every data payload of a stream the caller
	// got, plus the hidden usage chunk. The writer assembles them into one
	// chat.completion or text_completion object that becomes response_body.
	Chunks []byte
	// ChunksCut says the relay stopped collecting chunks (a very long
	// stream); the record is marked truncated.
	ChunksCut bool
	// Route is why the first upstream was first; the proxy sets it.
	Route Route
	// UID is set by Sink.Put when zero; the proxy leaves it alone. It
	// travels with the record through spill files, so that every attempt
	// to write the record carries the same key.
	UID UID
}

// Reset empties r and keeps the capacity of its slices.
func (r *Record) Reset() {
	*r = Record{
		RequestID:    r.RequestID[:0],
		ClientIP:     r.ClientIP[:0],
		Model:        r.Model[:0],
		ServedModel:  r.ServedModel[:0],
		Upstream:     r.Upstream[:0],
		Tried:        r.Tried[:0],
		Error:        r.Error[:0],
		RequestBody:  r.RequestBody[:0],
		ResponseBody: r.ResponseBody[:0],
		Chunks:       r.Chunks[:0],
	}
}

// A record whose slices grew past this is not pooled, so that one huge
// request does not pin its buffers for the life of the process.
const maxPooledBytes = 4 << 20

var recordPool = sync.Pool{New: func() any { return new(Record) }}

// AcquireRecord returns an empty Record from the pool. Hand it to Sink.Put,
// or give it back with ReleaseRecord.
func AcquireRecord() *Record {
	return recordPool.Get().(*Record)
}

// ReleaseRecord resets r and returns it to the pool; r must not be used
// afterwards.
func ReleaseRecord(r *Record) {
	if cap(r.RequestBody)+cap(r.ResponseBody)+cap(r.Chunks) > maxPooledBytes {
		return
	}
	r.Reset()
	recordPool.Put(r)
}

// HashKey is the hash stored as key_hash for a bearer key. The proxy and the
// writer must agree on it, hence one function.
func HashKey(key []byte) uint64 {
	return xxh3.Hash(key)
}
