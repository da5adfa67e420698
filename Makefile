# Two commands do all set-up on a fresh machine: `make demo` (the main job) and
# `make test` (lint, types, the whole suite against a real Redis).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench redis-server clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,redis,server]'
	touch $(STAMP)

# The tests start their own redis-server (>= 7); install the Debian package when it is
# missing, or say what to install where that can't be done.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
		if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
			echo "installing redis-server (apt-get)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
		else \
			echo "make test needs redis-server >= 7 on the PATH: install it (Debian/Ubuntu:"; \
			echo "sudo apt-get install redis-server; macOS: brew install redis) and run make test again"; \
			exit 1; \
		fi; \
	}
	@command -v redis-server >/dev/null 2>&1 || { echo "redis-server is required for the tests"; exit 1; }

demo: $(STAMP)
	$(BIN)/llm-sessions demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/mypy

test: redis-server lint
	$(BIN)/python -m pytest

bench: $(STAMP) redis-server
	$(BIN)/python bench/store_bench.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
