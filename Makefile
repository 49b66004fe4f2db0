# Two commands on a fresh machine (Python 3.11+, make):
#   make run   – set up, then render the demo batch on the embedded emulator into ./output
#   make test  – set up, then lint and run the whole test suite (what CI runs)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Two workers by default (the 2-core machines this is tested on); `make test PYTEST_WORKERS=0`
# runs in one process.
PYTEST_WORKERS ?= 2

.PHONY: setup run test lint clean

$(STAMP): pyproject.toml constraints.txt
	@echo "setup: creating $(VENV) and installing bananaflow with the tested dependency set"
	@echo "setup: (constraints.txt; the first time takes about 1-3 minutes, later runs skip this)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --progress-bar off -c constraints.txt -e ".[test]"
	$(BIN)/python -c "import bananaflow.flows.generate"
	touch $(STAMP)
	@echo "setup: done"

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/bananaflow generate --demo

lint: $(STAMP)
	$(BIN)/ruff check .

# Bytecode for the checkout's own packages first: they are installed editable, so where
# PYTHONDONTWRITEBYTECODE is set every one of the suite's ~100 Python subprocesses (CLI runs,
# flow runs started by workers) compiled them again (about 0.3 s of CPU each). Only changed
# files are compiled; __pycache__ is git-ignored.
test: lint
	$(BIN)/python -m compileall -q bananaflow cli flows tasks deployments benchmarks tests
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS)

clean:
	rm -rf $(VENV) output
