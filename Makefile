# voxpipe: the two commands are `make demo` and `make test`; both install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
VOXPIPE := $(VENV)/bin/voxpipe
SYSTEM_PACKAGES := espeak-ng sox libsndfile1

.PHONY: demo test setup system-deps models up lint bench-batcher clean-models

## demo: build models if missing, start the stack, ask the bundled spoken question, print answer + latency table
demo: setup system-deps models
	$(VOXPIPE) demo

## test: lint, then unit, stage and end-to-end tests (builds the models it needs first)
test: setup system-deps models
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -ra --durations=15; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest selected no tests"; exit 1; fi; exit $$rc

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch is pinned to the CPU build (build-time only); a plain `torch` would pull a multi-GB CUDA build.
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

models: setup
	$(VOXPIPE) build

up: setup models
	$(VOXPIPE) up

lint: setup
	$(VENV)/bin/ruff check .

bench-batcher: setup
	$(PY) benchmarks/batcher_bench.py

clean-models:
	rm -rf $${VOXPIPE_MODELS_DIR:-$$HOME/.cache/voxpipe/models}
