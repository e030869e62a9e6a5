# Two commands for a fresh machine (see README.md):
#   make course  - set everything up, then run the whole course headless
#   make test    - set everything up, then run the whole test suite (offline, fast mode)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
PYTEST_ARGS ?=

.PHONY: setup course course-fast test doctor lab normalize clean

setup: $(VENV)/.setup-done

$(VENV)/.setup-done: pyproject.toml helpers/assets.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@if $(BIN)/python -c "import torch" 2>/dev/null; then \
		echo "torch already installed: $$($(BIN)/python -c 'import torch; print(torch.__version__)')"; \
	elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "CUDA GPU found: installing the CUDA build of torch"; \
		$(BIN)/python -m pip install "torch==$(TORCH_VERSION)"; \
	else \
		echo "No CUDA GPU found: installing the CPU build of torch"; \
		$(BIN)/python -m pip install --retries 0 --extra-index-url https://download.pytorch.org/whl/cpu "torch==$(TORCH_VERSION)"; \
	fi
	$(BIN)/python -m pip install -e ".[dev]"
	$(BIN)/ftcourse install-assets
	touch $@

course: setup
	$(BIN)/ftcourse run

course-fast: setup
	$(BIN)/ftcourse run --fast

test: setup
	HF_HUB_OFFLINE=1 FTCOURSE_FAST=1 $(BIN)/python -m pytest --nbval-lax --nbval-current-env \
		--nbval-cell-timeout=900 tests course solutions $(PYTEST_ARGS)

doctor: setup
	$(BIN)/ftcourse doctor

lab: setup
	$(BIN)/jupyter lab course/

normalize: setup
	$(BIN)/ftcourse normalize

clean:
	rm -rf executed .pytest_cache
