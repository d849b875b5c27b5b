"""Recall on the held-out documents themselves: does full context gain more where the context recurred far back?

    python tools/study_copy.py runs/study/stdlib-w64-sp-s0 ... [--L 16] [--out reports/study-copy/repeat_gain.json]
    python tools/study_copy.py --table reports/study-copy/repeat_gain.json

For each finished run it reads the evaluator's per-token losses of the final checkpoint (full context and strided SW,
`eval/step_NNNNNN_nll.safetensors`, the documents checked against their recorded hash) and applies
`ttt_nb.memory.repeat_gain`: per document, full - SW at the positions beyond W whose L tokens of context last occurred
0-1, 1-5 or 5-21 W back, minus full - SW at positions whose context never occurred before. Per arm (the run name
without its seed), each document's value is averaged over the seeds, then a t interval is taken over documents.
Below zero beyond W: full context gains more where there is something to copy from that far back (recall a window of
W cannot do); near zero: its gain is the same with or without something to copy. Exploratory: no claim rests on it.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import warnings
from pathlib import Path

import numpy as np
from _runs import provenance  # tools/ is on sys.path when a tool runs

from ttt_nb.core import sha256_of, write_json_atomic
from ttt_nb.curriculum.compare import final_losses
from ttt_nb.curriculum.run import eval_documents, load_run
from ttt_nb.memory import mean_ci, repeat_gain

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / 'reports' / 'study-copy' / 'repeat_gain.json'
BINS = ((0, 1), (1, 5), (5, 21))


def run_gain(run_dir:Path, L:int) -> dict:
    "`repeat_gain` of a finished run's final checkpoint, from the losses its evaluation saved, on the documents it was evaluated on."
    try:
        run = load_run(run_dir)
        nll, ids, summ = final_losses(run) if run['summaries'] else (None, None, {})
    except FileNotFoundError as e: raise SystemExit(f"{run_dir}: {' '.join(str(e).split())}") from None
    cfg = run['config']; steps = cfg['train']['steps']
    if summ.get('step') != steps: raise SystemExit(f"{run_dir}: the final step {steps} is not evaluated yet; let the run finish first")
    docs, info = eval_documents(cfg)   # the curriculum's own draw of held-out documents
    if info['doc_ids'] != ids or sha256_of(*docs) != summ['data']['docs_hash']:
        raise SystemExit(f"{run_dir}: the documents differ from the evaluated ones (names or hash): another corpus version")
    g = repeat_gain(nll, docs, cfg['W'], L=L, bins=BINS)
    return dict(run=run_dir.name, arm=re.sub(r'-s\d+$', '', run_dir.name), seed=cfg['train']['seed'], W=cfg['W'], step=steps, doc_ids=ids, gain=g)


def pool(recs:list) -> list[dict]:
    "Per arm: each document's value averaged over the arm's seeds, then the mean and t interval over documents."
    out = []
    for arm in sorted({r['arm'] for r in recs}):
        rs = [r for r in recs if r['arm'] == arm]
        if any(r['doc_ids'] != rs[0]['doc_ids'] for r in rs): raise SystemExit(f"{arm}: its seeds were evaluated on different documents")
        def per_doc(get, rs=rs):
            with warnings.catch_warnings():   # a document with no position in a range for any seed stays NaN (left out by mean_ci)
                warnings.simplefilter('ignore', RuntimeWarning)
                return np.nanmean(np.array([get(r['gain']) for r in rs], dtype=np.float64), axis=0)
        row = dict(arm=arm, seeds=sorted(r['seed'] for r in rs), W=rs[0]['W'], L=rs[0]['gain']['L'],
                   novel=mean_ci(per_doc(lambda g: g['novel'])), novel_events=sum(r['gain']['novel_events'] for r in rs) // len(rs))
        row['repeat'] = {k: mean_ci(per_doc(lambda g, k=k: g['repeat'][k])) for k in rs[0]['gain']['repeat']}
        row['events'] = {k: sum(r['gain']['events'][k] for r in rs) // len(rs) for k in rs[0]['gain']['events']}
        out.append(row)
    return out


def table(res:dict) -> str:
    "The markdown table of a result file."
    f = lambda m: 'n/a' if m[0] is None or not np.isfinite(m[0]) else f"{m[0]:+.3f} [{m[1]:+.3f}, {m[2]:+.3f}] ({m[3]} docs)"
    keys = list(res['arms'][0]['repeat'])
    out = ["| arm | seeds | full - SW, context never seen before | " + ' | '.join(f"context last seen {k} W back, minus never seen" for k in keys) +
           ' | positions per seed (never seen; ' + ', '.join(keys) + ') |', '|---|---|---|' + '---|' * len(keys) + '---|']
    for a in res['arms']:
        out.append(f"| {a['arm']} | {len(a['seeds'])} | {f(a['novel'])} | " + ' | '.join(f(a['repeat'][k]) for k in keys) +
                   f" | {a['novel_events']}; " + ', '.join(str(a['events'][k]) for k in keys) + ' |')
    return '\n'.join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('runs', nargs='*', help='finished curriculum run folders')
    ap.add_argument('--L', type=int, default=16, help='context length in tokens (default 16)')
    ap.add_argument('--out', default=str(OUT))
    ap.add_argument('--table', metavar='JSON', help='only print the table of a result file')
    a = ap.parse_args(argv)
    if a.table:
        if not Path(a.table).exists(): raise SystemExit(f"{a.table}: not found; write it first with: python tools/study_copy.py RUN ...")
        print(table(json.loads(Path(a.table).read_text()))); return
    if not a.runs: raise SystemExit("name the finished run folders to read, e.g. runs/study/stdlib-w64-sp-s*")
    recs = [run_gain(Path(r), a.L) for r in a.runs]
    res = dict(command='python tools/study_copy.py ' + ' '.join(a.runs) + (f' --L {a.L}' if a.L != 16 else ''), L=a.L,
               bins=[list(b) for b in BINS], arms=pool(recs), runs=recs, **provenance(threads=1))
    write_json_atomic(res, a.out)
    print(table(res)); print(f"written: {a.out}")


if __name__ == '__main__':
    sys.exit(main())
