package selector

import (
	"fmt"
	"math"
	"slices"
	"testing"
	"time"
)

// routed builds a table of the given priorities whose every upstream matches
// "m", with a strategy and, for Prefix, a fresh index.
func routed(s Strategy, prios ...int) *Table {
	ups := make([]Upstream, len(prios))
	for i, p := range prios {
		ups[i] = Upstream{Name: fmt.Sprint("u", i), Values: []string{"m"}, Priority: p}
	}
	o := Options{Strategy: s, Stale: 3 * time.Second, BalanceAbs: 4, BalanceRel: 1.5}
	if s == Prefix {
		o.Index = NewIndex(1 << 20)
	}
	return NewWith(ups, o)
}

func route(tb *Table, p *Prompt) ([]int, Reason) {
	cands := tb.Match(nil, "m")
	r := tb.Route(cands, t0, p)
	return cands, r
}

// checkRest fails unless cands holds every candidate once, weighted not
// cooling first, as Order would.
func checkPermutation(t *testing.T, tb *Table, cands []int) {
	t.Helper()
	s := slices.Sorted(slices.Values(cands))
	for i, c := range s {
		if c != i {
			t.Fatalf("order %v is not a permutation of the candidates", cands)
		}
	}
	seenStandby := false
	for _, c := range cands {
		if tb.invPrio[c] == 0 {
			seenStandby = true
		} else if seenStandby && !tb.health[c].Cooling(t0) {
			t.Fatalf("order %v: a weighted one after a standby", cands)
		}
	}
}

func TestRouteLeastLoaded(t *testing.T) {
	tb := routed(LeastLoaded, 1, 2, 1, 0)
	// loads per priority: u0 3/1, u1 4/2=2, u2 1 in flight + 2 waiting = 3
	for range 3 {
		tb.Load(0).Begin()
	}
	for range 4 {
		tb.Load(1).Begin()
	}
	tb.Load(2).Begin()
	tb.Load(2).SetWaiting(2, t0.Add(-time.Second))
	for range 50 {
		cands, r := route(tb, nil)
		if cands[0] != 1 || r != ReasonLeastLoaded {
			t.Fatalf("first %d (%v), want u1 (least loaded)", cands[0], r)
		}
		checkPermutation(t, tb, cands)
	}
	// a stale queue reading is ignored: u2 is then at 1
	tb.Load(2).SetWaiting(2, t0.Add(-4*time.Second))
	if cands, _ := route(tb, nil); cands[0] != 2 {
		t.Fatalf("first %d, want u2 once its queue reading is stale", cands[0])
	}
	// the least loaded in cooldown is skipped
	coolDown(tb, 2)
	if cands, _ := route(tb, nil); cands[0] != 1 {
		t.Fatalf("first %d, want u1 with u2 cooling", cands[0])
	}
	// only standbys left
	coolDown(tb, 0)
	coolDown(tb, 1)
	if cands, r := route(tb, nil); cands[0] != 3 || r != ReasonStandby {
		t.Fatalf("first %d (%v), want the standby", cands[0], r)
	}
}

// Idle upstreams tie: A-Res decides, so first picks follow priority.
func TestRouteLeastLoadedTiesByPriority(t *testing.T) {
	const trials = 20000
	tb := routed(LeastLoaded, 1, 3, 6)
	probs := []float64{0.1, 0.3, 0.6}
	withinBound(t, 2, func() float64 {
		counts := make([]int, 3)
		for range trials {
			cands, _ := route(tb, nil)
			counts[cands[0]]++
		}
		return chiSquare(counts, probs, trials)
	})
}

// conversation returns the prompts of the turns of one chat: a shared system
// prompt, then its own messages, each turn repeating the previous ones.
func conversation(sys []byte, id, turns int) []*Prompt {
	var out []*Prompt
	var hist [][]byte
	for turn := range turns {
		hist = append(hist, []byte("\x1fuser\x1e"), text(id*100+turn, 1500))
		p := new(Prompt)
		p.Reset(1024, 4096, true)
		p.AddString("system\x1e")
		p.Add(sys)
		for i, h := range hist {
			p.Add(h)
			if i == 0 {
				p.StartKey()
			}
			if i == 1 {
				p.EndKey()
			}
		}
		p.Finish()
		out = append(out, p)
		hist = append(hist, []byte("\x1fassistant\x1e"), text(id*100+turn+50, 700))
	}
	return out
}

func TestRoutePrefixFollowsConversation(t *testing.T) {
	sys := text(99, 6000)
	tb := routed(Prefix, 1, 1, 1, 1)
	conv := conversation(sys, 1, 4)
	cands, r := route(tb, conv[0])
	if r != ReasonPrefixNew {
		t.Fatalf("turn 1: %v, want prefix_new", r)
	}
	first := cands[0]
	tb.Learn(first, conv[0], t0)
	for turn := 1; turn < 4; turn++ {
		cands, r := route(tb, conv[turn])
		if cands[0] != first || r != ReasonPrefixHit {
			t.Fatalf("turn %d: first %d (%v), want %d by prefix_hit", turn+1, cands[0], r, first)
		}
		checkPermutation(t, tb, cands)
		tb.Learn(cands[0], conv[turn], t0)
	}
}

// The longest leading match decides, not the most recent one.
func TestRoutePrefixLongestMatch(t *testing.T) {
	sys := text(98, 3000)
	tb := routed(Prefix, 1, 1, 1)
	conv := conversation(sys, 2, 3)
	tb.Learn(2, conv[0], t0) // u2 served turn 1
	tb.Learn(1, conv[1], t0) // u1 served turn 2, which extends turn 1
	if cands, r := route(tb, conv[2]); cands[0] != 1 || r != ReasonPrefixHit {
		t.Fatalf("turn 3: first %d (%v), want u1, which served the longer prefix", cands[0], r)
	}
	tb.Learn(0, conv[0], t0) // u0 serves turn 1 again: u1 still holds more
	if cands, _ := route(tb, conv[2]); cands[0] != 1 {
		t.Fatalf("turn 3: first %d, want u1", cands[0])
	}
}

// Conversations that share only the system prompt are not pulled to the
// upstream that served it last: they are placed by their own key, spread
// by priority.
func TestRoutePrefixSharedSystemPromptDoesNotBind(t *testing.T) {
	sys := text(97, 8000) // longer than several blocks and than KeyBytes
	tb := routed(Prefix, 1, 1, 1, 1)
	counts := make([]int, 4)
	for id := range 400 {
		p := conversation(sys, id+10, 1)[0]
		cands, r := route(tb, p)
		if r != ReasonPrefixNew {
			t.Fatalf("conversation %d: %v, want prefix_new", id, r)
		}
		counts[cands[0]]++
		tb.Learn(cands[0], p, t0)
	}
	for i, c := range counts {
		if c < 60 {
			t.Errorf("upstream %d got %d of 400 new conversations: %v", i, c, counts)
		}
	}
}

// The conversation key carries turn 2 to where turn 1 went, even when turn
// 1 was not where its hash placed it (balanced away) and even though turn 1
// reached no block past the key.
func TestRoutePrefixConversationKey(t *testing.T) {
	sys := text(96, 500)
	tb := routed(Prefix, 1, 1, 1)
	conv := conversation(sys, 3, 2)
	cands, _ := route(tb, conv[0])
	other := (cands[0] + 1) % 3
	tb.Learn(other, conv[0], t0)
	if cands, r := route(tb, conv[1]); cands[0] != other || r != ReasonPrefixHit {
		t.Fatalf("turn 2: first %d (%v), want %d, which served turn 1", cands[0], r, other)
	}
}

func TestRoutePrefixBalance(t *testing.T) {
	sys := text(95, 2000)
	conv := conversation(sys, 4, 2)
	f := func(holderInflight, otherInflight int, want Reason) {
		t.Helper()
		tb := routed(Prefix, 1, 1)
		tb.Learn(0, conv[0], t0)
		for range holderInflight {
			tb.Load(0).Begin()
		}
		for range otherInflight {
			tb.Load(1).Begin()
		}
		cands, r := route(tb, conv[1])
		wantFirst := 0
		if want == ReasonPrefixBalanced {
			wantFirst = 1
		}
		if r != want || cands[0] != wantFirst {
			t.Errorf("holder %d in flight, other %d: first %d (%v), want %d (%v)", holderInflight, otherInflight, cands[0], r, wantFirst, want)
		}
	}
	// BalanceAbs 4, BalanceRel 1.5: overloaded when load-least > 4 and load > 1.5*least
	f(0, 0, ReasonPrefixHit)
	f(4, 0, ReasonPrefixHit)      // 4 more is not more than 4
	f(5, 0, ReasonPrefixBalanced) // 5 more
	f(14, 10, ReasonPrefixHit)    // 4 more
	f(16, 10, ReasonPrefixBalanced)
	f(29, 20, ReasonPrefixHit) // 9 more but not 1.5 times
	f(31, 20, ReasonPrefixBalanced)
}

func TestRoutePrefixHolderCooling(t *testing.T) {
	conv := conversation(text(94, 2000), 5, 2)
	tb := routed(Prefix, 1, 1, 1)
	tb.Learn(1, conv[0], t0)
	coolDown(tb, 1)
	tb.Load(0).Begin()
	cands, r := route(tb, conv[1])
	if cands[0] != 2 || r != ReasonPrefixBalanced {
		t.Fatalf("first %d (%v), want u2, the least loaded, by prefix_balanced", cands[0], r)
	}
	checkPermutation(t, tb, cands)
}

// Rendezvous placement: shares follow priority, and every table built from
// the same clients (every gateway) agrees, whatever its config order.
func TestRoutePrefixRendezvous(t *testing.T) {
	const n = 100_000
	prios := []int{1, 2, 3, 4, 0}
	tb := routed(Prefix, prios...)
	ups := make([]Upstream, len(prios))
	for i, p := range prios {
		ups[len(prios)-1-i] = Upstream{Name: fmt.Sprint("u", i), Values: []string{"m"}, Priority: p}
	}
	reversed := NewWith(ups, Options{Strategy: Prefix, Index: NewIndex(1 << 12)})
	counts := make([]int, len(prios))
	p := new(Prompt)
	for i := range n {
		p.Reset(1024, 64, false)
		p.AddString(fmt.Sprint("prompt ", i))
		p.Finish()
		cands, r := route(tb, p)
		if r != ReasonPrefixNew {
			t.Fatalf("prompt %d: %v", i, r)
		}
		counts[cands[0]]++
		rc := reversed.Match(nil, "m")
		reversed.Route(rc, t0, p)
		if reversed.names[rc[0]] != tb.names[cands[0]] {
			t.Fatalf("prompt %d: %s on one gateway, %s on the other", i, tb.names[cands[0]], reversed.names[rc[0]])
		}
	}
	if counts[4] != 0 {
		t.Fatalf("the standby was placed first %d times", counts[4])
	}
	for i, p := range prios[:4] {
		share, want := float64(counts[i])/n, float64(p)/10
		if math.Abs(share-want) > 0.01 {
			t.Errorf("u%d: share %.4f, want %.2f±0.01", i, share, want)
		}
	}
	// with u3 cooling, only its prompts move
	coolDown(tb, 3)
	for i := range 2000 {
		p.Reset(1024, 64, false)
		p.AddString(fmt.Sprint("prompt ", i))
		p.Finish()
		rc := reversed.Match(nil, "m")
		reversed.Route(rc, t0, p)
		cands, _ := route(tb, p)
		if reversed.names[rc[0]] != "u3" && tb.names[cands[0]] != reversed.names[rc[0]] {
			t.Fatalf("prompt %d moved from %s to %s though only u3 left", i, reversed.names[rc[0]], tb.names[cands[0]])
		}
	}
}

// A reload keeps what the index knows of the upstreams that stay and
// forgets the ones removed.
func TestRoutePrefixReload(t *testing.T) {
	ix := NewIndex(1 << 20)
	mk := func(names ...string) *Table {
		ups := make([]Upstream, len(names))
		for i, n := range names {
			ups[i] = Upstream{Name: n, Values: []string{"m"}, Priority: 1}
		}
		ix.Retain(names)
		return NewWith(ups, Options{Strategy: Prefix, Index: ix, BalanceAbs: 4, BalanceRel: 1.5})
	}
	ca := conversation(text(93, 2000), 6, 2)
	cb := conversation(text(93, 2000), 7, 2)
	old := mk("a", "b", "c")
	old.Learn(0, ca[0], t0) // a
	old.Learn(1, cb[0], t0) // b
	next := mk("c", "a", "d")
	if cands, r := route(next, ca[1]); next.names[cands[0]] != "a" || r != ReasonPrefixHit {
		t.Errorf("a kept across the reload: got %s (%v)", next.names[cands[0]], r)
	}
	if _, r := route(next, cb[1]); r != ReasonPrefixNew {
		t.Errorf("b removed: %v, want prefix_new", r)
	}
	// b comes back: it starts with nothing
	again := mk("a", "b")
	if _, r := route(again, cb[1]); r != ReasonPrefixNew {
		t.Errorf("b back: %v, want prefix_new", r)
	}
}

// Without Learn (a failed attempt) the index knows nothing.
func TestRoutePrefixOnlyLearnTeaches(t *testing.T) {
	conv := conversation(text(92, 2000), 8, 2)
	tb := routed(Prefix, 1, 1, 1)
	for range 10 {
		route(tb, conv[0])
	}
	if _, r := route(tb, conv[1]); r != ReasonPrefixNew {
		t.Fatalf("turn 2 after unanswered turn-1 attempts: %v, want prefix_new", r)
	}
}

func TestRouteWeighted(t *testing.T) {
	tb := routed(Weighted, 1, 1, 0)
	if _, r := route(tb, nil); r != ReasonWeighted {
		t.Fatalf("%v", r)
	}
	coolDown(tb, 0)
	coolDown(tb, 1)
	if cands, r := route(tb, nil); r != ReasonStandby || cands[0] != 2 {
		t.Fatalf("%v %v", cands, r)
	}
	if s := NumReasons.String(); s != "unknown" {
		t.Fatal(s)
	}
}
