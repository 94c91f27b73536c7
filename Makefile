# Cormorant: the two commands a newcomer runs are `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint install clean bench deploy-test secrets

$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==25.3
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt -c constraints.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

## Run the whole pipeline on the embedded default (SQLite warehouse, local lake, local MLflow).
demo: $(STAMP)
	$(PY) scripts/demo.py

## Run the test suite (what CI runs).
test: $(STAMP)
	bash scripts/ensure_chromium.sh
	$(PY) -m ruff check dags plugins include scripts tests
	$(PY) -m pytest

## Run every benchmark (quick sizes; ARGS=--full for the full ones); see docs/benchmarks.md.
bench: $(STAMP)
	$(PY) -m pip install --quiet -r requirements-bench.txt -c constraints.txt
	$(PY) scripts/bench.py $(ARGS)

## Build the images, start the compose stack, check it as a deployment, tear it down (docs/deployment.md).
deploy-test: $(STAMP)
	$(PY) scripts/deploy_test.py $(ARGS)

## The compose stack's credentials, one file each in ./secrets (docker compose up needs them).
secrets:
	python3 scripts/compose/make_secrets.py

lint: $(STAMP)
	$(PY) -m ruff check dags plugins include scripts tests
	$(PY) -m ruff format --check dags plugins include scripts tests

clean:
	rm -rf $(VENV) .cormorant
