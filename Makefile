# Two set-up commands, each working on a fresh machine:
#   make quickstart   install what is missing, then train HFR on the embedded synthetic data
#   make test         install what is missing (with the dev extra), then run every test
PYTHON ?= python3
PIP := $(PYTHON) -m pip
STAMP := .installed

.PHONY: install quickstart test test-fast lint

$(STAMP): pyproject.toml
	$(PIP) install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

quickstart: $(STAMP)
	$(PYTHON) train.py

# Every test, the slow and the end-to-end (subprocess) ones included (what CI runs).
test: $(STAMP)
	$(PYTHON) -m pytest -m "slow or not slow" --durations=25

# The fast subset (the default of a bare `pytest`: neither slow nor e2e).
test-fast: $(STAMP)
	$(PYTHON) -m pytest

lint: $(STAMP)
	ruff check . && ruff format --check .
