package selector

import (
	"math"
	"math/rand/v2"
	"slices"
	"time"
)

// stackCands is how many candidates Order sorts without allocating; larger
// lists are rare (one model served by more than this many clients) and get a
// heap buffer and pdqsort.
const stackCands = 64

// Ranks of the four groups Order produces, in try order.
const (
	rankWeighted uint8 = iota
	rankStandby
	rankCoolingWeighted
	rankCoolingStandby
)

// orderKey is one candidate's sort key: rank ascending, then key descending.
type orderKey struct {
	key  float64
	rank uint8
	idx  int
}

func before(a, b *orderKey) bool {
	return a.rank < b.rank || a.rank == b.rank && a.key > b.key
}

// Order reorders cands, indices into t, in place into try order: weighted
// upstreams by A-Res (key u^(1/priority), highest first, compared as
// log(u)/priority), then standby upstreams in config order; candidates cooling
// at now go after all others, ordered among themselves by the same rules.
// It does not allocate for up to 64 candidates.
func (t *Table) Order(cands []int, now time.Time) {
	if len(cands) < 2 {
		return
	}
	var buf [stackCands]orderKey
	keys := buf[:0]
	if len(cands) > stackCands {
		keys = make([]orderKey, 0, len(cands))
	}
	at := now.Sub(epoch)
	for _, i := range cands {
		k := orderKey{idx: i}
		if inv := t.invPrio[i]; inv > 0 {
			// 1-Float64 lies in (0,1], so the log is finite.
			k.key = math.Log(1-rand.Float64()) * inv
			k.rank = rankWeighted
		} else {
			// Config order: a lower index sorts first under "key descending".
			k.key = -float64(i)
			k.rank = rankStandby
		}
		if t.health[i].coolingAt(at) {
			k.rank += rankCoolingWeighted
		}
		keys = append(keys, k)
	}
	if len(keys) <= stackCands {
		insertionSort(keys)
	} else {
		slices.SortFunc(keys, compareKeys)
	}
	for j := range keys {
		cands[j] = keys[j].idx
	}
}

// insertionSort is the fastest sort for the handful of candidates a model
// usually has, and it neither allocates nor calls through a function value.
func insertionSort(keys []orderKey) {
	for i := 1; i < len(keys); i++ {
		k := keys[i]
		j := i
		for ; j > 0 && before(&k, &keys[j-1]); j-- {
			keys[j] = keys[j-1]
		}
		keys[j] = k
	}
}

func compareKeys(a, b orderKey) int {
	switch {
	case before(&a, &b):
		return -1
	case before(&b, &a):
		return 1
	}
	return 0
}
