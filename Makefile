# The two set-up commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXAMPLE_MODEL ?= examples/tiny_classifier.onnx
EXAMPLE_SPEC ?= examples/tiny_robustness.vnnlib

.PHONY: install run verify-example test lint

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

# Start the service (API, dashboard, embedded workers) and print its URL.
run: install
	$(VENV)/bin/nnverify serve

# Verify the bundled example on the command line.
verify-example: install
	$(VENV)/bin/nnverify verify $(EXAMPLE_MODEL) $(EXAMPLE_SPEC) --timeout 30

lint: install
	$(VENV)/bin/ruff check verifier service checker tests bench
	$(VENV)/bin/mypy verifier service checker

# the tests in parallel (pytest-xdist; the service tests together in one worker, tests/conftest.py)
test: install lint
	$(PY) -m pytest -p no:cacheprovider -n auto --maxprocesses 4 --dist loadgroup
