package selector

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

var t0 = time.Unix(1_700_000_000, 0)

// upstreams builds a table whose every upstream matches "m", with the given
// priorities in config order.
func upstreams(prios ...int) *Table {
	ups := make([]Upstream, len(prios))
	for i, p := range prios {
		ups[i] = Upstream{Name: fmt.Sprint("u", i), Values: []string{"m"}, Priority: p}
	}
	return New(ups, nil)
}

// coolDown puts upstream i of tb in a cooldown covering t0.
func coolDown(tb *Table, i int) {
	tb.Health(i).Fail(t0, 1, time.Hour)
}

// group is a run of positions in an order: the indices it must hold, in the
// given order if ordered, else in any order.
type group struct {
	idx     []int
	ordered bool
}

// checkGroups fails unless got consists of exactly groups, one after another.
func checkGroups(t *testing.T, got []int, groups ...group) {
	t.Helper()
	pos := 0
	for _, g := range groups {
		if pos+len(g.idx) > len(got) {
			t.Fatalf("order %v is shorter than groups %v", got, groups)
		}
		part := got[pos : pos+len(g.idx)]
		pos += len(g.idx)
		if g.ordered {
			if !slices.Equal(part, g.idx) {
				t.Fatalf("order %v: positions %d..%d = %v, want %v", got, pos-len(g.idx), pos-1, part, g.idx)
			}
			continue
		}
		a, b := slices.Clone(part), slices.Clone(g.idx)
		slices.Sort(a)
		slices.Sort(b)
		if !slices.Equal(a, b) {
			t.Fatalf("order %v: positions %d..%d hold %v, want the set %v", got, pos-len(g.idx), pos-1, part, g.idx)
		}
	}
	if pos != len(got) {
		t.Fatalf("order %v is longer than groups %v", got, groups)
	}
}

func TestOrderStandbyAfterWeighted(t *testing.T) {
	tb := upstreams(0, 5, 0, 1, 0)
	seenFirst := map[int]bool{}
	for range 200 {
		cands := tb.Match(nil, "m")
		tb.Order(cands, t0)
		checkGroups(t, cands, group{idx: []int{1, 3}}, group{idx: []int{0, 2, 4}, ordered: true})
		seenFirst[cands[0]] = true
	}
	// with weights 5:1, each leads sometimes (P(never 3 in 200) ≈ 1e-16)
	if !seenFirst[1] || !seenFirst[3] {
		t.Fatalf("weighted order never varied: first picks %v", seenFirst)
	}
}

func TestOrderStandbyConfigOrderWhateverInput(t *testing.T) {
	tb := upstreams(0, 0, 0, 2)
	cands := []int{2, 1, 3, 0}
	tb.Order(cands, t0)
	checkGroups(t, cands, group{idx: []int{3}}, group{idx: []int{0, 1, 2}, ordered: true})
}

func TestOrderCoolingLast(t *testing.T) {
	// 0 standby, 1 weighted cooling, 2 weighted, 3 standby cooling,
	// 4 weighted cooling, 5 standby, 6 weighted, 7 standby cooling
	tb := upstreams(0, 3, 1, 0, 2, 0, 4, 0)
	for _, i := range []int{1, 3, 4, 7} {
		coolDown(tb, i)
	}
	for range 50 {
		cands := tb.Match(nil, "m")
		tb.Order(cands, t0)
		checkGroups(t, cands,
			group{idx: []int{2, 6}},
			group{idx: []int{0, 5}, ordered: true},
			group{idx: []int{1, 4}},
			group{idx: []int{3, 7}, ordered: true},
		)
	}
	// once the cooldown is over they rejoin their groups
	cands := tb.Match(nil, "m")
	tb.Order(cands, t0.Add(2*time.Hour))
	checkGroups(t, cands, group{idx: []int{1, 2, 4, 6}}, group{idx: []int{0, 3, 5, 7}, ordered: true})
}

func TestOrderAllCooling(t *testing.T) {
	tb := upstreams(1, 0, 2, 0)
	for i := range tb.Len() {
		coolDown(tb, i)
	}
	cands := tb.Match(nil, "m")
	tb.Order(cands, t0)
	checkGroups(t, cands, group{idx: []int{0, 2}}, group{idx: []int{1, 3}, ordered: true})
}

func TestOrderSmall(t *testing.T) {
	tb := upstreams(1, 0)
	f := func(cands, want []int) {
		t.Helper()
		tb.Order(cands, t0)
		if !slices.Equal(cands, want) {
			t.Fatalf("Order = %v, want %v", cands, want)
		}
	}
	f(nil, nil)
	f([]int{}, []int{})
	f([]int{1}, []int{1})
	f([]int{1, 0}, []int{0, 1})
}

func TestOrderMany(t *testing.T) {
	// more candidates than the stack buffer holds take the heap path
	const n = 3 * stackCands
	prios := make([]int, n)
	var weighted, standby, coolW, coolS []int
	for i := range prios {
		if i%3 != 0 {
			prios[i] = 1 + i%7
		}
	}
	tb := upstreams(prios...)
	for i := range n {
		cooling := i%5 == 0
		if cooling {
			coolDown(tb, i)
		}
		switch {
		case prios[i] > 0 && !cooling:
			weighted = append(weighted, i)
		case prios[i] > 0:
			coolW = append(coolW, i)
		case !cooling:
			standby = append(standby, i)
		default:
			coolS = append(coolS, i)
		}
	}
	cands := tb.Match(nil, "m")
	if len(cands) != n {
		t.Fatalf("Match returned %d candidates, want %d", len(cands), n)
	}
	tb.Order(cands, t0)
	checkGroups(t, cands,
		group{idx: weighted},
		group{idx: standby, ordered: true},
		group{idx: coolW},
		group{idx: coolS, ordered: true},
	)
}
