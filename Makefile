# Two commands do all the set-up on a fresh machine: `make serve` and `make test`.
# Every target is idempotent: the venv is rebuilt only when pyproject.toml changes,
# the model is fetched only when missing or wrong.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
HOST   ?= 127.0.0.1
PORT   ?= 8000
CONFIG ?= models.yaml
PYTEST_ARGS ?=
BENCH_VENV := .bench/venv
BENCH_ARGS ?=

.PHONY: serve test lint models check install lock clean bench bench-defaults bench-sweep bench-profile fuzz promtool chromium

# The locked versions (requirements.lock, exact pins of everything the suite last passed with), as
# constraints: the ranges stay in pyproject.toml. `make lock` resolves anew and runs the suite on it.
LOCK := requirements.lock

# llama-cpp-python compiles llama.cpp for this machine's CPU, but without its AMX kernels: on our 2-core
# Xeon VMs (AMX advertised, permission granted) they crash the first decode (SIGSEGV in llama_decode).
# pip reuses a wheel it built before whatever the flags, so scripts/check_engine_build.py reads what the
# installed one was built with, and a wheel with AMX or with instructions this CPU lacks is rebuilt.
export CMAKE_ARGS ?= "-DCMAKE_C_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16" "-DCMAKE_CXX_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
ENGINE_REBUILD = $(1) scripts/check_engine_build.py || { $(1) -m pip install --quiet --no-cache-dir --force-reinstall \
	--no-deps -c $(LOCK) "$$(grep -i '^llama.cpp.python==' $(LOCK))" && $(1) scripts/check_engine_build.py; }

$(VENV)/.installed: pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c $(LOCK) -e '.[test]'
	$(call ENGINE_REBUILD,$(PY))
	touch $@

install: $(VENV)/.installed

# Refresh the lock: a new venv resolved from pyproject.toml's ranges alone (today's releases), frozen into
# requirements.lock, then the whole suite on it. Commit the lock only when `make test` passes.
lock:
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	{ sed -n '1,2p' $(LOCK); $(PY) -m pip freeze --exclude-editable; } > $(LOCK).new && mv $(LOCK).new $(LOCK)
	touch $(VENV)/.installed
	$(MAKE) test

models:
	$(PYTHON) scripts/fetch_model.py --dest models

serve: install models
	$(PY) -m server --config $(CONFIG) --host $(HOST) --port $(PORT)

check: install models
	$(PY) -m server check $(CONFIG)

# promtool checks and unit-tests deploy/prometheus/alerts.yml (tests/deploy/test_prometheus.py): from
# Debian's prometheus package when missing, its daemon not left running (scripts/install_promtool.sh).
promtool:
	sh scripts/install_promtool.sh

# Debian's Chromium for the test that renders /docs in a real browser (tests/e2e/test_docs_browser.py).
# Installed once, as root with apt-get (CI is a clean Debian); elsewhere the test skips, except with CI=true.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; \
	  else echo "chromium is missing and cannot be installed here (needs root and apt-get): the /docs browser test will skip"; fi; }

# pytest exits 5 when it collects nothing; that must fail loudly, not pass silently.
test: install models lint promtool chromium
	$(PY) -m pytest $(PYTEST_ARGS)

# ruff, mypy, and the shape of server/ (scripts/check_layout.py): no import circle, llama_cpp only in the
# worker, no module over 350 lines.
lint: install
	$(PY) -m ruff check server
	$(PY) -m mypy server
	$(PY) scripts/check_layout.py

# schemathesis against the real server's own /openapi.json, aliases filled in: 1,200 generated requests,
# positive and negative; fails on any answer >= 500, a dead server or 300 MiB of growth. `make test`
# runs the same test with 200.
FUZZ_REQUESTS ?= 1200
fuzz: install models
	FUZZ_REQUESTS=$(FUZZ_REQUESTS) $(PY) -m pytest tests/e2e/test_fuzz.py -s $(PYTEST_ARGS)

# Benchmarks (docs/benchmarks.md): our server against direct in-process llama-cpp-python calls,
# `python -m llama_cpp.server` (from its own venv) and llama.cpp's own llama-server, built once from
# the llama.cpp inside the pinned llama-cpp-python (15-20 minutes on 2 cores, then cached).
# Not part of `make test`.
LLAMA_SERVER := .cache/llama-server/build/bin/llama-server

$(LLAMA_SERVER):
	$(PYTHON) scripts/build_llama_server.py --cache .cache/llama-server

$(BENCH_VENV)/.installed: bench/requirements.txt
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet -r bench/requirements.txt
	$(call ENGINE_REBUILD,$(BENCH_VENV)/bin/python)
	touch $@

# Both tables: the same engine settings for everyone, then each contender at its own defaults
# (issue 11). BENCH_ARGS=--quick for a smoke run; `python -m bench --help` lists the knobs.
bench: install models $(BENCH_VENV)/.installed $(LLAMA_SERVER)
	sh scripts/install_wrk.sh
	$(PY) -m bench $(BENCH_ARGS)

# The at-defaults table alone (no llama_cpp.server, so no bench venv needed).
bench-defaults: install models $(LLAMA_SERVER)
	sh scripts/install_wrk.sh
	$(PY) -m bench --only defaults $(BENCH_ARGS)

# Ours alone with every n_threads / n_threads_batch pair from 1 to the cores, four streams each, against the
# best pair (issue 11's "no cliff"); not part of `make bench` (it grows as the square of the cores).
bench-sweep: install models
	$(PY) -m bench --only sweep $(BENCH_ARGS)

# py-spy on our server while it streams (needs root or CAP_SYS_PTRACE); BENCH_ARGS=--gil for Python work only.
bench-profile: install models $(BENCH_VENV)/.installed
	$(PY) -m bench.profile $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .bench .cache
