"""Triton kernels against the PyTorch reference: the cases and the error measure used by tests/test_kernels.py.

On a CPU machine the kernels run in Triton's interpreter, which must be chosen before `triton` is first
imported, so tests/test_kernels.py runs this file in a child process:

    TRITON_INTERPRET=1 python tests/_kernel_check.py cpu > errors.json     # every CPU case, one JSON object

Importing this module does not import triton (the test module imports it for the case list).
"""
from __future__ import annotations

import importlib
import json
import sys
import time
from dataclasses import dataclass

import torch


def triton_module(kind:str):
    "The kernel module of one op: `ttt_nb.ops.ttt_linear_triton` or `ttt_nb.ops.ttt_mlp_triton` (imports triton)."
    return importlib.import_module(f"ttt_nb.ops.ttt_{kind}_triton")

@dataclass(frozen=True)
class Case:
    B:int; T:int; H:int; D:int; b:int     # batch, length, heads, head dim, mini-batch size
    offset:int=0                          # > 0: continue a partial mini-batch (random accumulated grads in)
    dtype:str='fp32'                      # inputs' dtype
    kind:str='linear'                     # 'linear' or 'mlp'
    seed:int=0
    @property
    def id(self):
        s = ('mlp-' if self.kind == 'mlp' else '') + f"B{self.B}-T{self.T}-H{self.H}-D{self.D}-b{self.b}"
        if self.offset: s += f"-init-off{self.offset}"
        return s + ('' if self.dtype == 'fp32' else f"-{self.dtype}")

# Tiny shapes for the interpreter (about 2 ms per loop iteration and program): odd T, T < b, remainders,
# a mini-batch that closes exactly, T=1 decode steps, head dims 16..128 (96 included), b=8 padded to 16 rows.
CPU_CASES = [Case(2, 37, 2, 16, 16), Case(1, 5, 2, 16, 16), Case(2, 37, 2, 16, 16, offset=5),
             Case(1, 1, 2, 32, 16, offset=7), Case(1, 11, 1, 16, 16, offset=5), Case(1, 23, 1, 96, 8, offset=3),
             Case(1, 19, 2, 64, 16), Case(1, 20, 1, 128, 16, offset=2), Case(1, 21, 2, 32, 16, dtype='fp16'),
             Case(1, 21, 2, 32, 16, offset=9, dtype='bf16')]
# TTT-MLP.
CPU_CASES += [Case(2, 37, 2, 16, 16, kind='mlp'), Case(1, 21, 2, 16, 16, offset=5, kind='mlp'),
              Case(1, 1, 1, 32, 16, offset=7, kind='mlp'), Case(1, 23, 1, 24, 8, offset=3, kind='mlp'),
              Case(1, 20, 1, 96, 16, offset=2, kind='mlp'), Case(1, 21, 1, 16, 16, dtype='bf16', kind='mlp')]
# Real sizes on a GPU, fp32 and bf16.
GPU_CASES = [Case(2, 300, 4, 64, 16), Case(2, 300, 4, 64, 16, dtype='bf16'), Case(2, 1000, 2, 128, 16, dtype='bf16'),
             Case(1, 777, 3, 96, 16, offset=9), Case(1, 777, 3, 96, 16, offset=9, dtype='bf16'),
             Case(4, 100, 12, 64, 16, offset=3, dtype='bf16'), Case(2, 2048, 4, 64, 16, dtype='fp16'),
             Case(1, 513, 2, 128, 16, offset=1), Case(2, 200, 2, 16, 16),
             Case(2, 300, 4, 64, 16, kind='mlp'), Case(2, 300, 4, 64, 16, offset=5, dtype='bf16', kind='mlp'),
             Case(1, 200, 2, 128, 16, dtype='bf16', kind='mlp')]

# Relative RMS error allowed, per dtype and kind of tensor, against the reference run in float64 on the
# same input values (so the error measures the kernel, not the rounding of the inputs).
TOL = {'fp32': dict(out=1e-5, state=1e-5, grad=1e-4),
       'fp16': dict(out=2e-3, state=1e-4, grad=5e-3),
       'bf16': dict(out=1e-2, state=1e-3, grad=3e-2)}
GPU_TOL = {'fp32': dict(out=5e-5, state=5e-5, grad=5e-4),   # fp32 inputs: tf32x3 dots
           'fp16': dict(out=5e-3, state=1e-2, grad=3e-2),   # fp16/bf16 inputs: tf32 dots, fp32 state
           'bf16': dict(out=2e-2, state=1e-2, grad=5e-2)}
STATE = {'linear': ('W1', 'b1'), 'mlp': ('W1', 'b1', 'W2', 'b2')}
MLP_OUTS = ('out', 'W1', 'b1', 'W2', 'b2', 'gW1', 'gb1', 'gW2', 'gb2')
DTYPES = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}

def names(kind):
    "Names of the outputs and of the inputs' gradients."
    st = STATE[kind]
    outs = ('out',) + st + tuple('g' + n for n in st)
    ins = ('XQ', 'XK', 'XV', 'lr', 'token_idx', 'ln_w', 'ln_b') + tuple(n + '_0' for n in st) + tuple('g' + n + '_0' for n in st)
    return outs, ins

def kind_of(name): return 'out' if name == 'out' else 'state' if name in MLP_OUTS else 'grad'

def rel_rms(x, ref):
    "Relative RMS error of x against ref."
    x, ref = x.double(), ref.double()
    return ((x - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt().clamp_min(1e-30)).item()

def make_inputs(c:Case, device='cpu'):
    "Random arguments (float64 values rounded to the case's dtype): 7 tensors, then the state, then grads (None at offset 0)."
    from ttt_nb.ops.ttt_ref import random_inputs
    XQ, XK, XV, lr, ti, lnw, lnb, params = random_inputs(c.kind, c.B, c.H, c.T, c.D, c.b, seed=c.seed)
    g = torch.Generator().manual_seed(c.seed + 1)
    lr = lr * 4                                     # larger inner steps than the model's, to exercise the update
    dt = DTYPES[c.dtype]
    xs = [t.to(dt) for t in (XQ, XK, XV, lr)] + [ti, lnw.to(dt), lnb.to(dt)] + [p.float() for p in params]
    if c.offset: xs += [0.05 * torch.randn(p.shape, generator=g, dtype=torch.float64).float() for p in params]
    else: xs += [None] * len(params)
    return [None if t is None else t.to(device) for t in xs]

def run(fn, xs, offset, kind, upcast=False, seed=0):
    "Outputs of fn and the gradients of a fixed random linear function of them wrt every input."
    xs = [None if t is None else (t.double() if upcast else t).detach().requires_grad_(True) for t in xs]
    n = len(STATE[kind])
    params, grads = tuple(xs[7:7 + n]), (None if xs[7 + n] is None else tuple(xs[7 + n:]))
    out, P, G = fn(*xs[:7], params, grads, offset)
    outs = [out, *P, *G]
    g = torch.Generator().manual_seed(seed + 2)
    loss = sum((o.double() * torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.device)).sum() for o in outs)
    gs = iter(torch.autograd.grad(loss, [t for t in xs if t is not None], allow_unused=True))
    din = [None if t is None else next(gs) for t in xs]
    onames, inames = names(kind)
    return dict(zip(onames, outs)) | {f"d{n}": d for n, d in zip(inames, din)}

def errors(c:Case, device='cpu') -> dict:
    "Relative RMS error of every output, final state and gradient of the Triton op against the float64 reference."
    from ttt_nb.ops import ttt_ref
    xs = make_inputs(c, device)
    op = f"ttt_{c.kind}"
    got = run(getattr(triton_module(c.kind), op), xs, c.offset, c.kind)
    want = run(getattr(ttt_ref, op), xs, c.offset, c.kind, upcast=True)
    res = {}
    for k, w in want.items():
        if w is None: continue                      # an input the result does not depend on (grads at offset 0)
        if got[k] is None: res[k] = float('inf'); continue
        res[k] = rel_rms(got[k], w) if w.abs().max() > 0 else (got[k].abs().max().item())
    return res

def split_errors(c:Case, pieces=(1, 5, 14), device='cpu') -> dict:
    "A sequence run through the kernel in pieces (decode steps included), passing the state, against one call."
    op = getattr(triton_module(c.kind), f"ttt_{c.kind}")
    xs = make_inputs(c, device)
    n = len(STATE[c.kind])
    with torch.no_grad():
        whole = op(*xs[:7], tuple(xs[7:7 + n]), None, 0)
        params, grads, off, t, outs = tuple(xs[7:7 + n]), None, 0, 0, []
        for m in list(pieces) + [c.T - sum(pieces)]:
            sl = slice(t, t + m)
            o, params, grads = op(*(x[:, :, sl] for x in xs[:4]), *xs[4:7], params, grads, off)
            outs.append(o); t += m; off = (off + m) % c.b
    res = dict(out=rel_rms(torch.cat(outs, 2), whole[0]))
    for i, nm in enumerate(STATE[c.kind]):
        res[nm] = rel_rms(params[i], whole[1][i])
        res['g' + nm] = rel_rms(grads[i], whole[2][i]) if whole[2][i].abs().max() > 0 else grads[i].abs().max().item()
    return res

SPLIT_CASE = Case(1, 37, 2, 16, 16)
SPLIT_CASES = {'split': SPLIT_CASE, 'split-mlp': Case(1, 37, 2, 16, 16, kind='mlp')}

SMEM_LIMIT = 232448   # bytes of shared memory one block may use on sm_90 (H100/H200)

def compile_sm90(kernel:str, dtype:str, D:int, b:int=16, has_g:bool=True) -> dict:
    "Compile a kernel for sm_90 without a GPU (ptxas ships with triton): its shared memory and launch options."
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    K = triton_module('mlp' if kernel.startswith('mlp') else 'linear')
    fn = getattr(K, f"_{kernel}_kernel" if kernel.startswith('mlp') else f"_linear_{kernel}_kernel")
    BD, BT = triton_module('linear')._blocks(D, b)   # the block sizes both kernel files launch with
    consts = dict(D=D, BD=BD, MB=b, BT=BT, HAS_G=has_g, EPS=1e-6, PREC=K._prec(DTYPES[dtype]))
    if kernel == 'fwd': consts['SAVE'] = True
    if kernel.startswith('mlp'): consts.update(F=4 * D, BF=K._mlp_bf(D))
    if kernel == 'mlp_fwd': consts['SAVE'] = True
    dt = dict(fp32='fp32', fp16='fp16', bf16='bf16')[dtype]
    rows = {'XQ', 'XK', 'XV', 'OUT', 'DOUT', 'DXQ', 'DXK', 'DXV', 'LR', 'LNW', 'LNB'}
    sig = {n: 'constexpr' if n in consts else 'i32' if n in ('T', 'T0', 'offset', 'NC', 'H') else '*' + (dt if n in rows else 'fp32')
           for n in fn.arg_names}
    src = ASTSource(fn=fn, signature=sig, constexprs={(fn.arg_names.index(k),): v for k, v in consts.items()})
    k = triton.compile(src, target=GPUTarget('cuda', 90, 32), options=dict(num_warps=K._warps(D), num_stages=K._STAGES))
    return dict(shared=k.metadata.shared, num_warps=k.metadata.num_warps)

def model_errors(kind:str, device='cpu', preset='tiny', B=1, T=20, layers=None, vocab=256, dtype=torch.float32) -> dict:
    "A whole TTT language model through the kernels and through the reference: loss and every parameter's gradient."
    import os

    from ttt_nb.config import TTTConfig
    from ttt_nb.model import TTTForCausalLM
    torch.manual_seed(0)
    over = dict(ttt_layer_type=kind)
    if vocab: over['vocab_size'] = vocab
    if layers: over['num_hidden_layers'] = layers
    cfg = TTTConfig.from_preset(preset, **over)
    m = TTTForCausalLM(cfg).to(device, dtype)
    ids = torch.randint(0, cfg.vocab_size, (B, T), device=device)
    res, old = {}, os.environ.get('TTT_NB_IMPL')
    try:
        for impl in ('torch', 'triton'):
            os.environ['TTT_NB_IMPL'] = impl
            m.zero_grad(set_to_none=True)
            loss = m(ids, labels=ids).loss
            loss.backward()
            res[impl] = (loss.item(), {n: p.grad.detach().clone() for n, p in m.named_parameters() if p.grad is not None})
    finally:
        if old is None: os.environ.pop('TTT_NB_IMPL', None)
        else: os.environ['TTT_NB_IMPL'] = old
    (l0, g0), (l1, g1) = res['torch'], res['triton']
    errs = {n: rel_rms(g1[n], g0[n]) for n in g0}
    worst = max(errs, key=errs.get)
    return dict(loss=abs(l1 - l0) / abs(l0), grad=errs[worst], worst=worst, n_grads=len(g0), same_params=set(g0) == set(g1))

MODEL_TOL = dict(loss=1e-6, grad=1e-3)  # fp32: the worst parameter is the learnable token_idx (sums that cancel)

# The compiled path, which the interpreter does not exercise: (kernel, dtype, head dim) built for sm_90.
COMPILE_CASES = [('fwd', 'bf16', 64), ('bwd', 'bf16', 128), ('mlp_fwd', 'bf16', 128), ('mlp_bwd', 'fp32', 128)]

KERNELS = dict(linear=('_linear_fwd_kernel', '_linear_bwd_kernel'), mlp=('_mlp_fwd_kernel', '_mlp_bwd_kernel'))

def compile_all() -> dict:
    res = {}
    for k in COMPILE_CASES:
        try: res['-'.join(map(str, k))] = compile_sm90(*k)
        except Exception as e: res['-'.join(map(str, k))] = dict(error=f"{type(e).__name__}: {e}"[:1000])
    return res

def main(device='cpu'):
    if device == 'compile': print(json.dumps(compile_all())); return
    cases = CPU_CASES if device == 'cpu' else GPU_CASES
    res, t0 = {}, time.time()
    for c in cases: res[c.id] = errors(c, device)
    for k, sc in SPLIT_CASES.items(): res[k] = split_errors(sc, device=device)
    if device == 'cpu':  # a one-layer 'tiny' model, 20 tokens (one full and one partial mini-batch)
        for kind in ('linear', 'mlp'): res[f"model-{kind}"] = model_errors(kind, layers=1)
    res['seconds'] = time.time() - t0
    res['kernel_types'] = {n: type(getattr(triton_module(k), n)).__name__  # InterpretedFunction under TRITON_INTERPRET=1
                           for k, ns in KERNELS.items() for n in ns}
    print(json.dumps(res))

if __name__ == '__main__':
    torch.set_num_threads(1)
    main(*sys.argv[1:])
