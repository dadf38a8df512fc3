package selector

import (
	"math"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
)

// Index remembers which upstream last served each prompt block (by key, see
// Prompt) in a fixed amount of memory: a set-associative cache of 8-way sets,
// as CPU caches are built. A key's set is chosen by its bits; a key taught to a
// full set replaces the way least recently taught (LRU within the set).
//
// Each way is 16 bytes: the key with its low 16 bits replaced by the
// upstream's id (48 bits of key are compared, so a false match has odds of
// about 2^-45 per look-up), and the time it was last taught. Both are atomics:
// look-ups take no lock and never write; a look-up racing a teach sees the old
// or the new entry, which only changes a routing hint.
//
// Upstreams are known to the index by name: ID gives a name its small id,
// Retain forgets every name not in a list and clears its entries.
type Index struct {
	sets []set
	mask uint64
	span int // bytes of memory the sets take

	mu   sync.Mutex // ids and free: config reloads only
	ids  map[string]uint16
	free []uint16
	next uint16
}

const (
	ways     = 8
	idBits   = 16
	idMask   = 1<<idBits - 1
	wayBytes = 16
	// MinIndexBytes is the smallest index: one set.
	MinIndexBytes = ways * wayBytes
)

type way struct {
	tag  atomic.Uint64 // key&^idMask | id; 0 = empty
	used atomic.Int64  // when last taught, as an offset from epoch
}

type set [ways]way

// NewIndex returns an index taking at most maxBytes of memory (at least
// MinIndexBytes): the largest power of two of sets that fits.
func NewIndex(maxBytes int) *Index {
	n := max(maxBytes/(ways*wayBytes), 1)
	n = 1 << (bits.Len(uint(n)) - 1)
	return &Index{
		sets: make([]set, n),
		mask: uint64(n - 1),
		span: n * ways * wayBytes,
		ids:  make(map[string]uint16),
		next: 1,
	}
}

// Bytes returns the memory the index's entries take.
func (ix *Index) Bytes() int { return ix.span }

// Capacity returns how many block keys the index holds at most.
func (ix *Index) Capacity() int { return len(ix.sets) * ways }

func (ix *Index) setOf(key uint64) *set { return &ix.sets[(key>>idBits)&ix.mask] }

// Lookup returns the id of the upstream that last served key, or 0.
func (ix *Index) Lookup(key uint64) uint16 {
	s := ix.setOf(key)
	want := key &^ idMask
	for i := range s {
		if t := s[i].tag.Load(); t&^idMask == want && t != 0 {
			return uint16(t & idMask)
		}
	}
	return 0
}

// Learn records that upstream id served key at now. id 0 is ignored.
func (ix *Index) Learn(key uint64, id uint16, now time.Time) {
	if id == 0 {
		return
	}
	ix.learn(key, id, int64(now.Sub(epoch)))
}

func (ix *Index) learn(key uint64, id uint16, at int64) {
	s := ix.setOf(key)
	want := key &^ idMask
	tag := want | uint64(id)
	victim, oldest := 0, int64(math.MaxInt64)
	for i := range s {
		w := &s[i]
		t := w.tag.Load()
		if t == 0 {
			if oldest != math.MinInt64 {
				// The first empty way beats any used one; the scan goes on
				// in case key sits further on.
				victim, oldest = i, math.MinInt64
			}
			continue
		}
		if t&^idMask == want {
			if t != tag {
				w.tag.Store(tag)
			}
			if w.used.Load() != at {
				w.used.Store(at)
			}
			return
		}
		if u := w.used.Load(); u < oldest {
			victim, oldest = i, u
		}
	}
	w := &s[victim]
	w.tag.Store(tag)
	w.used.Store(at)
}

// ID returns name's id, giving it one if it has none. It returns 0 when
// every id is taken (65535 names known at once): that upstream is then not
// remembered.
func (ix *Index) ID(name string) uint16 {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if id, ok := ix.ids[name]; ok {
		return id
	}
	var id uint16
	switch {
	case len(ix.free) > 0:
		id = ix.free[len(ix.free)-1]
		ix.free = ix.free[:len(ix.free)-1]
	case ix.next != 0:
		id = ix.next
		ix.next++ // wraps to 0 after 65535: no more fresh ids
	default:
		return 0
	}
	ix.ids[name] = id
	return id
}

// Retain forgets every upstream whose name is not in names: its entries are
// cleared and its id freed. It walks the whole index (a few ms for the
// default size); call it on config reloads, not per request.
func (ix *Index) Retain(names []string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	keep := make(map[string]bool, len(names))
	for _, n := range names {
		keep[n] = true
	}
	var gone [1 << idBits]bool
	found := false
	for n, id := range ix.ids {
		if !keep[n] {
			gone[id] = true
			found = true
			delete(ix.ids, n)
			ix.free = append(ix.free, id)
		}
	}
	if !found {
		return
	}
	for i := range ix.sets {
		s := &ix.sets[i]
		for j := range s {
			if t := s[j].tag.Load(); t != 0 && gone[t&idMask] {
				s[j].tag.CompareAndSwap(t, 0)
			}
		}
	}
}
