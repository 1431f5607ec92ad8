# Set-up is part of every target: a fresh machine needs only `make demo` or `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.icl-rl-installed
# Installed before the package so that pip never resolves torch to a multi-GB CUDA build on a
# machine without a GPU. On a GPU machine: `make TORCH=torch test` (or install torch first).
TORCH ?= torch==2.13.0
export WANDB_MODE ?= offline
export HF_HUB_DISABLE_TELEMETRY = 1

.PHONY: install demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --progress-bar off "$(TORCH)"
	$(PY) -m pip install --progress-bar off -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/icl-rl demo --out runs/demo

test: $(STAMP)
	WANDB_MODE=disabled $(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) -m benchmarks

clean:
	rm -rf runs .pytest_cache
