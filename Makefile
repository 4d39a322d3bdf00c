# The two commands of the README: `make demo` and `make test`. Everything they need is installed here.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: all demo test test-unit test-static test-e2e test-example bench lint lock schema clean

all: test

$(STAMP): pyproject.toml setup/requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c setup/requirements.lock 'setuptools>=77'
	$(BIN)/python -m pip install --quiet -c setup/requirements.lock -e '.[dev]'
	@command -v git >/dev/null || (apt-get update && apt-get install -y git)
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m tests.e2e.demo

test: $(STAMP) test-example
	$(BIN)/python -m pytest -q -ra tests

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

test-static: $(STAMP)
	$(BIN)/python -m pytest -q tests/static

# The example model projects' own tests (data generators, training), each in its own folder and config.
test-example: $(STAMP)
	cd example-project && ../$(BIN)/python -m pytest -q -p no:cacheprovider tests
	cd example-sklearn && ../$(BIN)/python -m pytest -q -p no:cacheprovider tests

test-e2e: $(STAMP)
	$(BIN)/python -m pytest -q -ra tests/e2e

bench: $(STAMP)
	mkdir -p bench-results
	$(BIN)/python tests/benchmarks/bench_validate.py --rows 1000000 --out bench-results/validate.json
	$(BIN)/python tests/benchmarks/bench_pr_gate.py --out bench-results/pr_gate.json
	$(BIN)/python tests/benchmarks/bench_train.py --out bench-results/train.json
	$(BIN)/python tests/benchmarks/bench_model_test.py --out bench-results/model_test.json

schema: $(STAMP)
	$(BIN)/mlgate schema --output schema/mlgate.schema.json

# Regenerate the root action's lock from a fresh venv with every extra (`all`). The MLflow server (dev only)
# is resolved with them so the dev venv installs under the same pins; pins of packages an action's
# venv does not ask for are inert there.
lock:
	rm -rf build/lockvenv && $(PYTHON) -m venv build/lockvenv
	build/lockvenv/bin/pip install --quiet 'setuptools>=77' '.[all]' 'mlflow>=3.1,<4'
	( echo "# Pins for the root action's private venv (all extras). Regenerate: make lock"; \
	  build/lockvenv/bin/pip freeze --all --exclude-editable | grep -v -e '^mlgate' -e '^pip==' ) > setup/requirements.lock

clean:
	rm -rf $(VENV) build .work bench-results
