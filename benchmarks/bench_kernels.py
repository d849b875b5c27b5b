#!/usr/bin/env python
"""Time the TTT-Linear inner loop: our Triton kernels against our reference (eager and torch.compile), the
official PyTorch layer and flash-linear-attention's chunk_ttt_linear when importable, and causal SDPA.

    python benchmarks/bench_kernels.py                   # on a GPU: B=8, H=12, d=64, T=512..32768, bf16
    python benchmarks/bench_kernels.py --kind mlp --out benchmarks/results/kernels_mlp.json --md benchmarks/kernels_mlp.md
    python benchmarks/bench_kernels.py --smoke           # on a CPU: tiny sizes through Triton's interpreter

Writes benchmarks/results/kernels.json (every row, hardware info, device limits) and benchmarks/kernels.md
(a table). Each time comes with its achieved TFLOP/s and bandwidth and their share of the device's peak.
A failure (out of memory, not importable, compile error) is recorded in its row, never fatal to the sweep.
FLOPs are algorithmic and the same for every TTT implementation (those of our kernels' dual form, counted
below), so the TFLOP/s compare like with like; bytes are the minimum traffic of our kernels.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if '--smoke' in sys.argv and 'triton' not in sys.modules:
    import torch
    if not torch.cuda.is_available(): os.environ.setdefault('TRITON_INTERPRET', '1')  # before triton is imported
import torch
import torch.nn.functional as F

# Dense peaks (no sparsity) and memory bandwidth, from the vendors' data sheets.
DEVICE_LIMITS = {  # name fragment: (bf16/fp16 TFLOP/s, tf32 TFLOP/s, fp32 TFLOP/s, TB/s)
    'H100 PCIe': (756, 378, 51, 2.0), 'H100 NVL': (835, 418, 60, 3.9), 'H100': (989, 494, 67, 3.35),
    'H200': (989, 494, 67, 4.8), 'A100-SXM4-80GB': (312, 156, 19.5, 2.04), 'A100': (312, 156, 19.5, 1.55),
    'L4': (121, 60, 30, 0.3), 'A10': (125, 62, 31, 0.6)}

def device_limits(device):
    if device.type != 'cuda': return None
    name = torch.cuda.get_device_name(device)
    for k, v in DEVICE_LIMITS.items():
        if k in name: return dict(name=name, bf16_tflops=v[0], tf32_tflops=v[1], fp32_tflops=v[2], tb_s=v[3])
    return dict(name=name)

def ttt_flops(B, H, T, d, b, mode, kind='linear'):
    "Dual-form FLOPs per (row, head, token). Linear: forward 6d^2+4bd, backward (with recomputation) 16d^2+12bd."
    if kind == 'mlp':  # forward 56d^2+20bd (hidden 4d); backward counted as twice the forward
        per = 56 * d * d + 20 * b * d
        return B * H * T * per * (3 if mode == 'fwd+bwd' else 1)
    per = 6 * d * d + 4 * b * d
    if mode == 'fwd+bwd': per += 16 * d * d + 12 * b * d
    return B * H * T * per

def ttt_bytes(B, H, T, d, b, mode, esize, kind='linear'):
    "Minimum traffic of our kernels: rows in and out, and (training) the weights stored at each mini-batch start."
    nc = math.ceil(T / b)
    state = (d * d + d) if kind == 'linear' else (8 * d * d + 5 * d)
    fwd = B * H * (4 * T * d * esize + T * 4)
    if kind == 'mlp': fwd += 2 * B * H * nc * state * 4   # the state is read and written once per mini-batch
    if mode == 'fwd': return fwd
    ckpt = B * H * nc * state * 4
    return fwd + 2 * ckpt + B * H * (7 * T * d * esize + 2 * T * 4)

def sdpa_flops(B, H, T, d, mode):
    f = 2 * B * H * T * T * d  # causal: half of 4 T^2 d
    return f * (3.5 if mode == 'fwd+bwd' else 1)

def sdpa_bytes(B, H, T, d, mode, esize):
    return B * H * T * d * esize * (4 if mode == 'fwd' else 12)

# ---- the implementations: each returns a function of the inputs that gives the output to time ----

KIND = 'linear'   # set by --kind

def ttt_inputs(B, H, T, d, b, dtype, device, seed=0):
    from ttt_nb.ops.ttt_ref import random_inputs
    xs = random_inputs(KIND, B, H, T, d, b, dtype=torch.float32, seed=seed)
    XQ, XK, XV, lr, ti, lnw, lnb, params = xs
    return [t.to(device, dtype) for t in (XQ, XK, XV, lr)] + [t.to(device) for t in (ti, lnw, lnb)] + \
           [tuple(p.to(device) for p in params)]

def make_impl(name, compile_max_T):
    "A function (inputs) -> out for one implementation, or raise with the reason it is not available."
    if name == 'triton':
        op = getattr(importlib.import_module(f'ttt_nb.ops.ttt_{KIND}_triton'), f'ttt_{KIND}')
        return lambda xs: op(*xs)[0]
    if name == 'ref':
        from ttt_nb.ops import ttt_ref
        op = getattr(ttt_ref, f'ttt_{KIND}')
        return lambda xs: op(*xs)[0]
    if name == 'ref_compiled':
        from ttt_nb.ops import ttt_ref
        fn = torch.compile(getattr(ttt_ref, f'ttt_{KIND}'))
        def run(xs):
            if xs[0].shape[2] > compile_max_T: raise RuntimeError(f"skipped: T > --compile-max-T={compile_max_T} (the scan unrolls)")
            return fn(*xs)[0]
        return run
    if name == 'official':
        return official_layer()
    if name == 'fla':
        if KIND != 'linear': raise RuntimeError("chunk_ttt_linear is TTT-Linear only")
        return fla_impl()
    if name == 'sdpa':
        return lambda xs: F.scaled_dot_product_attention(xs[0], xs[1], xs[2], is_causal=True)
    raise ValueError(name)

def official_layer():
    "The official ttt-lm-pytorch TTTLinear/TTTMLP layer (projections and RoPE included): `ttt.py` on sys.path or $TTT_OFFICIAL."
    if os.environ.get('TTT_OFFICIAL'): sys.path.insert(0, os.environ['TTT_OFFICIAL'])
    try:
        import ttt as official
    except ImportError as e: raise RuntimeError(f"not importable: {e}") from e
    if not hasattr(official, 'TTTLinear'): raise RuntimeError("not importable: `ttt` has no TTTLinear")
    cache = {}
    def run(xs):
        B, H, T, d = xs[0].shape
        key = (H, d, xs[0].dtype, xs[0].device)
        if key not in cache:
            cfg = official.TTTConfig(hidden_size=H * d, num_attention_heads=H, mini_batch_size=16,
                                     ttt_layer_type=KIND, pre_conv=False, use_gate=False, share_qk=False)
            cls = official.TTTLinear if KIND == 'linear' else official.TTTMLP
            cache[key] = cls(cfg, layer_idx=0).to(xs[0].device, xs[0].dtype)
        layer = cache[key]
        x = xs[0].transpose(1, 2).reshape(B, T, H * d)  # a hidden state of the same size
        if T % 16: raise RuntimeError("skipped: the official layer needs T % mini_batch_size == 0 without a cache")
        pos = torch.arange(T, device=x.device)[None].expand(B, T)
        return layer(x, attention_mask=None, position_ids=pos, cache_params=None)
    return run

def fla_impl():
    "flash-linear-attention's chunk_ttt_linear (a different function: residual, per-row lr, query scale), timed at the same shape."
    try:
        from fla.ops.ttt import chunk_ttt_linear
    except ImportError as e: raise RuntimeError(f"not importable: {e}") from e
    import inspect
    params = inspect.signature(chunk_ttt_linear).parameters
    def run(xs):
        XQ, XK, XV, lr, ti, lnw, lnb, (W, b) = xs
        B, H, T, d = XQ.shape
        kw = dict(scale=d ** -0.5, eps=1e-6, chunk_size=16, initial_state=W.float(), initial_state_bias=b.float(),
                  output_final_state=True)
        kw = {k: v for k, v in kw.items() if k in params}
        eta, q, k, v = lr[..., None], XQ, XK, XV
        if 'head_first' in params or list(params)[0] in ('q',):  # recent versions: [B, T, H, d] unless head_first
            q, k, v, eta = (t.transpose(1, 2).contiguous() for t in (XQ, XK, XV, eta))
            if 'head_first' in params: kw['head_first'] = False
        return chunk_ttt_linear(q, k, v, lnw.to(q.dtype), lnb.to(q.dtype), eta, **kw)[0]
    return run

# ---- timing ----

def timer(fn, device, reps):
    "Median milliseconds of fn()."
    if device.type == 'cuda':
        import triton.testing
        return triton.testing.do_bench(fn, warmup=max(5, reps // 4), rep=reps * 10, return_mode='median')
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter(); fn(); ts.append((time.perf_counter() - t0) * 1e3)
    ts.sort(); return ts[len(ts) // 2]

def bench_one(name, impl, shape, dtype, device, mode, reps):
    B, H, T, d, b = shape
    row = dict(impl=name, kind='attention' if name == 'sdpa' else KIND, B=B, H=H, T=T, d=d, b=b,
               dtype=str(dtype).replace('torch.', ''), mode=mode)
    try:
        xs = ttt_inputs(B, H, T, d, b, dtype, device)
        if mode == 'fwd':
            def fn():
                with torch.no_grad(): impl(xs)
        else:
            leaves = [t.requires_grad_(True) for t in xs[:7]] + [p.requires_grad_(True) for p in xs[7]]
            out = impl(xs)
            dout = torch.randn_like(out)
            def fn():
                for t in leaves: t.grad = None
                impl(xs).backward(dout)
        row['ms'] = timer(fn, device, reps)
        esize = torch.finfo(dtype).bits // 8
        fl = sdpa_flops(B, H, T, d, mode) if name == 'sdpa' else ttt_flops(B, H, T, d, b, mode, KIND)
        by = sdpa_bytes(B, H, T, d, mode, esize) if name == 'sdpa' else ttt_bytes(B, H, T, d, b, mode, esize, KIND)
        row.update(tflops=fl / row['ms'] / 1e9, tb_s=by / row['ms'] / 1e9)
        lim = device_limits(device)
        if lim and 'bf16_tflops' in lim:
            peak = lim['bf16_tflops'] if name == 'sdpa' or dtype != torch.float32 else lim['tf32_tflops']
            row.update(pct_peak_flops=100 * row['tflops'] / peak, pct_peak_bw=100 * row['tb_s'] / lim['tb_s'])
    except Exception as e:  # recorded, not fatal
        msg = f"{type(e).__name__}: {e}".splitlines()[0][:300]
        row['error'] = 'OOM' if isinstance(e, torch.cuda.OutOfMemoryError) else msg
        if device.type == 'cuda': torch.cuda.empty_cache()
    return row

def check_against_reference(shape, dtype, device):
    "Relative RMS difference of the Triton output from the reference at this shape (a sanity check next to the times)."
    from ttt_nb.ops import ttt_ref
    kernels = importlib.import_module(f'ttt_nb.ops.ttt_{KIND}_triton')
    xs = ttt_inputs(*shape, dtype, device)
    with torch.no_grad():
        a, r = (getattr(m, f'ttt_{KIND}')(*xs)[0].double() for m in (kernels, ttt_ref))
    return ((a - r).pow(2).mean().sqrt() / r.pow(2).mean().sqrt()).item()

def markdown(res):
    rows = res['rows']
    lines = [f"### TTT-{res['kind'].upper() if res['kind'] == 'mlp' else 'Linear'} inner loop: {res['device']} ({res['dtype']})", '',
             res['note'], '',
             '| impl | T | mode | ms | TFLOP/s | % peak | TB/s | % peak BW | note |', '|---|---:|---|---:|---:|---:|---:|---:|---|']
    f = lambda r, k, fmt: (fmt % r[k]) if k in r else '-'
    for r in rows:
        lines.append(f"| {r['impl']} | {r['T']} | {r['mode']} | {f(r, 'ms', '%.3f')} | {f(r, 'tflops', '%.2f')} | "
                     f"{f(r, 'pct_peak_flops', '%.1f')} | {f(r, 'tb_s', '%.3f')} | {f(r, 'pct_peak_bw', '%.1f')} | {r.get('error', '')} |")
    if res.get('checks'):
        lines += ['', 'Triton vs reference (relative RMS of `out`): ' +
                  ', '.join(f"T={t}: {e:.1e}" if isinstance(e, float) else f"T={t}: {e}" for t, e in res['checks'].items())]
    return '\n'.join(lines) + '\n'

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--smoke', action='store_true', help='tiny sizes (CPU: through the Triton interpreter)')
    ap.add_argument('--B', type=int, default=8); ap.add_argument('--H', type=int, default=12)
    ap.add_argument('--d', type=int, default=64); ap.add_argument('--b', type=int, default=16)
    ap.add_argument('--T', type=int, nargs='+', default=[512, 1024, 2048, 4096, 8192, 16384, 32768])
    ap.add_argument('--dtype', default='bf16', choices=['bf16', 'fp16', 'fp32'])
    ap.add_argument('--kind', default='linear', choices=['linear', 'mlp'], help='TTT-Linear or TTT-MLP')
    ap.add_argument('--impls', nargs='+', default=['triton', 'ref', 'ref_compiled', 'official', 'fla', 'sdpa'])
    ap.add_argument('--compile-max-T', type=int, default=2048, help='torch.compile unrolls the scan: skip longer T')
    ap.add_argument('--ref-max-T', type=int, default=32768)
    ap.add_argument('--reps', type=int, default=20)
    ap.add_argument('--out', default=str(ROOT / 'benchmarks/results/kernels.json'))
    ap.add_argument('--md', default=str(ROOT / 'benchmarks/kernels.md'))
    a = ap.parse_args(argv)
    global KIND
    KIND = a.kind
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if a.smoke:
        a.B, a.H, a.d, a.T, a.reps = 1, 2, 16, [32, 37], 2
        if device.type == 'cpu': a.impls = [i for i in a.impls if i != 'ref_compiled']
    elif device.type != 'cuda':
        sys.exit("the full benchmark needs a GPU; use --smoke on a CPU")
    dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16, 'fp32': torch.float32}[a.dtype]
    if a.smoke and device.type == 'cpu': dtype = torch.float32  # the interpreter's bf16 dots are not trustworthy
    from ttt_nb.core import hardware_info
    impls = {}
    for n in a.impls:
        try: impls[n] = make_impl(n, a.compile_max_T)
        except Exception as e: impls[n] = e
    rows, checks = [], {}
    for T in a.T:
        shape = (a.B, a.H, T, a.d, a.b)
        for n, impl in impls.items():
            for mode in ('fwd', 'fwd+bwd'):
                if isinstance(impl, Exception):
                    rows.append(dict(impl=n, B=a.B, H=a.H, T=T, d=a.d, b=a.b, mode=mode, error=str(impl)[:300])); continue
                if n == 'ref' and T > a.ref_max_T:
                    rows.append(dict(impl=n, B=a.B, H=a.H, T=T, d=a.d, b=a.b, mode=mode, error="skipped: T > --ref-max-T")); continue
                rows.append(bench_one(n, impl, shape, dtype, device, mode, a.reps))
                r = rows[-1]
                print(f"{n:13s} T={T:6d} {mode:8s} " + (f"{r['ms']:9.3f} ms {r['tflops']:7.2f} TFLOP/s {r['tb_s']:7.3f} TB/s"
                      if 'ms' in r else r['error']), flush=True)
        if 'triton' in impls and 'ref' in impls and not isinstance(impls['triton'], Exception) and T <= a.ref_max_T:
            try: checks[T] = check_against_reference(shape, dtype, device)
            except Exception as e: checks[T] = f"{type(e).__name__}: {e}"[:200]
    measured = device.type == 'cuda' and not a.smoke
    note = ("Measured on the GPU above." if measured else
            "NOT A MEASUREMENT: GPU numbers not measured (no GPU in this run); these rows are the smoke run at tiny "
            f"sizes on {device.type}" + (" through the Triton interpreter" if device.type == 'cpu' else '') +
            ", kept to show the script runs.")
    res = dict(measured=measured, note=note, kind=a.kind, device=device_limits(device)['name'] if device.type == 'cuda' else 'cpu',
               device_limits=device_limits(device), dtype=str(dtype).replace('torch.', ''), hardware=hardware_info(),
               args=vars(a), flops_model='TTT: per row, head and token 6d^2+4bd forward, +16d^2+12bd backward; '
               'SDPA causal: 2 T^2 d per row and head forward, x3.5 forward+backward', rows=rows,
               checks={str(k): v for k, v in checks.items()}, triton_interpret=os.environ.get('TRITON_INTERPRET', ''))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1) + '\n')
    Path(a.md).write_text(markdown(res))
    print(f"wrote {a.out} and {a.md}")
    return res

if __name__ == '__main__':
    main()
