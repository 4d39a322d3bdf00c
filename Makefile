# The two commands of the README: `make demo` and `make test`. Everything they need is installed here.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: all demo test test-unit test-static test-e2e test-example bench lint lock schema release clean

all: test

# The dev extra's packages install from the lock, each file checked against its hash (setup/lockfile.py
# picks them); torch is the one exception: the dev extra pins the CPU wheel (an unpinned torch pulls a
# multi-GB CUDA build), a file PyPI publishes no hash of. `pip check` then proves nothing is missing.
$(STAMP): pyproject.toml setup/requirements.lock setup/requirements.extras setup/lockfile.py
	$(PYTHON) -m venv $(VENV)
	$(PYTHON) setup/lockfile.py select dev $(VENV)/requirements.txt
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(VENV)/requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps 'torch==2.13.0'
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	@command -v git >/dev/null || (apt-get update && apt-get install -y git)
	@# nginx, the embedded traffic backend (`mlgate traffic`, tests/unit/test_traffic_nginx.py); mlgate runs its own
	@# in a prefix folder on loopback. Debian's package is `nginx` (bookworm's nginx-light is it plus the echo module);
	@# it starts a service on 0.0.0.0:80 where policy-rc.d allows it: stopped and disabled.
	@command -v nginx >/dev/null || (apt-get update && apt-get install -y --no-install-recommends nginx \
	  && { systemctl disable --now nginx 2>/dev/null || service nginx stop 2>/dev/null || true; })
	@# The Prometheus server the metric providers' test runs (tests/unit/test_metrics_live.py starts its own on a
	@# loopback port). Debian's package starts a service on 0.0.0.0:9090 where policy-rc.d allows it: stopped and
	@# disabled. Without recommends: prometheus-node-exporter would listen on 0.0.0.0:9100.
	@command -v prometheus >/dev/null || (apt-get update && apt-get install -y --no-install-recommends prometheus \
	  && { systemctl disable --now prometheus 2>/dev/null || service prometheus stop 2>/dev/null || true; })
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m tests.e2e.demo

# Two workers (pytest-xdist): the end-to-end tests on one, in order, every other module on the other
# (tests/conftest.py schedules them). TEST_WORKERS=0 runs everything in this one process.
TEST_WORKERS ?= 2
test: $(STAMP) test-example
	$(BIN)/python -m pytest -q -ra --durations=15 -n $(TEST_WORKERS) tests

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
	$(BIN)/python tests/benchmarks/bench_compress.py --out bench-results/compress.json
	$(BIN)/python tests/benchmarks/bench_registry.py --out bench-results/registry.json
	$(BIN)/python tests/benchmarks/bench_release.py --out bench-results/release.json
	$(BIN)/python tests/benchmarks/bench_serve.py --out bench-results/serve.json
	$(BIN)/python tests/benchmarks/bench_rollout.py --out bench-results/rollout.json

schema: $(STAMP)
	$(BIN)/mlgate schema --output schema/mlgate.schema.json

# The generated references (tools/gendocs.py): docs/reference/actions.md and workflows.md from every action.yml and
# reusable workflow, config.md from mlgate.yaml's JSON Schema. tests/static/test_docs.py fails when they are stale.
.PHONY: docs
docs: $(STAMP)
	$(BIN)/python -m tools.gendocs

# Release mlgate (tools/release.py): check VERSION against CHANGELOG.md, pyproject.toml, mlgate.RELEASE_REF and
# every `mlgate/mlgate/...@v1` self-reference, then print the commands that tag and push vVERSION; APPLY=1
# runs them. The tag's workflow (.github/workflows/release.yml) tests it, publishes it and moves v1.
release: $(STAMP)
	@test -n "$(VERSION)" || { echo "usage: make release VERSION=X.Y.Z [APPLY=1]" >&2; exit 2; }
	$(BIN)/python -m tools.release plan "$(VERSION)" $(if $(filter 1,$(APPLY)),--apply)

# Regenerate the lock: resolve every extra and the dev tools in a fresh venv, pin each package with the
# hashes of its files (pip-compile --generate-hashes, from a venv of its own so pip-tools stays out of the
# lock), then list what each extra installs (setup/requirements.extras). torch stays out of the hashed set
# (see the venv target); pip-compile still resolves it, at the dev extra's version, for its dependencies.
lock:
	rm -rf build/lockvenv build/piptools && $(PYTHON) -m venv build/lockvenv && $(PYTHON) -m venv build/piptools
	build/piptools/bin/pip install --quiet 'pip-tools>=7.4,<8'
	build/lockvenv/bin/pip install --quiet 'setuptools>=77' '.[dev]'
	build/lockvenv/bin/pip freeze --all --exclude-editable | grep -v -e '^mlgate' -e '^pip==' \
	  | sed -e 's/^\(torch==[^+]*\)+.*/\1/' > build/lock.in
	build/piptools/bin/pip-compile --quiet --generate-hashes --strip-extras --no-annotate --no-header \
	  --no-emit-index-url --no-emit-find-links --unsafe-package torch --output-file build/requirements.lock build/lock.in
	( echo "# mlgate's dependencies and dev tools, each pinned with the hashes of its files. Regenerate: make lock"; \
	  sed '/^# WARNING/,$$d' build/requirements.lock ) > setup/requirements.lock
	build/lockvenv/bin/python setup/lockfile.py extras > setup/requirements.extras

clean:
	rm -rf $(VENV) build .work bench-results
