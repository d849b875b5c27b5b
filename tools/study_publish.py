#!/usr/bin/env python
"""Publish finished study runs in one step: each run's page and data, its recall probe, then the results page.

    python tools/study_publish.py runs/study-wikitext-drop/wikitext-w64-carryon-s0 ...   # finished run folders
    python tools/study_publish.py --no-recall runs/study-b32/stdlib-w64-sp-s3             # without the recall probe

Per run: `ttt_nb.curriculum.publish.publish_run` under its study's page prefix (`reports/curriculum/<prefix><run>`: the
page and the run's data less its weights, from which the comparison pages can be rebuilt once the run folder is gone),
then `tools/study_recall.py` into its study's recall folder (about 2 minutes a run; it needs the run's weights, so it
runs now, while the folder exists), then `write_results_page` once, and the run's row of `tools/study_table.py`.
What stays by hand: the comparison pages (`tools/study_compare.py`) and the front page's sentences.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import study_recall
import study_table

ROOT = Path(__file__).resolve().parents[1]
# the run folder's parent (a study's --out) -> (its pages' prefix, its recall probes' folder under reports/)
STUDIES = {'study': ('study-', 'study-recall'), 'study-wikitext': ('study-', 'study-recall'),
           'study-b32': ('b32-', 'study-recall-b32'), 'study-wikitext-drop': ('wdrop-', 'study-recall-wdrop')}


def target(run:Path) -> tuple[str, str]:
    "(page name, recall folder name) of a study run folder, from the study folder it lies in."
    if run.parent.name not in STUDIES:
        raise SystemExit(f"study_publish: {run} lies in {run.parent.name}/, not a study's folder ({', '.join('runs/' + s for s in STUDIES)}); "
                         "publish other runs with ttt_nb.curriculum.publish.publish_run")
    prefix, recall = STUDIES[run.parent.name]
    return prefix + run.name, recall


def main(argv=None, reports:Path=ROOT / 'reports'):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('runs', nargs='+', help='finished run folders of a study (runs/<study>/<run>)')
    ap.add_argument('--no-recall', action='store_true', help='skip the recall probe')
    a = ap.parse_args(argv)
    from ttt_nb.curriculum.publish import publish_run, write_results_page
    from ttt_nb.curriculum.status import read_status
    runs = [Path(r) for r in a.runs]
    for r in runs:   # every check before anything is written
        target(r)
        st = read_status(r)
        if st['state'] != 'finished':
            raise SystemExit(f"study_publish: {r} is not finished ({st['state']}: {st.get('reason')}); wait for it (ttt-sweep <sweep> --status)")
    rows = []
    for r in runs:
        name, recall = target(r)
        pub = publish_run(r, reports, name=name)
        print(f"{r.name}: page {Path(pub['page']).relative_to(reports.parent)}", flush=True)
        if not a.no_recall: study_recall.main([str(r), '--out', str(reports / recall)])
        rows.append(study_table.row(Path(pub['data'])))
    print(f"results page: {write_results_page(reports).relative_to(reports.parent)}")
    print('\n'.join(rows))


if __name__ == '__main__':
    sys.exit(main())
