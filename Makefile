# smm: every target sets itself up. `make run` and `make test` work on a fresh clone
# with only Python 3.11, make and Node.js present.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
PY_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
GEN_STAMP := gen/.stamp
PROTOS := $(shell find proto -name '*.proto')
BUF := node_modules/.bin/buf
# Test processes (pytest-xdist); each starts its own PostgreSQL and NATS unless given yours.
TEST_WORKERS ?= 2

.PHONY: setup proto lint test run migrate bench postman clean

setup: $(PY_STAMP) $(NODE_STAMP) $(GEN_STAMP)

$(PY_STAMP): requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is required (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.lock 2> >(grep -v 'is ignored' >&2)
	$(BIN)/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e . 2> >(grep -v 'is ignored' >&2)
	$(PY) -c "import site, pathlib; pathlib.Path(site.getsitepackages()[0], 'smm_gen.pth').write_text('$(CURDIR)/gen\n')"
	@touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

proto: $(GEN_STAMP)

$(GEN_STAMP): $(PROTOS) $(PY_STAMP) scripts/gen_protos.sh
	PATH=$(CURDIR)/$(BIN):$$PATH bash scripts/gen_protos.sh
	@touch $@

lint: setup
	bash scripts/buf_check.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: setup lint
	$(BIN)/pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --cov --cov-report=term --durations=20

run: setup
	$(BIN)/smm dev

migrate: setup
	$(BIN)/smm migrate

bench: setup
	$(PY) bench/run_all.py

postman: setup
	mkdir -p postman
	$(PY) -c "import json, edge.openapi as o; print(json.dumps(o.build_openapi()))" > postman/openapi.json
	node_modules/.bin/openapi2postmanv2 -s postman/openapi.json -o postman/smm.postman_collection.json -p
	@echo "wrote postman/smm.postman_collection.json"

clean:
	rm -rf $(VENV) node_modules gen third_party .coverage .coverage.*
