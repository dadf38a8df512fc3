package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

// shutdownTimeout bounds the wait for running answers on SIGINT/SIGTERM;
// delays are cut short at once, so it is only reached by slow readers.
const shutdownTimeout = 5 * time.Second

func main() {
	o := defaultOptions()
	listen := flag.String("listen", "127.0.0.1:9001", "comma-separated addresses; one mock upstream per address, named mock-<port>")
	flag.IntVar(&o.chunks, "chunks", o.chunks, "content chunks per streamed answer")
	flag.IntVar(&o.words, "words", o.words, "content words per chunk")
	flag.DurationVar(&o.chunkDelay, "chunk-delay", o.chunkDelay, "pause between content chunks of a stream")
	flag.DurationVar(&o.ttfb, "ttfb", o.ttfb, "pause before the status line and headers")
	flag.DurationVar(&o.stall, "stall", o.stall, "hang this long before answering (every path but /health)")
	flag.BoolVar(&o.usage, "usage", o.usage, "report usage: always in JSON answers, in streams when stream_options.include_usage is true")
	flag.BoolVar(&o.toolCalls, "tool-calls", o.toolCalls, "answer chat with a tool call whose arguments stream over several chunks")
	flag.IntVar(&o.failStatus, "fail-status", o.failStatus, "answer this status with an OpenAI error body (0: never)")
	flag.Float64Var(&o.failRatio, "fail-ratio", o.failRatio, "share of requests answered -fail-status, 0..1")
	flag.IntVar(&o.breakAfter, "break-after", o.breakAfter, "close the connection after this many SSE events, without [DONE] (-1: never; JSON answers are cut in half)")
	flag.BoolVar(&o.quiet, "quiet", o.quiet, "print nothing")
	flag.Parse()
	if err := o.validate(); err != nil {
		fmt.Fprintf(os.Stderr, "mockllm: %s\n", err)
		os.Exit(1)
	}

	var mocks []*mock
	var lns []net.Listener
	for _, addr := range strings.Split(*listen, ",") {
		addr = strings.TrimSpace(addr)
		if addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			fmt.Fprintf(os.Stderr, "mockllm: cannot listen on %s: %s\n", addr, err)
			for _, l := range lns {
				l.Close()
			}
			os.Exit(2)
		}
		lns = append(lns, ln)
		mocks = append(mocks, newMock(ln.Addr(), o))
	}
	if len(mocks) == 0 {
		fmt.Fprintln(os.Stderr, "mockllm: -listen names no address")
		os.Exit(1)
	}

	errc := make(chan error, len(mocks))
	for i, m := range mocks {
		if !o.quiet {
			fmt.Printf("mockllm listening on %s\n", lns[i].Addr())
		}
		go func() { errc <- m.serve(lns[i]) }()
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case <-sig:
	case err := <-errc:
		fmt.Fprintf(os.Stderr, "mockllm: %s\n", err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, m := range mocks {
		wg.Go(func() { _ = m.shutdown(ctx) })
	}
	wg.Wait()
}

// validate reports the first flag value the mock cannot use.
func (o *options) validate() error {
	switch {
	case o.chunks < 0 || o.chunks > maxChunks:
		return fmt.Errorf("-chunks: want 0..%d, got %d", maxChunks, o.chunks)
	case o.words < 1 || o.words > maxWords:
		return fmt.Errorf("-words: want 1..%d, got %d", maxWords, o.words)
	case o.chunkDelay < 0, o.ttfb < 0, o.stall < 0:
		return errors.New("-chunk-delay, -ttfb, -stall: must not be negative")
	case o.failStatus != 0 && (o.failStatus < 300 || o.failStatus > 599):
		return fmt.Errorf("-fail-status: want 0 or 300..599, got %d", o.failStatus)
	case o.failRatio < 0 || o.failRatio > 1:
		return fmt.Errorf("-fail-ratio: want 0..1, got %g", o.failRatio)
	case o.breakAfter < -1 || o.breakAfter > maxChunks:
		return fmt.Errorf("-break-after: want -1..%d, got %d", maxChunks, o.breakAfter)
	}
	return nil
}
