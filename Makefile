# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# `make demo` needs the runtime only; the test toolchain (pytest, ruff, mypy, Playwright) is for `make test`.
RUNTIME := $(VENV)/.installed-runtime

.PHONY: demo test lint types unit bench clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "reauthd needs Python 3.11 ($(PYTHON) not found; set PYTHON=...)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUNTIME): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	@touch $(RUNTIME)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP) $(RUNTIME)

demo: $(RUNTIME)
	$(BIN)/reauthd demo

lint: $(STAMP)
	$(BIN)/ruff check reauthd tests bench
	$(BIN)/ruff format --check reauthd tests bench

types: $(STAMP)
	$(BIN)/mypy reauthd

unit: $(STAMP)
	$(BIN)/python -m pytest

test: lint types unit

bench: $(STAMP)
	$(BIN)/python bench/detect_bench.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache test-artifacts
