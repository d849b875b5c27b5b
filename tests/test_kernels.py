"""Triton TTT kernels against the PyTorch reference (ttt_nb.ops.ttt_ref is the specification).

On CPU the kernels run in Triton's interpreter. The interpreter is chosen when `triton` is first imported
(TRITON_INTERPRET=1), so the whole CPU grid runs once in a child process (tests/_kernel_check.py) and
nothing leaks into this process or into other test modules of the same pytest-xdist worker; each case is
then one test here. On a GPU the same checks run in this process at real sizes (marked `gpu`).
"""
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent

from _kernel_check import COMPILE_CASES, CPU_CASES, GPU_CASES, GPU_TOL, MODEL_TOL, SMEM_LIMIT, SPLIT_CASES, TOL, errors, kind_of, model_errors, names, split_errors


@pytest.fixture(scope='module')
def children():
    "Two child processes started together: the CPU grid in Triton's interpreter, and compiling the kernels for sm_90."
    env = {k: v for k, v in os.environ.items() if k not in ('TTT_NB_IMPL', 'TRITON_INTERPRET')}
    run = lambda what, **kw: subprocess.Popen([sys.executable, str(HERE / '_kernel_check.py'), what], cwd=HERE.parent,
                                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    procs = dict(interpreted=run('cpu', env=dict(env, TRITON_INTERPRET='1')), compiled=run('compile', env=env))
    yield procs
    for p in procs.values():
        if p.poll() is None: p.kill()

def _result(proc):
    out, err = proc.communicate(timeout=900)
    if proc.returncode != 0: pytest.fail(f"kernel check process failed:\n{err[-4000:]}")
    return json.loads(out.strip().splitlines()[-1])

@pytest.fixture(scope='module')
def interpreted(children):
    "Every CPU case's errors, computed by the kernels in Triton's interpreter."
    return _result(children['interpreted'])

@pytest.fixture(scope='module')
def compiled(children):
    "Shared memory of each kernel compiled for sm_90 (no GPU needed: ptxas ships with triton)."
    return _result(children['compiled'])

def check(errs:dict, tol:dict):
    bad = {k: f"{e:.2e} > {tol[kind_of(k)]:.0e}" for k, e in errs.items() if not e <= tol[kind_of(k)]}
    assert not bad, f"relative RMS errors above tolerance: {bad}"

@pytest.mark.parametrize('case', CPU_CASES, ids=lambda c: c.id)
def test_matches_reference_interpreted(interpreted, case):
    "Outputs, final state and the gradient of every input, each within its tolerance."
    errs = interpreted[case.id]
    outs, ins = names(case.kind)
    want = set(outs) | {'d' + n for n in ins if case.offset or not n.startswith('g')}  # no grads in at offset 0
    assert want <= set(errs), f"missing: {want - set(errs)}"
    check(errs, TOL[case.dtype])

@pytest.mark.parametrize('split', list(SPLIT_CASES))
def test_split_continues_state_interpreted(interpreted, split):
    "A sequence fed as 1 + 5 + 14 + 17 tokens (decode steps and partial mini-batches) equals one call."
    assert max(interpreted[split].values()) < 1e-5, interpreted[split]

@pytest.mark.parametrize('kind', ['linear', 'mlp'])
def test_model_matches_reference_interpreted(interpreted, kind):
    "A one-layer tiny TTT model: the loss and every parameter gradient through the kernels equal the reference's."
    r = interpreted[f"model-{kind}"]
    assert r['same_params'] and r['loss'] <= MODEL_TOL['loss'] and r['grad'] <= MODEL_TOL['grad'], r

def test_interpreter_stays_in_the_child(interpreted):
    "The CPU grid ran in Triton's interpreter, and only in the child: the kernels imported here are compiled ones."
    assert set(interpreted['kernel_types'].values()) == {'InterpretedFunction'}, interpreted['kernel_types']
    if os.environ.get('TRITON_INTERPRET') == '1': pytest.skip('this pytest process itself was started in the interpreter')
    from _kernel_check import KERNELS, triton_module
    from triton.runtime.jit import JITFunction
    for kind, names_ in KERNELS.items():
        for n in names_: assert isinstance(getattr(triton_module(kind), n), JITFunction), (kind, n)

def test_supports_and_fallback():
    "The dispatch runs the reference where the kernels do not reach (float64, head dim > 128)."
    from ttt_nb.ops import dispatch, ttt_linear_triton, ttt_mlp_triton, ttt_ref
    args = ttt_ref.random_inputs('linear', B=1, H=1, T=3, d=4, b=4)  # float64
    for K in (ttt_linear_triton, ttt_mlp_triton):
        assert 'float64' in K.supports(args[0], args[4])
        assert K.supports(args[0].float(), args[4]) is None
        assert 'head dim' in K.supports(torch.zeros(1, 1, 2, 256), args[4])
        assert 'mini-batch' in K.supports(args[0].float(), torch.zeros(65))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        out = dispatch.ttt_linear(*args, impl='triton')[0]
        torch.testing.assert_close(out, ttt_ref.ttt_linear(*args)[0])
        margs = ttt_ref.random_inputs('mlp', B=1, H=1, T=3, d=4, b=4, requires_grad=True)  # float64
        torch.testing.assert_close(dispatch.ttt_mlp(*margs, impl='triton')[0], ttt_ref.ttt_mlp(*margs)[0])

def test_validation():
    from ttt_nb.ops import ttt_ref
    from ttt_nb.ops.ttt_linear_triton import ttt_linear
    XQ, XK, XV, lr, ti, lnw, lnb, params = ttt_ref.random_inputs('linear', B=1, H=1, T=3, d=16, b=4, dtype=torch.float32)
    with pytest.raises(ValueError, match='offset'): ttt_linear(XQ, XK, XV, lr, ti, lnw, lnb, params, None, 4)
    with pytest.raises(ValueError, match='lr'): ttt_linear(XQ, XK, XV, lr[..., :2], ti, lnw, lnb, params)
    with pytest.raises(ValueError, match='does not cover'): ttt_linear(*(t.double() for t in (XQ, XK, XV, lr)),
                                                                       ti, lnw, lnb, params)

@pytest.mark.parametrize('case', ['-'.join(map(str, k)) for k in COMPILE_CASES])
def test_compiles_for_sm90(compiled, case):
    "The compiled path (which the interpreter does not exercise) builds for an H100 and fits its shared memory."
    md = compiled[case]
    if 'error' in md and ('ptxas' in md['error'] or 'backend' in md['error'].lower()):
        pytest.skip(f"cannot compile for sm_90 here: {md['error']}")  # a triton build without the CUDA toolchain
    assert 'error' not in md, md['error']
    assert md['shared'] <= SMEM_LIMIT, md

# ---- GPU: the same checks at real sizes, bf16 and fp32, and a whole model ----

@pytest.mark.gpu
@pytest.mark.parametrize('case', GPU_CASES, ids=lambda c: c.id)
def test_matches_reference_gpu(case):
    check(errors(case, 'cuda'), GPU_TOL[case.dtype])

@pytest.mark.gpu
@pytest.mark.parametrize('split', list(SPLIT_CASES))
def test_split_continues_state_gpu(split):
    assert max(split_errors(SPLIT_CASES[split], device='cuda').values()) < 1e-4

@pytest.mark.gpu
@pytest.mark.parametrize('kind', ['linear', 'mlp'])
def test_model_125m_loss_and_grads_match_reference(kind):
    "A 125m TTT model (fp32, 203 tokens: a trailing partial mini-batch): loss and gradients, kernel vs reference."
    r = model_errors(kind, 'cuda', preset='125m', B=2, T=203, vocab=None)
    assert r['same_params'] and r['loss'] <= 1e-5 and r['grad'] <= 5e-3, r
