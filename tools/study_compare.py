#!/usr/bin/env python
"""The study's comparison pages, regenerated from the run folders: which runs each page compares, and its paired table.

    python tools/study_compare.py --list                       # every page: its runs, how many are finished
    python tools/study_compare.py compare-study-w128-nosp ...  # (re)publish pages (`publish_comparison`, about 25 s each)
    python tools/study_compare.py --all                        # every page whose every arm has a finished run
    python tools/study_compare.py --pairs compare-study-w128-q1   # its paired differences, per seed and pooled

A page compares the finished runs of its arms (`runs/study/<corpus>-w<W>-<arm>-s<seed>`, the names of
`sweeps/study_stdlib.yaml` and `sweeps/study_wikitext.yaml`; the `compare-b32-*` pages read the same names in `runs/study-b32`,
from `sweeps/study_stdlib_b32.yaml`, and the `compare-wdrop-*` pages those of `sweeps/study_wikitext_drop.yaml` in
`runs/study-wikitext-drop`). A question-2 page pairs W = 64 with W = 128 of one arm,
so it keeps only the seeds finished at both windows. A page named on the command line is published once two of its
arm-and-window groups have a finished run (the front page says which seeds stand behind it); a run whose folder is gone
(a fresh machine) is read from its published data folder, `reports/curriculum/<prefix><run>` (prefix `study-`, `b32-` or
`wdrop-`; a rerun's `<prefix>rerun-<run>`), when that holds the final per-document losses (`publish_run` copies them since 2026-12-08). `--all` publishes only
pages with every group. A page is not published over one that compares runs now missing (lost with their folders,
their published data without losses) unless `--replace` says so. `--pairs` prints what the front page quotes: A - B in full
context at the same absolute positions on the same documents, per seed (`*`: the 95% CI excludes zero) and pooled
over (document, seed) units, from the page's committed compare.json; nothing is computed there.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
Q1 = ('sp', 'nosp', 'other', 'noise')
STDLIB, WIKI = ('stdlib', 'runs/study', 'study-'), ('wikitext', 'runs/study-wikitext', 'study-')

# name -> (title (`page_title` adds the seeds), corpus (prefix, run folder, published page prefix), W, arms, pair the seeds of
# the two windows)
PAGES = {
    'compare-study-q1': ("The study, question 1: four ways to start a training segment (state passing, none, another sequence's "
                         "final state, a noise initial state), W = 64, python-stdlib", STDLIB, (64,), Q1, False),
    'compare-study-w64-sp': ('The study, question 1: state passing against none, W = 64, python-stdlib',
                             STDLIB, (64,), ('sp', 'nosp'), False),
    'compare-study-w128': ('The study, question 2: W = 128 against W = 64 with state passing, python-stdlib',
                           STDLIB, (64, 128), ('sp',), True),
    'compare-study-w128-nosp': ('The study, question 2 without state passing: W = 128 against W = 64 at the same positions, '
                                'python-stdlib', STDLIB, (64, 128), ('nosp',), True),
    'compare-study-w128-other': ("The study, question 2 with another sequence's final state: W = 128 against W = 64 at the "
                                 'same positions, python-stdlib', STDLIB, (64, 128), ('other',), True),
    'compare-study-w128-noise': ('The study, question 2 with a noise initial state: W = 128 against W = 64 at the same '
                                 'positions, python-stdlib', STDLIB, (64, 128), ('noise',), True),
    'compare-study-w128-q1': ("The study, question 1 at W = 128: state passing, none, another sequence's final state, a noise "
                              'initial state, python-stdlib', STDLIB, (128,), Q1, False),
    'compare-study-controls': ('The study, question 3: where SW beats full context, and why: the controls (no inner loop, carry '
                               'frozen on and off) against SP and no SP, W = 64, python-stdlib', STDLIB, (64,),
                               ('sp', 'nosp', 'noinnerloop', 'carryon', 'carryoff'), False),
    'compare-study-wikitext-q1': ("The study on WikiText-2 raw, question 1: state passing, none, another sequence's final "
                                  'state, a noise initial state, W = 64', WIKI, (64,), Q1, False),
    'compare-study-wikitext-w64-sp': ('The study on WikiText-2 raw, question 1: state passing against none, W = 64',
                                      WIKI, (64,), ('sp', 'nosp'), False),
    'compare-study-wikitext-w128': ('The study on WikiText-2 raw, question 2: W = 128 against W = 64 at the same positions, '
                                    'the arms with seeds finished at both windows', WIKI, (64, 128), Q1, True),
    'compare-study-wikitext-w128-q1': ("The study on WikiText-2 raw, question 1 at W = 128: state passing, none, another "
                                       "sequence's final state, a noise initial state", WIKI, (128,), Q1, False),
    'compare-study-wikitext-controls': ('The study on WikiText-2 raw, question 3: the controls (no inner loop, carry frozen on '
                                        'and off) against SP and no SP, W = 64', WIKI, (64,),
                                        ('sp', 'nosp', 'noinnerloop', 'carryon', 'carryoff'), False),
}

# The same pages for the study at 41M tokens (sweeps/study_stdlib_b32.yaml, run folders runs/study-b32): compare-b32-*.
B32 = ('stdlib', 'runs/study-b32', 'b32-')
PAGES.update({n.replace('compare-study', 'compare-b32'): (t.replace('The study', 'The study at 41M tokens (batch 32)', 1), B32, Ws, arms, p)
              for n, (t, c, Ws, arms, p) in list(PAGES.items()) if c == STDLIB})
# ... and for WikiText-2 with dropout 0.1, the regime past its 5-gram (sweeps/study_wikitext_drop.yaml, runs/study-wikitext-drop): compare-wdrop-*.
WDROP = ('wikitext', 'runs/study-wikitext-drop', 'wdrop-')
PAGES.update({n.replace('compare-study-wikitext', 'compare-wdrop'): (t.replace('The study on WikiText-2 raw', 'The study on WikiText-2 raw with dropout 0.1', 1), WDROP, Ws, arms, p)
              for n, (t, c, Ws, arms, p) in list(PAGES.items()) if c == WIKI})
# ... and, until its no-inner-loop control is trained again with its losses kept, the carry controls alone (the published
# compare-wdrop-controls pairs the first no-inner-loop run, whose losses were lost with its folder on 2026-12-08).
PAGES['compare-wdrop-carry'] = ('The study on WikiText-2 raw with dropout 0.1, question 3: the carry frozen on and off against SP '
                                'and no SP, W = 64', WDROP, (64,), ('sp', 'nosp', 'carryon', 'carryoff'), False)

@lru_cache(maxsize=None)  # pages share runs and --list asks twice per page: read each status once
def finished(run:Path) -> bool:
    "A run folder whose curriculum ended, every checkpoint evaluated (`ttt_nb.curriculum.status.read_status`)."
    from ttt_nb.curriculum.status import read_status
    return read_status(run)['state'] == 'finished'


def comparable(data:Path) -> bool:
    "A published run's data folder that a comparison can read in place of its run folder: finished, with the final per-document losses (`publish_run` copies them since 2026-12-08)."
    fin = data / 'final_eval.json'
    if not (finished(data) and fin.exists()): return False
    return (data / 'eval' / (json.loads(fin.read_text()).get('losses_file') or '-')).exists()


def group_runs(root:Path, corpus:tuple, W:int, arm:str) -> dict:
    "seed -> the folder a page reads for one arm and window: the finished run folder, else the published data folder that holds its losses (the first page before a rerun, `<prefix>rerun-<run>`, when both do)."
    name, folder, prefix = corpus
    pub = {p.name.rsplit('-s', 1)[1]: p for p in sorted((root / 'reports' / 'curriculum').glob(f'{prefix}*{name}-w{W}-{arm}-s[0-9]'))
           if p.is_dir() and comparable(p)}
    runs = {p.name.rsplit('-s', 1)[1]: p for p in sorted((root / folder).glob(f'{name}-w{W}-{arm}-s[0-9]')) if finished(p)}
    return dict(sorted({**pub, **runs}.items()))


def page_runs(name:str, root:Path=ROOT, pair:bool=True) -> list[Path]:
    "The finished runs page `name` compares, arm by arm and window by window, seeds in order (`pair`: a paired page keeps the seeds finished at both windows); a run whose folder is gone is read from its published data."
    _, corpus, Ws, arms, paired = PAGES[name]
    paired = paired and pair
    out = []
    for arm in arms:
        by_w = {W: group_runs(root, corpus, W, arm) for W in Ws}
        seeds = set.intersection(*(set(d) for d in by_w.values())) if paired else None
        out += [p for W in Ws for s, p in sorted(by_w[W].items()) if seeds is None or s in seeds]
    return out


def missing(name:str, runs:list[Path]) -> list[str]:
    "The arm-and-window groups of page `name` with no finished run among `runs` (e.g. 'w128-noise')."
    _, _, Ws, arms, _ = PAGES[name]
    have = {m.group(1) for p in runs if (m := re.search(r'-(w\d+-.+)-s\d+$', Path(p).name))}   # a run or published folder
    return [f'w{W}-{arm}' for arm in arms for W in Ws if f'w{W}-{arm}' not in have]


def lost_runs(name:str, runs:list, root:Path=ROOT) -> list[str]:
    "The runs the published page `name` compares (its compare.json) that `runs` leaves out: publishing would drop them (their folders gone, their published data without losses)."
    f = root / 'reports' / name / 'compare.json'
    if not f.exists(): return []
    key = lambda r: re.search(r'(w\d+-.+-s\d+)$', Path(r).name).group(1)   # the run, whichever folder holds it
    have = {key(r) for r in runs}
    return [Path(r).name for r in json.loads(f.read_text()).get('runs', []) if key(r) not in have]


def pairs_table(compare:dict) -> str:
    "The paired differences of a compare.json in one line per seed (the seed rule at a glance; `ttt_nb.curriculum.compare.paired_markdown` is the full table): pooled with its CI, then each seed's means."
    lines = []
    for c in sorted({p['comparison'] for p in compare['paired']}):
        rows = [p for p in compare['paired'] if p['comparison'] == c]
        lines.append(f'== {c}')
        pooled = [p for p in rows if p['seed'] == 'pooled']
        if pooled:
            lines.append('  pooled: ' + '; '.join(f"{p['position']}: {p['mean']:+.3f} [{p['lo']:+.3f}, {p['hi']:+.3f}]" for p in pooled))
        for s in sorted({p['seed'] for p in rows if p['seed'] != 'pooled'}):
            lines.append(f'  s{s}: ' + '; '.join(f"{p['position']}: {p['mean']:+.3f}{'*' if p['lo'] > 0 or p['hi'] < 0 else ''}"
                                                 for p in rows if p['seed'] == s))
    return '\n'.join(lines)


def seeds_phrase(runs:list) -> str:
    "The seeds behind a page, from its run names (`...-s<seed>`): 'seed 0', 'seeds 0-4', 'seeds 0, 2'."
    seeds = sorted({int(Path(r).name.rsplit('-s', 1)[1]) for r in runs})
    if len(seeds) == 1: return f'seed {seeds[0]}'
    if seeds == list(range(seeds[0], seeds[-1] + 1)): return f'seeds {seeds[0]}-{seeds[-1]}'
    return 'seeds ' + ', '.join(map(str, seeds))


def page_title(name:str, runs:list) -> str:
    "The page's registered title and the seeds it actually compares."
    return f'{PAGES[name][0]}, {seeds_phrase(runs)}'


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('pages', nargs='*', help='page names (see --list)')
    ap.add_argument('--list', action='store_true', help='every page and its finished runs')
    ap.add_argument('--all', action='store_true', help='publish every page whose every arm and window has a finished run')
    ap.add_argument('--pairs', action='store_true', help="print the pages' paired differences from their compare.json")
    ap.add_argument('--replace', action='store_true', help='publish a page even where it would drop runs its published version compares')
    a = ap.parse_args(argv)
    unknown = [n for n in a.pages if n not in PAGES]
    if unknown: raise SystemExit(f"unknown page {', '.join(unknown)}: choose from {', '.join(PAGES)} (--list shows their runs)")
    if a.list or not (a.pages or a.all):
        for n in PAGES:
            runs, gaps = page_runs(n), missing(n, page_runs(n, pair=False))
            unpaired = PAGES[n][4] and not gaps and missing(n, runs)
            print(f"{n}: {len(runs)} finished runs" + (f"; none yet of {', '.join(gaps)}" if gaps else '')
                  + ('; no seed finished at both windows yet' if unpaired else '')
                  + (f" ({', '.join(r.name for r in runs)})" if runs else ''))
        return 0
    names = list(PAGES) if a.all and not a.pages else a.pages
    if a.pairs:
        for n in names:
            f = ROOT / 'reports' / n / 'compare.json'
            if not f.exists() and not a.pages: continue  # --pairs --all: the published pages only
            if not f.exists(): raise SystemExit(f'{n}: no {f.relative_to(ROOT)}; publish the page first (python tools/study_compare.py {n})')
            print(f'# {n}\n' + pairs_table(json.loads(f.read_text())))
        return 0
    from ttt_nb.curriculum.publish import publish_comparison
    for n in names:
        runs = page_runs(n)
        gaps = missing(n, runs)
        if a.all and not a.pages and gaps: continue  # --all: only pages whose every arm and window has a finished run
        if (gone := lost_runs(n, runs)) and not a.replace:
            msg = (f"{n}: its published page compares {len(gone)} run(s) not among these ({', '.join(gone)}): publishing would drop them; "
                   "train them again first, or pass --replace")
            if a.all and not a.pages: print(f'skipped {msg}', flush=True); continue
            raise SystemExit(msg)
        if len(gaps) >= len(missing(n, [])) - 1:
            why = missing(n, page_runs(n, pair=False))
            why = f"none yet of {', '.join(why)}" if why else 'no seed finished at both windows'
            raise SystemExit(f'{n}: fewer than two of its arms and windows have a finished run ({why}); '
                             'train them first (ttt-sweep <sweep file> --status lists them)')
        print(f'{n}: {len(runs)} runs ->', publish_comparison([str(r) for r in runs], name=n, title=page_title(n, runs)), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
