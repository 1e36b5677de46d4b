# Two commands do everything on a fresh machine:
#   make run   - set up .venv, then run the main job on the bundled sample
#   make test  - set up .venv, then run the whole test suite
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
OUT    ?= out

.PHONY: setup run test lint clean slurm

setup: $(STAMP)

# torch is installed first and pinned: the CPU wheel lies on local disk, and an
# unpinned torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[slides,cluster,onnx,dev,bench]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m workflows.demo --out $(OUT)

test: $(STAMP)
	$(PY) -m pytest

# Install and start a single-node SLURM (root + apt; idempotent) for the `slurm` test marker.
slurm:
	.ci/slurm-up.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check pipeline unet workflows tests bench
	$(VENV)/bin/ruff format --check pipeline unet workflows tests bench

clean:
	rm -rf $(VENV) $(OUT)
