package sse

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// writeRecorder keeps each Write apart, as fasthttp makes each one an HTTP
// chunk.
type writeRecorder struct {
	writes [][]byte
	at     []time.Time
	failAt int // fail the failAt-th write (1-based); 0 = never
	err    error
	seen   chan []byte // if set, gets a copy of each write
}

func (w *writeRecorder) Write(p []byte) (int, error) {
	if w.failAt > 0 && len(w.writes)+1 == w.failAt {
		w.writes = append(w.writes, nil)
		return 0, w.err
	}
	c := bytes.Clone(p)
	w.writes = append(w.writes, c)
	w.at = append(w.at, time.Now())
	if w.seen != nil {
		w.seen <- c
	}
	return len(p), nil
}

func (w *writeRecorder) all() []byte { return bytes.Join(w.writes, nil) }

// endsWithBlankLine reports whether b ends with a complete event.
func endsWithBlankLine(b []byte) bool {
	for _, end := range []string{"\n\n", "\r\n\r\n", "\r\r"} {
		if bytes.HasSuffix(b, []byte(end)) {
			return true
		}
	}
	return false
}

func errorEvent(dst []byte, err error) []byte {
	return fmt.Appendf(dst, "data: {\"error\":{\"message\":%q}}\n\n", err.Error())
}

// runRelay relays src through a fresh Relay and returns it with the writes.
func runRelay(t *testing.T, src io.Reader, prefix, model string, hide bool) (*Relay, *writeRecorder) {
	t.Helper()
	r := &Relay{ErrorEvent: errorEvent}
	r.Reset()
	r.Rewriter.Reset(prefix, model, hide)
	if err := r.Start(src); err != nil {
		t.Fatalf("Start: %s", err)
	}
	w := &writeRecorder{}
	if _, err := r.WriteTo(w); err != nil {
		t.Fatalf("WriteTo: %s", err)
	}
	return r, w
}

func TestRelayReplay(t *testing.T) {
	for _, s := range testStreams(t) {
		t.Run(s.name, func(t *testing.T) {
			readers := map[string]func() io.Reader{
				"whole":   func() io.Reader { return bytes.NewReader(s.data) },
				"1-byte":  func() io.Reader { return &chunkReader{b: s.data, n: 1} },
				"13-byte": func() io.Reader { return &chunkReader{b: s.data, n: 13} },
				"500":     func() io.Reader { return &chunkReader{b: s.data, n: 500} },
			}
			for rname, src := range readers {
				r, w := runRelay(t, src(), "", "", false)
				if got := w.all(); !bytes.Equal(got, s.data) {
					t.Fatalf("%s: output differs from input\ngot:  %q\nwant: %q", rname, got, s.data)
				}
				for i, b := range w.writes {
					if !endsWithBlankLine(b) {
						t.Fatalf("%s: write %d does not end with a whole event: %q", rname, i, b)
					}
				}
				wantDone := bytes.Contains(s.data, []byte("data: [DONE]"))
				var wantErr error
				if !wantDone {
					wantErr = ErrUpstreamError // only groq's, which ends with its own error event
				}
				if r.Done != wantDone || r.ReadErr != wantErr || r.WriteErr != nil || r.End.IsZero() {
					t.Fatalf("%s: Done %v ReadErr %v WriteErr %v End %v", rname, r.Done, r.ReadErr, r.WriteErr, r.End)
				}
				if n := len(scanAll(t, bytes.NewReader(s.data))); r.Events != n {
					t.Fatalf("%s: %d events relayed, want %d", rname, r.Events, n)
				}
				if r.FirstContent.IsZero() || r.FirstContent.After(r.End) {
					t.Fatalf("%s: FirstContent %v, End %v", rname, r.FirstContent, r.End)
				}
			}
		})
	}
}

func TestRelayCoalesces(t *testing.T) {
	// Events that arrive in one read leave in one write; more reads, more
	// writes.
	in := readTestdata(t, "vllm-chat.sse")
	_, w := runRelay(t, bytes.NewReader(in), "", "", false)
	if len(w.writes) > 1+len(in)/initialBufSize {
		t.Fatalf("%d writes for %d bytes read whole", len(w.writes), len(in))
	}
	_, w = runRelay(t, &chunkReader{b: in, n: 1}, "", "", false)
	if n := len(scanAll(t, bytes.NewReader(in))); len(w.writes) != n {
		t.Fatalf("%d writes for %d events read byte by byte", len(w.writes), n)
	}
}

func TestRelayRewrites(t *testing.T) {
	for _, s := range testStreams(t) {
		t.Run(s.name, func(t *testing.T) {
			for _, hide := range []bool{false, true} {
				_, w := runRelay(t, &chunkReader{b: s.data, n: 777}, "\"Pre\\fix\n🙂 ", "asked/model", hide)
				in := scanAll(t, bytes.NewReader(s.data))
				out := scanAll(t, bytes.NewReader(w.all()))
				checkRewritten(t, newOracle(t, "\"Pre\\fix\n🙂 ", "asked/model", hide), in, out, true)
			}
		})
	}
}

func TestRelayNeverWaits(t *testing.T) {
	// Each event must reach the caller before the next one is sent.
	in := readTestdata(t, "openrouter-comments-error.sse")
	events := scanAll(t, bytes.NewReader(in))
	pr, pw := io.Pipe()
	r := &Relay{}
	r.Reset()
	started := make(chan error, 1)
	go func() { started <- r.Start(pr) }()
	w := &writeRecorder{seen: make(chan []byte, len(events))}
	done := make(chan error, 1)
	for i, e := range events {
		if _, err := pw.Write([]byte(e.Raw)); err != nil {
			t.Fatal(err)
		}
		if !e.HasData {
			continue // comments wait in Start for the first data event
		}
		if started != nil {
			if err := <-started; err != nil {
				t.Fatal(err)
			}
			started = nil
			go func() {
				_, err := r.WriteTo(w)
				done <- err
			}()
		}
		select {
		case got := <-w.seen:
			if !bytes.HasSuffix(got, []byte(e.Raw)) {
				t.Fatalf("write %q does not end with event %d", got, i)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("event %d was not written before the next one arrived", i)
		}
	}
	pw.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(w.all(), in) {
		t.Fatalf("output differs from input")
	}
}

// The upstream breaks after k bytes, with a read error or as a plain EOF
// (fasthttp reports a connection dropped inside a chunked body so): the
// caller gets the complete events before the break and the error event,
// and no [DONE]. An event the break cut is dropped, as SSE drops it, so the
// error event is one of its own and the caller never gets half a JSON
// object; cut inside the first event, the attempt fails before anything
// reached the caller.
func TestRelayBreak(t *testing.T) {
	boom := errors.New("connection reset")
	for _, end := range []struct {
		name string
		src  func([]byte) io.Reader
		err  error
	}{
		{"read error", func(b []byte) io.Reader { return &failReader{b: b, n: 50, err: boom} }, boom},
		{"EOF", func(b []byte) io.Reader { return bytes.NewReader(b) }, io.ErrUnexpectedEOF},
	} {
		for _, name := range []string{"vllm-chat.sse", "openrouter-comments-error.sse"} {
			in := readTestdata(t, name)
			firstData := bytes.Index(in, []byte("data: "))
			firstEnd := firstData + bytes.Index(in[firstData:], []byte("\n\n")) + 2
			for k := 0; k < len(in); k += 31 {
				if end.err == io.ErrUnexpectedEOF && k > len(in)-len("data: [DONE]\n\n") {
					continue // a [DONE] that lacks its blank line ends the stream whole (below)
				}
				r := &Relay{ErrorEvent: errorEvent}
				r.Reset()
				err := r.Start(end.src(in[:k]))
				if k < firstEnd {
					if err != end.err {
						t.Fatalf("%s, %s k=%d: Start error %v, want %v", end.name, name, k, err, end.err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("%s, %s k=%d: Start: %s", end.name, name, k, err)
				}
				w := &writeRecorder{}
				if _, err := r.WriteTo(w); err != nil {
					t.Fatalf("%s, %s k=%d: WriteTo returned %v", end.name, name, k, err)
				}
				complete := in[:bytes.LastIndex(in[:k], []byte("\n\n"))+2]
				want := errorEvent(bytes.Clone(complete), end.err)
				if got := w.all(); !bytes.Equal(got, want) {
					t.Fatalf("%s, %s k=%d:\ngot:  %q\nwant: %q", end.name, name, k, got, want)
				}
				if r.ReadErr != end.err || r.Done || r.End.IsZero() {
					t.Fatalf("%s, %s k=%d: ReadErr %v Done %v End %v", end.name, name, k, r.ReadErr, r.Done, r.End)
				}
			}
		}
	}
	// A [DONE] that lacks only its blank line ends the stream as a whole
	// one would.
	for _, end := range []string{"data: [DONE]", "data: [DONE]\n", "data: [DONE]\r\n"} {
		r, w := runRelay(t, strings.NewReader("data: {\"choices\":[]}\n\n"+end), "", "", false)
		if want := "data: {\"choices\":[]}\n\ndata: [DONE]\n\n"; string(w.all()) != want || !r.Done || r.ReadErr != nil {
			t.Fatalf("%q: out %q, Done %v, ReadErr %v", end, w.all(), r.Done, r.ReadErr)
		}
	}
}

type timeoutError struct{}

func (timeoutError) Error() string   { return "i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

func TestRelayTimeoutKept(t *testing.T) {
	in := readTestdata(t, "vllm-chat.sse")
	r := &Relay{ErrorEvent: errorEvent}
	r.Reset()
	if err := r.Start(&failReader{b: in[:1000], err: timeoutError{}}); err != nil {
		t.Fatal(err)
	}
	w := &writeRecorder{}
	if _, err := r.WriteTo(w); err != nil {
		t.Fatal(err)
	}
	var ne net.Error
	if !errors.As(r.ReadErr, &ne) || !ne.Timeout() {
		t.Fatalf("ReadErr %v lost its Timeout()", r.ReadErr)
	}
	// The error event comes last and carries the error.
	evs := scanAll(t, bytes.NewReader(w.all()))
	last := evs[len(evs)-1]
	m, ok := decodeObject([]byte(last.Data))
	if !ok || m["error"].(map[string]any)["message"] != "i/o timeout" {
		t.Fatalf("bad error event %q", last.Raw)
	}
}

func TestRelayWriterFails(t *testing.T) {
	// After a failed write the relay returns at once and reads no more.
	in := readTestdata(t, "openai-chat-usage.sse")
	gone := errors.New("broken pipe")
	for failAt := 1; failAt <= 4; failAt++ {
		src := &chunkReader{b: in, n: 1}
		r := &Relay{}
		r.Reset()
		if err := r.Start(src); err != nil {
			t.Fatal(err)
		}
		var readsAtFailure int
		w := &writeRecorder{failAt: failAt, err: gone}
		ww := writerFunc(func(p []byte) (int, error) {
			n, err := w.Write(p)
			if err != nil {
				readsAtFailure = src.reads
			}
			return n, err
		})
		n, err := r.WriteTo(ww)
		if err != gone || r.WriteErr != gone {
			t.Fatalf("failAt %d: WriteTo error %v, WriteErr %v", failAt, err, r.WriteErr)
		}
		if src.reads != readsAtFailure {
			t.Fatalf("failAt %d: %d reads after the write failed", failAt, src.reads-readsAtFailure)
		}
		if len(w.writes) != failAt || n != int64(len(w.all())) {
			t.Fatalf("failAt %d: %d writes, %d bytes counted", failAt, len(w.writes), n)
		}
		if r.End.IsZero() || r.ReadErr != nil {
			t.Fatalf("failAt %d: End %v ReadErr %v", failAt, r.End, r.ReadErr)
		}
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestRelayStartErrors(t *testing.T) {
	boom := errors.New("refused")
	f := func(src io.Reader, want error) {
		t.Helper()
		r := &Relay{}
		r.Reset()
		if err := r.Start(src); err != want {
			t.Fatalf("Start error %v, want %v", err, want)
		}
	}
	f(strings.NewReader(""), io.ErrUnexpectedEOF)
	f(strings.NewReader(": OPENROUTER PROCESSING\n\n: OPENROUTER PROCESSING\n\n"), io.ErrUnexpectedEOF)
	f(&failReader{b: []byte(": OPENROUTER PROCESSING\n\n"), err: boom}, boom)
	f(&failReader{b: []byte("data: {\"choices\":[]"), err: boom}, boom)
	f(strings.NewReader("data: {}\n\n"), nil)
	// Keep-alives before the first event are bounded: just under the bound
	// passes, one more comment fails the attempt instead of piling up.
	ping := ":\n\n"
	under := strings.Repeat(ping, MaxPreambleBytes/len(ping))
	f(strings.NewReader(under+"data: {}\n\n"), nil)
	f(strings.NewReader(under+ping+"data: {}\n\n"), ErrPreambleTooLarge)
	f(&endlessReader{s: ping}, ErrPreambleTooLarge)
}

// endlessReader repeats s forever.
type endlessReader struct{ s string }

func (e *endlessReader) Read(p []byte) (int, error) {
	n := 0
	for n+len(e.s) <= len(p) {
		n += copy(p[n:], e.s)
	}
	return n, nil
}

// An upstream that keeps sending usage chunks past the collect limit grows
// the record by at most the usage slack.
func TestRelayCollectUsageBounded(t *testing.T) {
	usage := "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3}}\n\n"
	in := "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n" + strings.Repeat(usage, 20000) + "data: [DONE]\n\n"
	r := &Relay{CollectLimit: 1024}
	r.Reset()
	r.Rewriter.Reset("", "", true)
	if err := r.Start(strings.NewReader(in)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.WriteTo(io.Discard); err != nil {
		t.Fatal(err)
	}
	if !r.CollectCut || len(r.Collect) > 1024+maxUsageSlack+len(usage) {
		t.Fatalf("CollectCut %v, %d bytes collected from %d of usage chunks", r.CollectCut, len(r.Collect), 20000*len(usage))
	}
}

func TestRelayStartKeepsComments(t *testing.T) {
	// Start reads past the comments to the first data event; nothing is
	// written until WriteTo, and then the comments come first.
	in := readTestdata(t, "openrouter-comments-error.sse")
	r := &Relay{}
	r.Reset()
	src := &chunkReader{b: in, n: 30}
	if err := r.Start(src); err != nil {
		t.Fatal(err)
	}
	firstData := bytes.Index(in, []byte("\ndata: ")) + 1
	if read := len(in) - len(src.b); read < firstData {
		t.Fatalf("Start returned after %d bytes, before the first data event at %d", read, firstData)
	}
	w := &writeRecorder{}
	if _, err := r.WriteTo(w); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(w.all(), in) {
		t.Fatalf("output differs from input")
	}
	if !bytes.HasPrefix(w.writes[0], in[:firstData]) {
		t.Fatalf("first write does not start with the comments: %q", w.writes[0])
	}
}

func TestRelayRetryStart(t *testing.T) {
	// A Start that failed leaves nothing behind for the next upstream: the
	// prefix is given again and Collect starts empty.
	r := &Relay{}
	r.Reset()
	r.Rewriter.Reset(">", "", false)
	chunk := "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n"
	if err := r.Start(&failReader{b: []byte(chunk), err: io.ErrUnexpectedEOF}); err != nil {
		t.Fatal(err)
	}
	if err := r.Start(strings.NewReader(chunk + "data: [DONE]\n\n")); err != nil {
		t.Fatal(err)
	}
	w := &writeRecorder{}
	if _, err := r.WriteTo(w); err != nil {
		t.Fatal(err)
	}
	want := "data: {\"choices\":[{\"delta\":{\"content\":\">a\"}}]}\n\ndata: [DONE]\n\n"
	if string(w.all()) != want {
		t.Fatalf("got %q, want %q", w.all(), want)
	}
	if want := "{\"choices\":[{\"delta\":{\"content\":\">a\"}}]}\n"; string(r.Collect) != want {
		t.Fatalf("Collect %q, want %q", r.Collect, want)
	}
}

func TestRelayCollect(t *testing.T) {
	for _, s := range testStreams(t) {
		t.Run(s.name, func(t *testing.T) {
			// Collect holds the payloads the caller got, without [DONE].
			shown, w := runRelay(t, bytes.NewReader(s.data), "> ", "asked", false)
			var want []byte
			for _, e := range scanAll(t, bytes.NewReader(w.all())) {
				if e.HasData && e.Data != "[DONE]" {
					want = append(want, e.Data...)
					want = append(want, '\n')
				}
			}
			if !bytes.Equal(shown.Collect, want) {
				t.Fatalf("Collect:\n%s\nwant:\n%s", shown.Collect, want)
			}
			// A hidden usage chunk is still collected.
			hidden, w2 := runRelay(t, bytes.NewReader(s.data), "> ", "asked", true)
			if !bytes.Equal(hidden.Collect, shown.Collect) {
				t.Fatalf("Collect with the usage chunk hidden:\n%s\nwant:\n%s", hidden.Collect, shown.Collect)
			}
			if bytes.Contains(s.data, []byte(`"choices":[],"usage":{`)) == bytes.Equal(w.all(), w2.all()) {
				t.Fatalf("hiding the usage chunk changed the output %v", bytes.Equal(w.all(), w2.all()))
			}
			if shown.CollectCut || hidden.CollectCut {
				t.Fatalf("CollectCut without a limit")
			}
		})
	}
}

func TestRelayCollectLimit(t *testing.T) {
	in := readTestdata(t, "openai-chat-usage.sse")
	full, _ := runRelay(t, bytes.NewReader(in), "", "", true)
	lines := bytes.SplitAfter(full.Collect, []byte("\n"))
	usageLine := lines[len(lines)-2] // the last is empty
	if !bytes.Contains(usageLine, []byte(`"usage":{`)) {
		t.Fatalf("last collected chunk is not the usage chunk: %s", usageLine)
	}
	limit := len(lines[0]) + len(lines[1]) + len(lines[2])/2
	r := &Relay{CollectLimit: limit}
	r.Reset()
	r.Rewriter.Reset("", "", true)
	if err := r.Start(bytes.NewReader(in)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.WriteTo(io.Discard); err != nil {
		t.Fatal(err)
	}
	want := slicesConcat(lines[0], lines[1], usageLine)
	if !r.CollectCut || !bytes.Equal(r.Collect, want) {
		t.Fatalf("CollectCut %v, Collect:\n%s\nwant:\n%s", r.CollectCut, r.Collect, want)
	}
	if r.CollectLimit != limit {
		t.Fatalf("CollectLimit changed")
	}
}

func slicesConcat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

// FirstContent is when the first chunk with content was written, not when
// the role chunk before it was. In a synctest bubble the 20 ms between them
// pass at once and exactly, and io.Pipe blocks durably.
func TestRelayFirstContent(t *testing.T) { synctest.Test(t, testRelayFirstContent) }

func testRelayFirstContent(t *testing.T) {
	role := "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n"
	content := "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n"
	pr, pw := io.Pipe()
	r := &Relay{}
	r.Reset()
	go func() {
		pw.Write([]byte(": keep-alive\n\n" + role))
		time.Sleep(20 * time.Millisecond)
		pw.Write([]byte(content))
		pw.Write([]byte("data: [DONE]\n\n"))
		pw.Close()
	}()
	if err := r.Start(pr); err != nil {
		t.Fatal(err)
	}
	w := &writeRecorder{}
	if _, err := r.WriteTo(w); err != nil {
		t.Fatal(err)
	}
	if len(w.writes) != 3 {
		t.Fatalf("%d writes: %q", len(w.writes), w.writes)
	}
	if !r.FirstContent.Equal(w.at[1]) || w.at[1].Sub(w.at[0]) != 20*time.Millisecond {
		t.Fatalf("FirstContent %v, want the content write %v, 20ms after the role write %v", r.FirstContent, w.at[1], w.at[0])
	}
	if r.End.Before(r.FirstContent) || !r.Done || r.Events != 4 {
		t.Fatalf("End %v Done %v Events %d", r.End, r.Done, r.Events)
	}
	// A stream without content has no FirstContent.
	r2, _ := runRelay(t, strings.NewReader(role+"data: [DONE]\n\n"), "", "", false)
	if !r2.FirstContent.IsZero() {
		t.Fatalf("FirstContent set without content")
	}
}

// Nothing after [DONE] reaches the caller, but the upstream body is read to
// its end so its connection can be pooled.
func TestRelayDrainsAfterDone(t *testing.T) {
	in := "data: {}\n\ndata: [DONE]\n\ndata: {\"late\":1}\n\n"
	src := &chunkReader{b: []byte(in), n: 12}
	r, w := runRelay(t, src, "", "", false)
	if string(w.all()) != "data: {}\n\ndata: [DONE]\n\n" || !r.Done || r.ReadErr != nil || r.DrainErr != nil {
		t.Fatalf("got %q, Done %v ReadErr %v DrainErr %v", w.all(), r.Done, r.ReadErr, r.DrainErr)
	}
	if rest := len(src.b); rest != 0 {
		t.Fatalf("%d bytes of the upstream body left unread", rest)
	}
	if strings.Contains(string(r.Collect), "late") {
		t.Fatalf("an event after [DONE] was collected: %q", r.Collect)
	}
}

// A stream that ends without [DONE] is a break (fasthttp gives a dropped
// chunked body as a plain EOF); one that ended with the upstream's own error
// event gets no second error event.
func TestRelayEndWithoutDone(t *testing.T) {
	r, w := runRelay(t, strings.NewReader("data: {\"choices\":[]}\n\n"), "", "", false)
	if r.ReadErr != io.ErrUnexpectedEOF || !strings.Contains(string(w.all()), `"error"`) {
		t.Fatalf("ReadErr %v, out %q", r.ReadErr, w.all())
	}
	in := "data: {\"choices\":[]}\n\nevent: error\ndata: {\"error\":{\"message\":\"boom\"}}\n\n"
	r, w = runRelay(t, strings.NewReader(in), "", "", false)
	if r.ReadErr != ErrUpstreamError || string(w.all()) != in {
		t.Fatalf("ReadErr %v, out %q", r.ReadErr, w.all())
	}
}

func TestRelayRead(t *testing.T) {
	// Read gives the same bytes as WriteTo.
	for _, s := range testStreams(t) {
		for _, hide := range []bool{false, true} {
			_, w := runRelay(t, &chunkReader{b: s.data, n: 100}, "> ", "m", hide)
			r := &Relay{}
			r.Reset()
			r.Rewriter.Reset("> ", "m", hide)
			if err := r.Start(&chunkReader{b: s.data, n: 100}); err != nil {
				t.Fatal(err)
			}
			var got []byte
			buf := make([]byte, 37)
			for {
				n, err := r.Read(buf)
				got = append(got, buf[:n]...)
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(got, w.all()) {
				t.Fatalf("%s: Read gives other bytes than WriteTo", s.name)
			}
			if r.End.IsZero() || r.FirstContent.IsZero() {
				t.Fatalf("%s: End %v FirstContent %v", s.name, r.End, r.FirstContent)
			}
		}
	}
}

func TestRelayNotStarted(t *testing.T) {
	var r Relay
	if _, err := r.WriteTo(io.Discard); err != errNotStarted {
		t.Fatalf("WriteTo before Start: %v", err)
	}
	if _, err := r.Read(make([]byte, 8)); err != errNotStarted {
		t.Fatalf("Read before Start: %v", err)
	}
	if !r.SupportsBodyWriteTo() {
		t.Fatalf("the relay opts in to WriteTo")
	}
}

func TestRelayReset(t *testing.T) {
	r, _ := runRelay(t, bytes.NewReader(readTestdata(t, "openai-chat-usage.sse")), ">", "m", true)
	r.CollectLimit = 100
	r.Reset()
	if len(r.Collect) != 0 || r.Done || r.Events != 0 || !r.End.IsZero() || !r.FirstContent.IsZero() ||
		r.CollectCut || r.ReadErr != nil || r.WriteErr != nil {
		t.Fatalf("Reset left state: %+v", r)
	}
	if r.ErrorEvent == nil || r.CollectLimit != 100 {
		t.Fatalf("Reset dropped ErrorEvent or CollectLimit")
	}
	if cap(r.Collect) == 0 {
		t.Fatalf("Reset dropped the Collect buffer")
	}
	// The Rewriter changes nothing after Reset.
	in := readTestdata(t, "openai-chat-usage.sse")
	if err := r.Start(bytes.NewReader(in)); err != nil {
		t.Fatal(err)
	}
	w := &writeRecorder{}
	r.WriteTo(w)
	if !bytes.Equal(w.all(), in) {
		t.Fatalf("Reset kept the previous stream's rewrites")
	}
}

func TestRelayResetDropsHugeBuffers(t *testing.T) {
	huge := "data: {\"choices\":[{\"delta\":{\"content\":\"" + strings.Repeat("x", 3<<20) + "\"}}]}\n\n"
	r, _ := runRelay(t, strings.NewReader(huge), "", "", false)
	if cap(r.sc.buf) <= maxKeptBuf || cap(r.Collect) <= maxKeptBuf {
		t.Fatalf("test setup: buffers did not grow")
	}
	r.Reset()
	if cap(r.sc.buf) > maxKeptBuf || cap(r.Collect) > maxKeptBuf || cap(r.out) > maxKeptBuf {
		t.Fatalf("Reset kept huge buffers: %d %d %d", cap(r.sc.buf), cap(r.Collect), cap(r.out))
	}
}

// pieceSource hands out one piece per Read, as fasthttp's chunked body
// reader returns one HTTP chunk per Read. Pieces up to a burst end are
// "already in memory": Buffered reports them; at a burst end it reports 0,
// as for bytes still on the network.
type pieceSource struct {
	pieces    [][]byte
	burstEnds map[int]bool // after piece i, the burst ends
	next      int
}

func (s *pieceSource) Read(p []byte) (int, error) {
	if s.next == len(s.pieces) {
		return 0, io.EOF
	}
	n := copy(p, s.pieces[s.next])
	s.pieces[s.next] = s.pieces[s.next][n:]
	if len(s.pieces[s.next]) == 0 {
		s.next++
	}
	return n, nil
}

func (s *pieceSource) Buffered() int {
	if s.next == len(s.pieces) || (s.next > 0 && s.burstEnds[s.next-1]) {
		return 0
	}
	return len(s.pieces[s.next])
}

func TestRelayCoalescesBufferedSource(t *testing.T) {
	in := readTestdata(t, "vllm-chat.sse")
	events := scanAll(t, bytes.NewReader(in))
	pieces := func() [][]byte {
		var ps [][]byte
		for _, e := range events {
			ps = append(ps, []byte(e.Raw))
		}
		return ps
	}
	mid := len(events) / 2
	for _, tc := range []struct {
		name      string
		burstEnds map[int]bool
		hide      bool // hide Buffered: a plain reader
		writes    int
	}{
		{"one burst", nil, false, 1},
		{"two bursts", map[int]bool{mid: true}, false, 2},
		{"source cannot tell", nil, true, len(events)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := &pieceSource{pieces: pieces(), burstEnds: tc.burstEnds}
			var r io.Reader = src
			if tc.hide {
				r = struct{ io.Reader }{src} // hide Buffered
			}
			_, w := runRelay(t, r, "", "", false)
			if len(w.writes) != tc.writes {
				t.Errorf("%d writes for %d events, want %d", len(w.writes), len(events), tc.writes)
			}
			if !bytes.Equal(w.all(), in) {
				t.Errorf("output differs from input")
			}
		})
	}
}
