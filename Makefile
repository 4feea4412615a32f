# Everything installs into .venv. TORCH_SPEC pins torch and the torchvision built against it (timm, a test
# oracle, needs torchvision; a mismatched pair fails to import): override both together, e.g.
# make TORCH_SPEC="torch==2.13.0 torchvision==0.28.0" ...
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint demo bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# one resolve, the pins included, so the test extra (timm) cannot swap torch or torchvision for other builds
	$(BIN)/pip install --quiet $(TORCH_SPEC) -e ".[test]"
	# test-only oracle: pycls 0.1.1's model code (no OpenCV needed for it, hence --no-deps)
	$(BIN)/pip install --quiet --no-deps pycls==0.1.1 yacs simplejson
	# test-only oracle: the seed's mmclassification 0.25.0 on mmcv 1.7.2's pure-Python "lite" build, whose
	# setup.py needs pkg_resources (setuptools<70) in its build environment; their pinned deps would swap torch
	printf 'setuptools<70\n' > $(VENV)/build-constraints.txt
	$(BIN)/pip install --quiet --no-deps --build-constraint $(VENV)/build-constraints.txt mmcv==1.7.2 mmcls==0.25.0
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: $(STAMP) lint
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/python -m regnet_convert.demo

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache
