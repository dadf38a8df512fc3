# Several gateways, one PostgreSQL (SPEC 4.8): `make run-fleet` starts a
# local PostgreSQL, the mock fleet and two gptapi nodes (node-a on :8081,
# node-b on :8082) that record into one table; Ctrl-C stops everything.
# Included by the Makefile.

FLEET_DIR     ?= /tmp/gptapi-run-fleet
FLEET_PG_PORT ?= 55432
PG_BIN        := $(lastword $(sort $(wildcard /usr/lib/postgresql/*/bin)))
FLEET_DSN     := postgres://postgres@127.0.0.1:$(FLEET_PG_PORT)/gptapi?sslmode=disable

.PHONY: run-fleet pg-note

## run-fleet: local PostgreSQL + mock fleet + two gptapi nodes writing to it
run-fleet: deps build mockllm
	@test -n "$(PG_BIN)" || { echo "PostgreSQL not found: make deps installs Debian's postgresql"; exit 1; }
	@set -e; mkdir -p $(FLEET_DIR); \
	RUNAS=""; if [ "$$(id -u)" = 0 ]; then RUNAS="runuser -u postgres --"; chown postgres $(FLEET_DIR); fi; \
	if [ ! -f $(FLEET_DIR)/pg/PG_VERSION ]; then $$RUNAS $(PG_BIN)/initdb -D $(FLEET_DIR)/pg -A trust -U postgres -E UTF8 >/dev/null; fi; \
	$$RUNAS $(PG_BIN)/pg_ctl -D $(FLEET_DIR)/pg -l $(FLEET_DIR)/pg/log -w \
	  -o "-p $(FLEET_PG_PORT) -c listen_addresses=127.0.0.1 -c unix_socket_directories=$(FLEET_DIR)/pg" start >/dev/null; \
	psql -X -q -h 127.0.0.1 -p $(FLEET_PG_PORT) -U postgres -d postgres -tc "SELECT 1 FROM pg_database WHERE datname='gptapi'" | grep -q 1 || \
	  psql -X -q -h 127.0.0.1 -p $(FLEET_PG_PORT) -U postgres -d postgres -c "CREATE DATABASE gptapi"; \
	for n in a:8081 b:8082; do node=$${n%%:*}; port=$${n##*:}; mkdir -p data/node-$$node; \
	  sed -e "s|^  listen: .*|  listen: \"127.0.0.1:$$port\"|" \
	      -e "s|^  path: data/gptapi.db.*|  path: data/node-$$node/gptapi.db|" \
	      -e "s|^  spill_dir: .*|  spill_dir: data/node-$$node/spill|" \
	      -e "s|^  driver: sqlite.*|  driver: postgres|" \
	      -e "s|^  dsn: \"\".*|  dsn: \"$(FLEET_DSN)\"|" \
	      -e "s|^  node: \"\".*|  node: node-$$node|" $(CONFIG) > data/node-$$node/config.yaml; done
	@echo "PostgreSQL on 127.0.0.1:$(FLEET_PG_PORT) (data $(FLEET_DIR)/pg); mock fleet on $(MOCKS); gptapi node-a :8081, node-b :8082 — try:"
	@echo "  curl -s localhost:8081/v1/chat/completions -d '{\"model\":\"qwen-7b\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}'"
	@echo "  curl -s localhost:8082/v1/chat/completions -d '{\"model\":\"qwen-7b\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}'"
	@echo "  psql -h 127.0.0.1 -p $(FLEET_PG_PORT) -U postgres gptapi -c 'SELECT node, count(*) FROM requests GROUP BY node'"
	@bin/mockllm -listen $(MOCKS) -chunk-delay 20ms & MOCK=$$!; \
	bin/gptapi -config data/node-a/config.yaml & A=$$!; \
	bin/gptapi -config data/node-b/config.yaml & B=$$!; \
	RUNAS=""; if [ "$$(id -u)" = 0 ]; then RUNAS="runuser -u postgres --"; fi; \
	trap 'kill $$A $$B 2>/dev/null; wait $$A $$B 2>/dev/null; kill $$MOCK 2>/dev/null; $$RUNAS $(PG_BIN)/pg_ctl -D $(FLEET_DIR)/pg -m fast -w stop >/dev/null 2>&1' EXIT INT TERM; \
	wait $$A $$B

# pg-note: the last word of make test on whether the PostgreSQL store ran
pg-note:
	@if [ -n "$(PG_BIN)" ]; then echo "PostgreSQL store tests: ran against a local PostgreSQL ($(PG_BIN))"; \
	else echo "PostgreSQL store tests: SKIPPED, postgresql is not installed (make deps installs it)"; fi
