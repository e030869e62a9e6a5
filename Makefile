# Two commands for a fresh machine (see README.md):
#   make course  - set everything up, then run the whole course headless
#   make test    - set everything up, then run the whole test suite (offline, fast mode)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
# The exact tested versions (pip constraints, made by `make constraints`). Its torch==... line is the
# only place that names torch's version: setup and .ci/run read it from there.
CONSTRAINTS := constraints.txt
TORCH_VERSION := $(shell sed -n 's/^torch==\([^[:space:];#]*\).*/\1/p' $(CONSTRAINTS) 2>/dev/null)
# make check-lower-bounds: a separate venv with every dependency at its lower bound, and these tests.
LOWER_VENV ?= .venv-lower
LOWER_TESTS ?= tests/test_device.py tests/test_training.py tests/test_data.py tests/test_uncertainty.py \
	tests/test_batching.py tests/test_instructions.py tests/test_text_metrics.py tests/test_runner.py \
	tests/test_causal_lm.py tests/test_grading.py tests/test_hyperparameters.py tests/test_multitask.py

.PHONY: setup constraints check-lower-bounds course course-fast test test-other-precision lint doctor lab normalize clean

# $(call install-torch,PYTHON,CONSTRAINTS): torch $(TORCH_VERSION) into PYTHON's environment unless it is there
# already: the CUDA build where a CUDA GPU is found, else the CPU build (PyPI's Linux wheel is the CUDA one,
# several GB). A torch of another version is replaced, so that the install with -c never swaps it itself.
install-torch = @test -n "$(TORCH_VERSION)" || { echo "$(CONSTRAINTS) has no torch==VERSION line"; exit 1; }; \
	if $(1) -c "import sys, torch; sys.exit(torch.__version__.split('+')[0] != '$(TORCH_VERSION)')" 2>/dev/null; then \
		echo "torch already installed: $$($(1) -c 'import torch; print(torch.__version__)')"; \
	elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "CUDA GPU found: installing the CUDA build of torch $(TORCH_VERSION)"; \
		$(1) -m pip install -c $(2) "torch==$(TORCH_VERSION)"; \
	else \
		echo "No CUDA GPU found: installing the CPU build of torch $(TORCH_VERSION)"; \
		$(1) -m pip install --retries 0 --extra-index-url https://download.pytorch.org/whl/cpu -c $(2) "torch==$(TORCH_VERSION)"; \
	fi

setup: $(VENV)/.setup-done

$(VENV)/.setup-done: pyproject.toml $(CONSTRAINTS) helpers/assets.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(call install-torch,$(BIN)/python,$(CONSTRAINTS))
	$(BIN)/python -m pip install -c $(CONSTRAINTS) -e ".[dev]"
	$(BIN)/ftcourse install-assets
	@command -v bwrap >/dev/null 2>&1 || echo "note: bubblewrap (bwrap) is not installed: \`ftcourse grade\` will refuse \
	to grade. Install it on the grading machine (Debian/Ubuntu: sudo apt-get install bubblewrap; Fedora: sudo dnf \
	install bubblewrap), then check with \`$(BIN)/ftcourse doctor --grading\`."
	touch $@

# Rewrite constraints.txt from $(VENV) once `make test` passes there with the versions to keep:
# pip freeze, less the course itself and the embedded-asset packages (ftcourse install-assets pins
# those), with torch's local label (+cpu) dropped so that the line fits the CPU and the CUDA build.
constraints:
	@assets="$$($(BIN)/python -c 'import re; from helpers.assets import ASSETS; print("|".join(re.sub(r"[-_.]+", "[-_.]+", a.distribution) for a in ASSETS.values()))')" && \
	{ printf '%s\n' \
		"# The exact versions the course is tested with (CI, make setup): pip constraints, not requirements." \
		"#   pip install -c constraints.txt -e \".[dev]\"" \
		"# Made by \`make constraints\` from a .venv that passed \`make test\`: pip freeze --exclude-editable," \
		"# less the embedded-asset packages (ftcourse install-assets pins those itself), with torch's" \
		"# local label (+cpu) dropped so that its line fits the CPU and the CUDA build. The torch line is" \
		"# the only place that names torch's version: the Makefile and .ci/run read it from here." \
		"# To move on: upgrade .venv (pip install -U ..., keeping torch's build), make test, make constraints." \
		"# The oldest versions that work are pyproject.toml's lower bounds: make check-lower-bounds."; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -viE "^($$assets)==" | sed -E 's/^(torch==[^+]+)\+.*/\1/'; \
	} > $(CONSTRAINTS).tmp && mv $(CONSTRAINTS).tmp $(CONSTRAINTS) && echo "wrote $(CONSTRAINTS)"

# Manual check of pyproject.toml's lower bounds (about 7 min on 2 cores, 2.7 GB in $(LOWER_VENV); run it after
# changing a bound, with the oldest Python the course supports: PYTHON=python3.11): a fresh venv with every
# direct dependency of .[dev] at its lower bound (.ci/lower_bounds.py), transitive ones free, then
# LOWER_TESTS. torch stays at $(TORCH_VERSION): only that build lies on the course's machines, any other is
# a multi-GB download, so torch's own lower bound is the one this check does not test.
check-lower-bounds:
	rm -rf $(LOWER_VENV)
	$(PYTHON) -m venv $(LOWER_VENV)
	$(LOWER_VENV)/bin/python .ci/lower_bounds.py --extras dev > $(LOWER_VENV)/lower-bounds.txt
	cat $(LOWER_VENV)/lower-bounds.txt
	$(call install-torch,$(LOWER_VENV)/bin/python,$(LOWER_VENV)/lower-bounds.txt)
	$(LOWER_VENV)/bin/python -m pip install -c $(LOWER_VENV)/lower-bounds.txt -e ".[dev]"
	$(LOWER_VENV)/bin/python -m pip check
	$(LOWER_VENV)/bin/python -m pip freeze --exclude-editable > $(LOWER_VENV)/installed.txt
	FTCOURSE_CACHE=$(CURDIR)/$(LOWER_VENV)/cache $(LOWER_VENV)/bin/ftcourse install-assets
	FTCOURSE_CACHE=$(CURDIR)/$(LOWER_VENV)/cache HF_HUB_OFFLINE=1 FTCOURSE_FAST=1 \
		$(LOWER_VENV)/bin/python -m pytest -p no:cacheprovider --durations=10 $(LOWER_TESTS)
	@echo "Lower bounds pass $(LOWER_TESTS) (installed versions: $(LOWER_VENV)/installed.txt)"

course: setup
	$(BIN)/ftcourse run

course-fast: setup
	$(BIN)/ftcourse run --fast

# The whole suite once in the precision this machine trains in natively (bf16 on a CPU with
# AVX512-BF16/AMX, else fp32), then the notebooks that train once more in the other precision
# where that is affordable: fp32 on a native-bf16 CPU. Without native bf16, emulated bf16 would
# take hours; there the bf16 path is covered by tests/test_device.py (real 2-step Trainer runs).
NATIVE_BF16 = $(shell $(BIN)/python -c "from helpers.device import detect_capabilities as d; print(int(d().cpu_bf16))" 2>/dev/null)
MAIN_PRECISION = $(if $(filter 1,$(NATIVE_BF16)),bf16,fp32)
TRAINING_NOTEBOOKS = course/01_strategies.ipynb course/03_bert_classification.ipynb \
	course/04_gpt_instruction_tuning.ipynb course/05_hyperparameters.ipynb course/06_catastrophic_forgetting.ipynb course/07_overfitting_imbalance.ipynb course/08_multitask.ipynb \
	course/09_evaluation.ipynb course/11_peft.ipynb \
	solutions/13_exercise_sentiment.ipynb
PYTEST = HF_HUB_OFFLINE=1 FTCOURSE_FAST=1 $(BIN)/python -m pytest --nbval-lax --nbval-current-env --nbval-cell-timeout=900

test: setup lint
	@echo "== whole suite, FTCOURSE_PRECISION=$(MAIN_PRECISION)"
	FTCOURSE_PRECISION=$(MAIN_PRECISION) $(PYTEST) tests course solutions $(PYTEST_ARGS)
	@$(MAKE) --no-print-directory test-other-precision

test-other-precision: setup
	@if [ "$(NATIVE_BF16)" = "1" ]; then \
		echo "== training notebooks again, FTCOURSE_PRECISION=fp32"; \
		FTCOURSE_PRECISION=fp32 $(PYTEST) $(TRAINING_NOTEBOOKS) tests/test_device.py $(PYTEST_ARGS); \
	else \
		echo "== no native bf16 on this CPU: bf16 is tested by tests/test_device.py, not by the notebooks"; \
	fi

# Lint and format check ([tool.ruff] in pyproject.toml); `$(BIN)/ruff format .` and `$(BIN)/ruff check --fix .` mend.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

doctor: setup
	$(BIN)/ftcourse doctor

lab: setup
	$(BIN)/jupyter lab course/

normalize: setup
	$(BIN)/ftcourse normalize

clean:
	rm -rf executed .pytest_cache
