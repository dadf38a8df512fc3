// Command fleet is the routing benchmark behind `make bench-fleet`: it
// replays a Mooncake trace against a simulated fleet of eight vLLM servers
// (bench/fleetsim) through gptapi with each routing strategy, through a
// client-side round robin without gptapi, and through the precise-placement
// reference router, at several loads and KV capacities, and writes a report
// (Markdown, JSON and an SVG chart) of what a fleet operator reads: time to
// first token, time per output token, cache hit share.
//
// Every run starts a fresh simulator (cold caches) and fresh gptapi
// processes, so runs do not inherit each other's state. Times in the report
// are simulated: measured wall time multiplied by the simulator's speed.
// -quick runs one load, one capacity and a one-minute slice, and fails
// unless every request of every run succeeded and every figure is there.
package main
