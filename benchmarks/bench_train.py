#!/usr/bin/env python
"""Training throughput (tokens/s) and peak memory of `ttt_nb.train.Trainer` for the tiny and 125m presets.

    python benchmarks/bench_train.py                      # CPU: float32, small W and batch (defaults below)
    python benchmarks/bench_train.py --presets tiny       # one preset only (the other rows are kept)
    python benchmarks/bench_train.py --presets study,study+compile   # the study's tiny Mamba shape, eager and torch.compile
    python benchmarks/bench_train.py --demo runs/demo     # record a finished `ttt-train` run (held-out loss start -> end)

On a GPU the same command trains in bf16 autocast at W=2048 and reports MFU = 6 * N * tokens/s / peak bf16
FLOP/s (N = parameters without the embedding; the TTT inner loop's own FLOPs are not counted, so MFU is a
lower bound). Each preset runs in its own process so that its peak memory (CPU: max RSS; GPU:
max_memory_allocated) is its own. Timed steps follow untimed warm-up steps; one optimizer step is
batch_size x seq_len tokens. No checkpoints, no held-out loss, no evaluation inside the timed loop.
Writes benchmarks/results/train.json (rows, hardware, commands; an existing 'demo' entry is kept) and
benchmarks/train.md.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS, MD = ROOT / 'benchmarks/results/train.json', ROOT / 'benchmarks/train.md'
PEAK_BF16 = {'H100 PCIe': 756e12, 'H100 NVL': 835e12, 'H100': 989e12, 'H200': 989e12, 'A100': 312e12, 'L4': 121e12, 'A10': 125e12}
# (seq_len, batch_size, timed steps, warm-up steps) per preset and device type
SIZES = {'cpu': {'tiny': (128, 8, 5, 1), '125m': (64, 1, 2, 1), 'study': (64, 32, 40, 4)},
         'cuda': {'tiny': (2048, 8, 20, 3), '125m': (2048, 8, 10, 3), 'study': (2048, 8, 20, 4)}}
# rows that are not a bare preset: (preset, TrainConfig fields); a '+compile' suffix on any row adds compile=True
# (its warm-up steps compile the 3 graphs a state-passing run needs: the learned start state, a carried state, a reset)
ROWS = {'study': ('tiny', dict(model_overrides=dict(pre_conv=True, share_qk=True, use_gate=True), weight_decay_mode='all', threads=1))}


def one(row:str, seq_len:int, batch_size:int, steps:int, warmup:int) -> dict:
    "Time `steps` optimizer steps of one row (a preset, or a `ROWS` entry, with an optional '+compile') in this process."
    import torch

    from ttt_nb.core import hardware_info
    from ttt_nb.train import TrainConfig, Trainer
    cuda = torch.cuda.is_available()
    base, compiled = row.removesuffix('+compile'), row.endswith('+compile')
    preset, extra = ROWS.get(base, (base, {}))
    with tempfile.TemporaryDirectory() as d:
        cfg = TrainConfig(preset=preset, corpus='python-stdlib', tokenizer='byte', seq_len=seq_len, batch_size=batch_size,
                          steps=steps + warmup + 1, warmup_steps=1, eval_batches=1, eval_batch_size=1, n_checkpoints=0,
                          eval_every=0, out_dir=d, progress=False, wandb='disabled', run_eval=False, compile=compiled, **extra)
        tr = Trainer(cfg)
        t_warm = time.perf_counter()
        for _ in range(warmup): tr.train_step()
        warm_s = time.perf_counter() - t_warm
        if cuda: torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
        t0, c0 = time.perf_counter(), time.process_time()
        losses = [tr.train_step()[0] for _ in range(steps)]
        if cuda: torch.cuda.synchronize()
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        n = sum(p.numel() for p in tr.model.parameters())
        n_emb = tr.model.get_input_embeddings().weight.numel()
        tok_s = steps * batch_size * seq_len / dt
        row = dict(preset=row, cpu=hardware_info().get('cpu'), device=str(tr.device), compile=compiled, warmup_s=round(warm_s, 1),
                   backbone='mamba' if tr.model.config.pre_conv else 'transformer', precision=str(tr.precision).replace('torch.', ''),
                   seq_len=seq_len, batch_size=batch_size, timed_steps=steps, warmup_steps=warmup, seconds=round(dt, 3),
                   s_per_step=round(dt / steps, 3), cpu_s_per_step=round(cpu / steps, 3), tokens_per_s=round(tok_s, 1),
                   n_params=n, n_params_no_embedding=n - n_emb,
                   threads=torch.get_num_threads(), last_loss=losses[-1], load_avg_1min=round(os.getloadavg()[0], 2))
        if cuda:
            row['peak_mem_gib'] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
            name = torch.cuda.get_device_name(0)
            peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
            row['mfu'] = round(6 * (n - n_emb) * tok_s / peak, 4) if peak and tr.precision != torch.float32 else None
        else:
            row['peak_rss_gib'] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)
            row['mfu'] = None
        return row


def demo(run:Path) -> dict:
    "The facts of a finished demonstration run: command, held-out loss at start and end, wall time."
    conf = json.loads((run / 'config.json').read_text())
    summ = json.loads((run / 'train_summary.json').read_text())
    log = [json.loads(l) for l in (run / 'log.jsonl').read_text().splitlines()]
    every = conf['eval_every'] or conf['steps']   # logs before the held-out-only lines carried the latest value on every step
    held = [(r['step'], r['heldout_loss']) for r in log if r.get('heldout_loss') is not None
            and (r['step'] % every == 0 or r['step'] == summ['step'])]
    curve, seen = [], set()
    for s, h in held:
        if s not in seen: seen.add(s); curve.append([s, round(h, 4)])
    return dict(run=str(run), command=conf['run'].get('command'),
                preset=conf['preset'], corpus=conf['corpus'], tokenizer=conf['tokenizer'], seq_len=conf['seq_len'],
                batch_size=conf['batch_size'], steps=summ['step'], state=summ['state'], reason=summ['reason'],
                heldout_start=summ['start_heldout_loss'], heldout_end=summ['heldout_loss'], final_train_loss=summ['final_loss'],
                wall_s=summ['elapsed_s'], tokens_seen=summ['tokens_seen'], heldout_curve=curve,
                hardware=conf['run']['hardware'], corpus_hash=(conf['run'].get('data') or {}).get('corpus_hash'),
                eval=_eval_headline(run / 'eval' / 'summary.json'))


def _eval_headline(p:Path):
    "Full-context vs strided-SW perplexity at the probe points, from the evaluator's summary (None if absent)."
    if not p.exists(): return None
    s = json.loads(p.read_text())
    probes = {k[len('ttt_ppl_at_'):]: dict(ttt=round(v, 3), sw=round(s['sw_ppl_at_' + k[len('ttt_ppl_at_'):]], 3))
              for k, v in s.items() if k.startswith('ttt_ppl_at_')}
    return dict(n_docs=s.get('n_docs'), n_tokens=s.get('n_tokens'), stride=s.get('config', {}).get('stride'), probes=probes)


def write_md(res:dict):
    L = ['# Training throughput (`ttt_nb.train`)', '',
         "Command: `python benchmarks/bench_train.py` (all presets; `--presets tiny` or `--presets 125m` re-measures one row, "
         "keeping the others)  ", f"Last written: {res['created']}  ",
         f"Hardware of the last measurement (each row names its CPU): {res['hardware'].get('cpu')} ({res['hardware'].get('cpu_count')} cores, shared), GPU: {res['hardware'].get('gpu') or 'none'}, "
         f"torch {res['hardware'].get('torch')}, ttt_nb {res['hardware'].get('ttt_nb')}", '',
         'One optimizer step = batch_size x seq_len tokens (state passing on, TBPTT 1 segment, AdamW, grad clip). '
         'Peak memory: CPU max RSS of the process (model, optimizer, activations, Python, torch); GPU max_memory_allocated.', '',
         'The CPU is shared: the 1-minute load average at the end of each measurement is in the last column '
         '(2 cores; a load far above 2 means the numbers are several times lower than on an idle machine).', '',
         'Rows: a preset (its default backbone), or `study`: the tiny preset with the Mamba backbone and every parameter decayed, '
         'at the study\'s W=64, B=32 on one thread (sweeps/study_stdlib_b32.yaml); `+compile` trains through torch.compile '
         '(warm-up s: the untimed warm-up steps, which compile its graphs; the inductor cache of earlier runs shortens it). '
         'CPU s/step: process CPU time per step, steadier than wall time while other jobs share the cores.', '',
         '| row | CPU | device | precision | backbone | W | B | params | s/step | CPU s/step | tokens/s | warm-up s | peak mem (GiB) | MFU | load | measured |',
         '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|']
    for r in res['rows']:
        if 'error' in r:
            L.append(f"| {r['preset']} | {r.get('cpu', '?')} | {r.get('device', '?')} | | | | | | | | {r['error']} | | | | | |"); continue
        mem = r.get('peak_mem_gib', r.get('peak_rss_gib'))
        mfu = 'n/a (fp32 CPU)' if r['mfu'] is None else f"{100 * r['mfu']:.1f}%"
        L.append(f"| {r['preset']} | {r.get('cpu', '?')} | {r['device']} | {r['precision']} | {r.get('backbone', 'transformer')} | {r['seq_len']} | {r['batch_size']} | "
                 f"{r['n_params'] / 1e6:.2f}M | {r['s_per_step']} | {r.get('cpu_s_per_step', 'n/m')} | {r['tokens_per_s']:,.1f} | "
                 f"{r.get('warmup_s', 'n/m')} | {mem} | {mfu} | {r.get('load_avg_1min')} | {r.get('measured', res['created'])} |")
    L += ['', 'params: with the 257-token byte vocabulary (tied embeddings), so 125m counts about 86M here. '
          '125m on this CPU: 2 timed steps at W=64, B=1 only (a longer run did not fit the session); the TTT reference inner loop '
          '(ttt_nb.ops.ttt_ref) and its backward take a large share of the CPU time (profiled on tiny).', '',
          'GPU (bf16, W=2048, MFU): not measured (this task had no GPU); the same command measures it on one.', '']
    if d := res.get('demo'):
        L += ['## Demonstration run', '', f"Command: `{d['command']}`", '',
              f"{d['preset']} preset, corpus {d['corpus']} (hash {str(d['corpus_hash'])[:12]}), {d['tokenizer']} tokens, W={d['seq_len']}, "
              f"B={d['batch_size']}, {d['steps']} optimizer steps ({d['tokens_seen']:,} tokens), {d['state']} ({d['reason']}), "
              f"wall time {d['wall_s'] / 60:.1f} min on {d['hardware'].get('cpu')} ({d['hardware'].get('cpu_count')} shared cores).", '',
              f"Held-out loss (nats/token; the same {d['corpus']} validation segments every time, consecutive segments of each row "
              f"with the state passed as in training): "
              f"**{d['heldout_start']:.3f} at step 0 -> {d['heldout_end']:.3f} at step {d['steps']}**; final train loss {d['final_train_loss']:.3f}.", '',
              '| step | held-out loss |', '|---|---|'] + [f'| {s} | {h} |' for s, h in d['heldout_curve']] + ['']
        if e := d.get('eval'):
            L += [f"The evaluator (`ttt_nb.eval.evaluate_checkpoint`, run by `ttt-train` at the end) on {e['n_docs']} validation documents "
                  f"({e['n_tokens']:,} tokens), perplexity of the bin around r*W, full context vs strided sliding window (S={e['stride']}). "
                  "One seed, 100 steps of a tiny model: an illustration of the pipeline, not a finding (CIs in the run's eval/summary.json).", '',
                  '| r | full context | SW |', '|---|---|---|'] + [f"| {r} | {v['ttt']} | {v['sw']} |" for r, v in e['probes'].items()] + ['']
    MD.write_text('\n'.join(L))


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--presets', default='tiny,125m')
    p.add_argument('--one', help=argparse.SUPPRESS)       # internal: run one preset and print its row as JSON
    p.add_argument('--demo', help='record a finished ttt-train run folder in the results')
    a = p.parse_args()
    import torch
    kind = 'cuda' if torch.cuda.is_available() else 'cpu'
    if a.one:
        print('ROW ' + json.dumps(one(a.one, *SIZES[kind][a.one.removesuffix('+compile')]))); return
    from ttt_nb.core import hardware_info, write_json_atomic
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if a.demo:
        old['demo'] = demo(Path(a.demo)); write_json_atomic(old, RESULTS)
        if 'rows' in old: write_md(old)
        print(json.dumps(old['demo'], indent=1)); return
    rows = []
    for preset in a.presets.split(','):
        r = subprocess.run([sys.executable, __file__, '--one', preset], capture_output=True, text=True)
        line = [l for l in r.stdout.splitlines() if l.startswith('ROW ')]
        rows.append(json.loads(line[-1][4:]) if line else dict(preset=preset, error=(r.stderr.strip().splitlines() or ['failed'])[-1][:200]))
        rows[-1]['measured'] = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()); print(rows[-1], flush=True)
    res = dict(created=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()), command='python benchmarks/bench_train.py ' + ' '.join(sys.argv[1:]),
               sizes=SIZES[kind], hardware=hardware_info(), rows=rows, gpu='not measured' if kind == 'cpu' else 'measured')
    if 'demo' in old: res['demo'] = old['demo']
    measured = {r['preset'] for r in rows}   # presets not measured this time keep their earlier rows (and say when)
    for r in old.get('rows', []):
        if r['preset'] not in measured: res['rows'].append(dict(r, measured=r.get('measured', old.get('created'))))
    write_json_atomic(res, RESULTS); write_md(res)


if __name__ == '__main__':
    main()
