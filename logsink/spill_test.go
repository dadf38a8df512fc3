package logsink

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"testing"
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
		TTFTMs:       1 << 40,
		LatencyMs:    -7,
		RequestBody:  bytes.Repeat([]byte("q"), 300),
		ResponseBody: []byte{},
		Chunks:       []byte("{}\n{}\n"),
		ChunksCut:    true,

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
			f.SetInt(f.Int() + 1)
		case reflect.Uint8, reflect.Uint64:
			f.SetUint(f.Uint() + 1)
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
