# tykpulse: the two commands are `make run` and `make test`; the rest serve development.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The native core (native/, Rust) is built by the install: cargo comes from rustup's usual place when
# it is not on PATH already. The stamp covers the crate's sources too, so a change to them rebuilds it
# (an editable install does not rebuild compiled code by itself).
export PATH := $(HOME)/.cargo/bin:$(PATH)
NATIVE_SOURCES := native/Cargo.toml native/Cargo.lock $(sort $(wildcard native/src/*.rs native/src/*/*.rs))
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml $(NATIVE_SOURCES) | sha1sum | cut -c1-12)
CARGO := cd native && cargo
# An editable install leaves the project's modules uncompiled; where PYTHONDONTWRITEBYTECODE is set,
# every command would compile them again at each start (~0.1 s of CPU for `tykpulse run`).
COMPILE_BYTECODE := $(PY) -m compileall -q -j 0 pipelines sinks bench >/dev/null
GO ?= $(shell command -v go || echo /usr/local/go/bin/go)
PYTEST_ARGS ?=
ARGS ?=

.PHONY: help run test lint native format unit component integration services kafka kafka-jars fixtures fixtures-check clean bench bench-full fuzz

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 18

$(STAMP): pyproject.toml $(NATIVE_SOURCES)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	$(COMPILE_BYTECODE)
	@rm -f $(VENV)/.installed-* && touch $@

run: $(STAMP)  ## demo: simulated fleet -> ZeroMQ -> worker -> embedded ClickHouse (ARGS="--duration 60")
	$(VENV)/bin/tykpulse demo $(ARGS)

test: $(STAMP) services lint  ## install everything, lint, and run the whole suite
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)  ## ruff (lint + format check), mypy --strict; the native core: rustfmt, clippy, cargo test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets --features python -- -D warnings
	$(CARGO) test --locked

native: $(STAMP)  ## rebuild the native core into the venv now (the stamp does it when native/ changes)
	$(PY) -m pip install -q --no-deps -e .

format: $(STAMP)  ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

unit component integration: $(STAMP) services  ## run one tier of the suite
	$(PY) -m pytest -m $@ $(PYTEST_ARGS)

FUZZ_SECONDS ?= 600
fuzz: $(STAMP)  ## long fuzzing of the decoder and worker loop: atheris (FUZZ_SECONDS) + 20k hypothesis examples
	mkdir -p .cache/fuzz-corpus
	$(PY) -m tests.fuzz.ingest_fuzzer .cache/fuzz-corpus -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=4096
	TYKPULSE_HYPOTHESIS_PROFILE=long $(PY) -m pytest -p no:cacheprovider --timeout=0 tests/unit/test_fuzz_ingest.py tests/unit/test_hostile_input.py

services: $(STAMP)  ## what the integration tests need on this machine (Redis server, Kafka jars)
	@command -v redis-server >/dev/null || { echo "installing redis-server"; \
		$(if $(shell command -v sudo),sudo,) apt-get install -y -q redis-server >/dev/null || \
		{ $(if $(shell command -v sudo),sudo,) apt-get update -q >/dev/null && \
		  $(if $(shell command -v sudo),sudo,) apt-get install -y -q redis-server >/dev/null; }; }
	$(PY) -m tests.harness.kafka.broker --fetch-only

kafka-jars: $(STAMP)  ## fetch the Kafka broker jars into .cache/kafka (no-op when present)
	$(PY) -m tests.harness.kafka.broker --fetch-only

kafka: $(STAMP)  ## a development broker in the foreground on 127.0.0.1:9092
	$(PY) -m tests.harness.kafka.broker --port 9092 --controller-port 9093

bench: $(STAMP)  ## benchmark, quick mode (< 5 min): stages, end to end vs baselines, latency; summary line last
	$(COMPILE_BYTECODE)
	$(PY) -m bench quick

bench-full: $(STAMP)  ## benchmark with the curves and the Faust path (about 20 min) and their plot (installs matplotlib)
	$(PY) -m pip install -q -e '.[dev,bench]'
	$(COMPILE_BYTECODE)
	$(PY) -m bench full

fixtures:  ## regenerate the Tyk fidelity fixtures with Tyk Pump's own encoder (needs Go)
	cd tests/fixtures/tyk/gen && $(GO) run . -out ..

fixtures-check: fixtures  ## fail if regenerating the fixtures changes them
	git diff --exit-code -- tests/fixtures/tyk

clean:  ## remove the venv, caches and ./data
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .cache data native/target pipelines/_native*.so
