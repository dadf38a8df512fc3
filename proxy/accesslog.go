package proxy

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/gptapi/gptapi/logsink"
)

// account is the end of every proxied request: the request counter, the
// upstream histograms and one access log line, with the same error text the
// caller got. upWait is the time spent on the upstream that answered, from
// sending it the request to the last byte of its answer: what
// gptapi_upstream_latency_seconds observes.
// attrs is the caller's scratch for the line's fields, reused across
// requests: handed to slog as one empty-key group, which handlers inline as
// plain fields and GroupValue does not copy, so the line allocates nothing
// (slog.Record keeps only 5 fields inline and allocates beyond them).
func (s *Server) account(rec *logsink.Record, up *upstream, upWait time.Duration, size int, attrs *[]slog.Attr) {
	name := ""
	if up != nil {
		name = up.cfg.Name
		up.hists.latency.Observe(upWait)
		if rec.Status < 300 || rec.Stream {
			up.hists.ttft.Observe(rec.TTFT)
		}
	}
	label := "other"
	if st := s.state.Load(); st != nil {
		label = st.table.Label(b2s(rec.Model))
	}
	s.metrics.countRequest(rec.Endpoint, label, name, rec.Status)
	if !s.log.Enabled(context.Background(), slog.LevelInfo) {
		return
	}
	a := append((*attrs)[:0],
		slog.String("id", b2s(rec.RequestID)),
		slog.String("client", b2s(rec.ClientIP)),
		slog.String("route", rec.Endpoint.String()),
		slog.String("model", b2s(rec.Model)),
		slog.String("upstream", name),
		slog.Int("status", rec.Status),
		slog.Bool("stream", rec.Stream),
		slog.String("tried", b2s(rec.Tried)),
		slog.Int64("ttft_ms", rec.TTFT.Milliseconds()),
		slog.Int64("latency_ms", rec.Latency.Milliseconds()),
		slog.Int64("upstream_us", upWait.Microseconds()),
		slog.Int("bytes", size),
		slog.String("error", b2s(rec.Error)),
	)
	s.log.LogAttrs(context.Background(), slog.LevelInfo, "request", slog.Attr{Value: slog.GroupValue(a...)})
	clear(a) // drop the views of the record's bytes
	*attrs = a[:0]
}

// reject logs a request refused before it was routed (400, 401): it gets
// an access log line and a counter, not a record (SPEC §4.5).
func (s *Server) reject(ctx *fasthttp.RequestCtx, ep logsink.Endpoint, e *apiError) {
	writeError(ctx, e)
	s.metrics.countRequest(ep, "other", "", e.Status)
	if !s.log.Enabled(context.Background(), slog.LevelInfo) {
		return
	}
	s.log.LogAttrs(context.Background(), slog.LevelInfo, "request",
		slog.String("id", b2s(ctx.Response.Header.Peek("X-Request-Id"))),
		slog.String("client", ctx.RemoteIP().String()),
		slog.String("route", ep.String()),
		slog.Int("status", e.Status),
		slog.String("error", e.Message),
	)
}

// appendServerTiming appends the Server-Timing value that shows callers
// what gptapi itself added: `upstream;dur=12.345, gptapi;dur=0.051` (ms).
func appendServerTiming(dst []byte, upstream, total time.Duration) []byte {
	own := total - upstream
	if own < 0 {
		own = 0
	}
	dst = append(dst, "upstream;dur="...)
	dst = strconv.AppendFloat(dst, float64(upstream.Microseconds())/1000, 'f', 3, 64)
	dst = append(dst, ", gptapi;dur="...)
	dst = strconv.AppendFloat(dst, float64(own.Microseconds())/1000, 'f', 3, 64)
	return dst
}
