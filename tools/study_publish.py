#!/usr/bin/env python
"""Publish finished study runs in one step: each run's page and data, its recall probe, then the results page.

    python tools/study_publish.py runs/study-wikitext-drop/wikitext-w64-carryon-s0 ...   # finished run folders
    python tools/study_publish.py --no-recall runs/study-b32/stdlib-w64-sp-s3             # without the recall probe
    python tools/study_publish.py --rerun runs/study-wikitext-drop/wikitext-w64-sp-s0      # a published run trained again

Per run: `ttt_nb.curriculum.publish.publish_run` under its study's page prefix (`reports/curriculum/<prefix><run>`: the
page and the run's data less its weights, from which the comparison pages can be rebuilt once the run folder is gone),
then `tools/study_recall.py` into its study's recall folder (47-70 s a run on AMD EPYC; it needs the run's weights, so it
runs now, while the folder exists), then `write_results_page` once, and the run's row of `tools/study_table.py`.
What stays by hand: the comparison pages (`tools/study_compare.py`) and the front page's sentences.

A run whose page exists, trained on another machine, is a rerun (its folder was lost, or it is a replication): it is
not published over the page the front page quotes. It stops the tool, unless `--rerun` publishes it beside, as
`<prefix>rerun-<run>`, its recall probe in `<recall folder>-rerun/` (training is reproducible to about 0.015 PPL across CPUs, not bit for bit).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import study_recall
import study_table

ROOT = Path(__file__).resolve().parents[1]
# the run folder's parent (a study's --out) -> (its pages' prefix, its recall probes' folder under reports/)
STUDIES = {'study': ('study-', 'study-recall'), 'study-wikitext': ('study-', 'study-recall'),
           'study-b32': ('b32-', 'study-recall-b32'), 'study-wikitext-drop': ('wdrop-', 'study-recall-wdrop')}


def target(run:Path, rerun:bool=False) -> tuple[str, str]:
    "(page name, recall folder name) of a study run folder, from the study folder it lies in (`rerun`: the name of a rerun beside the first page)."
    if run.parent.name not in STUDIES:
        raise SystemExit(f"study_publish: {run} lies in {run.parent.name}/, not a study's folder ({', '.join('runs/' + s for s in STUDIES)}); "
                         "publish other runs with ttt_nb.curriculum.publish.publish_run")
    prefix, recall = STUDIES[run.parent.name]
    return prefix + ('rerun-' if rerun else '') + run.name, recall + ('-rerun' if rerun else '')


def machine(summary:dict|None) -> str|None:
    "The CPU (or GPU) an evaluator summary was measured on."
    hw = (summary or {}).get('hardware') or {}
    return hw.get('gpu') or hw.get('cpu')


def check_rerun(run:Path, reports:Path, rerun:bool) -> None:
    "Stop on a run whose page exists from another machine, unless it is published as a rerun; stop on --rerun of a run with no first page."
    from ttt_nb.curriculum.run import load_run
    first = reports / 'curriculum' / target(run)[0] / 'final_eval.json'
    sums = load_run(run)['summaries']
    here = machine(sums[-1] if sums else None)
    there = machine(json.loads(first.read_text())) if first.exists() else None
    if rerun and not first.exists():
        raise SystemExit(f"study_publish: --rerun {run}: no first page {first.parent.name} to stand beside; publish it without --rerun")
    if not rerun and first.exists() and there != here:
        raise SystemExit(f"study_publish: {first.parent.name} was published from a run on {there}; this one ran on {here}: "
                         "publish it beside as a rerun (--rerun) or, to replace the page, with ttt_nb.curriculum.publish.publish_run")


def main(argv=None, reports:Path=ROOT / 'reports'):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('runs', nargs='+', help='finished run folders of a study (runs/<study>/<run>)')
    ap.add_argument('--no-recall', action='store_true', help='skip the recall probe')
    ap.add_argument('--rerun', action='store_true', help="publish beside a first page from another machine, as <prefix>rerun-<run>")
    a = ap.parse_args(argv)
    from ttt_nb.curriculum.publish import publish_run, write_results_page
    from ttt_nb.curriculum.status import read_status
    runs = [Path(r) for r in a.runs]
    for r in runs:   # every check before anything is written
        target(r)
        st = read_status(r)
        if st['state'] != 'finished':
            raise SystemExit(f"study_publish: {r} is not finished ({st['state']}: {st.get('reason')}); wait for it (ttt-sweep <sweep> --status)")
        check_rerun(r, reports, a.rerun)
    rows = []
    for r in runs:
        name, recall = target(r, a.rerun)
        pub = publish_run(r, reports, name=name)
        print(f"{r.name}: page {Path(pub['page']).relative_to(reports.parent)}", flush=True)
        if not a.no_recall: study_recall.main([str(r), '--out', str(reports / recall)])
        rows.append(study_table.row(Path(pub['data'])))
    print(f"results page: {write_results_page(reports).relative_to(reports.parent)}")
    print('\n'.join(rows))


if __name__ == '__main__':
    sys.exit(main())
