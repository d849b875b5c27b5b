#!/usr/bin/env python
"""PonderTTT across model seeds: one row per (seed, target mix) from each run's results.json, every number read from
it. Per mix: random allocation's PPL, the entropy gate (adaptive, and its causal controller) and the oracle at the
same mean K, each as the paired difference against random (nats/token, 95% CI over documents; '*' excludes zero), and
the entropy gate and the oracle against every mini-batch at the same K where the target mean K is a whole number
(uniform compute).

    python tools/ponder_table.py runs/ponder/ponder-makerun-s*/results.json

A claim that a method beats random needs its CI below zero in every seed (SCIENCE.md rule 5).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def _d(p:dict, key:str) -> str:
    x = p.get(key)
    if not x: return 'not run'
    return f"{x['mean']:+.4f} [{x['lo']:+.4f}, {x['hi']:+.4f}]" + (' *' if x.get('excludes_zero') else '')


def _uniform(p:dict, mix:str, target:float, method:str='adaptive_entropy') -> str:
    "`method` against every mini-batch at the same K, where the target mean K is a whole number (else there is none)."
    k = round(target)
    if abs(target - k) > 1e-9: return 'no uniform K'
    return _d(p, f'{method}_{mix} - fixed_K{k}')


def rows(res:dict, name:str) -> list:
    m, p, c = res['methods'], res['paired'], res['config']
    out = []
    for mix in c['mixes']:
        target = sum(float(k) * v for k, v in c['mixes'][mix].items())
        orc = m.get(f'oracle_{mix}', {})
        out.append(f"| {name} | {c['seed']} | {m['fixed_K1']['ppl']:.3f} | {mix} ({target:.2f}) | {m[f'random_{mix}']['ppl']:.3f} | "
                   f"{_d(p, f'adaptive_entropy_{mix} - random_{mix}')} | {_d(p, f'controller_entropy_{mix} - random_{mix}')} | "
                   f"{_d(p, f'oracle_{mix} - random_{mix}')} | {orc.get('mean_k', float('nan')):.3f} | {_uniform(p, mix, target)} | "
                   f"{_uniform(p, mix, target, 'oracle')} |")
    return out


def table(paths:list) -> str:
    head = ['| run | seed | PPL at K = 1 | target mix (mean K) | random PPL | entropy gate - random | causal controller - random | '
            'oracle - random | oracle mean K | entropy gate - uniform K | oracle - uniform K |',
            '|---|---:|---:|---|---:|---|---|---|---:|---|---|']
    body = []
    for f in paths: body += rows(json.loads(Path(f).read_text()), Path(f).parent.name)
    return '\n'.join(head + body) + '\n'


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    bad = [a for a in argv if not Path(a).is_file()]
    if not argv or bad: sys.exit(f"ponder_table: no results file {', '.join(bad) or '(none given)'}: pass run_ponder's results.json files")
    print(table(argv), end='')


if __name__ == '__main__':
    main()
