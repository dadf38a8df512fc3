# Routing benchmark: a Mooncake trace replayed through gptapi (each routing
# strategy) and two references onto a simulated vLLM fleet (bench/fleetsim).
# See bench/README.md. Included by the top Makefile.
FLEET_TRACE       ?= ../shared/testdata/traces/mooncake-conversation.jsonl
FLEET_QUICK_TRACE ?= bench/loadgen/testdata/mooncake-conversation-3min.jsonl

.PHONY: fleetsim bench-fleet bench-fleet-quick

fleetsim:
	$(GO) build -trimpath -o bin/fleetsim ./bench/fleetsim

## bench-fleet: six strategies x three loads x two KV sizes (~15 min); bench/results/fleet-latest.md, .json, .svg
bench-fleet: build fleetsim
	$(GO) run ./bench/fleet -trace $(FLEET_TRACE) -out bench/results

## bench-fleet-quick: the same pipeline on a one-minute slice (~30 s); fails on any error or missing figure
bench-fleet-quick: build fleetsim
	$(GO) run ./bench/fleet -quick -trace $(FLEET_QUICK_TRACE)
