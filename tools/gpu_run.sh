#!/usr/bin/env bash
# The one command for a GPU machine (issue 16): `bash tools/gpu_run.sh [gpu_check.py options]`, run in a copy of this
# repository with .gpu-wheels/ beside it (`make gpu-wheels` fills it here; ~1.5 MB of pure-Python wheels). No network and
# no pip needed there: the wheels (fastcore, flash-linear-attention, fla-core, einops) are unpacked into .gpu-site/ and put
# on PYTHONPATH with the repository itself; the image brings torch, triton, transformers, safetensors, tokenizers, numpy.
# Then benchmarks/gpu_check.py (about 8 minutes on one H100, its own deadline 480 s; `timeout` stops it at 570 s, inside
# a 10-minute limit) writes benchmarks/results/gpu_check.json and benchmarks/gpu_check.md, tools/benchmarks_md.py
# rewrites BENCHMARKS.md, and all of it, the log and each stage's JSON and log go to $OUT (default gpu_out/).
# PYTHON=... picks the interpreter (default python3); options are passed to gpu_check.py (--smoke: tiny sizes, e.g. on CPU).
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
OUTDIR=${OUT:-gpu_out}
PY=${PYTHON:-python3}
mkdir -p "$OUTDIR"
SITE=$PWD/.gpu-site
if ls .gpu-wheels/*.whl >/dev/null 2>&1; then
  $PY -c "import glob, sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sorted(glob.glob('.gpu-wheels/*.whl'))]" "$SITE" \
    || { echo "gpu_run: could not unpack .gpu-wheels/ into $SITE"; exit 2; }
  echo "gpu_run: unpacked $(ls .gpu-wheels/*.whl | xargs -n1 basename | tr '\n' ' ')"
else
  echo "gpu_run: no .gpu-wheels/ here (run 'make gpu-wheels' and carry it along): fastcore must already be installed"
fi
export PYTHONPATH=$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}
$PY -c "import ttt_nb.model, ttt_nb.train, ttt_nb.generate" \
  || { echo "gpu_run: ttt_nb does not import here (see above); nothing was measured"; exit 2; }
timeout 570 $PY benchmarks/gpu_check.py --work-dir "$OUTDIR/stages" "$@" 2>&1 | tee "$OUTDIR/gpu_check.log"
rc=${PIPESTATUS[0]}
case " $* " in
  *" --smoke "*) ;;   # a smoke run leaves the committed results alone: its files are in the folder it printed, its stages in $OUTDIR/stages
  *) cp -f benchmarks/results/gpu_check.json benchmarks/gpu_check.md "$OUTDIR"/ 2>/dev/null
     $PY tools/benchmarks_md.py && cp -f BENCHMARKS.md "$OUTDIR"/ ;;
esac
echo "gpu_run: gpu_check.py exited $rc; files in $OUTDIR/ (gpu_check.json, gpu_check.md and BENCHMARKS.md unless --smoke; gpu_check.log; stages/)"
exit $rc
