# payoutsim — the two commands a newcomer needs: `make demo` and `make test`.
# Both create .venv on first use and install everything in ONE pip command with torch==2.13.0 pinned
# (otherwise pip pulls a multi-GB CUDA build). Re-running skips the install while pyproject.toml is unchanged.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-16)
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-slow lint bench bench-full dashboard chromium clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' Makefile | sed 's/:.*## /\t/'

install: $(STAMP)  ## create .venv and install payoutsim with its pinned dependencies

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q torch==2.13.0 -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

demo: $(STAMP)  ## run the main job on the bundled default and print where the outputs are
	$(BIN)/python -m market.demo

test: $(STAMP) chromium lint  ## lint (ruff + import contracts), then the test suite (what CI runs)
	$(BIN)/python -m pytest

# Debian's Chromium drives the dashboard's real-browser test (Playwright never downloads a browser here).
chromium:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; else \
	    echo "note: /usr/bin/chromium missing and no root: the browser test will be skipped"; exit 0; fi; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium >/dev/null; }

test-slow: $(STAMP)  ## run the opt-in slow tests (real SmolLM2 model)
	$(BIN)/python -m pytest -m slow

lint: $(STAMP)  ## ruff, and the import contracts of ARCHITECTURE.md (import-linter)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

bench: $(STAMP)  ## benchmarks, quick (~3 min): exact-Shapley micro-benchmark + python -m benchmarks --quick
	$(BIN)/python benchmarks/bench_exact_shapley.py
	$(BIN)/python -m benchmarks --quick --out runs/bench/bench_quick.json

bench-full: $(STAMP)  ## the full benchmark suite (~20 min on 2 cores; run it alone)
	$(BIN)/python -m benchmarks --out runs/bench/bench_full.json

dashboard: $(STAMP)  ## open the dashboard on the demo ledger (http://127.0.0.1:8501)
	$(BIN)/payoutsim dashboard --ledger $(or $(LEDGER),runs/demo/ledger.duckdb)

clean:  ## remove the virtual environment and caches (not your data)
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
