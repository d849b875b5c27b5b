#!/usr/bin/env python
"""Functional recall at r W of the study's models (issue 15, question 1): a key-value binding planted r W bytes before
its query, read by a model trained on natural text (it never saw the probe format).

    python tools/study_recall.py runs/study/stdlib-w64-sp-s0 ...       # probe these finished runs (skips those done)
    python tools/study_recall.py --table reports/study-recall/*.json    # the table across runs and seeds
    python tools/study_recall.py runs/study-b32/stdlib-w64-sp-s0 --out reports/study-recall-b32   # another study's runs,
                                                                      # which share the first study's run names

Per run, from its final checkpoint (one thread): `ttt_nb.memory.recall_summary` (forced choice among the 10 digits,
Wilson intervals over n probes; chance 0.1 for the first digit) and `ttt_nb.memory.recall_value_nll` (the value's
mean NLL under strided SW of W tokens minus under full context, paired over probe documents, t intervals; SW has the
run's evaluation stride). One JSON per run goes to reports/study-recall/<run>.json with the probe settings, the
seconds it took and the hardware. The table gives each arm's first-digit recall as the mean and range over its seeds
(every seed reads the same probes, so their hits are not pooled into one interval) and the SW - full difference
averaged over seeds with a t interval over seeds: exploratory, as the probes are out of the training distribution.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _runs import cpu_seconds, provenance  # tools/ is on sys.path when a tool runs

from ttt_nb.checkpoint import latest_checkpoint
from ttt_nb.core import write_json_atomic
from ttt_nb.eval import load_checkpoint
from ttt_nb.memory import carry_weights, mean_ci, recall_summary, recall_value_nll

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / 'reports' / 'study-recall'
RATIOS = (0.5, 1, 2, 5, 10, 20)        # recall: r = 1/2 is inside the window, the others beyond it
NLL_RATIOS = (1, 2, 5, 10, 20)


def probe(run_dir:Path, n:int=100, n_nll:int=50) -> dict:
    "Recall and value NLL (full against SW) of a finished run's final checkpoint."
    cur = json.loads((run_dir / 'curriculum.json').read_text())
    W, steps, stride = cur['W'], cur['train']['steps'], cur['eval']['stride']
    ck = latest_checkpoint(run_dir)
    if ck is None or not ck.name.endswith(f'{steps:06d}'):
        raise SystemExit(f"{run_dir}: no checkpoint of the final step {steps} (latest: {ck}); let the run finish first")
    torch.set_num_threads(1)
    model = load_checkpoint(ck)
    t0, c0 = time.time(), cpu_seconds()
    with torch.no_grad():
        rec = recall_summary(model, W, RATIOS, n=n, seed=0)
        nll = recall_value_nll(model, W, NLL_RATIOS, n=n_nll, seed=1, stride=stride)
    cw = carry_weights(model)
    t = cur['train']
    return dict(run=run_dir.name, checkpoint=ck.name, W=W, stride=stride, corpus=t['corpus'], seed=t['seed'], state_passing=t['state_passing'],
                control=t.get('control', 'none'), init_state=t.get('init_state', 'learned'), recall=rec, value_nll=nll,
                carry=cw['last'] if cw else None, seconds=dict(wall_s=round(time.time() - t0, 1), cpu_s=round(cpu_seconds() - c0, 1)),
                **provenance(threads=1))


def arm(rec:dict) -> str:
    "A run's arm: its name without the seed suffix."
    return rec['run'].rsplit('-s', 1)[0]


def table(files:list) -> str:
    "Per arm: first-digit recall (one seed: its Wilson CI; several: the mean and range over seeds) and SW - full value NLL (mean over seeds, t CI over seeds)."
    recs = [json.loads(Path(f).read_text()) for f in files]
    groups = {}
    for r in recs: groups.setdefault(arm(r), []).append(r)
    rs = sorted({row['r'] for r in recs for row in r['recall']['rows']})
    head = ['| arm | seeds | ' + ' | '.join(f'first digit at {r:g} W' for r in rs) + ' | ' +
            ' | '.join(f'SW - full at {r:g} W' for r in NLL_RATIOS) + ' |', '|---|---:|' + '---|' * (len(rs) + len(NLL_RATIOS))]
    for name, g in sorted(groups.items()):
        cells = []
        for r in rs:
            rows = [row for x in g for row in x['recall']['rows'] if row['r'] == r]
            if len(rows) == 1: cells.append(f"{rows[0]['first']:.2f} [{rows[0]['first_lo']:.2f}, {rows[0]['first_hi']:.2f}]"); continue
            p = [row['first'] for row in rows]   # the seeds read the same probes: their hits are not independent, so no pooled interval
            cells.append(f'{np.mean(p):.2f} ({min(p):.2f}-{max(p):.2f})')
        for r in NLL_RATIOS:
            d = [row['sw_minus_full'] for x in g for row in x['value_nll'] if row['r'] == r]
            m, lo, hi, _ = mean_ci(np.array(d, dtype=float))
            cells.append(f'{m:+.3f}' + (f' [{lo:+.3f}, {hi:+.3f}]' if len(d) > 1 else ''))
        head.append(f"| {name} | {len(g)} | " + ' | '.join(cells) + ' |')
    return '\n'.join(head)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('paths', nargs='+', help='finished run folders (or, with --table, the JSONs this tool wrote)')
    ap.add_argument('--table', action='store_true', help='print the table of these JSONs')
    ap.add_argument('--n', type=int, default=100, help='recall probes per r (default 100)')
    ap.add_argument('--n-nll', type=int, default=50, help='value-NLL probes per r (default 50)')
    ap.add_argument('--force', action='store_true', help='probe again a run whose JSON exists')
    ap.add_argument('--out', default=str(OUT), help='folder of the per-run JSONs (default reports/study-recall)')
    a = ap.parse_args(argv)
    missing = [p for p in a.paths if not Path(p).exists()]
    if missing: raise SystemExit(f"study_recall: not found: {', '.join(missing)}")
    if a.table: print(table(a.paths)); return
    for p in map(Path, a.paths):
        if not (p / 'curriculum.json').exists(): raise SystemExit(f"study_recall: {p} is not a curriculum run folder (no curriculum.json)")
        out = Path(a.out) / f'{p.name}.json'
        if out.exists() and not a.force: print(f'{p.name}: done, skipped ({out})'); continue
        res = probe(p, a.n, a.n_nll)
        write_json_atomic(res, out)
        first = ' '.join(f"{row['r']:g}W:{row['first']:.2f}" for row in res['recall']['rows'])
        print(f"{p.name}: first digit {first}; SW - full " + ' '.join(f"{x['r']:g}W:{x['sw_minus_full']:+.3f}" for x in res['value_nll'])
              + f" ({res['seconds']['wall_s']} s)", flush=True)


if __name__ == '__main__':
    sys.exit(main())
