package proxy

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/gptapi/gptapi/logsink"
)

// The access line's fields come out flat, as if logged one by one, in both
// formats, with the same error text the caller got.
func TestAccessLogLine(t *testing.T) {
	rec := logsink.AcquireRecord()
	rec.RequestID = []byte("rid-1")
	rec.Endpoint = logsink.Chat
	rec.Model = []byte("qwen")
	rec.Status = 502
	rec.Tried = []byte(`["a/qwen"]`)
	rec.Error = []byte(`All upstreams failed. Tried: ["a/qwen"]`)
	for _, format := range []string{"text", "json"} {
		var buf bytes.Buffer
		var h slog.Handler = slog.NewTextHandler(&buf, nil)
		if format == "json" {
			h = slog.NewJSONHandler(&buf, nil)
		}
		s := &Server{log: slog.New(h)}
		s.metrics = newServerMetrics(s)
		var attrs []slog.Attr
		s.account(rec, nil, time.Millisecond, 42, &attrs)
		line := buf.String()
		if format == "json" {
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Fatalf("json line: %v: %s", err, line)
			}
			if m["id"] != "rid-1" || m["status"] != float64(502) || m["error"] != string(rec.Error) || m["bytes"] != float64(42) {
				t.Fatalf("json fields: %v", m)
			}
			continue
		}
		for _, want := range []string{"msg=request", "id=rid-1", "route=chat", "model=qwen", "status=502", "upstream_us=1000", `error="All upstreams failed. Tried: [\"a/qwen\"]"`} {
			if !strings.Contains(line, " "+want) {
				t.Fatalf("text line lacks %q: %s", want, line)
			}
		}
	}
}
