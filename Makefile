# Every target bootstraps .venv itself; `make run` and `make test` work on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tailor-installed
# written by the compilation of the decision path (hatch_build.py), with the sources it compiled
NATIVE := sdk/_native.json
BUNDLE ?= var/bundles/demo
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test compile check lint docs bench capacity soak tag-bench load bundle schema tag screenshots system-deps js-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

js_snippet/node_modules/.package-lock.json: js_snippet/package-lock.json
	cd js_snippet && npm ci --no-audit --no-fund --loglevel=error

js-deps: js_snippet/node_modules/.package-lock.json

# Debian packages the browser tests need (Chromium), the shared-state tests (redis-server) and
# the benchmarks' load generator (wrk);
# installed only when missing.
system-deps:
	@command -v chromium >/dev/null 2>&1 || .ci/apt-install chromium
	@command -v wrk >/dev/null 2>&1 || .ci/apt-install wrk
	@command -v redis-server >/dev/null 2>&1 || .ci/apt-install redis-server

## Train the demo bundle if missing, then serve the demo page on http://$(HOST):$(PORT)/
run: $(STAMP)
	$(BIN)/tailor train --out $(BUNDLE) --if-missing
	$(BIN)/python -m server --demo --bundle $(BUNDLE) --host $(HOST) --port $(PORT)

bundle: $(STAMP)
	$(BIN)/tailor train --out $(BUNDLE)

## The whole test suite: the tag's node tests, then pytest (unit, server, contract, browser),
## then the SDK and contract tests again on the pure-Python reference of the compiled modules.
test: $(STAMP) $(NATIVE) system-deps js-deps
	cd js_snippet && npm test
	$(BIN)/python -m pytest
	TAILOR_PURE_PYTHON=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/sdk tests/contract

## Compile the decision path again (sdk.native.MODULES) after editing one of its modules; until
## then the edited source runs, never its stale compiled twin (`make test` does it first).
compile: $(STAMP)
	$(BIN)/python hatch_build.py

$(NATIVE): $(wildcard sdk/*.py) sdk/_hashing_c.pyx | $(STAMP)
	$(BIN)/python hatch_build.py

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

## The documentation (docs/, mkdocs.yml) in strict mode: a broken link or anchor, or a page
## missing from the nav, fails the build.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir site

## Lint, types, import contracts, the documentation, then every test.
check: lint docs test

bench: $(STAMP)
	$(BIN)/tailor train --out $(BUNDLE) --if-missing
	$(BIN)/python -m benchmarks.decide --bundle $(BUNDLE)
	$(BIN)/python -m benchmarks.sdk --bundle $(BUNDLE)

## The server's capacity and latency curve (wrk + open-loop pacer), a 10-minute soak, and the
## tag's time to decision in headless Chromium; each writes JSON (+ Markdown) to benchmarks/results/
WORKERS ?= 2
capacity: $(STAMP) system-deps
	$(BIN)/tailor train --out $(BUNDLE) --if-missing
	$(BIN)/python -m benchmarks.run --bundle $(BUNDLE) --workers $(WORKERS)

soak: $(STAMP) system-deps
	$(BIN)/tailor train --out $(BUNDLE) --if-missing
	$(BIN)/python -m benchmarks.soak --bundle $(BUNDLE) --workers $(WORKERS)

tag-bench: $(STAMP) system-deps
	$(BIN)/tailor train --out $(BUNDLE) --if-missing
	$(BIN)/python -m benchmarks.tag --bundle $(BUNDLE) --loads 30

## Locust, headless and time-bounded, against a load-test server started on 127.0.0.1 for the run
## (LOAD_HOST=http://127.0.0.1:8000 aims at a running one instead): CSV + HTML in benchmarks/results/.
## Replicas: make load LOAD_REPLICAS=2 LOAD_WORKERS=2 starts a redis-server and 2 servers sharing it
## (LOAD_HOSTS=URL,URL aims at running ones); LOAD_SPREAD=request sends each request to the next one.
LOAD_USERS ?= 50
LOAD_SPAWN_RATE ?= 10
LOAD_TIME ?= 60s
LOAD_REPLICAS ?= 1
LOAD_SPREAD ?= user
load: $(STAMP)
	$(BIN)/tailor train --out $(BUNDLE) --if-missing
	TAILOR_LOAD_SPREAD=$(LOAD_SPREAD) $(BIN)/python -m benchmarks._load --bundle $(BUNDLE) \
		--replicas $(LOAD_REPLICAS) $(if $(LOAD_WORKERS),--workers $(LOAD_WORKERS)) \
		$(if $(or $(LOAD_HOSTS),$(LOAD_HOST)),--host $(or $(LOAD_HOSTS),$(LOAD_HOST))) -- \
		$(BIN)/locust -f benchmarks/locustfile.py --headless --users $(LOAD_USERS) \
		--spawn-rate $(LOAD_SPAWN_RATE) --run-time $(LOAD_TIME) --only-summary \
		--csv benchmarks/results/locust --html benchmarks/results/locust.html

## Regenerate committed artefacts: the JSON Schema and the built tag.
schema: $(STAMP)
	$(BIN)/python -c "from sdk.schema import write_json_schema; write_json_schema('sdk/data/schema.json')"

tag: js-deps
	cd js_snippet && npm run build

## The demo screenshots of docs/tag.md (docs/img), taken in headless Chromium against the demo bundle.
screenshots: $(STAMP) system-deps
	$(BIN)/tailor train --if-missing --out $(BUNDLE)
	$(BIN)/python -m docs.screenshots --bundle $(BUNDLE)

clean:
	rm -rf $(VENV) var site js_snippet/node_modules .pytest_cache .mypy_cache .ruff_cache
	rm -f sdk/*.so sdk/*.c sdk/_native.json
