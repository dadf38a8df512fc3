package logsink

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

func fullRecord() *Record {
	return &Record{
		RequestID:    []byte("req-\x00-ü"),
		TsMs:         -1767225600123,
		ClientIP:     []byte("2001:db8::1"),
		KeyHash:      0xfedcba9876543210,
		HasKey:       true,
		Endpoint:     Rerank,
		Model:        []byte("m"),
		ServedModel:  []byte("served"),
		Upstream:     []byte("up"),
		Tried:        []byte(`["a/m","b/m"]`),
		Stream:       true,
		Status:       -499,
		Error:        []byte("err \xff"),
		TTFT:         (1 << 40) * time.Millisecond,
		Latency:      -7 * time.Millisecond,
		RequestBody:  bytes.Repeat([]byte("q"), 300),
		ResponseBody: []byte{},
		Chunks:       []byte("{}\n{}\n"),
		ChunksCut:    true,
		Route:        RoutePrefixBalanced,
		UID:          UID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},

		RequestScanned:    true,
		RequestTools:      true,
		RequestMultimodal: true,
	}
}

// sameRecord compares records treating nil and empty slices alike, as the
// database does.
func sameRecord(a, b *Record) bool {
	norm := func(r *Record) Record {
		c := *r
		for _, f := range []*[]byte{&c.RequestID, &c.ClientIP, &c.Model, &c.ServedModel, &c.Upstream,
			&c.Tried, &c.Error, &c.RequestBody, &c.ResponseBody, &c.Chunks} {
			if len(*f) == 0 {
				*f = nil
			}
		}
		return c
	}
	return reflect.DeepEqual(norm(a), norm(b))
}

func TestSpillFrameRoundTrip(t *testing.T) {
	recs := []*Record{fullRecord(), {}, smallRecord(&Record{}, "s", 42)}
	var b []byte
	for _, r := range recs {
		b = appendSpillFrame(b, r)
	}
	rest := b
	for i, want := range recs {
		got := AcquireRecord()
		var err error
		rest, err = nextSpillFrame(rest, got)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if !sameRecord(got, want) {
			t.Fatalf("frame %d:\n got %+v\nwant %+v", i, got, want)
		}
	}
	if len(rest) != 0 {
		t.Fatalf("%d bytes left", len(rest))
	}

	// every field of Record is in the frame: a change to one changes the frame
	base := appendSpillFrame(nil, fullRecord())
	v := reflect.ValueOf(fullRecord()).Elem()
	for i := range v.NumField() {
		r := fullRecord()
		f := reflect.ValueOf(r).Elem().Field(i)
		switch f.Kind() {
		case reflect.Slice:
			f.SetBytes(append(f.Bytes(), 'x'))
		case reflect.Bool:
			f.SetBool(!f.Bool())
		case reflect.Int, reflect.Int64:
			step := int64(1)
			if f.Type() == reflect.TypeFor[time.Duration]() {
				step = int64(time.Millisecond) // the frame keeps whole milliseconds, as the columns do
			}
			f.SetInt(f.Int() + step)
		case reflect.Uint8, reflect.Uint64:
			f.SetUint(f.Uint() + 1)
		case reflect.Array:
			f.Index(3).SetUint(f.Index(3).Uint() + 1)
		default:
			t.Fatalf("field %s of kind %s not covered", v.Type().Field(i).Name, f.Kind())
		}
		if bytes.Equal(appendSpillFrame(nil, r), base) {
			t.Fatalf("field %s is not encoded", v.Type().Field(i).Name)
		}
	}
}

func TestSpillFrameCorrupt(t *testing.T) {
	good := appendSpillFrame(nil, fullRecord())
	f := func(name string, b []byte) {
		t.Helper()
		if _, err := nextSpillFrame(b, &Record{}); err != errSpillCorrupt {
			t.Fatalf("%s: err %v", name, err)
		}
	}
	f("empty", nil)
	f("header only", good[:8])
	f("cut", good[:len(good)-1])
	flip := bytes.Clone(good)
	flip[20] ^= 1
	f("flipped bit", flip)
	long := bytes.Clone(good)
	binary.LittleEndian.PutUint32(long, 1<<31)
	f("length past end", long)
}

func FuzzSpillFrame(f *testing.F) {
	f.Add(appendSpillFrame(nil, fullRecord())[8:])
	f.Add(appendSpillFrame(nil, &Record{})[8:])
	f.Fuzz(func(t *testing.T, payload []byte) {
		// decoding arbitrary bytes never panics
		_, _ = nextSpillFrame(payload, &Record{})
		// a payload in a frame with the right checksum either is refused
		// or decodes to a record that survives another round trip
		framed := binary.LittleEndian.AppendUint32(nil, uint32(len(payload)))
		framed = binary.LittleEndian.AppendUint32(framed, crc32c(payload))
		framed = append(framed, payload...)
		r := &Record{}
		if _, err := nextSpillFrame(framed, r); err != nil {
			return
		}
		again := &Record{}
		rest, err := nextSpillFrame(appendSpillFrame(nil, r), again)
		if err != nil || len(rest) != 0 || !sameRecord(r, again) {
			t.Fatalf("payload %q: %v\n%+v\n%+v", payload, err, r, again)
		}
	})
}

// appendSpillFrameV1 is the frame of the release before UID and Route, as
// its spill files hold it.
func appendSpillFrameV1(dst []byte, r *Record) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, 0, 0, 0, 0)
	var flags byte
	for i, b := range []bool{r.HasKey, r.Stream, r.ChunksCut, r.RequestScanned, r.RequestTools, r.RequestMultimodal} {
		if b {
			flags |= 1 << i
		}
	}
	dst = append(dst, 1, flags, byte(r.Endpoint))
	dst = binary.LittleEndian.AppendUint64(dst, r.KeyHash)
	for _, v := range []int64{r.TsMs, int64(r.Status), r.TTFT.Milliseconds(), r.Latency.Milliseconds()} {
		dst = binary.AppendVarint(dst, v)
	}
	for _, b := range [...][]byte{r.RequestID, r.ClientIP, r.Model, r.ServedModel, r.Upstream,
		r.Tried, r.Error, r.RequestBody, r.ResponseBody, r.Chunks} {
		dst = binary.AppendUvarint(dst, uint64(len(b)))
		dst = append(dst, b...)
	}
	payload := dst[start+8:]
	binary.LittleEndian.PutUint32(dst[start:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(dst[start+4:], crc32c(payload))
	return dst
}

// Spill files of the previous release still replay: every field they have
// is read, Route is none and UID zero (the writer makes one).
func TestSpillFrameVersion1(t *testing.T) {
	want := fullRecord()
	b := appendSpillFrameV1(nil, want)
	got := AcquireRecord()
	rest, err := nextSpillFrame(b, got)
	if err != nil || len(rest) != 0 {
		t.Fatalf("v1 frame: %v, %d bytes left", err, len(rest))
	}
	want.Route, want.UID = 0, UID{}
	if !sameRecord(got, want) {
		t.Fatalf("v1 frame:\n got %+v\nwant %+v", got, want)
	}
	// and a version from the future is refused, not misread
	b = appendSpillFrame(nil, fullRecord())
	b[8] = spillVersion + 1
	binary.LittleEndian.PutUint32(b[4:], crc32c(b[8:]))
	if _, err := nextSpillFrame(b, AcquireRecord()); err != errSpillCorrupt {
		t.Fatalf("version %d frame: %v", spillVersion+1, err)
	}
}

// A version 1 spill file left in the folder is written at Open, each
// record with a key of its own.
func TestSpillVersion1Replayed(t *testing.T) {
	o := testOptions(t)
	if err := os.MkdirAll(o.SpillDir, 0o700); err != nil {
		t.Fatal(err)
	}
	var b []byte
	for i := range 3 {
		b = appendSpillFrameV1(b, smallRecord(&Record{}, fmt.Sprint("v1-", i), int64(i)))
	}
	if err := os.WriteFile(filepath.Join(o.SpillDir, "00000000000000000001-1-1.spill"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if ids := requestIDs(t, o.Path); fmt.Sprint(ids) != "[v1-0 v1-1 v1-2]" {
		t.Fatalf("rows %v", ids)
	}
	if f := spillFiles(t, o.SpillDir); len(f) != 0 {
		t.Fatalf("spill files left: %v", f)
	}
}

// take puts the frames still in memory on disk before handing them to the
// writer, even when the flusher has not run: the writer may then wait on a
// locked database for WriteTimeout, and records held only in its memory
// would not outlive the process.
func TestTakeWritesMemoryFirst(t *testing.T) {
	dir := t.TempDir()
	sp, err := newSpiller(dir, testOptions(t).MaxPendingBytes, testOptions(t).Logger)
	if err != nil {
		t.Fatal(err)
	}
	const n = 10
	for i := range n {
		if !sp.write(smallRecord(AcquireRecord(), fmt.Sprint("r", i), int64(i))) {
			t.Fatal("record dropped")
		}
	}
	files, mem := sp.take()
	if len(mem) != 0 || len(files) != 1 || sp.pend.Load() != 0 {
		t.Fatalf("take gave %d files and %d blocks in memory (%d bytes pending), want one file and none", len(files), len(mem), sp.pend.Load())
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	if got := countFrames(b); got != n {
		t.Fatalf("the spill file holds %d frames, want %d", got, n)
	}
}
