package proxy

import (
	"github.com/gptapi/gptapi/configs"
	"github.com/gptapi/gptapi/selector"
)

// state is one immutable config snapshot with everything built from it.
// Requests load it once and use it to the end, so a reload never changes
// anything under a running request.
type state struct {
	cfg       *configs.Config
	upstreams []*upstream // same order as cfg.Clients and table
	table     *selector.Table
	authKeys  [][]byte
	models    *modelsCache
	prefix    *selector.Index // the prefix strategy's memory, kept across reloads (route.go)
}

// buildState makes the snapshot for cfg. Health is carried over by client
// name from prev so a reload does not forget an upstream in cooldown, and
// pools of clients whose settings did not change are reused.
func buildState(cfg *configs.Config, prev *state, m *serverMetrics) (*state, error) {
	st := &state{cfg: cfg, models: &modelsCache{}}
	ups := make([]selector.Upstream, len(cfg.Clients))
	health := make([]*selector.Health, len(cfg.Clients))
	loads := make([]*selector.Load, len(cfg.Clients))
	for i := range cfg.Clients {
		c := &cfg.Clients[i]
		var old *upstream
		if prev != nil {
			if j := prev.index(c.Name); j >= 0 {
				old = prev.upstreams[j]
				health[i] = prev.table.Health(j)
			}
		}
		if old != nil && sameTransport(old, c, &cfg.Check, &prev.cfg.Check) {
			cp := *old
			cp.cfg = c
			cp.buildHeads()
			st.upstreams = append(st.upstreams, &cp)
		} else {
			up, err := newUpstream(c, &cfg.Check)
			if err != nil {
				return nil, err
			}
			st.upstreams = append(st.upstreams, up)
		}
		st.upstreams[i].hists = m.upstream(c.Name)
		loads[i] = &st.upstreams[i].hists.load
		ups[i] = selector.Upstream{Name: c.Name, Exact: c.Match.Type == configs.MatchExact, Values: c.Match.Value, Priority: c.Priority}
	}
	st.prefix = prefixIndex(cfg, prev)
	st.table = selector.NewWith(ups, routingOptions(cfg, health, loads, st.prefix))
	for _, k := range cfg.Auth.Keys {
		st.authKeys = append(st.authKeys, []byte(k))
	}
	return st, nil
}

// sameTransport reports whether an old upstream's pools can serve c: same
// address, credentials and timeouts.
func sameTransport(old *upstream, c *configs.Client, chk, oldChk *configs.Check) bool {
	o := old.cfg
	return o.BaseURL == c.BaseURL && o.APIKey == c.APIKey && o.KeyMode == c.KeyMode &&
		o.MaxConns == c.MaxConns && *chk == *oldChk
}

func (st *state) index(name string) int {
	for i, up := range st.upstreams {
		if up.cfg.Name == name {
			return i
		}
	}
	return -1
}

// retire closes idle connections of the pools next no longer uses.
func (st *state) retire(next *state) {
	for _, up := range st.upstreams {
		used := false
		for _, n := range next.upstreams {
			if n.hc == up.hc {
				used = true
				break
			}
		}
		if !used {
			up.closeIdle()
		}
	}
}
