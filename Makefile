# Everyday commands; each is also runnable on its own as the line after the colon says.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run lint format typecheck contracts check test bench

install:          ## the test install of the README
	python3 -m venv $(VENV) && $(BIN)/pip install -e '.[test]'

run:              ## the service on the embedded default (SQLite in storage/)
	$(BIN)/tsm-server

lint:             ## ruff: lint and formatting
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format:           ## apply ruff's formatting and safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck:        ## mypy --strict over app/ and clients/ (settings in pyproject.toml)
	$(BIN)/mypy

contracts:        ## import contracts (layers, no FastAPI in services) and no import cycles
	$(BIN)/lint-imports
	$(BIN)/python scripts/check_cycles.py

check: lint typecheck contracts

test:             ## the whole suite (PostgreSQL tests run when it is reachable)
	$(BIN)/pytest

bench:            ## every benchmark against its peer (minutes; see BENCHMARKS.md)
	PYTHONPATH=. $(BIN)/python bench/bench_import.py --rounds 5
	PYTHONPATH=. $(BIN)/python bench/bench_export.py --rounds 5
	PYTHONPATH=. $(BIN)/python bench/bench_files.py --rounds 5
	PYTHONPATH=. $(BIN)/python bench/bench_observability.py --repeat 3
