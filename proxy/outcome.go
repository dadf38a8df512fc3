package proxy

import (
	"log/slog"
	"time"

	"github.com/gptapi/gptapi/logsink"
)

// outcome is how an exchange went: everything its record is finished from
// but the bodies. The exchange fills it while the handler runs; a relayed
// stream takes it along (swapped with the stream's own, so neither side
// allocates) and fills in the end when the stream ends. finish writes it
// into the record, on every path.
type outcome struct {
	start time.Time     // the request's arrival
	route logsink.Route // why the first upstream was first (route.go)
	tried triedPath
	// up is the upstream that answered, nil if none; the last hop of
	// tried is its attempt. upWait is the time spent on it, from sending
	// it the request to the last byte of its answer.
	up     *upstream
	upWait time.Duration
	ttft   time.Duration // from start to the first byte (first content chunk of a stream)
	status int
	err    string // the error text the caller got; "" if none
}

// reset empties o and keeps the capacity of its Tried path.
func (o *outcome) reset() {
	o.tried.reset()
	*o = outcome{tried: o.tried}
}

// finish completes rec from o and hands it to the sink: the one place an
// exchange's record gets its status, error, route, Tried path, upstream and
// timings, whichever way the exchange ended (an answer, an error, a stream's
// end, a cut, a caller that left). end is when the answer's last byte left;
// size is the answer's size for the access log. rec must not be used
// afterwards.
func (s *Server) finish(rec *logsink.Record, o *outcome, end time.Time, size int, attrs *[]slog.Attr) {
	rec.Status = o.status
	rec.Error = append(rec.Error[:0], o.err...)
	rec.Route = o.route
	rec.Tried = o.tried.appendJSON(rec.Tried[:0])
	rec.Upstream, rec.ServedModel = rec.Upstream[:0], rec.ServedModel[:0]
	if o.up != nil {
		rec.Upstream = append(rec.Upstream, o.up.cfg.Name...)
		rec.ServedModel = append(rec.ServedModel, o.tried.last().model...)
	}
	rec.TTFT, rec.Latency = o.ttft, end.Sub(o.start)
	s.account(rec, o.up, o.upWait, size, attrs)
	s.put(rec)
}
