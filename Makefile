# payoutsim — the two commands a newcomer needs: `make demo` and `make test`.
# Both create .venv on first use and install everything in ONE pip command with torch==2.13.0 pinned
# (otherwise pip pulls a multi-GB CUDA build). Re-running skips the install while pyproject.toml is unchanged.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-16)
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-slow lint bench clean help

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

test: $(STAMP)  ## run the test suite (what CI runs)
	$(BIN)/python -m pytest

test-slow: $(STAMP)  ## run the opt-in slow tests (real SmolLM2 model)
	$(BIN)/python -m pytest -m slow

lint: $(STAMP)  ## ruff
	$(BIN)/ruff check .

bench: $(STAMP)  ## benchmarks (speed, not correctness)
	$(BIN)/python benchmarks/bench_exact_shapley.py

clean:  ## remove the virtual environment and caches (not your data)
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
