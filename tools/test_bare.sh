#!/usr/bin/env bash
# `make test-bare`: the package in an environment with only what the GPU image has, plus the carried wheels.
# The GPU image: torch 2.11, triton 3.6, transformers 5.17, safetensors, tokenizers, numpy, Python 3.12; no nbdev,
# papermill, wandb, datasets, ipywidgets, matplotlib, seaborn, fastcore. Here: .venv-bare with the lock's CPU torch
# (no CPU build of torch 2.11 or cp312 CPU wheel is reachable from this machine), triton 3.6.0 and transformers 5.17.0
# (the image's versions; pip brings transformers' own dependencies: huggingface-hub, tqdm, pyyaml, regex, typer),
# safetensors and tokenizers at the lock's versions, numpy below 2.4 (triton 3.6's interpreter calls int() on
# 1-element arrays, which NumPy 2.4 refuses; the compiled GPU path does not), then the wheels of .gpu-wheels/
# (make gpu-wheels) with --no-index --no-deps, then ttt_nb with --no-deps. Then: nothing absent is importable, `import
# ttt_nb` and its GPU-side modules import, the tiny preset trains a few steps on the embedded corpus,
# benchmarks/gpu_check.py --smoke runs end to end, every kernel compiles for sm_90 with triton 3.6, and the sources
# compile under Python 3.12 where one is installed. One line per check; exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false PIP_DISABLE_PIP_VERSION_CHECK=1
ENV=${BARE_VENV:-.venv-bare}
WHEELS=${GPU_WHEELS_DIR:-.gpu-wheels}
TRITON=${BARE_TRITON:-3.6.0}
TRANSFORMERS=${BARE_TRANSFORMERS:-5.17.0}
NUMPY=${BARE_NUMPY:-numpy<2.4}
ls "$WHEELS"/fastcore-*.whl >/dev/null 2>&1 || { echo "test-bare: no fastcore wheel in $WHEELS: run 'make gpu-wheels' first"; exit 2; }
pin() { grep -E "^$1==" requirements.lock | cut -d' ' -f1; }

test -x $ENV/bin/python || python3 -m venv $ENV
P=$ENV/bin/python
# pip's own noise here: find-links warnings, and on a rerun its note that ttt_nb's optional packages are absent (on purpose)
quiet() { "$@" 2>&1 | { grep -v -E "^WARNING: Location|^ERROR: pip's dependency resolver|^ttt-nb [0-9.]+ requires" || true; }; }
quiet $P -m pip install -q "$(pin torch)" "triton==$TRITON" "transformers==$TRANSFORMERS" \
  "$(pin safetensors)" "$(pin tokenizers)" "$NUMPY" "$(pin setuptools)"
quiet $P -m pip install -q --no-index --no-deps "$WHEELS"/*.whl
quiet $P -m pip install -q --no-deps --no-build-isolation -e .
$P -c "import torch, triton, transformers, numpy, sys; print('test-bare: python', sys.version.split()[0], 'torch', torch.__version__,
'triton', triton.__version__, 'transformers', transformers.__version__, 'numpy', numpy.__version__)"

# What the GPU image lacks must be absent here too, or this test proves nothing.
$P - <<'EOF'
import importlib.util
present = [m for m in ('nbdev', 'papermill', 'wandb', 'datasets', 'ipywidgets', 'matplotlib', 'seaborn', 'IPython', 'pandas')
           if importlib.util.find_spec(m)]
assert not present, f"test-bare: the bare environment has {present}, which the GPU image lacks: remove {'$ENV'} and rerun"
print('test-bare: absent as on the GPU image: nbdev papermill wandb datasets ipywidgets matplotlib seaborn IPython pandas')
EOF

# Every module the GPU run needs imports, and the tiny preset trains on the embedded corpus (CPU).
TTT_NB_CACHE=$(mktemp -d) $P - <<'EOF'
import importlib, tempfile
mods = ['ttt_nb', 'ttt_nb.config', 'ttt_nb.model', 'ttt_nb.baselines', 'ttt_nb.state', 'ttt_nb.data', 'ttt_nb.train',
        'ttt_nb.eval', 'ttt_nb.generate', 'ttt_nb.checkpoint', 'ttt_nb.ops.dispatch', 'ttt_nb.ops.ttt_ref',
        'ttt_nb.ops.ttt_linear_triton', 'ttt_nb.ops.ttt_mlp_triton']
for m in mods: importlib.import_module(m)
print(f'test-bare: {len(mods)} modules import:', ' '.join(mods))
import torch
from ttt_nb.train import TrainConfig, Trainer
with tempfile.TemporaryDirectory() as d:
    cfg = TrainConfig(preset='tiny', corpus='python-stdlib', tokenizer='byte', seq_len=32, batch_size=2, steps=4,
                      warmup_steps=1, eval_batches=1, eval_batch_size=2, n_checkpoints=0, eval_every=0, out_dir=d,
                      progress=False, wandb='disabled', run_eval=False)
    tr = Trainer(cfg)
    losses = [tr.train_step()[0] for _ in range(4)]
assert all(torch.isfinite(torch.tensor(losses))), losses
print('test-bare: tiny preset trained 4 steps on python-stdlib, losses', [round(l, 3) for l in losses])
EOF

$P benchmarks/gpu_check.py --smoke
# The compiled path, which the interpreter does not run: every kernel builds for sm_90 (H100) with this triton (ptxas ships with it).
$P tests/_kernel_check.py compile | $P -c "
import json, sys
r = json.loads(sys.stdin.read().strip().splitlines()[-1])
bad = {k: v['error'][:200] for k, v in r.items() if 'error' in v}
assert not bad, f'test-bare: kernels do not compile for sm_90: {bad}'
print('test-bare: kernels compile for sm_90:', ', '.join(f\"{k} ({v['shared']} B shared)\" for k, v in r.items()))"
# The GPU image runs Python 3.12: the package and the benchmark scripts must at least compile there (nothing is written).
PY312=
for c in python3.12 $(ls -d "$(pyenv root 2>/dev/null || echo /nonexistent)"/versions/3.12*/bin/python3.12 2>/dev/null); do
  if "$c" -c pass 2>/dev/null; then PY312=$c; break; fi
done
if [ -n "$PY312" ]; then
  "$PY312" -c "import pathlib, sys
n = [compile(p.read_text(), str(p), 'exec') for a in sys.argv[1:] for p in sorted(pathlib.Path(a).rglob('*.py'))]
print(f'test-bare: {len(n)} files of ttt_nb, benchmarks and tests compile under Python {sys.version.split()[0]}')" ttt_nb benchmarks tests
else
  echo "test-bare: no Python 3.12 on this machine: the 3.12 compile check was skipped"
fi
echo "test-bare: passed"
