# Every target creates the virtualenv in .venv on first use; nothing else needs installing.
# `make serve` installs what serving needs (the runtime); the checks and benchmarks add the dev and
# bench extras on top. Each set has its own stamp, so `make serve` never pulls in the test tools.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8080
RUNTIME_STAMP := $(VENV)/.installed-runtime-stamp
DEV_STAMP     := $(VENV)/.installed-dev-stamp

.PHONY: serve demo test lint types unit bench mutants clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUNTIME_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $(RUNTIME_STAMP)

# The dev and bench extras include the runtime, so this stamp stands for both.
$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $(RUNTIME_STAMP) $(DEV_STAMP)

## The main job: migrates ./tenure.db, serves the API on 127.0.0.1:$(PORT) (`make serve PORT=9000` for another)
## and runs the engine on it (Ctrl-C to stop).
serve: $(RUNTIME_STAMP)
	$(BIN)/tenure serve --port $(PORT)

## The race demo: many threads fire on the same resources; exactly one wins each version.
demo: $(RUNTIME_STAMP)
	$(BIN)/tenure migrate
	$(BIN)/tenure demo

## The whole check: lint, types, and every test on two processes (PostgreSQL tests skip if no server, unless
## TENURE_REQUIRE_POSTGRES=1).
test: lint types
	$(BIN)/pytest -n 2

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests bench tools
	$(BIN)/ruff format --check src tests bench tools

types: $(DEV_STAMP)
	$(BIN)/mypy
	$(BIN)/mypy --strict tools

unit: $(DEV_STAMP)
	$(BIN)/pytest tests/unit src/tenure

## The mutation check (not part of `make test`): breaks each invariant in a copy of the project, one
## mutation at a time, and fails if the tests named for it still pass. Needs the PostgreSQL server.
mutants: $(DEV_STAMP)
	$(BIN)/python tools/mutants.py

bench: $(DEV_STAMP)
	$(BIN)/python bench/transitions.py
	$(BIN)/python bench/flows.py
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/api.py
	$(BIN)/python bench/sharing.py
	$(BIN)/python bench/signaling.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis tenure.db tenure.db-wal tenure.db-shm
