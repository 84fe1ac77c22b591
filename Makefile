# `make demo` and `make test` set up .venv on first use (a few minutes), then run.
PYTHON ?= python3
VENV ?= .venv
# A pinned torch and torchvision, installed before the project so pip keeps them (the real
# upscalers need torchvision). On Linux, PyPI's builds of these versions include CUDA; for
# another CUDA or ROCm build, pass e.g.
#   make setup TORCH="torch==2.14.1 torchvision==0.29.1 --index-url https://download.pytorch.org/whl/cu128"
TORCH ?= torch==2.14.1 torchvision==0.29.1
BIN := $(VENV)/bin
PROMPT ?= a lighthouse at dusk --ar 16:9 --seed 7

.PHONY: setup demo test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
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
