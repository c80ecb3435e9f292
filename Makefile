# procflow — every task a developer or CI runs. `make ci` is exactly what CI runs.
SHELL := /bin/bash
CARGO ?= cargo
DATA_DIR ?= $(CURDIR)/.procflow
BIN := target/release/procflow
VENV := .venv-deploy

.PHONY: docs all build release run test lint fmt ci bench bench-smoke image deploy-check clean

all: build

build:
	$(CARGO) build --all-targets

release:
	$(CARGO) build --release --bins

# Aggregator (embedded store) + collector on this host + live tail. Ctrl-C stops all three.
run: release
	@DATA_DIR="$(DATA_DIR)" ./scripts/run-local.sh

# The README's test command: unit, integration (real sockets, processes, namespaces,
# gRPC, SQLite, PostgreSQL, the console in Debian's chromium) and the benchmark smoke run.
# The browser and playwright-core are installed first when missing (the browser test also
# does it); scripts/pg.sh installs Debian's PostgreSQL when missing, runs a throwaway server
# for the tests on a loopback port and stops it after.
# Tests that measure how fast the collector reacts (a 20 ms process, a connection held 2 ms,
# a new connection after a quiet spell, an exec 80 ms after start) run after the rest, one at
# a time: beside three other tests' collectors and aggregators on two cores they measure the
# neighbours, not the code (both failed that way in a full parallel run, never alone).
# The detection tests run there too: their collector watches the whole host, and beside
# other tests the test binary itself owns listeners, so every workload it starts is "a
# process started by a server" (PF-SERVER-SPAWNED-SHELL fired on the benign twins in a
# parallel make ci, never alone).
LATENCY_TESTS := fidelity:: exec_image:: procs::an_exec_wakes_the_collector_between_slow_ticks detections::
# The attribution unit tests read every fd table of the host and assert who owns a socket
# their child opened: the library's other tests, beside them in the same process, start
# processes and sockets that take the reads (two of them failed that way in a full run on
# a fresh machine, never alone). They run one at a time after the rest.
ATTRIBUTION_UNIT_TESTS := procs::attribute::

test:
	./scripts/browser-deps.sh
	./scripts/pg.sh run -- $(CARGO) test --all-targets -- --test-threads=4 $(addprefix --skip ,$(LATENCY_TESTS) $(ATTRIBUTION_UNIT_TESTS))
	$(CARGO) test --lib -- --test-threads=1 $(ATTRIBUTION_UNIT_TESTS)
	$(CARGO) test --test it -- --test-threads=1 $(LATENCY_TESTS)

# cargo-deny: licenses, bans (duplicate versions, wildcards) and sources, as deny.toml says.
# Its advisories check needs the RustSec database from GitHub, unreachable from CI here.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	./scripts/ensure-cargo-deny.sh
	$(CARGO) deny check licenses bans sources

fmt:
	$(CARGO) fmt --all

ci: lint test deploy-check

# Default benchmark suite (~10 min on 2 cores); writes bench-results.json and bench-results.md (the table BENCHMARKS.md quotes).
bench: release
	$(CARGO) build --release --bin procflow-bench
	./target/release/procflow-bench default --json bench-results.json --markdown bench-results.md

image:
	docker build -f deploy/Dockerfile -t procflow:dev .

# Validates every Kubernetes manifest against the Kubernetes schemas, renders the
# kustomizations and checks the ECS task definitions against their JSON schema.
deploy-check:
	@test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	@$(VENV)/bin/python -c 'import kubernetes_validate, jsonschema, yaml' 2>/dev/null || \
		$(VENV)/bin/pip install --quiet -r deploy/requirements.txt
	$(VENV)/bin/python deploy/check.py

clean:
	$(CARGO) clean
	rm -rf $(DATA_DIR) $(VENV)

# Regenerates docs/CONFIG.md from the binary's --help (a test fails when it drifts).
docs:
	PROCFLOW_BLESS=1 $(CARGO) test --test it cli::config_reference_matches_the_binary
