# `make demo` and `make test` set up .venv on first use (a few minutes), then run.
PYTHON ?= python3
VENV ?= .venv
# A pinned torch, installed before the project so pip keeps it. On Linux, PyPI's build of this
# version includes CUDA; for another CUDA or ROCm build, pass e.g.
#   make TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
PROMPT ?= a lighthouse at dusk --ar 16:9 --seed 7

.PHONY: setup demo test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q $(TORCH)
	$(BIN)/python -m pip install --disable-pip-version-check -q -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/easel imagine "$(PROMPT)" --out out

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

bench: setup
	$(BIN)/easel bench

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
