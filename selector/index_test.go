package selector

import (
	"testing"
	"time"
)

// keysInSet returns n distinct keys that all fall in set s of ix.
func keysInSet(ix *Index, s uint64, n int) []uint64 {
	var ks []uint64
	for i := uint64(1); len(ks) < n; i++ {
		k := i<<40 | s<<idBits | 0xabc
		if (k>>idBits)&ix.mask == s {
			ks = append(ks, k)
		}
	}
	return ks
}

func TestIndexSize(t *testing.T) {
	f := func(maxBytes, wantBytes int) {
		t.Helper()
		ix := NewIndex(maxBytes)
		if ix.Bytes() != wantBytes || ix.Capacity() != wantBytes/16 {
			t.Errorf("NewIndex(%d): %d bytes, %d keys; want %d bytes", maxBytes, ix.Bytes(), ix.Capacity(), wantBytes)
		}
	}
	f(0, 128) // one set at least
	f(128, 128)
	f(255, 128)
	f(256, 256)
	f(1000, 512)
	f(32<<20, 32<<20)
	f(48<<20, 32<<20) // never above the cap: the largest power of two of sets
}

// A full set replaces the way taught least recently; a key taught again is
// recent again, whichever upstream it is taught with.
func TestIndexLRUUnderCap(t *testing.T) {
	ix := NewIndex(4 * MinIndexBytes) // 4 sets of 8
	a, b := ix.ID("a"), ix.ID("b")
	ks := keysInSet(ix, 2, ways+3)
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * time.Second) }
	for i, k := range ks[:ways] {
		ix.Learn(k, a, at(i))
	}
	for _, k := range ks[:ways] {
		if ix.Lookup(k) != a {
			t.Fatalf("key %#x lost before the set was full", k)
		}
	}
	ix.Learn(ks[0], b, at(20)) // the oldest is taught again: now the newest, held by b
	ix.Learn(ks[ways], a, at(21))
	ix.Learn(ks[ways+1], a, at(22))
	want := map[int]uint16{0: b, 1: 0, 2: 0, 3: a, ways: a, ways + 1: a}
	for i, w := range want {
		if got := ix.Lookup(ks[i]); got != w {
			t.Errorf("key %d: holder %d, want %d", i, got, w)
		}
	}
	// other sets are untouched by this one's evictions
	other := keysInSet(ix, 1, 1)[0]
	ix.Learn(other, b, at(1))
	for i := range 3 * ways {
		ix.Learn(keysInSet(ix, 2, ways+3+i)[ways+2+i], a, at(30+i))
	}
	if ix.Lookup(other) != b {
		t.Error("a key of another set was evicted")
	}
	// the whole index never holds more than its capacity
	n := 0
	for i := range ix.sets {
		for j := range ix.sets[i] {
			if ix.sets[i][j].tag.Load() != 0 {
				n++
			}
		}
	}
	if n > ix.Capacity() {
		t.Errorf("%d entries in an index of %d", n, ix.Capacity())
	}
}

func TestIndexRetain(t *testing.T) {
	ix := NewIndex(1 << 12)
	a, b, c := ix.ID("a"), ix.ID("b"), ix.ID("c")
	if a == 0 || b == 0 || c == 0 || a == b || b == c || ix.ID("b") != b {
		t.Fatalf("ids a=%d b=%d c=%d", a, b, c)
	}
	for k := uint64(1); k <= 60; k++ {
		ix.Learn(k*0x9e3779b97f4a7c15, []uint16{a, b, c}[k%3], t0)
	}
	ix.Retain([]string{"a", "c", "new"})
	for k := uint64(1); k <= 60; k++ {
		got := ix.Lookup(k * 0x9e3779b97f4a7c15)
		if want := []uint16{a, 0, c}[k%3]; got != want {
			t.Fatalf("key %d: holder %d after b was removed, want %d", k, got, want)
		}
	}
	// b's id is free again; a name coming back starts with nothing
	if d := ix.ID("d"); d != b {
		t.Errorf("new name got id %d, want b's freed %d", d, b)
	}
	if ix.ID("a") != a {
		t.Error("a kept name changed id")
	}
}

func TestIndexIDsRunOut(t *testing.T) {
	ix := NewIndex(MinIndexBytes)
	ix.next = idMask // the last fresh id
	if id := ix.ID("x"); id != idMask {
		t.Fatalf("last id = %d", id)
	}
	if id := ix.ID("y"); id != 0 {
		t.Fatalf("id past the last = %d, want 0 (not remembered)", id)
	}
	ix.Learn(42, 0, t0)
	if ix.Lookup(42) != 0 {
		t.Fatal("id 0 was learned")
	}
}
