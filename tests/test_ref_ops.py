"The PyTorch reference inner loop (ttt_nb.ops.ttt_ref): dual == primal, exact continuation, gradcheck, precision, errors."
import pytest
import torch

from ttt_nb.ops import dispatch
from ttt_nb.ops.ttt_ref import random_inputs, ttt_linear, ttt_mlp, ttt_primal

OPS = {'linear': ttt_linear, 'mlp': ttt_mlp}
# (B, T, H, d, b, offset): odd lengths, T < b, remainders, b = 1, starting inside a mini-batch
GRID = [(1, 1, 1, 2, 4, 0), (2, 7, 2, 4, 4, 0), (1, 3, 2, 4, 4, 1), (2, 9, 1, 4, 4, 3), (1, 16, 2, 8, 16, 0),
        (1, 37, 2, 4, 16, 5), (2, 5, 1, 2, 1, 0), (1, 10, 3, 6, 3, 2)]
ids = lambda g: [f'B{B}-T{T}-H{H}-D{d}-b{b}-o{o}' for B, T, H, d, b, o in g]

def _args(kind, B, T, H, d, b, offset, seed=0, **kw):
    XQ, XK, XV, lr, tok, lw, lb, P = random_inputs(kind, B=B, H=H, T=T, d=d, b=b, seed=seed, **kw)
    G = tuple(0.01 * torch.randn_like(p) for p in P) if offset else None
    return XQ, XK, XV, lr, tok, lw, lb, P, G, offset

@pytest.mark.parametrize('kind', ['linear', 'mlp'])
@pytest.mark.parametrize('B,T,H,d,b,offset', GRID, ids=ids(GRID))
def test_dual_equals_primal(kind, B, T, H, d, b, offset):
    a = _args(kind, B, T, H, d, b, offset, seed=T)
    o1, P1, G1 = OPS[kind](*a)
    o2, P2, G2 = ttt_primal(kind, *a)
    torch.testing.assert_close(o1, o2, rtol=1e-11, atol=1e-12)
    for x, y in zip(P1 + G1, P2 + G2): torch.testing.assert_close(x, y, rtol=1e-11, atol=1e-12)
    if (offset + T) % b == 0: assert all(g.abs().max() == 0 for g in G1)   # a closed mini-batch leaves no partial gradient

@pytest.mark.parametrize('kind', ['linear', 'mlp'])
def test_every_split_continues_exactly(kind):
    XQ, XK, XV, lr, tok, lw, lb, P = random_inputs(kind, B=2, H=2, T=13, d=4, b=4, seed=5)
    whole = OPS[kind](XQ, XK, XV, lr, tok, lw, lb, P)
    for cuts in ([1], [4], [5], [3, 4, 9], list(range(1, 13))):
        outs, p, g, off = [], P, None, 0
        for a, b in zip([0] + cuts, cuts + [13]):
            sl = slice(a, b)
            o, p, g = OPS[kind](XQ[:, :, sl], XK[:, :, sl], XV[:, :, sl], lr[:, :, sl], tok, lw, lb, p, g, off)
            outs.append(o); off = b % 4
        torch.testing.assert_close(torch.cat(outs, 2), whole[0], rtol=1e-11, atol=1e-12)
        for x, y in zip(p + g, whole[1] + whole[2]): torch.testing.assert_close(x, y, rtol=1e-11, atol=1e-12)

GC = [(1, 5, 1, 2, 3, 0), (1, 4, 1, 2, 3, 2), (2, 2, 1, 2, 4, 1), (1, 3, 2, 2, 2, 0)]
@pytest.mark.parametrize('kind', ['linear', 'mlp'])
@pytest.mark.parametrize('B,T,H,d,b,offset', GC, ids=ids(GC))
def test_gradcheck(kind, B, T, H, d, b, offset):
    XQ, XK, XV, lr, tok, lw, lb, P = random_inputs(kind, B=B, H=H, T=T, d=d, b=b, seed=7, requires_grad=True)
    G = tuple((0.01 * torch.randn_like(p)).requires_grad_() for p in P)
    n = len(P)
    def f(*a):
        o, P1, G1 = OPS[kind](*a[:7], tuple(a[7:7 + n]), tuple(a[7 + n:]), offset)
        return (o, *P1, *G1)
    assert torch.autograd.gradcheck(f, (XQ, XK, XV, lr, tok, lw, lb, *P, *G), eps=1e-6, atol=1e-6)

@pytest.mark.parametrize('kind', ['linear', 'mlp'])
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16, torch.float32])
def test_low_precision_inputs_keep_a_float32_state(kind, dtype):
    a = _args(kind, 2, 9, 2, 8, 4, 0, dtype=dtype)
    o, P, G = OPS[kind](*a)
    assert o.dtype == dtype and all(t.dtype == torch.float32 for t in P + G)
    o2, P2, _ = OPS[kind](*a[:7], P, G, 1)           # a float32 state continues low-precision inputs
    assert o2.dtype == dtype and P2[0].dtype == torch.float32
    ref = OPS[kind](*[t.float() if torch.is_tensor(t) else t for t in a[:7]], tuple(p.float() for p in a[7]))
    assert (o.float() - ref[0]).abs().max() < 0.05 * ref[0].abs().max()

def test_float64_stays_float64():
    o, P, G = ttt_mlp(*_args('mlp', 1, 5, 1, 4, 4, 0))
    assert o.dtype == torch.float64 and all(t.dtype == torch.float64 for t in P + G)

def test_grads_are_ignored_at_offset_zero():
    a = list(_args('linear', 1, 6, 1, 4, 4, 0))
    o1 = ttt_linear(*a)[0]
    a[8] = tuple(torch.ones_like(p) for p in a[7])
    torch.testing.assert_close(ttt_linear(*a)[0], o1, rtol=0, atol=0)

def test_dispatch_torch_is_the_reference():
    a = _args('mlp', 1, 7, 2, 4, 4, 2)
    o1 = ttt_mlp(*a)[0]
    o2 = dispatch.ttt_mlp(*a, impl='torch')[0]
    torch.testing.assert_close(o1, o2, rtol=0, atol=0)

def test_clear_errors():
    XQ, XK, XV, lr, tok, lw, lb, P = random_inputs('linear', T=5, b=4)
    with pytest.raises(ValueError, match='offset must be'): ttt_linear(XQ, XK, XV, lr, tok, lw, lb, P, None, -1)
    with pytest.raises(ValueError, match='lr must be'): ttt_linear(XQ, XK, XV, lr[:, :, :2], tok, lw, lb, P)
    with pytest.raises(ValueError, match='ln_w must be'): ttt_linear(XQ, XK, XV, lr, tok, lw[:1], lb, P)
    with pytest.raises(ValueError, match='token_idx must be'): ttt_linear(XQ, XK, XV, lr, tok[None], lw, lb, P)
    with pytest.raises(ValueError, match=r'XQ must be \[B,H,T,d\]'): ttt_linear(XQ[0], XK, XV, lr, tok, lw, lb, P)
    with pytest.raises(ValueError, match='grads\\[0\\]'): ttt_linear(XQ, XK, XV, lr, tok, lw, lb, P, (P[0][:, :1], P[1]), 1)
