# Whole-system benchmark (bench/run.sh): the mock upstream direct, gptapi, an
# nginx proxy_pass baseline and a bare fasthttp proxy, side by side. Included
# by the top Makefile.
BENCH_RUNS ?= 3

.PHONY: bench bench-quick

## bench: full benchmark, BENCH_RUNS runs (medians); results in bench/results/
bench:
	GO=$(GO) bash bench/run.sh -runs $(BENCH_RUNS)

## bench-quick: the same pipeline in under a minute, correctness only
bench-quick:
	GO=$(GO) bash bench/run.sh -quick
