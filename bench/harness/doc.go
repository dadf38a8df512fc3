// Command harness is the whole-system benchmark: it starts the mock upstream
// (bench/mockllm), gptapi and an nginx proxy_pass baseline side by side, drives
// each of the three targets (direct = the mock itself, gptapi, nginx) with the
// same loads in the same run, and writes a Markdown table and an SVG chart.
//
// Loads, per target: non-stream throughput with wrk and hey at a fixed
// concurrency; streamed throughput (20-chunk streams, closed loop); latency at
// a fixed arrival rate (open loop, counted from the intended send time);
// stream TTFT and inter-chunk gaps at a fixed stream rate with paced chunks;
// and the CPU time each proxy process spends per request, read from
// /proc/<pid>/stat over each load phase until the process is idle again (so
// gptapi's background record writing is counted).
//
// Correctness is checked in every mode and never timing: each answer is 200
// with a valid body, each stream has its 20 content events and one [DONE],
// and after SIGTERM gptapi's SQLite file holds exactly one record per request
// the generator sent through it. -quick runs the same pipeline in well under
// a minute for the end-to-end test; a failed check makes the exit status 1.
//
// The harness owns every process it starts: they are killed on exit, on
// SIGINT/SIGTERM, and (Pdeathsig) if the harness itself dies. Everything
// listens and connects on 127.0.0.1 only. bench/run.sh builds the binaries,
// installs the tools and runs this command; see bench/README.md.
package main
