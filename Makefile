# Everything installs into .venv, pinned by the lock (constraints.txt). TORCH_SPEC pins torch and the torchvision
# built against it (timm and mmcv, test oracles, import torchvision; a mismatched pair fails to import): override
# both together, e.g. make TORCH_SPEC="torch==2.9.1 torchvision==0.24.1" test
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
LOCK := constraints.txt
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --quiet --disable-pip-version-check
# pip installs uv (pinned by the lock), uv the rest: 3 min -> under 1 min on a fresh clone (bench/README.md, "Install").
# uv reads no pip configuration, so tools/pip_sources.py hands it pip's indexes and find-links; its cache lies
# inside the venv (one file system: files are hard-linked, not copied; and out of the source tree, which tests copy
# and walk). Nothing is byte-compiled at install (uv would compile all of torch, transformers, mmcv...: 40 s of a
# fresh clone's 95 s): Python writes the .pyc of what is imported, once, which make allows even where
# PYTHONDONTWRITEBYTECODE is set (this machine sets it; every process would otherwise compile torch again)
UV := $(BIN)/uv
export UV_CACHE_DIR ?= $(abspath $(VENV))/.uv-cache
export UV_NATIVE_TLS ?= 1
# pip's sources, asked once and only by a recipe that installs
PIP_SOURCES = $(eval PIP_SOURCES := $$(shell $(PYTHON) tools/pip_sources.py))$(PIP_SOURCES)
UV_INSTALL = $(UV) pip install --quiet --index-strategy unsafe-best-match $(PIP_SOURCES) --python
VENV_INSTALL = $(UV_INSTALL) $(BIN)/python
unexport PYTHONDONTWRITEBYTECODE
RUNTIME := $(VENV)/.runtime
STAMP := $(VENV)/.installed
# test-only oracles, installed apart: pycls 0.1.1's model code (no OpenCV needed for it, hence --no-deps), and the
# seed's mmclassification 0.25.0 on mmcv 1.7.2's pure-Python "lite" build, whose setup.py needs pkg_resources
# (setuptools<70) in its build environment; their pinned deps would swap torch
ORACLES := pycls==0.1.1 yacs simplejson
MM_ORACLES := mmcv==1.7.2 mmcls==0.25.0
# pytest-xdist: a worker per core and one more, at most 4 (each holds its own copies of the session fixtures and zoo
# models): the extra worker takes the core of a test that waits on a server, a timeout or a child (2 cores,
# installed venv: 642 -> 585 s; on fresh clones no gain beyond the runs' spread: bench/README.md); each worker
# computes on one thread (tests/conftest.py)
# (nproc without the OpenMP variables, which it obeys; getconf where there is no nproc)
WORKERS ?= $(shell cores=$$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc 2>/dev/null || \
	getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1); echo $$(( cores < 4 ? cores + 1 : 4 )))
PYTEST := $(BIN)/python -m pytest -q -n $(WORKERS)
ORACLE_TESTS := tests/test_known_answers.py tests/test_preprocess.py tests/test_zoo_equivalence.py tests/test_timm.py \
	tests/test_export.py tests/test_export_hf.py tests/test_export_mmcls.py tests/test_export_onnx.py

.PHONY: install test test-suite test-fast test-latest test-floor lint demo bench lock clean

# what the demo needs: the package and its runtime dependencies (no test oracle)
$(RUNTIME): pyproject.toml Makefile $(LOCK) tools/check_lock.py
	$(PYTHON) tools/check_lock.py $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PIP) -c $(LOCK) uv
	$(VENV_INSTALL) -c $(LOCK) $(firstword $(TORCH_SPEC)) -e .
	touch $(RUNTIME)

$(STAMP): $(RUNTIME)
	# one resolve, the pins included, so the test extra (timm) cannot swap torch or torchvision for other builds
	$(VENV_INSTALL) -c $(LOCK) $(TORCH_SPEC) -e ".[test]"
	$(VENV_INSTALL) -c $(LOCK) --no-deps $(ORACLES)
	printf 'setuptools<70\n' > $(VENV)/build-constraints.txt
	$(VENV_INSTALL) -c $(LOCK) --no-deps --build-constraint $(VENV)/build-constraints.txt $(MM_ORACLES)
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# every test: lint, the floor's demo and the suite side by side (installing the floor venv is mostly waiting on
# disk); the suite runs whole files per worker, so that each module's fixtures are built once
test: $(STAMP)
	$(MAKE) --no-print-directory -j3 --output-sync=target lint test-floor test-suite

test-suite: $(STAMP)
	$(PYTEST) --dist loadfile

# the inner loop (<= 90 s on 2 cores): every subpackage, no slow test and no crafted-input case (make test runs
# them); neither lint nor the floor venv
test-fast: $(STAMP)
	$(PYTEST) -m "not slow and not hostile"

demo: $(RUNTIME)
	$(BIN)/python -m regnet_convert.demo

# The newest versions the pyproject allows (no lock): do our pipeline, the recorded known answers and the live
# oracles still agree? Failures name the package versions and the steps that moved (README, "Versions").
test-latest:
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/pip install --quiet --disable-pip-version-check --upgrade pip
	.venv-latest/bin/pip install --quiet --disable-pip-version-check --upgrade $(TORCH_SPEC) -e ".[test]"
	.venv-latest/bin/pip install --quiet --disable-pip-version-check --no-deps $(ORACLES)
	printf 'setuptools<70\n' > .venv-latest/build-constraints.txt
	.venv-latest/bin/pip install --quiet --disable-pip-version-check --no-deps \
		--build-constraint .venv-latest/build-constraints.txt $(MM_ORACLES)
	.venv-latest/bin/pip freeze --exclude-editable | grep -iE '^(opencv|numpy|torch|pillow|mmcv|timm|transformers|onnx)'
	.venv-latest/bin/python -m pytest -q -p no:cacheprovider $(ORACLE_TESTS)

# Every runtime dependency at the floor the pyproject declares (torch 2.13, numpy 1.24, OpenCV 4.8, Pillow 10, ...):
# a conversion and a validation (the demo, its self-check included) must work there too.
.venv-floor/.installed: pyproject.toml Makefile $(LOCK) tools/check_lock.py tools/floors.py $(RUNTIME)
	$(PYTHON) tools/check_lock.py $(LOCK)
	$(PYTHON) -m venv .venv-floor
	$(PYTHON) tools/floors.py > .venv-floor/floors.txt
	# the floors exactly; what they pull in (torch's own dependencies) from the lock
	$(PYTHON) tools/floors.py --others $(LOCK) > .venv-floor/constraints.txt
	$(UV_INSTALL) .venv-floor/bin/python -c .venv-floor/constraints.txt -r .venv-floor/floors.txt -e .
	touch .venv-floor/.installed

test-floor: .venv-floor/.installed
	folder=$$(mktemp -d) && cd $$folder && $(CURDIR)/.venv-floor/bin/python -m regnet_convert.demo demo && \
		cd / && rm -rf $$folder

# adopt the current venv's versions as the lock (after a full `make test` passed in it)
lock: $(STAMP)
	{ sed -n '/^#/p' $(LOCK); $(BIN)/pip freeze --exclude-editable | grep -vE '^(torch|torchvision|triton|nvidia-|cuda-)'; } > $(LOCK).new
	$(PYTHON) tools/check_lock.py $(LOCK).new && mv $(LOCK).new $(LOCK)

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .venv-latest .venv-floor .pytest_cache
