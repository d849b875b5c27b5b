# ttt_nb: `make run` trains and evaluates on the embedded default corpus; `make test` runs every test.
# Both create (or reuse) the virtual environment in $(VENV) and install the exact versions of requirements.lock,
# transitive ones included (`make lock` regenerates it from settings.ini's ranges and lock.in's CPU torch pin).
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.ttt_nb-installed
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export WANDB_MODE ?= disabled
export TOKENIZERS_PARALLELISM ?= false
export PYTHONHASHSEED ?= 0

.PHONY: install lock lint test test-compat test-bare gpu-wheels gpu-check gpu-check-smoke sync-check nbdev-test pytest run report clean bench help

help:
	@echo "make run    train + evaluate the main job on the embedded default corpus (CPU, no download)"
	@echo "make test   install, check notebooks and ttt_nb/ are in sync, run nbdev_test, pytest and the gpu-check smoke"
	@echo "make lock   re-resolve requirements.lock to today's newest versions within settings.ini's ranges"
	@echo "make test-compat  model and generation tests at the oldest and newest transformers allowed"
	@echo "make gpu-check    the one GPU measurement run (benchmarks/gpu_check.py); SMOKE=1: tiny sizes on CPU, in make test"
	@echo "make gpu-wheels   download the wheels a GPU image lacks into .gpu-wheels/ (carry it to the GPU machine)"
	@echo "make test-bare    import and train in a bare environment with only the GPU image's packages (.venv-bare)"

LOCK := requirements.lock
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# Every package at the version the lock names (the CPU torch wheel among them), then ttt_nb itself without
# resolving anything, then `pip check`: a release elsewhere changes nothing until someone runs `make lock`.
$(STAMP): settings.ini setup.py $(LOCK)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -r $(LOCK) 2>&1 | { grep -v "^WARNING: Location" || true; }
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

install: $(STAMP)

# Re-resolve settings.ini's ranges (with lock.in: the CPU torch build) to today's newest versions; then run `make test`.
lock:
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q "pip-tools>=7.4"
	$(BIN)/pip-compile -q --extra dev --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links \
	  --output-file $(LOCK) setup.py lock.in
	@echo "$(LOCK) regenerated: run 'make test' before committing it"

# The oldest and the newest transformers that settings.ini allows, each in its own environment (.venv-compat-*),
# through the model and generation tests (notebooks 07_model and 21_generate, tests/test_generate.py).
test-compat:
	bash tools/test_compat.sh

# README.md is written from nbs/index.ipynb by tools/readme.py, not nbdev_readme: nbdev_readme renders
# through Quarto, which these machines and CI do not have.
# The notebooks are the source. Export them and fail if that changed ttt_nb/ (out of sync),
# and clean them and fail if that changed a notebook (uncleaned outputs or metadata).
sync-check: $(STAMP)
	@tmp=$$(mktemp -d); cp -r ttt_nb nbs $$tmp/; \
	cp README.md $$tmp/README.md 2>/dev/null || true; \
	$(BIN)/nbdev_clean; $(BIN)/nbdev_export; $(PY) tools/readme.py nbs/index.ipynb README.md; \
	if ! cmp -s README.md $$tmp/README.md; then \
	  echo "README.md was out of sync with nbs/index.ipynb: it has now been regenerated; review and commit."; rm -rf $$tmp; exit 1; fi; \
	if ! diff -rq -x __pycache__ $$tmp/ttt_nb ttt_nb >/dev/null; then \
	  diff -r -x __pycache__ $$tmp/ttt_nb ttt_nb | head -40; \
	  echo "ttt_nb/ was out of sync with nbs/: nbdev_export has now rewritten it; review and commit."; rm -rf $$tmp; exit 1; fi; \
	if ! diff -rq -x .ipynb_checkpoints $$tmp/nbs nbs >/dev/null; then \
	  diff -rq -x .ipynb_checkpoints $$tmp/nbs nbs; \
	  echo "a notebook was not clean: nbdev_clean has now cleaned it; review and commit."; rm -rf $$tmp; exit 1; fi; \
	rm -rf $$tmp; echo "notebooks and ttt_nb/ are in sync"

nbdev-test: $(STAMP)
	IN_TEST=1 $(BIN)/nbdev_test --n_workers 2 --timing --skip_file_re '^(_|\.|run_)'

pytest: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile tests

# pyflakes, bugbear and import order (ruff.toml); ttt_nb/'s import order is checked in the notebooks that write it
lint: $(STAMP)
	$(BIN)/ruff check ttt_nb tests tools benchmarks
	$(BIN)/ruff check --select I nbs

test: sync-check lint nbdev-test pytest gpu-check-smoke

# CPU benchmarks (JSON under benchmarks/results/); run them on a quiet machine
bench: $(STAMP)
	$(PY) benchmarks/bench_ref_cpu.py --threads 1
	$(PY) benchmarks/bench_eval.py --threads 1
	$(PY) benchmarks/bench_generate.py --threads 1
	$(PY) benchmarks/bench_train.py
	TRITON_INTERPRET=1 $(PY) benchmarks/bench_kernels.py --smoke
	$(PY) tools/benchmarks_md.py

# The wheels a GPU image (torch, triton, transformers, safetensors, tokenizers, numpy; no network) lacks: fastcore (a
# runtime requirement: @patch) at the lock's version, and for the kernel comparison flash-linear-attention (fla-core, einops).
# Pure-Python wheels, about 1.5 MB: `bash tools/gpu_run.sh` unpacks them there (no pip, no network).
GPU_WHEELS_DIR := .gpu-wheels
FLA_VERSION := 0.5.2
gpu-wheels:
	mkdir -p $(GPU_WHEELS_DIR)
	python3 -m pip download -q --no-deps --only-binary :all: -d $(GPU_WHEELS_DIR) \
	  "$$(grep -E '^fastcore==' $(LOCK))" flash-linear-attention==$(FLA_VERSION) fla-core==$(FLA_VERSION) einops 2>&1 | { grep -v "^WARNING: Location" || true; }
	@ls $(GPU_WHEELS_DIR); du -sh $(GPU_WHEELS_DIR)

# The one GPU measurement run (correctness, kernel speed, training throughput, decode; benchmarks/gpu_check.py), about 8
# minutes on one H100; it writes benchmarks/results/gpu_check.json and benchmarks/gpu_check.md, then BENCHMARKS.md.
# SMOKE=1: the same code path at tiny sizes on CPU (Triton's interpreter), results under a temporary folder only.
gpu-check: $(STAMP)
ifeq ($(SMOKE),1)
	$(PY) benchmarks/gpu_check.py --smoke
else
	$(PY) benchmarks/gpu_check.py
	$(PY) tools/benchmarks_md.py
endif

gpu-check-smoke: $(STAMP)
	$(MAKE) --no-print-directory gpu-check SMOKE=1

# A bare environment with only what the GPU image has (torch, triton 3.6, transformers 5.17, safetensors, tokenizers,
# numpy) plus the carried wheels: imports the package, trains the tiny preset a few steps, runs the gpu-check smoke.
test-bare: gpu-wheels
	bash tools/test_bare.sh

# The main job: the curriculum template with its defaults (python-stdlib, byte tokenizer, tiny preset, CPU), with
# progress bars over training steps and checkpoint evaluations, a line per phase, and at the end the run folder and
# the headline numbers with their CIs.
run: $(STAMP)
	$(PY) -c "from ttt_nb.curriculum import run_default; run_default('runs')"
	@if command -v quarto >/dev/null; then $(MAKE) report; else echo "quarto not found: the results site (reports/) was not rendered"; fi

# The results site: checked always, rendered where Quarto is installed
report: $(STAMP)
	$(PY) tools/check_site.py
	@if command -v quarto >/dev/null; then quarto render; else echo "quarto not found: site checked, not rendered"; fi

clean:
	rm -rf _docs _proc _site runs .pytest_cache
