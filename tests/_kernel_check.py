"""Triton kernels against the PyTorch reference: the cases and the error measure used by tests/test_kernels.py.

On a CPU machine the kernels run in Triton's interpreter, which must be chosen before `triton` is first
imported, so tests/test_kernels.py runs this file in a child process:

    TRITON_INTERPRET=1 python tests/_kernel_check.py cpu > errors.json     # every CPU case, one JSON object

Importing this module does not import triton (the test module imports it for the case list).
"""
from __future__ import annotations
import json, sys, time
from dataclasses import dataclass
import torch

@dataclass(frozen=True)
class Case:
    B:int; T:int; H:int; D:int; b:int     # batch, length, heads, head dim, mini-batch size
    offset:int=0                          # > 0: continue a partial mini-batch (random accumulated grads in)
    dtype:str='fp32'                      # inputs' dtype
    kind:str='linear'                     # 'linear' or 'mlp' (forward only)
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
# TTT-MLP (forward kernel): outputs and final state.
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
           'fp16': dict(out=5e-3, state=5e-3, grad=2e-2),   # fp16/bf16 inputs: tf32 dots, fp32 state
           'bf16': dict(out=2e-2, state=1e-2, grad=5e-2)}
OUTS = ('out', 'W1', 'b1', 'gW1', 'gb1')
MLP_OUTS = ('out', 'W1', 'b1', 'W2', 'b2', 'gW1', 'gb1', 'gW2', 'gb2')
INS = ('XQ', 'XK', 'XV', 'lr', 'token_idx', 'ln_w', 'ln_b', 'W1_0', 'b1_0', 'gW1_0', 'gb1_0')
DTYPES = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}

def kind_of(name): return 'out' if name == 'out' else 'state' if name in MLP_OUTS else 'grad'

def rel_rms(x, ref):
    "Relative RMS error of x against ref."
    x, ref = x.double(), ref.double()
    return ((x - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt().clamp_min(1e-30)).item()

def make_inputs(c:Case, device='cpu'):
    "Random arguments for ttt_linear (float64 values rounded to the case's dtype): list of 11 tensors (grads may be None)."
    from ttt_nb.ops.ttt_ref import random_inputs
    XQ, XK, XV, lr, ti, lnw, lnb, (W, b) = random_inputs('linear', c.B, c.H, c.T, c.D, c.b, seed=c.seed)
    g = torch.Generator().manual_seed(c.seed + 1)
    lr = lr * 4                                     # larger inner steps than the model's, to exercise the update
    dt = DTYPES[c.dtype]
    xs = [t.to(dt) for t in (XQ, XK, XV, lr)] + [ti, lnw.to(dt), lnb.to(dt), W.float(), b.float()]
    if c.offset:
        xs += [0.05 * torch.randn(c.B, c.H, c.D, c.D, generator=g, dtype=torch.float64).float(),
               0.05 * torch.randn(c.B, c.H, 1, c.D, generator=g, dtype=torch.float64).float()]
    else: xs += [None, None]
    return [None if t is None else t.to(device) for t in xs]

def run(fn, xs, offset, upcast=False, seed=0):
    "Outputs of fn and the gradients of a fixed random linear function of them wrt every input."
    xs = [None if t is None else (t.double() if upcast else t).detach().requires_grad_(True) for t in xs]
    grads = None if xs[9] is None else (xs[9], xs[10])
    out, (W1, b1), (gW1, gb1) = fn(*xs[:7], (xs[7], xs[8]), grads, offset)
    outs = [out, W1, b1, gW1, gb1]
    g = torch.Generator().manual_seed(seed + 2)
    loss = sum((o.double() * torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.device)).sum() for o in outs)
    gs = torch.autograd.grad(loss, [t for t in xs if t is not None], allow_unused=True)
    gs = iter(gs)
    din = [None if t is None else next(gs) for t in xs]
    return dict(zip(OUTS, outs)) | {f"d{n}": d for n, d in zip(INS, din)}

def mlp_errors(c:Case, device='cpu') -> dict:
    "Relative RMS error of the TTT-MLP forward kernel's output and final state against the float64 reference."
    from ttt_nb.ops import ttt_ref, ttt_triton
    XQ, XK, XV, lr, ti, lnw, lnb, params = ttt_ref.random_inputs('mlp', c.B, c.H, c.T, c.D, c.b, seed=c.seed)
    g = torch.Generator().manual_seed(c.seed + 1)
    grads = tuple(0.05 * torch.randn(p.shape, generator=g, dtype=torch.float64) for p in params) if c.offset else None
    dt = DTYPES[c.dtype]
    xs = [t.to(dt) for t in (XQ, XK, XV, lr * 4)] + [ti, lnw.to(dt), lnb.to(dt)]
    st = lambda ps: None if ps is None else tuple(p.float().to(device) for p in ps)
    xs = [t.to(device) for t in xs]
    with torch.no_grad():
        o, p, gr = ttt_triton.ttt_mlp(*xs, st(params), st(grads), c.offset)
        o0, p0, gr0 = ttt_ref.ttt_mlp(*(t.double() for t in xs), *(None if ps is None else tuple(u.double() for u in ps)
                                                                    for ps in (st(params), st(grads))), c.offset)
    got, want = (o, *p, *gr), (o0, *p0, *gr0)
    return {n: rel_rms(a, w) if w.abs().max() > 0 else a.abs().max().item() for n, a, w in zip(MLP_OUTS, got, want)}

def errors(c:Case, device='cpu') -> dict:
    "Relative RMS error of every output, final state and gradient of the Triton op against the float64 reference."
    from ttt_nb.ops import ttt_ref, ttt_triton
    if c.kind == 'mlp': return mlp_errors(c, device)
    xs = make_inputs(c, device)
    got = run(ttt_triton.ttt_linear, xs, c.offset)
    want = run(ttt_ref.ttt_linear, xs, c.offset, upcast=True)
    res = {}
    for k, w in want.items():
        if w is None: continue                      # an input the result does not depend on (grads at offset 0)
        if got[k] is None: res[k] = float('inf'); continue
        res[k] = rel_rms(got[k], w) if w.abs().max() > 0 else (got[k].abs().max().item())
    return res

def split_errors(c:Case, pieces=(1, 5, 14), device='cpu') -> dict:
    "A sequence run through the kernel in pieces (decode steps included), passing the state, against one call."
    from ttt_nb.ops import ttt_triton
    xs = make_inputs(c, device)
    whole = ttt_triton.ttt_linear(*xs[:7], (xs[7], xs[8]), None, 0)
    params, grads, off, t, outs = (xs[7], xs[8]), None, 0, 0, []
    for n in list(pieces) + [c.T - sum(pieces)]:
        sl = slice(t, t + n)
        o, params, grads = ttt_triton.ttt_linear(xs[0][:, :, sl], xs[1][:, :, sl], xs[2][:, :, sl], xs[3][:, :, sl],
                                                 *xs[4:7], params, grads, off)
        outs.append(o); t += n; off = (off + n) % c.b
    return dict(out=rel_rms(torch.cat(outs, 2), whole[0]), W1=rel_rms(params[0], whole[1][0]),
                b1=rel_rms(params[1], whole[1][1]), gW1=rel_rms(grads[0], whole[2][0]) if whole[2][0].abs().max() > 0 else grads[0].abs().max().item())

SPLIT_CASE = Case(1, 37, 2, 16, 16)

SMEM_LIMIT = 232448   # bytes of shared memory one block may use on sm_90 (H100/H200)

def compile_sm90(kernel:str, dtype:str, D:int, b:int=16, has_g:bool=True) -> dict:
    "Compile a kernel for sm_90 without a GPU (ptxas ships with triton): its shared memory and launch options."
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from ttt_nb.ops import ttt_triton as K
    fn = getattr(K, f"_{kernel}_kernel" if kernel.startswith('mlp') else f"_linear_{kernel}_kernel")
    BD, BT = K._blocks(D, b)
    consts = dict(D=D, BD=BD, MB=b, BT=BT, HAS_G=has_g, EPS=1e-6, PREC=K._prec(DTYPES[dtype]))
    if kernel == 'fwd': consts['SAVE'] = True
    if kernel == 'mlp_fwd': consts.update(F=4 * D, BF=K._mlp_bf(D))
    dt = dict(fp32='fp32', fp16='fp16', bf16='bf16')[dtype]
    rows = {'XQ', 'XK', 'XV', 'OUT', 'DOUT', 'DXQ', 'DXK', 'DXV', 'LR', 'LNW', 'LNB'}
    sig = {n: 'constexpr' if n in consts else 'i32' if n in ('T', 'T0', 'offset', 'NC', 'H') else '*' + (dt if n in rows else 'fp32')
           for n in fn.arg_names}
    src = ASTSource(fn=fn, signature=sig, constexprs={(fn.arg_names.index(k),): v for k, v in consts.items()})
    k = triton.compile(src, target=GPUTarget('cuda', 90, 32), options=dict(num_warps=K._warps(D), num_stages=K._STAGES))
    return dict(shared=k.metadata.shared, num_warps=k.metadata.num_warps)

def main(device='cpu'):
    cases = CPU_CASES if device == 'cpu' else GPU_CASES
    res, t0 = {}, time.time()
    for c in cases: res[c.id] = errors(c, device)
    res['split'] = split_errors(SPLIT_CASE, device=device)
    res['seconds'] = time.time() - t0
    print(json.dumps(res))

if __name__ == '__main__':
    torch.set_num_threads(1)
    main(*sys.argv[1:])
