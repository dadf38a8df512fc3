package proxy

import (
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"

	"github.com/gptapi/gptapi/configs"
	"github.com/gptapi/gptapi/logsink"
	"github.com/gptapi/gptapi/selector"
)

// Fleet-aware routing (SPEC §4.7): the table's strategy picks the first of
// the healthy weighted candidates; this file gives it the prompt and the
// loads, records why, and teaches the prefix index what was answered.

// routeScratch is an exchange's routing state, pooled with it.
type routeScratch struct {
	prompt selector.Prompt
	ready  bool   // prompt holds this request's keys
	scr    []byte // non-text JSON values written out for hashing
}

// maxKeptRouteScratch is the largest scratch a pooled exchange keeps.
const maxKeptRouteScratch = 1 << 20

func (rs *routeScratch) reset() {
	rs.ready = false
	if cap(rs.scr) > maxKeptRouteScratch {
		rs.scr = nil
	}
	rs.scr = rs.scr[:0]
}

// routeOf maps the selector's reasons to the record's route values.
var routeOf = [selector.NumReasons]logsink.Route{
	selector.ReasonWeighted:       logsink.RouteWeighted,
	selector.ReasonLeastLoaded:    logsink.RouteLeastLoaded,
	selector.ReasonPrefixHit:      logsink.RoutePrefixHit,
	selector.ReasonPrefixNew:      logsink.RoutePrefixNew,
	selector.ReasonPrefixBalanced: logsink.RoutePrefixBalanced,
	selector.ReasonStandby:        logsink.RouteStandby,
}

// strategyOf maps routing.strategy to the selector's.
func strategyOf(s string) selector.Strategy {
	switch s {
	case configs.StrategyLeastLoaded:
		return selector.LeastLoaded
	case configs.StrategyPrefix:
		return selector.Prefix
	}
	return selector.Weighted
}

// order puts x.cands in try order. The first hop's reason is the record's
// route and counts in gptapi_route_total; fallback hops do not change it.
func (x *exchange) order(hop int) {
	var p *selector.Prompt
	if x.st.table.Strategy() == selector.Prefix {
		p = x.promptKeys()
	}
	r := x.st.table.Route(x.cands, time.Now(), p)
	if hop == 0 {
		x.out.route = routeOf[r]
		x.s.metrics.routes[r].Add(1)
	}
}

// learn teaches the prefix index that candidate i answered this prompt:
// only a 2xx answer, or a stream whose first event is in hand, does.
func (x *exchange) learn(ctx *fasthttp.RequestCtx, i int) {
	if !x.rt.ready || ctx.Response.StatusCode()/100 != 2 {
		return
	}
	x.st.table.Learn(i, &x.rt.prompt, time.Now())
}

// Separators between a prompt's parts as hashed: a field's end and a
// message's (or an input's) end. Neither occurs in JSON text unescaped.
const (
	fieldSep = "\x1e"
	partSep  = "\x1f"
)

// promptKeys cuts the prompt as sent upstream into the prefix strategy's
// block keys, once per request: chat, the preprocessed messages in order
// with their roles (the placement key runs through the first user
// message); completions, the prompt; embeddings, the input; rerank, the
// query and the documents. It does not allocate once the exchange's
// buffers have grown.
func (x *exchange) promptKeys() *selector.Prompt {
	rs := &x.rt
	p := &rs.prompt
	if rs.ready {
		return p
	}
	rs.ready = true
	rc := &x.st.cfg.Routing
	var msgs *fastjson.Value
	if x.req.endpoint == logsink.Chat {
		msgs = x.req.promptMessages()
	}
	p.Reset(rc.BlockBytes, rc.KeyBytes, msgs != nil)
	if msgs != nil {
		x.addMessages(p, msgs)
	} else {
		for _, name := range apis[x.req.endpoint].prompt {
			var v []byte
			v, rs.scr = x.req.promptMember(name, rs.scr[:0])
			p.Add(v)
			p.AddString(partSep)
		}
	}
	p.Finish()
	return p
}

// addMessages hashes a chat: role, content and tool calls of each message.
func (x *exchange) addMessages(p *selector.Prompt, msgs *fastjson.Value) {
	firstUser := true
	for _, m := range msgs.GetArray() {
		role := m.GetStringBytes("role")
		p.Add(role)
		p.AddString(fieldSep)
		user := firstUser && string(role) == "user"
		if user {
			p.StartKey()
		}
		x.addValue(p, m.Get("content"))
		if user {
			p.EndKey()
			firstUser = false
		}
		if tc := m.Get("tool_calls"); tc != nil {
			p.AddString(fieldSep)
			x.addValue(p, tc)
		}
		p.AddString(partSep)
	}
}

// addValue hashes a content: a string's text, the text of text parts,
// anything else as its JSON.
func (x *exchange) addValue(p *selector.Prompt, v *fastjson.Value) {
	if v == nil {
		return
	}
	switch v.Type() {
	case fastjson.TypeNull:
	case fastjson.TypeString:
		b, _ := v.StringBytes()
		p.Add(b)
	case fastjson.TypeArray:
		for _, part := range v.GetArray() {
			if t := part.Get("text"); t != nil && t.Type() == fastjson.TypeString &&
				string(part.GetStringBytes("type")) == "text" {
				b, _ := t.StringBytes()
				p.Add(b)
			} else {
				x.rt.scr = part.MarshalTo(x.rt.scr[:0])
				p.Add(x.rt.scr)
			}
			p.AddString(fieldSep)
		}
	default:
		x.rt.scr = v.MarshalTo(x.rt.scr[:0])
		p.Add(x.rt.scr)
	}
}

// routingOptions are the table options of cfg: strategy, loads (kept by
// client name across reloads with the histograms), balance thresholds.
func routingOptions(cfg *configs.Config, health []*selector.Health, loads []*selector.Load, ix *selector.Index) selector.Options {
	rc := &cfg.Routing
	return selector.Options{
		Health:     health,
		Loads:      loads,
		Strategy:   strategyOf(rc.Strategy),
		Index:      ix,
		Stale:      3 * rc.PollInterval,
		BalanceAbs: rc.BalanceAbs,
		BalanceRel: rc.BalanceRel,
	}
}

// prefixIndex is the index cfg needs: prev's when it fits (same size and
// block size, so its keys still mean the same prompts), forgetting the
// clients cfg removed; a new one when the strategy became prefix or the
// index was resized; nil for the other strategies.
func prefixIndex(cfg *configs.Config, prev *state) *selector.Index {
	rc := &cfg.Routing
	if rc.Strategy != configs.StrategyPrefix {
		return nil
	}
	if prev != nil && prev.prefix != nil && prev.cfg.Routing.IndexBytes == rc.IndexBytes &&
		prev.cfg.Routing.BlockBytes == rc.BlockBytes {
		names := make([]string, len(cfg.Clients))
		for i := range cfg.Clients {
			names[i] = cfg.Clients[i].Name
		}
		prev.prefix.Retain(names)
		return prev.prefix
	}
	return selector.NewIndex(rc.IndexBytes)
}

// appendRouting appends the routing series of SPEC §4.6: routes by reason,
// and per client of st its requests in flight, its queue (while a reading
// is fresh) and its cached prompt tokens.
func (m *serverMetrics) appendRouting(b []byte, st *state, now time.Time) []byte {
	for r := range selector.NumReasons {
		b = append(b, `gptapi_route_total{reason="`...)
		b = append(b, r.String()...)
		b = append(b, `"} `...)
		b = strconv.AppendUint(b, m.routes[r].Load(), 10)
		b = append(b, '\n')
	}
	stale := 3 * st.cfg.Routing.PollInterval
	for _, up := range st.upstreams {
		b = appendUpstreamSample(b, "gptapi_upstream_inflight", up.cfg.Name, up.hists.load.InFlight())
	}
	for _, up := range st.upstreams {
		if n, ok := up.hists.load.Waiting(now, stale); ok && up.cfg.MetricsURL != "" {
			b = appendUpstreamSample(b, "gptapi_upstream_waiting", up.cfg.Name, n)
		}
	}
	for _, up := range st.upstreams {
		b = appendUpstreamSample(b, "gptapi_prompt_cached_tokens_total", up.cfg.Name, int64(up.hists.cached.Load()))
	}
	return b
}

func appendUpstreamSample(b []byte, name, upstream string, v int64) []byte {
	b = append(b, name...)
	b = append(b, `{upstream=`...)
	b = appendLabelValue(b, upstream)
	b = append(b, "} "...)
	b = strconv.AppendInt(b, v, 10)
	return append(b, '\n')
}

// CountCachedTokens adds n prompt tokens that upstream reported as served
// from its cache (usage.prompt_tokens_details.cached_tokens) to
// gptapi_prompt_cached_tokens_total. The record writer calls it once per
// record that carries the figure.
func (s *Server) CountCachedTokens(upstream []byte, n int64) {
	if n <= 0 || len(upstream) == 0 {
		return
	}
	s.metrics.upstream(string(upstream)).cached.Add(uint64(n))
}
