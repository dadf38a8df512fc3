# Release builds per architecture (dist/), the arm64 proof under qemu-user, and
# the Debian toolchain both need, installed when missing. Included by the top
# Makefile, which defines GO, LDFLAGS (version and commit stamps) and
# CGO_ENABLED=1: go-sqlite3 is C, so every build here is a cgo build.
#
#   make dist            all four release binaries plus SHA256SUMS
#   make build-amd64-v3  dist/gptapi-linux-amd64-v3         (GOAMD64=v3: AVX2, simdjson)
#   make build-arm64     dist/gptapi-linux-arm64-v8.2       (GOARM64=v8.2, C code for tsv110)
#   make build-static    dist/gptapi-linux-*-static         (no shared libraries: any glibc)
#   make test-arm64      arm64 unit tests and an end-to-end smoke test under qemu
#   make glibc-floor     the oldest glibc each dynamic binary runs on
#   make verify-unit     systemd-analyze verify build/gptapi.service

DIST          ?= dist
ARM64_CC      ?= aarch64-linux-gnu-gcc
ARM64_SYSROOT ?= /usr/aarch64-linux-gnu
# The packages whose tests need nothing but loopback; run as arm64 under qemu.
ARM64_TEST_PKGS ?= ./selector ./sse ./logsink ./configs ./internal/...
# Kunpeng 920 is an ARMv8.2-A core; qemu's neoverse-n1 is the nearest model it
# has, so the proof fails if the binary needs anything newer than v8.2.
ARM64_QEMU_CPU ?= neoverse-n1
ARM64_TEST_SKIP ?=

BUILD_APT_STAMP := /tmp/.gptapi-apt-updated
GPTAPI_PKG      := ./cmd/gptapi

# Recursive (=) so they are looked up when a recipe runs, after the toolchain
# target installed what they probe.
ARM64_CFLAGS = $(shell $(ARM64_CC) -mcpu=tsv110 -E - </dev/null >/dev/null 2>&1 \
	&& echo '-O2 -mcpu=tsv110' || echo '-O2 -march=armv8.2-a')
AMD64_CFLAGS = $(shell $${CC:-gcc} -march=x86-64-v3 -E - </dev/null >/dev/null 2>&1 \
	&& echo '-O2 -march=x86-64-v3' || echo '-O2')
QEMU_ARM64 = $(shell command -v qemu-aarch64-static || command -v qemu-aarch64)

# Static builds: netgo/osusergo keep glibc's NSS (dlopen-only) out of the
# resolver and user lookups; sqlite_omit_load_extension drops SQLite's dlopen,
# which a static glibc binary could only satisfy with the build box's own libc.
STATIC_TAGS    := netgo,osusergo,sqlite_omit_load_extension
STATIC_LDFLAGS  = $(LDFLAGS) -linkmode external -extldflags -static

ENV_AMD64 = GOOS=linux GOARCH=amd64 GOAMD64=v3 CGO_ENABLED=1 CGO_CFLAGS='$(AMD64_CFLAGS)'
ENV_ARM64 = GOOS=linux GOARCH=arm64 GOARM64=v8.2 CGO_ENABLED=1 CC=$(ARM64_CC) CGO_CFLAGS='$(ARM64_CFLAGS)'

# build_apt installs Debian packages, running apt-get update once per machine
# (again if the package lists went stale since).
define build_apt
	{ echo "installing $(1)"; \
	  [ -f $(BUILD_APT_STAMP) ] || { apt-get update -qq && touch $(BUILD_APT_STAMP); }; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1) >/dev/null \
	  || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1) >/dev/null; }; }
endef

.PHONY: dist glibc-floor verify-unit build-amd64-v3 build-arm64 build-static build-amd64-v3-static build-arm64-static \
	toolchain-amd64 toolchain-arm64 qemu-arm64 smoke-tools \
	test-arm64 test-arm64-unit test-arm64-smoke

## dist: every release binary and their checksums
dist: build-amd64-v3 build-arm64 build-static
	cd $(DIST) && sha256sum gptapi-linux-* > SHA256SUMS
	@ls -l $(DIST)
	@$(MAKE) --no-print-directory glibc-floor

## glibc-floor: the oldest glibc each dynamic release binary runs on (its newest GLIBC_ symbol)
glibc-floor:
	@for f in $(DIST)/gptapi-linux-amd64-v3 $(DIST)/gptapi-linux-arm64-v8.2; do \
		[ -f $$f ] || continue; \
		echo "$$f needs glibc >= $$(objdump -T $$f | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n 1 | cut -d_ -f2)"; \
	done

## verify-unit: systemd-analyze verify of build/gptapi.service (skipped without systemd)
verify-unit: build
	@if command -v systemd-analyze >/dev/null 2>&1; then \
		d=$$(mktemp -d); \
		sed 's#/usr/local/bin/gptapi#$(CURDIR)/bin/gptapi#' build/gptapi.service >$$d/gptapi.service; \
		systemd-analyze verify $$d/gptapi.service; rc=$$?; rm -rf $$d; \
		[ $$rc = 0 ] && echo "build/gptapi.service: verified"; exit $$rc; \
	else echo "systemd-analyze not installed: build/gptapi.service not verified"; fi

build-amd64-v3: toolchain-amd64
	$(ENV_AMD64) $(GO) build -trimpath -ldflags '$(LDFLAGS)' \
		-o $(DIST)/gptapi-linux-amd64-v3 $(GPTAPI_PKG)

build-arm64: toolchain-arm64
	$(ENV_ARM64) $(GO) build -trimpath -ldflags '$(LDFLAGS)' \
		-o $(DIST)/gptapi-linux-arm64-v8.2 $(GPTAPI_PKG)

build-static: build-amd64-v3-static build-arm64-static

build-amd64-v3-static: toolchain-amd64
	$(ENV_AMD64) $(GO) build -trimpath -tags $(STATIC_TAGS) -ldflags '$(STATIC_LDFLAGS)' \
		-o $(DIST)/gptapi-linux-amd64-v3-static $(GPTAPI_PKG)
	@file $(DIST)/gptapi-linux-amd64-v3-static | grep -q 'statically linked' \
		|| { echo "$(DIST)/gptapi-linux-amd64-v3-static is not static"; exit 1; }

build-arm64-static: toolchain-arm64
	$(ENV_ARM64) $(GO) build -trimpath -tags $(STATIC_TAGS) -ldflags '$(STATIC_LDFLAGS)' \
		-o $(DIST)/gptapi-linux-arm64-v8.2-static $(GPTAPI_PKG)
	@file $(DIST)/gptapi-linux-arm64-v8.2-static | grep -q 'statically linked' \
		|| { echo "$(DIST)/gptapi-linux-arm64-v8.2-static is not static"; exit 1; }

# toolchain-amd64: gcc, the static libc (libc.a) and file(1).
toolchain-amd64:
	@command -v $${CC:-gcc} >/dev/null 2>&1 && [ -f /usr/lib/x86_64-linux-gnu/libc.a ] \
		|| $(call build_apt,gcc libc6-dev)
	@command -v file >/dev/null 2>&1 || $(call build_apt,file)

# toolchain-arm64: the aarch64 cross gcc and its glibc (headers, libc.so, libc.a).
toolchain-arm64:
	@command -v $(ARM64_CC) >/dev/null 2>&1 && [ -f $(ARM64_SYSROOT)/lib/libc.a ] \
		|| $(call build_apt,gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
	@command -v file >/dev/null 2>&1 || $(call build_apt,file)

qemu-arm64:
	@command -v qemu-aarch64-static >/dev/null 2>&1 || command -v qemu-aarch64 >/dev/null 2>&1 \
		|| $(call build_apt,qemu-user-static)

# smoke-tools: what build/arm64-smoke.sh drives the proxy and reads the records with.
smoke-tools:
	@command -v sqlite3 >/dev/null 2>&1 || $(call build_apt,sqlite3)
	@command -v curl >/dev/null 2>&1 || $(call build_apt,curl)
	@command -v python3 >/dev/null 2>&1 || $(call build_apt,python3)

## test-arm64: the arm64 build proven under qemu-user (unit tests, then end to end)
test-arm64: test-arm64-unit test-arm64-smoke

# -short: for tests that trim their work under it. ARM64_TEST_SKIP (a -skip
# regexp) leaves out a test too timing-sensitive for emulation on a busy box.
test-arm64-unit: toolchain-arm64 qemu-arm64
	$(ENV_ARM64) QEMU_CPU=$(ARM64_QEMU_CPU) $(GO) test -trimpath -count=1 -short -timeout 15m \
		$(if $(ARM64_TEST_SKIP),-skip '$(ARM64_TEST_SKIP)' )-exec '$(QEMU_ARM64) -L $(ARM64_SYSROOT)' $(ARM64_TEST_PKGS)

# The native mock upstream (top Makefile) is a cgo build too: gcc first.
mockllm: | toolchain-amd64

# The shipped fleet example must pass -check on the binary it is meant for.
test-arm64-smoke: build-arm64 build-arm64-static mockllm qemu-arm64 smoke-tools
	QEMU_CPU=$(ARM64_QEMU_CPU) $(QEMU_ARM64) $(DIST)/gptapi-linux-arm64-v8.2-static \
		-check -config build/fleet.example.yaml
	QEMU='$(QEMU_ARM64)' QEMU_CPU=$(ARM64_QEMU_CPU) ARM64_SYSROOT=$(ARM64_SYSROOT) \
		build/arm64-smoke.sh bin/mockllm \
		$(DIST)/gptapi-linux-arm64-v8.2 $(DIST)/gptapi-linux-arm64-v8.2-static
