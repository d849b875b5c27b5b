#!/usr/bin/env python
"""A markdown table of curriculum runs' final checkpoints, for the study pages: where each model stands against the
n-gram, the primary endpoints (paired full - SW at 10 W and 20 W, 95% CIs over documents) and the carry weights.

    python tools/study_table.py reports/curriculum/backbone-*/          # published runs (their all_summaries.json)
    python tools/study_table.py runs/study/stdlib-w64-sp-s0 ...          # or run folders
    python tools/study_table.py --effrem reports/curriculum/study-*/      # EffRem of the final checkpoints instead

Every number is read from the runs' all_summaries.json (the last entry: the final checkpoint); nothing is computed here.
A run whose model does not beat the trigram is marked 'no claim' in its endpoint cells. With --effrem, the table is
EffRem_T(t) = TV(q(.|x_0:T), q(.|x_t:T)) at the longest context T measured, for the start t nearest 1, 5 and 10 W, from
the final checkpoint's evaluator summary (final_eval.json of a published run, the last eval/step_*.json of a run folder).
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


def final_eval(folder:Path) -> Path|None:
    "The final checkpoint's evaluator summary of a published run (final_eval.json) or a run folder (the last eval/step_*.json)."
    f = Path(folder) / 'final_eval.json'
    if f.exists(): return f
    steps = sorted((Path(folder) / 'eval').glob('step_*.json'))
    return steps[-1] if steps else None


def effrem_row(folder:Path, ratios=(1, 5, 10)) -> str:
    "One run's EffRem at the longest T: mean [95% CI] over its documents for the start t nearest r W."
    s = json.loads(final_eval(folder).read_text())
    W, er = s['W'], (s.get('memory') or {}).get('effrem')
    if not er or not er.get('curves'): return f"| {Path(folder).name} | not measured |" + ' |' * len(ratios)
    c = max(er['curves'], key=lambda c: c['T'])
    cells = []
    for r in ratios:
        k = min(range(len(c['t'])), key=lambda i: abs(c['t'][i] - r * W))
        cells.append(f"t={c['t'][k]}: {c['mean'][k]:.3f} [{c['lo'][k]:.3f}, {c['hi'][k]:.3f}]")
    return f"| {Path(folder).name} | {c['T']} ({c['n_docs']} docs) | " + ' | '.join(cells) + ' |'


def effrem_table(folders:list, ratios=(1, 5, 10)) -> str:
    head = ['| run | T (docs) | ' + ' | '.join(f'EffRem, t near {r} W' for r in ratios) + ' |', '|---|---|' + '---|' * len(ratios)]
    return '\n'.join(head + [effrem_row(f, ratios) for f in folders]) + '\n'


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    effrem = '--effrem' in argv
    folders = [Path(a) for a in argv if a != '--effrem']
    need = (lambda f: final_eval(f) is not None) if effrem else (lambda f: (f / 'all_summaries.json').exists())
    bad = [str(f) for f in folders if not need(f)]
    if not folders or bad:
        what = 'final_eval.json or eval/step_*.json' if effrem else 'all_summaries.json'
        sys.exit(f"study_table: no {what} in {', '.join(bad) or '(no folder given)'}: pass finished run folders or reports/curriculum/<run>/")
    print(effrem_table(folders) if effrem else table(folders), end='')


if __name__ == '__main__':
    main()
