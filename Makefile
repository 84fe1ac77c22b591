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

# The oldest discord.py Easel supports (pyproject's floor): the end-to-end tests run against it too.
DISCORD_FLOOR ?= discord.py==2.7.0

.PHONY: setup demo test test-floor lint bench clean

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

# The Discord tests again, on discord.py's oldest supported release (installed beside, not over,
# the venv's own).
test-floor: setup
	test -f '.floor/$(DISCORD_FLOOR)' || { rm -rf .floor && $(BIN)/python -m pip install --disable-pip-version-check -q --no-deps --target .floor '$(DISCORD_FLOOR)' && touch '.floor/$(DISCORD_FLOOR)'; }
	PYTHONPATH=.floor $(BIN)/python -m pytest -q -m e2e tests/test_discord.py tests/test_trust.py tests/test_editing_discord.py

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

bench: setup
	$(BIN)/easel bench

clean:
	rm -rf $(VENV) .floor out .pytest_cache .ruff_cache
