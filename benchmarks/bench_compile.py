#!/usr/bin/env python
"""Training with and without torch.compile, paired: the study's shape (tiny Mamba, W=64, B=32, one thread) on this CPU.

    python benchmarks/bench_compile.py                 # 12 rounds of 8 steps each way
    python benchmarks/bench_compile.py --rounds 20 --steps 8

Two Trainers of the same configuration live in one process, one with `compile=True`. After untimed warm-up steps
(which compile the graphs a state-passing run needs), the rounds alternate between them, each round timing `--steps`
optimizer steps of one and then of the other (the order flips every round). On a shared CPU, single timings swing by
tens of percent with the other jobs; a paired ratio per round, eager CPU time over compiled CPU time, is steady,
and its median and range are the result. The two Trainers see the same batches and start from the same weights,
so their losses agree (their last losses are written as a check).
Writes benchmarks/results/compile.json and benchmarks/compile.md (a section of BENCHMARKS.md) and prints the summary.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS, MD = ROOT / 'benchmarks/results/compile.json', ROOT / 'benchmarks/compile.md'
sys.path.insert(0, str(ROOT / 'benchmarks'))
from bench_train import ROWS, SIZES  # noqa: E402  (the `study` row: one definition of the study's training shape)

_PRESET, _EXTRA = ROWS['study']
STUDY = dict(preset=_PRESET, corpus='python-stdlib', tokenizer='byte', seq_len=SIZES['cpu']['study'][0],
             batch_size=SIZES['cpu']['study'][1], **_EXTRA)


def write_md(r:dict):
    "The BENCHMARKS.md section of one result."
    hw, m, sp = r['hardware'], r['median_cpu_s_per_step'], r['speedup']
    L = [f"Command: `{r['command'].strip()}`  ", f"Last written: {r['created']}  ",
         f"Hardware: {hw.get('cpu')} ({hw.get('cpu_count')} cores, shared: load average {r['load_avg_end'][0]} at the end), torch {r['torch']}, one thread", '',
         "The study's training shape (`sweeps/study_stdlib_b32.yaml`: tiny preset, Mamba backbone, W=64, B=32, state passing), "
         f"eager against `compile=True`, paired: {r['rounds']} alternating rounds of {r['steps_per_round']} optimizer steps each way in one process, "
         "CPU time per step (the other jobs on the 2 cores move single timings by tens of percent; the per-round ratio is steadier).", '',
         '| | eager | torch.compile |', '|---|---|---|',
         f"| median CPU s/step | {m['eager']} | {m['compiled']} |",
         f"| tokens per CPU second | {r['cpu_tokens_per_s']['eager']:,} | {r['cpu_tokens_per_s']['compiled']:,} |",
         f"| warm-up ({r['warmup_steps']} steps, wall s) | {r['warmup_s']['eager']} | {r['warmup_s']['compiled']} (compiling; less with a warm inductor cache) |",
         f"| loss after the last round | {r['last_loss']['eager']:.6f} | {r['last_loss']['compiled']:.6f} |", '',
         f"Speed-up, eager over compiled CPU time per round: **median {sp['median']}x** (range {sp['min']}-{sp['max']} over {r['rounds']} rounds). "
         "The study sweep trains with `compile: true` (it changes how a run is computed, not what: `ttt_nb.curriculum.sweep.HOW_NOT_WHAT`); "
         "the head of `sweeps/study_stdlib_b32.yaml` says which of its runs were trained eager, in whole or in part.", '']
    MD.write_text('\n'.join(L))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--rounds', type=int, default=12, help='paired rounds (default 12)')
    p.add_argument('--steps', type=int, default=8, help='optimizer steps per side per round (default 8)')
    p.add_argument('--warmup', type=int, default=4, help='untimed steps first, each side (default 4: the compiles)')
    p.add_argument('--md-only', action='store_true', help='rewrite benchmarks/compile.md from the last result')
    a = p.parse_args(argv)
    if a.md_only: write_md(json.loads(RESULTS.read_text())); return
    if a.rounds < 2 or a.steps < 1 or a.warmup < 3:
        sys.exit('bench_compile: need --rounds >= 2, --steps >= 1 and --warmup >= 3 (the compiled side builds 3 graphs)')
    import torch

    from ttt_nb.core import hardware_info, write_json_atomic
    from ttt_nb.train import TrainConfig, Trainer
    total = a.warmup + a.rounds * a.steps + 1
    tr, warm = {}, {}
    with tempfile.TemporaryDirectory() as d:
        for comp in (False, True):
            cfg = TrainConfig(**STUDY, steps=total, warmup_steps=1, eval_batches=1, eval_batch_size=1, n_checkpoints=0, eval_every=0,
                              out_dir=str(Path(d) / str(comp)), progress=False, wandb='disabled', run_eval=False, compile=comp)
            tr[comp] = Trainer(cfg)
            t = time.perf_counter()
            for _ in range(a.warmup): tr[comp].train_step()
            warm[comp] = round(time.perf_counter() - t, 1)
        cpu = {False: [], True: []}
        last = {}
        for rnd in range(a.rounds):
            for comp in ((True, False) if rnd % 2 else (False, True)):
                t = time.process_time()
                for _ in range(a.steps): last[comp] = tr[comp].train_step()[0]
                cpu[comp].append((time.process_time() - t) / a.steps)
    ratio = [e / c for e, c in zip(cpu[False], cpu[True])]
    tok = STUDY['seq_len'] * STUDY['batch_size']
    res = dict(created=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
               command='python benchmarks/bench_compile.py ' + ' '.join(argv if argv is not None else sys.argv[1:]),
               config=STUDY, rounds=a.rounds, steps_per_round=a.steps, warmup_steps=a.warmup, warmup_s=dict(eager=warm[False], compiled=warm[True]),
               cpu_s_per_step=dict(eager=[round(x, 4) for x in cpu[False]], compiled=[round(x, 4) for x in cpu[True]]),
               median_cpu_s_per_step=dict(eager=round(statistics.median(cpu[False]), 4), compiled=round(statistics.median(cpu[True]), 4)),
               cpu_tokens_per_s=dict(eager=round(tok / statistics.median(cpu[False])), compiled=round(tok / statistics.median(cpu[True]))),
               speedup=dict(median=round(statistics.median(ratio), 3), min=round(min(ratio), 3), max=round(max(ratio), 3)),
               last_loss=dict(eager=last[False], compiled=last[True]), torch=torch.__version__,
               hardware=hardware_info(), load_avg_end=[round(x, 2) for x in os.getloadavg()])
    write_json_atomic(res, RESULTS); write_md(res)
    print(json.dumps({k: res[k] for k in ('median_cpu_s_per_step', 'cpu_tokens_per_s', 'speedup', 'warmup_s', 'last_loss', 'load_avg_end')}, indent=1))


if __name__ == '__main__':
    main()
