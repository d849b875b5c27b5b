#!/usr/bin/env python
"""A markdown table of curriculum runs' final checkpoints, for the study pages: where each model stands against the
n-gram, the primary endpoints (paired full - SW at 10 W and 20 W, 95% CIs over documents) and the carry weights.

    python tools/study_table.py reports/curriculum/backbone-*/          # published runs (their all_summaries.json)
    python tools/study_table.py runs/study/stdlib-w64-sp-s0 ...          # or run folders

Every number is read from the runs' all_summaries.json (the last entry: the final checkpoint); nothing is computed here.
A run whose model does not beat the trigram is marked 'no claim' in its endpoint cells.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def _d(e:dict, r:str) -> str:
    x = e.get(f'diff_at_{r}xW')
    if not x: return 'not reached'
    s = f"{x['mean']:+.4f} [{x['lo']:+.4f}, {x['hi']:+.4f}]" + (' *' if x.get('excludes_zero') else '')
    return s + ('' if e.get('far_context_claims') else ' (no claim)')


def row(folder:Path) -> str:
    "One run's line: name, PPL, where it stands, the two primary endpoints, the carry of each layer."
    entries = json.loads((Path(folder) / 'all_summaries.json').read_text())
    e = entries[-1]
    carry = ', '.join(f'{c:.2f}' for c in (e.get('memory_scale') or []))
    label = (e.get('regime_label') or '?').split(':')[0]
    return (f"| {Path(folder).name} | {e['step']} | {e['ttt_ppl_overall']:.3f} | {label} | {_d(e, '10')} | {_d(e, '20')} | "
            f"{carry or '?'} | {e['n_docs']} |")


def table(folders:list) -> str:
    head = ['| run | step | full PPL | against the n-gram (paired CI) | full - SW at 10 W | full - SW at 20 W | carry per layer | docs |',
            '|---|---:|---:|---|---|---|---|---:|']
    return '\n'.join(head + [row(f) for f in folders]) + '\n'


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    folders = [Path(a) for a in argv]
    bad = [str(f) for f in folders if not (f / 'all_summaries.json').exists()]
    if not folders or bad:
        sys.exit(f"study_table: no all_summaries.json in {', '.join(bad) or '(no folder given)'}: pass finished run folders or reports/curriculum/<run>/")
    print(table(folders), end='')


if __name__ == '__main__':
    main()
