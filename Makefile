# ttt_nb: `make run` trains and evaluates on the embedded default corpus; `make test` runs every test.
# Both create (or reuse) the virtual environment in $(VENV) and install through constraints.txt.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.ttt_nb-installed
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export WANDB_MODE ?= disabled
export TOKENIZERS_PARALLELISM ?= false
export PYTHONHASHSEED ?= 0

.PHONY: install test sync-check nbdev-test pytest run report clean bench help

help:
	@echo "make run    train + evaluate the main job on the embedded default corpus (CPU, no download)"
	@echo "make test   install, check notebooks and ttt_nb/ are in sync, run nbdev_test and pytest"

$(STAMP): settings.ini setup.py constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned, so that nothing pulls the multi-GB CUDA build
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0 triton==3.7.1
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

install: $(STAMP)

# The notebooks are the source. Export them and fail if that changed ttt_nb/ (out of sync),
# and clean them and fail if that changed a notebook (uncleaned outputs or metadata).
sync-check: $(STAMP)
	@tmp=$$(mktemp -d); cp -r ttt_nb nbs $$tmp/; \
	cp README.md $$tmp/README.md 2>/dev/null || true; \
	$(BIN)/nbdev_clean; $(BIN)/nbdev_export; $(PY) tools/nbpy.py to-md nbs/index.ipynb README.md; \
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

test: sync-check nbdev-test pytest

# CPU benchmarks (JSON under benchmarks/results/); run them on a quiet machine
bench: $(STAMP)
	$(PY) benchmarks/bench_ref_cpu.py --threads 1
	$(PY) benchmarks/bench_eval.py --threads 1
	$(PY) benchmarks/bench_generate.py --threads 1
	$(PY) benchmarks/bench_train.py
	TRITON_INTERPRET=1 $(PY) benchmarks/bench_kernels.py --smoke
	$(PY) tools/benchmarks_md.py

# The main job: the curriculum template with its defaults (python-stdlib, byte tokenizer, tiny preset, CPU)
run: $(STAMP)
	$(PY) -c "from ttt_nb.curriculum import run_default; run_default('runs')"
	@if command -v quarto >/dev/null; then $(MAKE) report; else echo "quarto not found: the results site (reports/) was not rendered"; fi

# The results site: checked always, rendered where Quarto is installed
report: $(STAMP)
	$(PY) tools/check_site.py
	@if command -v quarto >/dev/null; then quarto render; else echo "quarto not found: site checked, not rendered"; fi

clean:
	rm -rf _docs _proc _site runs .pytest_cache
