#!/usr/bin/env python
"""Cost of each evaluation of ttt_nb.eval relative to one full-context pass over the same documents.

    python benchmarks/bench_eval.py                       # tiny TTT, Transformer and SWA; W=64, S=16; CPU
    python benchmarks/bench_eval.py --device cuda --docs 16

For each model: D random documents of max_multiple*W + 1 tokens; process CPU time on a CPU (wall time on CUDA), best of --repeats after one warm-up,
of the full-context pass, the strided SW (stride S), the truncation test (windows of 2W every W) and the exact SW
(one window per position; one timed run). Target: strided SW costs at most about W/S + 1 full passes.
Writes benchmarks/results/eval.json (with hardware_info) and benchmarks/eval.md.
"""
import argparse
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from ttt_nb.baselines import SWAConfig, SWAForCausalLM, TransformerConfig, TransformerForCausalLM
from ttt_nb.core import as_dtype, hardware_info, write_json_atomic
from ttt_nb.eval import full_context_nll, sliding_window_nll, truncated_nll


def build(kind, W, V, preset):
    torch.manual_seed(0)
    if kind == 'ttt':
        from ttt_nb.config import TTTConfig
        from ttt_nb.model import TTTForCausalLM
        return TTTForCausalLM(TTTConfig.from_preset(preset, vocab_size=V))
    if kind == 'transformer': return TransformerForCausalLM(TransformerConfig.from_preset(preset, vocab_size=V))
    if kind == 'swa': return SWAForCausalLM(SWAConfig.from_preset(preset, vocab_size=V, sliding_window=W))
    raise ValueError(kind)

def timed(f, repeats, sync, cpu):
    "Best of `repeats`: process CPU time on CPU (robust on a shared machine), wall time on CUDA; also the best wall time."
    best, wall = float('inf'), float('inf')
    for _ in range(repeats):
        sync(); t0, c0 = time.perf_counter(), time.process_time(); f(); sync()
        wall = min(wall, time.perf_counter() - t0); best = min(best, (time.process_time() - c0) if cpu else wall)
    return best, wall

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--W', type=int, default=64); p.add_argument('--stride', type=int, default=16)
    p.add_argument('--docs', type=int, default=4); p.add_argument('--max-multiple', type=int, default=20)
    p.add_argument('--models', default='ttt,transformer,swa'); p.add_argument('--preset', default='tiny')
    p.add_argument('--vocab', type=int, default=257); p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--device', default='cpu'); p.add_argument('--dtype', default='float32')
    p.add_argument('--threads', type=int, default=0, help='torch threads (0: leave as is)')
    p.add_argument('--no-exact', action='store_true', help='skip the exact SW (slowest)')
    p.add_argument('--out', default=str(ROOT / 'benchmarks' / 'results' / 'eval.json'))
    p.add_argument('--md', default=str(ROOT / 'benchmarks' / 'eval.md'))
    a = p.parse_args(argv)
    if a.threads: torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    sync = (lambda: torch.cuda.synchronize()) if dev.type == 'cuda' else (lambda: None)
    W, S, T = a.W, a.stride, a.max_multiple * a.W + 1
    g = torch.Generator().manual_seed(0)
    docs = [torch.randint(0, a.vocab, (T,), generator=g) for _ in range(a.docs)]
    rows = []
    for kind in a.models.split(','):
        m = build(kind, W, a.vocab, a.preset).to(dev, as_dtype(a.dtype)).eval()
        full = lambda m=m: full_context_nll(m, docs, batch_size=a.docs)
        runs = {'full': full, f'sw_strided_S{S}': lambda m=m: sliding_window_nll(m, docs, W, stride=S),
                'truncation': lambda m=m: truncated_nll(m, docs, W)}
        if not a.no_exact: runs['sw_exact'] = lambda m=m: sliding_window_nll(m, docs, W, stride=None)
        full(); sync()                                            # warm-up
        res, walls = {}, {}
        for name, f in runs.items():
            res[name], walls[name] = timed(f, 1 if name == 'sw_exact' else a.repeats, sync, dev.type == 'cpu')
            print(f"{kind:12s} {name:16s} {res[name]:8.3f} s  x{res[name] / res['full']:.2f}  (wall {walls[name]:.3f} s)", flush=True)
        n_params = sum(q.numel() for q in m.parameters())
        for name, t in res.items():
            rows.append(dict(model=kind, method=name, seconds=round(t, 4), wall_seconds=round(walls[name], 4),
                             relative_to_full=round(t / res['full'], 3), tokens_per_s=round(a.docs * (T - 1) / t, 1), n_params=n_params))
        del m
    cfg = dict(W=W, stride=S, docs=a.docs, doc_tokens=T, preset=a.preset, vocab=a.vocab, dtype=a.dtype, device=str(dev),
               repeats=a.repeats, threads=torch.get_num_threads(), clock='process CPU time' if dev.type == 'cpu' else 'wall', target_strided=f'<= W/S + 1 = {W / S + 1:g} full passes')
    cmd = 'python benchmarks/bench_eval.py ' + ' '.join(argv if argv is not None else sys.argv[1:])
    hw = hardware_info()
    write_json_atomic(dict(benchmark='eval', command=cmd.strip(), config=cfg, hardware=hw, rows=rows,
                           time=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())), a.out)
    lines = ['# Evaluator cost (benchmarks/bench_eval.py)', '',
             f'Cost of each evaluation relative to one full-context pass over the same {a.docs} documents of {T} tokens '
             f'(W={W}, stride S={S}; {a.preset} preset, vocab {a.vocab}, {a.dtype}, {dev}). Seconds are process CPU time on a CPU '
             f'(the machine is shared; {torch.get_num_threads()} torch thread(s)), wall time on a GPU; best of {a.repeats} runs after a warm-up '
             '(the exact SW: one run). Target for the strided SW: at most about W/S + 1 = '
             f'{W / S + 1:g} full passes; the exact SW is reported as measured (its token count is ~W times the full pass).', '',
             '| model | method | seconds | x full pass | wall seconds | tokens/s scored |', '|---|---|---:|---:|---:|---:|']
    lines += [f"| {r['model']} | {r['method']} | {r['seconds']:.3f} | {r['relative_to_full']:.2f} | {r['wall_seconds']:.3f} | {r['tokens_per_s']:.0f} |" for r in rows]
    lines += ['', f'Command: `{cmd.strip()}`', '',
              f"Hardware: {hw['cpu']} ({hw['cpu_count']} cores, torch threads {torch.get_num_threads()}), GPU: {hw['gpu']}, "
              f"torch {hw['torch']}, ttt_nb {hw['ttt_nb']}; load average {os.getloadavg()[0]:.1f} at the end. The CPU was shared with "
              'other jobs, so wall seconds are noisy; CPU-time ratios are the point.', '', 'Raw numbers: `benchmarks/results/eval.json`.', '']
    Path(a.md).write_text('\n'.join(lines))
    return rows

if __name__ == '__main__':
    main()
