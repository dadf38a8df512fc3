# gptapi — the two commands a newcomer needs: `make run` and `make test`.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
CONFIG  ?= configs/config.yaml
MOCKS   ?= 127.0.0.1:9001,127.0.0.1:9002,127.0.0.1:9003

export CGO_ENABLED := 1
.DEFAULT_GOAL := build

# Per-arch release builds and ARM proof (build/), load benchmarks (bench/).
-include build/build.mk
-include bench/bench.mk
-include fleetdb.mk
-include bench/fleet.mk

.PHONY: all build mockllm run test test-unit test-e2e vet fmt deps clean

all: build

## build: the native binary in bin/gptapi
build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/gptapi ./cmd/gptapi

mockllm:
	$(GO) build -trimpath -o bin/mockllm ./bench/mockllm

## run: a local mock fleet plus gptapi on :8080 with the shipped config; Ctrl-C stops both
run: build mockllm
	@echo "mock fleet on $(MOCKS); gptapi with $(CONFIG) — try:"
	@echo "  curl -s localhost:8080/v1/chat/completions -d '{\"model\":\"qwen-7b\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}'"
	@bin/mockllm -listen $(MOCKS) -chunk-delay 20ms & MOCK=$$!; \
	trap 'kill $$MOCK 2>/dev/null; wait $$MOCK 2>/dev/null' EXIT INT TERM; \
	bin/gptapi -config $(CONFIG)

## test: unit tests, the end-to-end runner against the real binary, the quick
## fleet routing run (bench/fleet.mk), then the arm64 binaries proven under
## qemu (build/build.mk)
test: deps vet test-unit test-e2e bench-fleet-quick test-arm64 pg-note

# staticcheck at a pinned version: `go run pkg@version` fetches it from the
# module proxy once and runs it from the build cache after, without adding the
# linter's own dependencies to go.mod.
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2

## vet: gofmt, go.mod and go.sum as `go mod tidy` leaves them, go vet, staticcheck
vet:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	@$(GO) mod tidy -diff >/dev/null || { echo "go.mod/go.sum are not tidy: run go mod tidy"; $(GO) mod tidy -diff; exit 1; }
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

test-unit:
	$(GO) test -count=1 -timeout 8m ./...

test-e2e: build
	python3 GPT_API_TESTS/test_runner_enhanced.py --api-version go --stage all --binary bin/gptapi

## deps: what the tests need, installed when missing (Debian)
APT_UPDATED := /tmp/.gptapi-apt-updated
define need
	@command -v $(1) >/dev/null 2>&1 || { \
	  [ -f $(APT_UPDATED) ] || { apt-get update -qq && touch $(APT_UPDATED); }; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) >/dev/null; }
endef

deps:
	$(call need,gcc,gcc)
	$(call need,python3,python3)
	$(call need,promtool,prometheus)
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  [ -f $(APT_UPDATED) ] || { apt-get update -qq && touch $(APT_UPDATED); }; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }
	$(call need,node,nodejs)
	$(call need,npm,npm)
	@# The official OpenAI SDK for GPT_API_TESTS/e2e_sdk.py, as its lock file pins it.
	@[ -d GPT_API_TESTS/sdk/node_modules/openai ] || \
	  npm ci --prefix GPT_API_TESTS/sdk --no-audit --no-fund --loglevel=error

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin dist data
