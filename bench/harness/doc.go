// Command harness is the whole-system benchmark: it starts the mock upstream
// (bench/mockllm), gptapi and an nginx proxy_pass baseline side by side, drives
// each of the three targets (direct = the mock itself, gptapi, nginx) with the
// same loads in the same run, and writes a Markdown report, its data as JSON
// and an SVG chart (bench/chart).
//
// Loads, per target: non-stream throughput with wrk; streamed
// throughput (20-chunk streams, closed loop); latency at a fixed arrival rate
// (open loop, counted from the intended send time); stream TTFT and
// inter-chunk gaps at a fixed stream rate with paced chunks. Over each load
// it charges the CPU time of each proxy's process tree, and of the mock's,
// to the requests answered, waiting until the process is idle again so that
// gptapi's record writing is counted. The time is the usage_usec of a
// cgroup v2 per target (the harness makes them and starts each process in
// its own), or, where cgroup v2 is missing or not writable, utime+stime
// from /proc/<pid>/stat of the process and its children.
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
