// Package loadgen drives an OpenAI-compatible endpoint for the benchmark
// harness: open-loop at a fixed arrival rate, or closed-loop with a fixed
// number of workers, for plain and streamed chat answers.
//
// Open loop means a request leaves at its intended time whether or not the
// earlier ones have been answered, and its latency is counted from that
// intended time, so a stall of the server shows up in the percentiles instead
// of silently lowering the rate (coordinated omission). The pacer sleeps with
// nanosleep on its own OS thread (at nice -20 where allowed) and spins the
// last few microseconds, so the generator's own lateness stays far below the
// latencies it measures; that lateness is reported too (Result.Lag).
//
// Every answer is checked: status 200, a JSON object with choices for plain
// answers; for streams, the number of content events, nothing after a single
// trailing [DONE], no error event. Result.Failed counts what did not pass and
// Result.Errors keeps a sample of why.
//
// The client is fasthttp's HostClient with keep-alive connections; each
// request carries X-Request-Id = IDPrefix + sequence number, so the harness
// can find exactly these requests among gptapi's records.
package loadgen
