#!/usr/bin/env python
"""The compute plan of a sweep file: tokens per run and in all, and the expected training time on the GPU the
GPU check measured (benchmarks/results/gpu_check.json, training stage: tokens/s of a preset at a window W).

    python tools/gpu_plan.py sweeps/gpu_125m_w2048.yaml            # table on stdout
    python tools/gpu_plan.py sweeps/gpu_125m_w2048.yaml --json     # the same as JSON

Time is training only (tokens / measured tokens/s, at the measured batch and precision); the checkpoint evaluations
are not in it. Where the check has no training row for the sweep's preset and W, the time is printed as not measured.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from ttt_nb.curriculum.sweep import load_sweep  # noqa: E402

CHECK = ROOT / 'benchmarks/results/gpu_check.json'


def measured_train(check:Path=CHECK) -> list:
    "Training rows of the GPU check that ran on a GPU (each with the device it ran on)."
    if not check.exists(): return []
    res = json.loads(check.read_text())
    if not res.get('measured'): return []
    st = (res.get('stages') or {}).get('train') or {}
    env = st.get('env') or res.get('env') or {}
    dev = env.get('device') or 'GPU (name not recorded)'
    return [dict(r, device=dev) for r in (st.get('items') or {}).get('train', [])]


def plan(sweep:str, check:Path=CHECK) -> dict:
    "Tokens and expected hours of every parameter set of a sweep file."
    _, sets = load_sweep(sweep)
    rows, meas = [], measured_train(check)
    for s in sets:
        p = s['parameters']
        W, B, steps = int(p.get('W', 64)), int(p.get('batch_size', 8)), int(p.get('steps', 600))
        tokens = W * B * steps
        m = next((r for r in meas if r.get('preset') == p.get('preset', 'tiny') and int(r.get('W', 0)) == W), None)
        hours = tokens / m['tokens_per_s'] / 3600 if m else None
        rows.append(dict(name=s['name'], preset=p.get('preset', 'tiny'), W=W, batch_size=B, steps=steps, tokens=tokens,
                         train_hours=hours, measured_on=m['device'] if m else None,
                         tokens_per_s=m['tokens_per_s'] if m else None))
    known = [r['train_hours'] for r in rows if r['train_hours'] is not None]
    return dict(sweep=str(sweep), runs=rows, tokens=sum(r['tokens'] for r in rows),
                train_hours=sum(known) if len(known) == len(rows) else None, check=str(check.relative_to(ROOT)) if check.is_relative_to(ROOT) else str(check))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('sweep'); ap.add_argument('--json', action='store_true'); ap.add_argument('--check', default=str(CHECK))
    a = ap.parse_args(argv)
    if not Path(a.sweep).exists(): sys.exit(f"gpu_plan: {a.sweep} does not exist: pass a sweep YAML file (e.g. sweeps/gpu_125m_w2048.yaml)")
    r = plan(a.sweep, Path(a.check))
    if a.json: print(json.dumps(r, indent=1)); return
    print(f"{r['sweep']}: {len(r['runs'])} runs, {r['tokens']:,} tokens")
    print('| run | preset | W | B | steps | tokens | training time (h) | measured on |\n|---|---|---:|---:|---:|---:|---:|---|')
    for x in r['runs']:
        t = f"{x['train_hours']:.1f}" if x['train_hours'] is not None else 'not measured'
        print(f"| {x['name']} | {x['preset']} | {x['W']} | {x['batch_size']} | {x['steps']} | {x['tokens']:,} | {t} | {x['measured_on'] or '-'} |")
    print('all runs: ' + (f"{r['train_hours']:.1f} h of training" if r['train_hours'] is not None else
                          f"not measured (no GPU training row for these presets and windows in {r['check']}: run make gpu-check on the GPU)"))


if __name__ == '__main__':
    main()
