package selector

import (
	"math"
	"time"

	"github.com/zeebo/xxh3"
)

// Strategy orders the first choice among the weighted candidates
// (SPEC §4.7).
type Strategy uint8

const (
	// Weighted is A-Res by priority alone (SPEC §4.1).
	Weighted Strategy = iota
	// LeastLoaded puts the least loaded candidate first.
	LeastLoaded
	// Prefix puts first the candidate that served the longest leading part
	// of the prompt, or the one its placement key hashes to.
	Prefix
)

// Reason says why the first candidate is first; its String is the record's
// route value.
type Reason uint8

const (
	ReasonWeighted       Reason = iota // A-Res by priority
	ReasonLeastLoaded                  // the least loaded candidate
	ReasonPrefixHit                    // it served part of this prompt
	ReasonPrefixNew                    // placed by the placement key's hash
	ReasonPrefixBalanced               // the holder or placed one was overloaded or cooling
	ReasonStandby                      // only standbys were left
	NumReasons
)

var reasonNames = [NumReasons]string{"weighted", "least_loaded", "prefix_hit", "prefix_new", "prefix_balanced", "standby"}

func (r Reason) String() string {
	if r < NumReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// Options are what a Table needs beyond its upstreams. The zero value is the
// weighted strategy with fresh health and load.
type Options struct {
	// Health[i] and Loads[i] belong to upstream i; nil or missing entries
	// get fresh ones. Passing the previous ones keeps them across reloads.
	Health []*Health
	Loads  []*Load
	// Strategy orders the first choice.
	Strategy Strategy
	// Index is the prefix strategy's memory; without one, Prefix places
	// every prompt by its placement key.
	Index *Index
	// Stale is the age past which a queue reading is ignored (3 poll
	// intervals).
	Stale time.Duration
	// BalanceAbs and BalanceRel decide when the upstream the prefix
	// strategy would pick is overloaded: its load exceeds the least loaded
	// candidate's by more than BalanceAbs and is more than BalanceRel times
	// it. Then the least loaded goes first.
	BalanceAbs, BalanceRel float64
}

// NewWith builds a Table as New does, with a routing strategy.
func NewWith(ups []Upstream, o Options) *Table {
	t := newTable(ups, o.Health)
	t.loads = make([]*Load, len(ups))
	t.names = make([]string, len(ups))
	for i := range ups {
		if i < len(o.Loads) && o.Loads[i] != nil {
			t.loads[i] = o.Loads[i]
		} else {
			t.loads[i] = new(Load)
		}
		t.names[i] = ups[i].Name
	}
	t.strategy = o.Strategy
	t.stale = int64(o.Stale)
	t.balAbs, t.balRel = o.BalanceAbs, o.BalanceRel
	if o.Strategy == Prefix && o.Index != nil {
		t.index = o.Index
		t.ids = make([]uint16, len(ups))
		for i := range ups {
			t.ids[i] = o.Index.ID(ups[i].Name)
		}
	}
	return t
}

// Load returns the load of upstream i.
func (t *Table) Load(i int) *Load { return t.loads[i] }

// Strategy returns the table's strategy.
func (t *Table) Strategy() Strategy { return t.strategy }

// Route reorders cands as Order does, then lets the strategy pick which of
// the weighted candidates not in cooldown goes first; the others keep their
// A-Res order, so failover is as in SPEC §4.1. p is the request's prompt
// (Prefix only; nil places by an empty key). It reports why the first is
// first. It does not allocate for up to 64 candidates.
func (t *Table) Route(cands []int, now time.Time, p *Prompt) Reason {
	t.Order(cands, now)
	base := ReasonWeighted
	switch t.strategy {
	case LeastLoaded:
		base = ReasonLeastLoaded
	case Prefix:
		base = ReasonPrefixNew
	}
	if len(cands) == 0 {
		return base
	}
	if t.invPrio[cands[0]] == 0 {
		return ReasonStandby
	}
	if t.strategy == Weighted || len(t.loads) == 0 {
		return base
	}
	at := int64(now.Sub(epoch))
	// The weighted candidates not in cooldown lead the order.
	w := 0
	for w < len(cands) && t.invPrio[cands[w]] > 0 && !t.health[cands[w]].coolingAt(time.Duration(at)) {
		w++
	}
	if w == 0 {
		return base // everything weighted is cooling: A-Res among them
	}
	least, leastLoad := t.leastLoaded(cands[:w], at)
	if t.strategy == LeastLoaded {
		toFront(cands, least)
		return ReasonLeastLoaded
	}

	pick, reason := -1, ReasonPrefixHit
	if id := t.holder(p); id != 0 {
		for j, c := range cands {
			if t.ids[c] == id {
				pick = j
				break
			}
		}
		if pick >= w {
			// Cooling or standby: it gives way to the least loaded.
			toFront(cands, least)
			return ReasonPrefixBalanced
		}
	}
	if pick < 0 {
		reason = ReasonPrefixNew
		var place uint64
		if p != nil {
			place = p.place
		}
		pick = t.rendezvous(cands[:w], place)
	}
	if pick != least && t.overloaded(t.load(cands[pick], at), leastLoad) {
		pick, reason = least, ReasonPrefixBalanced
	}
	toFront(cands, pick)
	return reason
}

// load is upstream i's load: requests in flight plus its fresh queue
// reading, divided by its priority.
func (t *Table) load(i int, at int64) float64 {
	l := t.loads[i]
	n := l.inflight.Load()
	if w, ok := l.waitingAt(at, t.stale); ok {
		n += w
	}
	return float64(n) * t.invPrio[i]
}

// leastLoaded returns the position in cands of the least loaded one; the
// earliest wins a tie, so ties go by the A-Res order cands are in.
func (t *Table) leastLoaded(cands []int, at int64) (int, float64) {
	best, bestLoad := 0, t.load(cands[0], at)
	for j := 1; j < len(cands); j++ {
		if l := t.load(cands[j], at); l < bestLoad {
			best, bestLoad = j, l
		}
	}
	return best, bestLoad
}

func (t *Table) overloaded(load, least float64) bool {
	return load-least > t.balAbs && load > least*t.balRel
}

// holder returns the id of the upstream that served the longest leading
// part of p reaching past its placement key, else the one that served the
// same placement key, else 0.
//
// Leading blocks are taught together and the earlier ones of a prompt are
// taught at least as often as the later ones, so presence falls off with
// depth: a binary search finds the deepest block present in log2(blocks)
// look-ups instead of one per block.
func (t *Table) holder(p *Prompt) uint16 {
	if p == nil || t.index == nil {
		return 0
	}
	keys := p.keys
	if lo := p.firstPastKey(); lo >= 0 {
		if id := t.index.Lookup(keys[lo]); id != 0 {
			hi := len(keys) // keys[hi] is absent (or past the end)
			for hi-lo > 1 {
				mid := int(uint(lo+hi) >> 1)
				if m := t.index.Lookup(keys[mid]); m != 0 {
					lo, id = mid, m
				} else {
					hi = mid
				}
			}
			return id
		}
	}
	return t.index.Lookup(p.place ^ convSalt)
}

// rendezvous returns the position in cands of the candidate that place
// hashes to, weighted by priority (weighted rendezvous hashing: each draws
// u from the hash of place and its name and scores log(u)/priority, the
// highest wins, as in A-Res). Every gateway with the same clients and
// priorities picks the same one for the same key, and when one leaves only
// the keys it held move.
func (t *Table) rendezvous(cands []int, place uint64) int {
	best, bestKey := 0, math.Inf(-1)
	for j, c := range cands {
		h := xxh3.HashStringSeed(t.names[c], place)
		u := float64(h>>11+1) * (1.0 / (1 << 53)) // (0, 1]
		if k := math.Log(u) * t.invPrio[c]; k > bestKey {
			best, bestKey = j, k
		}
	}
	return best
}

// Learn records that upstream i answered the prompt p: every block key and
// the placement key now point to it. Call it only for answered attempts.
func (t *Table) Learn(i int, p *Prompt, now time.Time) {
	if t.index == nil || p == nil {
		return
	}
	id := t.ids[i]
	if id == 0 {
		return
	}
	at := int64(now.Sub(epoch))
	for _, k := range p.keys {
		t.index.learn(k, id, at)
	}
	t.index.learn(p.place^convSalt, id, at)
}

// toFront moves cands[j] to the front, shifting those before it back one.
func toFront(cands []int, j int) {
	if j == 0 {
		return
	}
	c := cands[j]
	copy(cands[1:j+1], cands[:j])
	cands[0] = c
}
