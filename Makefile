# Every target creates the virtualenv in .venv on first use; nothing else needs installing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: serve demo test lint types unit bench mutants clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $(STAMP)

## The main job: migrates ./tenure.db and runs the engine on it (Ctrl-C to stop).
serve: $(STAMP)
	$(BIN)/tenure serve

## The race demo: many threads fire on the same resources; exactly one wins each version.
demo: $(STAMP)
	$(BIN)/tenure migrate
	$(BIN)/tenure demo

## The whole check: lint, types, and every test (PostgreSQL tests skip if no server, unless
## TENURE_REQUIRE_POSTGRES=1).
test: lint types
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench tools
	$(BIN)/ruff format --check src tests bench tools

types: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy --strict tools

unit: $(STAMP)
	$(BIN)/pytest tests/unit src/tenure

## The mutation check (not part of `make test`): breaks each invariant in a copy of the project, one
## mutation at a time, and fails if the tests named for it still pass. Needs the PostgreSQL server.
mutants: $(STAMP)
	$(BIN)/python tools/mutants.py

bench: $(STAMP)
	$(BIN)/python bench/transitions.py
	$(BIN)/python bench/flows.py
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/api.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis tenure.db tenure.db-wal tenure.db-shm
