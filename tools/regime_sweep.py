"""The regime sweep of issue 15: train each configuration of a sweep file and score it on held-out documents.

    python tools/regime_sweep.py sweeps/regime_stdlib.yaml [--only NAME ...] [--jobs-file ...]

Every configuration is a `TrainConfig` (sweep `defaults` + its own fields). A finished configuration has
`reports/regime/<name>.json` and is skipped, so an interrupted sweep resumes where it stopped (an interrupted
training run resumes from its newest checkpoint). The JSON holds the configuration, the tokens, the wall and CPU
time, the hardware and the full-context PPL on the evaluation documents: the 16 documents of the published study
(`published16`) and every held-out document that reaches the furthest position (`all`).
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from _runs import fit_to_end, provenance  # tools/ is on sys.path when a tool runs

from ttt_nb.checkpoint import latest_checkpoint
from ttt_nb.core import write_json_atomic
from ttt_nb.curriculum.compare import min_seeds_for
from ttt_nb.data import load_tokenized
from ttt_nb.eval import full_context_nll, load_checkpoint, select_documents
from ttt_nb.memory import mean_ci
from ttt_nb.rules import PRIMARY_RATIOS, past_bar, seed_verdicts
from ttt_nb.train import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[1]



def _ppl(nll:list) -> dict:
    "Token-weighted PPL over documents, and the per-document mean NLLs (for paired comparisons later)."
    s = np.array([np.nansum(x) for x in nll]); n = np.array([np.sum(~np.isnan(x)) for x in nll])
    return dict(ppl=float(math.exp(s.sum() / n.sum())), nll=float(s.sum() / n.sum()), docs=len(nll), tokens=int(n.sum()),
                doc_nll=(s / n).round(6).tolist())


def eval_docs(cfg:TrainConfig, split:str, mult:float, published:int=16) -> dict:
    td = load_tokenized(cfg.corpus, split, cfg.tokenizer)
    out = {}
    for name, cap in (('published16', published), ('all', None)):
        docs, info = select_documents(td, cfg.seq_len, mult, max_docs=cap, fallback=())
        out[name] = (docs, dict(info, n_docs=len(docs)))
    return out


def run_one(name:str, fields:dict, out_root:Path, res_root:Path, eval_split:str, mult:float) -> dict:
    cfg = TrainConfig.from_dict(dict(fields, out_dir=str(out_root / name), run_eval=False, progress=False, wandb='disabled'))
    resume = latest_checkpoint(cfg.out_dir) is not None
    summ = fit_to_end(Trainer(cfg), name, resume, 'run the sweep again to resume it')
    train_s, train_cpu = summ['elapsed_s'], summ.get('cpu_s')   # the trainer's clocks, summed over the sessions of a resumed run
    ckpt = latest_checkpoint(cfg.out_dir)
    model = load_checkpoint(ckpt)
    res = dict(name=name, config=cfg.to_dict(), train=dict(wall_s=round(train_s, 1), cpu_s=None if train_cpu is None else round(train_cpu, 1), resumed=resume,
               tokens=cfg.steps * cfg.batch_size * cfg.seq_len, n_params=int(sum(p.numel() for p in model.parameters())),
               final_train_loss=summ.get('final_train_loss'), heldout_loss=summ.get('heldout_loss'), summary=summ),
               eval=dict(split=eval_split, max_multiple=mult))
    for k, (docs, info) in eval_docs(cfg, eval_split, mult).items():
        t1 = time.time()
        with torch.no_grad(): res['eval'][k] = dict(_ppl(full_context_nll(model, docs)), seconds=round(time.time() - t1, 1),
                                                    doc_ids=info.get('doc_ids'), corpus_hash=info.get('corpus_hash'))
    res.update(provenance(threads=cfg.threads))
    write_json_atomic(res, res_root / f'{name}.json')
    return res


def ngram_reference(sweep:dict, res_root:Path, max_order:int=5) -> dict:
    "The interpolated Kneser-Ney n-gram (orders 1-5) fitted on the training split, on the same documents: reports/regime/ngram.json."
    from ttt_nb.ngram import fit_on, ngram_nll  # the n-gram module (issue 14); absent in older checkouts
    fields = dict(sweep.get('defaults', {}))
    cfg = TrainConfig.from_dict({k: v for k, v in fields.items() if k in TrainConfig.__dataclass_fields__})
    ev = sweep.get('eval', {})
    t0 = time.time()
    m = fit_on(load_tokenized(cfg.corpus, cfg.split, cfg.tokenizer), max_order)
    out = dict(kind='interpolated Kneser-Ney', fitted_on=dict(corpus=cfg.corpus, split=cfg.split, tokenizer=cfg.tokenizer),
               fit_s=round(time.time() - t0, 1), eval={})
    for k, (docs, _info) in eval_docs(cfg, ev.get('split', 'test'), float(ev.get('max_multiple', 20.5))).items():
        nll = ngram_nll(m, docs)
        out['eval'][k] = {str(o): _ppl(v) for o, v in nll.items()}
    write_json_atomic(out, res_root / 'ngram.json')
    return out


def evaluate(name:str, runs_dir:Path, res_root:Path) -> Path:
    """The standard evaluator on a finished configuration's last checkpoint: full context against the strided SW (S = W/4) on every
    test document that reaches 20 W, with the n-gram reference and the memory measures; the summary and figures are kept in
    reports/regime/eval/<name>/ (the per-token losses are not: `ttt-eval` rewrites them)."""
    if not (res_root / f'{name}.json').exists(): raise SystemExit(f"{name}: not finished (no {res_root / name}.json): run the sweep first")
    ckpt = latest_checkpoint(runs_dir / name)
    if ckpt is None: raise SystemExit(f"{name}: no checkpoint under {runs_dir / name}: the run folder is needed to evaluate it")
    out = res_root / 'eval' / name
    W = json.loads((res_root / f'{name}.json').read_text())['config']['seq_len']
    subprocess.run([sys.executable, '-c', 'import sys; from ttt_nb.cli import eval_main; eval_main(sys.argv[1:])', str(ckpt), '--out', str(out), '--max-multiple', '20',
                    '--stride', str(max(1, W // 4))], check=True)
    for f in out.glob('*_nll.safetensors'): f.unlink()
    return out / 'summary.json'


def _endpoint(s:dict, r:float) -> str:
    "A summary's paired full - SW difference at r W, as mean [lo, hi]."
    p = next((p for p in s['probes'] if p['r'] == r), None)
    if p is None: return 'not reached'
    x = next(v for k, v in p['diff'].items() if k.startswith('full-sw'))
    return f"{x['mean']:+.4f} [{x['lo']:+.4f}, {x['hi']:+.4f}]"


def _eval_row(name:str, s:dict) -> str:
    "One line of the evaluation table: where the model stands, the primary endpoints, the carry weights."
    d = lambda r: _endpoint(s, r)
    carry = ', '.join(f"{row[-1]:.2f}" for row in (s.get('memory') or {}).get('carry', {}).get('token_idx', []))
    return (f"| {name} | {s['overall']['full']['ppl']:.3f} | {s['regime']['label']} | {d(10.0)} | {d(20.0)} | {carry or '?'} | "
            f"{s['n_docs']} |")


def _vs_ngram(res:dict, ng:dict|None, order:str='5', same_w:bool=True) -> str:
    "The paired difference with the n-gram of `order` on the same documents: mean [95% t CI] of per-document NLL differences."
    if not ng or order not in ng['eval']['all']: return 'no n-gram'
    ref = ng['eval']['all'][order]   # scored on the documents of the sweep's default W
    if not same_w or len(ref['doc_nll']) != len(res['doc_nll']): return 'other documents'
    m, lo, hi, _ = mean_ci(np.subtract(res['doc_nll'], ref['doc_nll']))
    return f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def seed_groups(sw:dict) -> list[list[dict]]:
    "The sweep's runs that differ only in their seed, grouped in sweep order (groups of one left out); each run as its full fields with `name`."
    groups = {}
    for run in sw['runs']:
        f = dict(sw.get('defaults', {}), **{k: v for k, v in run.items() if k != 'why'})
        key = json.dumps({k: v for k, v in f.items() if k not in ('name', 'seed')}, sort_keys=True, default=str)
        groups.setdefault(key, []).append(f)
    return [g for g in groups.values() if len(g) > 1]


def seeds_section(sw:dict, res_root:Path, ng:dict|None) -> list[str]:
    """The seed rule over each group of seeds with an evaluation: each seed's standing against the 5-gram and its primary endpoints,
    then, across the seeds, the mean difference with the 5-gram (t interval over seeds) and `rules.seed_verdicts` at 10 W and 20 W."""
    corpus = Path(str(sw.get('defaults', {}).get('corpus', '?'))).name
    need = min_seeds_for(corpus)
    out = []
    for g in seed_groups(sw):
        rows, summ, seeds, vs5 = [], [], [], []
        for f in g:
            js, ev = res_root / f"{f['name']}.json", res_root / 'eval' / f['name'] / 'summary.json'
            if not js.exists(): rows.append(f"| {f.get('seed', 0)} | {f['name']} | not run | | | | |"); continue
            r = json.loads(js.read_text())
            ref = (ng or {}).get('eval', {}).get('all', {}).get('5')
            if ref and len(ref['doc_nll']) == len(r['eval']['all']['doc_nll']):
                vs5.append(float(np.mean(np.subtract(r['eval']['all']['doc_nll'], ref['doc_nll']))))
            if not ev.exists():
                rows.append(f"| {f.get('seed', 0)} | {f['name']} | {r['eval']['all']['ppl']:.3f} | {_vs_ngram(r['eval']['all'], ng)} | not evaluated | | |"); continue
            s = json.loads(ev.read_text()); summ.append(s); seeds.append(f.get('seed', 0))
            pb = past_bar(s)
            rows.append(f"| {f.get('seed', 0)} | {f['name']} | {r['eval']['all']['ppl']:.3f} | {_vs_ngram(r['eval']['all'], ng)} | "
                        f"{'yes' if pb else 'no' if pb is False else '?'} | {_endpoint(s, 10.0)} | {_endpoint(s, 20.0)} |")
        if not summ: continue
        verdicts = {v['r']: v for v in seed_verdicts(summ, min_seeds=need, seeds=seeds)}
        bar = sum(bool(past_bar(s)) for s in summ)
        out += ['', f"### {g[0]['name']}, seeds {', '.join(str(f.get('seed', 0)) for f in g)}", '',
                '| seed | run | PPL, all | against the 5-gram, all | past the 5-gram (evaluator) | full - SW at 10 W | full - SW at 20 W |',
                '|---|---|---|---|---|---|---|'] + rows + ['']
        across = ''
        if len(vs5) > 1:
            m, lo, hi, _ = mean_ci(np.array(vs5))
            across = (f"Across the {len(vs5)} trained seeds, the mean per-seed difference with the 5-gram is {m:+.3f} [{lo:+.3f}, {hi:+.3f}] "
                      "nats/token (95% t interval over seeds). ")
        out.append(f"{across}Past the 5-gram by the evaluator's paired CI in {bar} of {len(summ)} evaluated seeds. The seed rule "
                   f"({need} seeds on {corpus}; every seed's paired CI excluding zero the same way, every model above the trigram) at the "
                   "primary endpoints: " + '; '.join(f"{r:g} W: **{verdicts[float(r)]['verdict']}** ({verdicts[float(r)]['excluding_zero']} "
                   f"of {verdicts[float(r)]['seeds']} seeds exclude zero)" for r in PRIMARY_RATIOS if float(r) in verdicts) + '.')
    return (['', '## Seeds of one configuration', '',
             "Configurations of the sweep that differ only in their seed. Each seed's row is its evaluation above; the verdict is the "
             "study's seed rule ([the rules](science.qmd)), so a claim needs every seed."] + out) if out else []


def markdown(sweep_path:str, res_root:Path) -> str:
    "The sweep as a table (every configuration tried, with its tokens, time and PPL, the n-gram reference first)."
    sw = yaml.safe_load(Path(sweep_path).read_text())
    ng = json.loads((res_root / 'ngram.json').read_text()) if (res_root / 'ngram.json').exists() else None
    corpus = Path(str(sw.get('defaults', {}).get('corpus', '?'))).name
    done = [json.loads(f.read_text()) for f in sorted(res_root.glob('*.json')) if f.name != 'ngram.json']
    n_all = (ng['eval']['all'][next(iter(ng['eval']['all']))]['docs'] if ng else
             done[0]['eval']['all']['docs'] if done else '?')
    ev = sw.get('eval', {})
    w0 = sw.get('defaults', {}).get('seq_len', TrainConfig.__dataclass_fields__['seq_len'].default)   # the n-gram's documents
    out = [f'# The regime sweep on {corpus} (issue 15)', '',
           f"Command: `PYTHONPATH=<checkout> python tools/regime_sweep.py {sweep_path}` (one JSON per configuration in "
           f"`{res_root.relative_to(ROOT) if res_root.is_relative_to(ROOT) else res_root}/`; a finished one is skipped, so the sweep resumes). "
           f"PPL: full context, token-weighted, on the {corpus} {ev.get('split', 'test')} documents that reach "
           f"{float(ev.get('max_multiple', 20.5)):g} W + 1 tokens, cut there: the first 16"
           f"{' (the documents of the published study)' if corpus == 'python-stdlib' else ''} and all {n_all}. Target: below the "
           "5-gram on the same documents. Against the 5-gram: the mean over all documents of the model's per-document NLL minus "
           "the 5-gram's (nats/token), with its 95% t interval (below zero: the model is better).", '']
    if ng:
        e = ng['eval']
        out += [f"N-gram reference ({ng['kind']}, fitted on {Path(ng['fitted_on']['corpus']).name}/{ng['fitted_on']['split']}, {ng['fit_s']} s):", '',
                '| order | PPL, published 16 | PPL, all |', '|---|---|---|']
        out += [f"| {o} | {e['published16'][o]['ppl']:.3f} | {e['all'][o]['ppl']:.3f} |" for o in sorted(e['published16'])] + ['']
    out += ['| configuration | why | parameters | tokens | train wall s (CPU s) | PPL, first 16 | PPL, all | against the 5-gram, all | commit |',
            '|---|---|---|---|---|---|---|---|---|']
    by_name = {r['name']: r for r in done}
    for run in sw['runs']:
        r = by_name.get(run['name'])
        if r is None:
            out.append(f"| {run['name']} | {run.get('why', '')} | | | not run | | | | |"); continue
        c, t, ev = r['config'], r['train'], r['eval']
        par = f"{t['n_params']:,}; {c['steps']} x {c['batch_size']} x {c['seq_len']}; lr {c['lr']:g}; wd {c.get('weight_decay_mode', 'matrices')}"
        cpu = 'CPU not measured' if t['cpu_s'] is None else f"{t['cpu_s']:.0f}"   # a resumed run from before the trainer kept its CPU clock
        out.append(f"| {r['name']} | {run.get('why', '')} | {par} | {t['tokens']:,} | {t['wall_s']:.0f} ({cpu}) | "
                   f"{ev['published16']['ppl']:.3f} | {ev['all']['ppl']:.3f} | {_vs_ngram(ev['all'], ng, same_w=c['seq_len'] == w0)} | {r['commit'][:7]} |")
    evs = sorted((res_root / 'eval').glob('*/summary.json'))
    if evs:
        out += ['', "Evaluated configurations (`python tools/regime_sweep.py SWEEP --evaluate NAME`: the standard evaluator on the last "
                "checkpoint, every test document that reaches 20 W, strided SW with S = W/4, 95% studentized-bootstrap CIs over "
                "documents; single seed). The primary endpoints are the paired full - SW differences at 10 W and 20 W (nats/token; "
                "below zero: full context better); carry: token_idx[b-1] of each layer after the clamp (0: nothing crosses a mini-batch).", '',
                '| configuration | full PPL | where it stands (paired CI against the n-gram) | full - SW at 10 W | full - SW at 20 W | carry per layer | docs |',
                '|---|---|---|---|---|---|---|']
        out += [_eval_row(f.parent.name, json.loads(f.read_text())) for f in evs]
    out += seeds_section(sw, res_root, ng)
    hw = done[0]['hardware'] if done else {}
    loads = [r['hardware']['load_avg_end'][0] for r in done if r.get('hardware', {}).get('load_avg_end')]
    lo, hi = (f"{min(loads):.1f}", f"{max(loads):.1f}") if loads else ('', '')
    load = ('load not recorded' if not loads else f"load average {lo if lo == hi else lo + '-' + hi} when "
            f"{'the run' if len(loads) == 1 else 'each run'} ended")
    out += ['', f"Hardware: {hw.get('cpu', '?')}, {hw.get('cores', hw.get('cpu_count', '?'))} cores shared with other jobs ({load}: "
            f"wall and CPU times under load are longer than an idle machine's), {hw.get('threads', '?')} torch thread per run, "
            f"torch {hw.get('torch', '?')}."]
    return '\n'.join(out) + '\n'


def site_page(md:str, res_root:Path, sweep_path:str) -> str:
    "The results site's page of the sweep: the same tables, then each evaluated configuration's figures."
    head, body = md.split('\n', 1)
    corpus = head.removeprefix('# The regime sweep on ').removesuffix(' (issue 15)')
    flag = '' if res_root == ROOT / 'reports' / 'regime' else f' --results-dir {res_root.relative_to(ROOT)}'
    out = ['---', f'title: "The regime on {corpus}: which models can say something about memory"', '---', '',
           "A model that does not beat the trigram on its documents uses one or two tokens of context, and nothing it does beyond W "
           "can be about memory ([the rules](science.qmd)). This page is the measured search for a configuration that trains on "
           "the 2-core CPU and beats the 5-gram, the bar the study's claims need. Generated by "
           f"`python tools/regime_sweep.py {sweep_path}{flag} --markdown` from `{res_root.relative_to(ROOT)}/*.json`.", '', body.lstrip()]
    first = {f['name']: g[0]['name'] for g in seed_groups(yaml.safe_load(Path(sweep_path).read_text())) for f in g}
    for f in sorted((res_root / 'eval').glob('*/summary.json')):
        rel = f.parent.relative_to(ROOT / 'reports')
        one = (f"One of the seeds of {first[f.parent.name]}: the seed rule over them is under [Seeds of one configuration]"
               "(#seeds-of-one-configuration). " if f.parent.name in first else "Single seed: a direction to test with the study's seeds, not a claim. ")
        out += [f"## {f.parent.name}: full context against the sliding window", '', one + f"Summary: `{f.relative_to(ROOT)}`.", '']
        out += [f"![{what}]({rel}/summary_{k}.png)" + '\n' for k, what in
                (('position', 'PPL by position, full context and SW, with the n-gram reference lines'),
                 ('difference', 'paired full - SW difference by position, 95% CI over documents'),
                 ('phase', 'loss by position inside the mini-batch')) if (f.parent / f'summary_{k}.png').exists()]
    return '\n'.join(out) + '\n'


def default_results_dir(sweep_path:str) -> Path:
    "Where a sweep's results live: reports/regime for regime_stdlib.yaml (the first sweep), reports/regime-X for regime_X.yaml."
    stem = Path(sweep_path).stem
    return ROOT / 'reports' / ('regime' if stem == 'regime_stdlib' else 'regime-' + stem.removeprefix('regime_'))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('sweep'); ap.add_argument('--only', nargs='*'); ap.add_argument('--runs-dir', default='runs/regime')
    ap.add_argument('--results-dir', default=None, help='default: reports/regime for regime_stdlib.yaml, reports/regime-X for regime_X.yaml')
    ap.add_argument('--markdown', action='store_true', help='only write benchmarks/<results dir name>.md and reports/<results dir name>.qmd '
                    'from the results (then tools/benchmarks_md.py)')
    ap.add_argument('--ngram', action='store_true', help='only (re)compute the n-gram reference on the same documents')
    ap.add_argument('--evaluate', nargs='+', metavar='NAME', help='only evaluate these finished configurations (reports/regime/eval/NAME)')
    a = ap.parse_args(argv)
    sw = yaml.safe_load(Path(a.sweep).read_text())
    res_root = Path(a.results_dir).resolve() if a.results_dir else default_results_dir(a.sweep)
    if a.markdown:
        md = markdown(a.sweep, res_root)
        (ROOT / 'benchmarks' / f'{res_root.name}.md').write_text(md)
        (ROOT / 'reports' / f'{res_root.name}.qmd').write_text(site_page(md, res_root, a.sweep)); return
    if a.evaluate:
        for name in a.evaluate: print(f"{name}: {evaluate(name, Path(a.runs_dir), res_root)}", flush=True)
        return
    if a.ngram:
        r = ngram_reference(sw, res_root)
        for k, v in r['eval'].items(): print(k, {o: round(x['ppl'], 3) for o, x in v.items()})
        return
    ev = sw.get('eval', {})
    for run in sw['runs']:
        name = run['name']
        if a.only and name not in a.only: continue
        if (res_root / f'{name}.json').exists(): print(f'{name}: done, skipped'); continue
        fields = dict(sw.get('defaults', {}), **{k: v for k, v in run.items() if k not in ('name', 'why')})
        print(f'{name}: training ({fields.get("steps")} steps)', flush=True)
        r = run_one(name, fields, Path(a.runs_dir), res_root, ev.get('split', 'test'), float(ev.get('max_multiple', 20.5)))
        print(f"{name}: {r['train']['tokens']} tokens in {r['train']['wall_s']} s; PPL published16 {r['eval']['published16']['ppl']:.3f}, "
              f"all ({r['eval']['all']['docs']} docs) {r['eval']['all']['ppl']:.3f}", flush=True)


if __name__ == '__main__':
    main()
