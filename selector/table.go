package selector

// Upstream is one configured client as the selector sees it.
type Upstream struct {
	Name string
	// Exact selects the match rule: true, the model must equal one of Values
	// (case-sensitive); false, one of Values must occur in the model ignoring
	// ASCII case (non-ASCII bytes compare exactly).
	Exact bool
	// Values are the model names or keywords; any one matching is enough.
	Values []string
	// Priority is the weight in the random order; 0 (or less) marks a
	// standby, tried after every weighted upstream, in config order.
	Priority int
}

// Table matches models and orders candidates. It is immutable after New and
// safe for concurrent use; only the Health values it points to change.
type Table struct {
	ups    []Upstream
	health []*Health
	// folded holds the keyword values lowercased (ASCII only) once, so that
	// Match compares in place without allocating; nil for exact upstreams.
	folded [][]string
	// invPrio is 1/Priority for weighted upstreams and 0 for standby ones,
	// turning the per-request A-Res key into a multiplication.
	invPrio []float64

	// Routing (route.go): names for rendezvous hashing, loads, and for
	// the prefix strategy the index and each upstream's id in it.
	names    []string
	loads    []*Load
	strategy Strategy
	stale    int64 // ns
	balAbs   float64
	balRel   float64
	index    *Index
	ids      []uint16
}

// New builds a Table from ups in config order, with the weighted strategy.
// health[i] belongs to ups[i]; nil entries, and entries missing because
// health is shorter than ups, get a fresh Health. Passing the previous Health
// values keeps failure counts and cooldowns across config reloads. ups is
// copied, Values included. NewWith adds a routing strategy.
func New(ups []Upstream, health []*Health) *Table {
	return NewWith(ups, Options{Health: health})
}

func newTable(ups []Upstream, health []*Health) *Table {
	t := &Table{
		ups:     make([]Upstream, len(ups)),
		health:  make([]*Health, len(ups)),
		folded:  make([][]string, len(ups)),
		invPrio: make([]float64, len(ups)),
	}
	for i, u := range ups {
		u.Values = append([]string(nil), u.Values...)
		t.ups[i] = u
		if i < len(health) && health[i] != nil {
			t.health[i] = health[i]
		} else {
			t.health[i] = new(Health)
		}
		if !u.Exact {
			f := make([]string, len(u.Values))
			for j, v := range u.Values {
				f[j] = asciiLower(v)
			}
			t.folded[i] = f
		}
		if u.Priority > 0 {
			t.invPrio[i] = 1 / float64(u.Priority)
		}
	}
	return t
}

// Len returns the number of upstreams.
func (t *Table) Len() int { return len(t.ups) }

// Upstream returns upstream i in config order. The caller must not modify it.
func (t *Table) Upstream(i int) *Upstream { return &t.ups[i] }

// Health returns the health of upstream i.
func (t *Table) Health(i int) *Health { return t.health[i] }
