"""Synthetic recall beyond W as a positive control for `make run` (issue 15, "The site and the default job").

    python tools/recall_control.py NAME [NAME ...]     # run these configurations (see CONFIGS)
    python tools/recall_control.py --list              # the configurations and whether their JSON exists

Each configuration trains a tiny TTT model on the synthetic-recall corpus with gaps shorter than the training window W
(state passing on), then probes recall of a key-value binding planted r*W tokens before its query
(`ttt_nb.memory.recall_summary`, Wilson intervals, forced choice among the 10 digits: chance 0.1 per digit), and compares
the value tokens' NLL under full context and strided sliding windows of W tokens (paired over probe documents).
A configuration with `controls` trains the same setup again with `TrainConfig.control` set (e.g. 'no_inner_loop').
One JSON per configuration goes to reports/recall-control/<name>.json: config, tokens, wall and CPU time, recall per r
with CIs, the full-vs-SW value NLL and the carry weights, per arm (the main arm 'none' and each control). Arms already
in the JSON are skipped, so a rerun adds only the missing ones (delete the JSON to redo a configuration).
Training runs live under /tmp/recall/<name>[-<control>] (checkpoints are not kept in the repository).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import torch
from _runs import cpu_seconds, fit_to_end, provenance  # tools/ is on sys.path when a tool runs

from ttt_nb.core import write_json_atomic
from ttt_nb.memory import carry_weights, recall_summary, recall_value_nll
from ttt_nb.train import TrainConfig, Trainer
from ttt_nb.train.build import CONTROL_FIELDS

ROOT = Path(__file__).resolve().parents[1]
RES = ROOT / 'reports' / 'recall-control'
MAMBA = dict(pre_conv=True, share_qk=True, use_gate=True)   # TTTConfig backbone='mamba'

BASE = dict(preset='tiny', seq_len=64, batch_size=8, steps=300, lr=3e-3, lr_end=3e-4, warmup_steps=20, threads=1, seed=0,
            state_passing=True, eval_every=0, eval_batches=8, n_checkpoints=2, progress=False, wandb='disabled', run_eval=False)
CORPUS = dict(n_docs=4000, n_pairs=1, min_gap=8, max_gap=40)   # training documents: binding-to-query distance < W=64
RATIOS = (0.5, 1, 2, 5, 10, 20)

def _cfg(name, corpus=None, **kw):
    return dict(name=name, corpus={**CORPUS, **(corpus or {})}, train={**BASE, **kw})

CONFIGS = {c['name']: c for c in [
    _cfg('tf-s1000', steps=1000),
    _cfg('mamba-s1000', steps=1000, model_overrides=MAMBA),
    _cfg('mamba-lr1e-2-s1500', steps=1500, lr=1e-2, lr_end=1e-3, model_overrides=MAMBA),
    _cfg('mamba-base10-s1500', steps=1500, model_overrides={**MAMBA, 'ttt_base_lr': 10.0}),
    _cfg('mamba-base10-s2500', steps=2500, model_overrides={**MAMBA, 'ttt_base_lr': 10.0}),
    _cfg('mamba-base10-gap8-16-s1500', dict(n_docs=6000, min_gap=8, max_gap=16), steps=1500, model_overrides={**MAMBA, 'ttt_base_lr': 10.0}),
    _cfg('tf-base10-s1500', steps=1500, model_overrides={'ttt_base_lr': 10.0}),
    _cfg('mamba-base10-s2500-seed1', steps=2500, seed=1, model_overrides={**MAMBA, 'ttt_base_lr': 10.0}),
    _cfg('mamba-base30-s2500', steps=2500, model_overrides={**MAMBA, 'ttt_base_lr': 30.0}),
    _cfg('mamba-base10-lr5e-3-s2500', steps=2500, lr=5e-3, lr_end=5e-4, model_overrides={**MAMBA, 'ttt_base_lr': 10.0}),
]}



def corpus_name(opts:dict) -> str:
    return 'synthetic-recall?' + '&'.join(f'{k}={v}' for k, v in opts.items())


def train_and_probe(cfg_name:str, spec:dict, control:str='none') -> dict:
    "Train one arm, then probe it; returns the arm's record."
    out_dir = Path('/tmp/recall') / (cfg_name if control == 'none' else f'{cfg_name}-{control}')
    tr_kw = dict(spec['train'])
    if control in CONTROL_FIELDS:   # the control's field wins over the configuration's override of it (e.g. ttt_base_lr)
        tr_kw['model_overrides'] = {k: v for k, v in tr_kw.get('model_overrides', {}).items() if k != CONTROL_FIELDS[control][0]}
    cfg = TrainConfig.from_dict(dict(tr_kw, corpus=corpus_name(spec['corpus']), control=control, out_dir=str(out_dir)))
    torch.set_num_threads(cfg.threads)
    if out_dir.exists(): subprocess.run(['rm', '-rf', str(out_dir)], check=True)
    t0, c0 = time.time(), cpu_seconds()
    tr = Trainer(cfg)
    summ = fit_to_end(tr, out_dir.name)
    train = dict(wall_s=round(time.time() - t0, 1), cpu_s=round(cpu_seconds() - c0, 1), tokens=cfg.steps * cfg.batch_size * cfg.seq_len,
                 n_params=int(sum(p.numel() for p in tr.model.parameters())), state=summ.get('state'),
                 final_loss=summ.get('final_loss'), heldout_loss=summ.get('heldout_loss'), start_heldout_loss=summ.get('start_heldout_loss'))
    model = tr.model.eval()
    t1, c1 = time.time(), cpu_seconds()
    rec = recall_summary(model, cfg.seq_len, RATIOS, n=100, seed=0)
    recall_s = dict(wall_s=round(time.time() - t1, 1), cpu_s=round(cpu_seconds() - c1, 1))
    t1, c1 = time.time(), cpu_seconds()
    with torch.no_grad(): sw = recall_value_nll(model, cfg.seq_len, ratios=(1, 2, 5), n=50, seed=1, stride=16)
    sw_s = dict(wall_s=round(time.time() - t1, 1), cpu_s=round(cpu_seconds() - c1, 1))
    cw = carry_weights(model)
    return dict(control=control, train_config=cfg.to_dict(), train=train, recall=rec, recall_seconds=recall_s,
                value_nll_full_vs_sw=sw, sw_seconds=sw_s, carry=dict(last=cw['last'], carry_off=cw['carry_off']) if cw else None)


def brief(arm:dict) -> str:
    rows = arm['recall']['rows']
    r = ' '.join(f"r{x['r']:g}:{x['first']:.2f}[{x['first_lo']:.2f},{x['first_hi']:.2f}]/{x['acc']:.2f}" for x in rows)
    d = ' '.join(f"r{x['r']:g}:{x['sw_minus_full']:+.2f}[{x['lo']:+.2f},{x['hi']:+.2f}]" for x in arm['value_nll_full_vs_sw'])
    t = arm['train']
    return (f"  {arm['control']:13s} train {t['wall_s']}s wall {t['cpu_s']}s cpu, loss {t['final_loss']:.3f} heldout {t['heldout_loss']:.3f}"
            f" carry {arm['carry']['last'] if arm['carry'] else None}\n    first-digit[CI]/all4: {r}\n    SW-full value NLL: {d}")


def run(name:str, controls=('no_inner_loop',)) -> dict:
    "Train and probe the arms of configuration `name` that its JSON lacks (the main arm 'none', then `controls`); rewrite the JSON after each."
    spec, path = CONFIGS[name], RES / f'{name}.json'
    res = json.loads(path.read_text()) if path.exists() else dict(name=name, corpus=spec['corpus'], ratios=list(RATIOS), arms={})
    for c in ('none', *controls):
        if c in res['arms']: print(f'{name}: arm {c!r} done, skipped'); continue
        arm = train_and_probe(name, spec, c)
        res['arms'][c] = arm
        print(f'{name}:\n{brief(arm)}', flush=True)
        _write(res)
    return res


def reprobe(name:str, seed:int, n:int) -> dict:
    "Probe the saved final checkpoints of every arm of `name` again with other probe documents (seed, n per r); stored under arms[*]['reprobe']."
    from ttt_nb.checkpoint import latest_checkpoint
    from ttt_nb.eval import load_checkpoint
    torch.set_num_threads(1)
    res = json.loads((RES / f'{name}.json').read_text())
    for c, arm in res['arms'].items():
        model = load_checkpoint(latest_checkpoint(arm['train_config']['out_dir']))
        t1, c1 = time.time(), cpu_seconds()
        arm.setdefault('reprobe', {})[f'seed{seed}-n{n}'] = rec = recall_summary(model, arm['train_config']['seq_len'], RATIOS, n=n, seed=seed)
        print(name, c, f'seed {seed} n {n}:', ' '.join(f"r{x['r']:g}:{x['first']:.3f}[{x['first_lo']:.3f},{x['first_hi']:.3f}]" for x in rec['rows']),
              f'({time.time() - t1:.0f}s wall, {cpu_seconds() - c1:.0f}s cpu)', flush=True)
    _write(res)
    return res


def _write(res:dict):
    res.update(provenance())
    write_json_atomic(res, RES / f"{res['name']}.json")


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('names', nargs='*', help='configurations to run (default: all)')
    ap.add_argument('--list', action='store_true', help='list the configurations')
    ap.add_argument('--controls', default='no_inner_loop', help="comma-separated controls trained after the main arm ('' for none)")
    ap.add_argument('--reprobe', type=int, metavar='SEED', help='probe the saved checkpoints of the named configurations again with this probe seed')
    ap.add_argument('--n', type=int, default=300, help='probe documents per r with --reprobe')
    a = ap.parse_args()
    if a.reprobe is not None:
        for n in a.names: reprobe(n, a.reprobe, a.n)
        raise SystemExit(0)
    if a.list:
        for k in CONFIGS: print(k, 'arms:', ', '.join(json.loads((RES / f'{k}.json').read_text())['arms']) if (RES / f'{k}.json').exists() else '-')
        raise SystemExit(0)
    bad = [n for n in a.names if n not in CONFIGS]
    if bad: raise SystemExit(f"unknown configuration(s) {bad}: use one of {list(CONFIGS)}")
    for n in a.names or list(CONFIGS):
        run(n, tuple(c for c in a.controls.split(',') if c))
