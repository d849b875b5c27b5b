"Adaptive inner compute (ttt_nb.ponder, ttt_nb.ponder_study): K-step layer, causal gate, calibration, FLOPs, oracle, hybrid, papermill smoke run."
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ttt_nb.config import TTTConfig
from ttt_nb.model import TTTForCausalLM
from ttt_nb.ops.ttt_ref import _apply, ln_fwd, random_inputs, ttt_linear, ttt_mlp
from ttt_nb.ponder import (
    KS,
    SIGNALS,
    Controller,
    Fixed,
    PonderLM,
    RandomK,
    Replay,
    Threshold,
    calibrate,
    inner_flops,
    mean_k,
    model_flops,
    oracle_at_mean_k,
    oracle_docs,
    oracle_run,
    ponder_run,
    price_for_mean_k,
    quantile_thresholds,
    realized_mix,
    rows_for_mean_k,
    run_docs,
    signal_flops,
    ttt_ksteps,
)
from ttt_nb.ponder_study import evaluate_methods, method_table, paired_diffs, to_json, train_lm

ROOT = Path(__file__).resolve().parents[1]
MIX = {1: 0.3, 2: 0.4, 4: 0.3}

def tiny(backbone='mamba', kind='linear', seed=0):
    torch.manual_seed(seed)
    return TTTForCausalLM(TTTConfig.from_preset('tiny', backbone, vocab_size=50, hidden_size=32, intermediate_size=48,
                                                mini_batch_size=4, ttt_layer_type=kind)).double().eval()

@pytest.fixture(scope='module')
def mamba():
    tm = tiny('mamba')
    return tm, PonderLM.from_ttt(tm)

# --- the K-step layer ---

@pytest.mark.parametrize('kind', ['linear', 'mlp'])
def test_k1_equals_standard_op_bit_for_bit(kind):
    XQ, XK, XV, lr, tok, lw, lb, P = random_inputs(kind, B=3, H=2, T=4, d=4, b=4)
    ref_out, ref_p, _ = (ttt_linear if kind == 'linear' else ttt_mlp)(XQ, XK, XV, lr, tok, lw, lb, P)
    out, p, _ = ttt_ksteps(kind, XQ, XK, XV, lr, tok, lw, lb, P, torch.ones(3))
    assert torch.equal(out, ref_out) and all(torch.equal(a, b) for a, b in zip(p, ref_p))

@pytest.mark.parametrize('kind', ['linear', 'mlp'])
def test_k0_leaves_state_unchanged(kind):
    XQ, XK, XV, lr, tok, lw, lb, P = random_inputs(kind, B=2, H=2, T=4, d=4, b=4)
    out, p, _ = ttt_ksteps(kind, XQ, XK, XV, lr, tok, lw, lb, P, torch.zeros(2))
    assert all(torch.equal(a, b) for a, b in zip(p, P))
    H, d = lw.shape
    want = XQ + ln_fwd(_apply(kind, XQ, P), lw.reshape(H, 1, d), lb.reshape(H, 1, d))
    torch.testing.assert_close(out, want, rtol=0, atol=1e-12)

def test_k_steps_match_the_autograd_definition():
    kind = 'linear'
    XQ, XK, XV, lr, tok, lw, lb, P = random_inputs(kind, B=2, H=2, T=4, d=4, b=4)
    H, d = lw.shape; w, bb = lw.reshape(H, 1, d), lb.reshape(H, 1, d)
    for K in (2, 4):
        outs = []
        for i in range(4):
            W = [p.clone() for p in P]
            for _ in range(K):
                W = [t.detach().requires_grad_(True) for t in W]
                L = sum((lr[:, :, j, None] * 0.5 * (ln_fwd(_apply(kind, XK[:, :, j:j+1], W), w, bb)
                                                    - (XV[:, :, j:j+1] - XK[:, :, j:j+1])).pow(2).sum(-1)).sum() for j in range(i + 1))
                W = [(t - tok[i] * g).detach() for t, g in zip(W, torch.autograd.grad(L, W))]
            outs.append(XQ[:, :, i:i+1] + ln_fwd(_apply(kind, XQ[:, :, i:i+1], W), w, bb))
        out, p, _ = ttt_ksteps(kind, XQ, XK, XV, lr, tok, lw, lb, P, torch.full((2,), K))
        torch.testing.assert_close(out, torch.cat(outs, 2), rtol=0, atol=1e-12)
        torch.testing.assert_close(p[0], W[0], rtol=0, atol=1e-12)

def test_k_steps_are_differentiable_and_per_row():
    XQ, XK, XV, lr, tok, lw, lb, P = random_inputs('linear', B=4, H=2, T=4, d=4, b=4, requires_grad=True)
    K = torch.tensor([0, 1, 2, 4])
    out, p, _ = ttt_ksteps('linear', XQ, XK, XV, lr, tok, lw, lb, P, K)
    (out.sum() + p[0].sum()).backward()
    assert XK.grad is not None and torch.isfinite(XK.grad).all() and tok.grad is not None
    for r in range(4):
        o1, _, _ = ttt_ksteps('linear', XQ, XK, XV, lr, tok, lw, lb, P, torch.full((4,), int(K[r])))
        assert torch.equal(out[r], o1[r])

@pytest.mark.parametrize('backbone', ['transformer', 'mamba'])
def test_k1_model_equals_standard_model(backbone):
    tm = tiny(backbone); lm = PonderLM.from_ttt(tm)
    ids = torch.randint(0, 50, (2, 12))
    r = run_docs(lm, ids, Fixed(1))
    want = F.cross_entropy(tm(ids).logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction='none')
    torch.testing.assert_close(r.nll, want, rtol=0, atol=1e-10)

def test_hybrid_k1_and_all_policies():
    hy = PonderLM.hybrid(['attn', 'ttt', 'attn'], vocab_size=50, hidden_size=32, num_attention_heads=4, intermediate_size=48,
                         mini_batch_size=4).double().eval()
    ids = torch.randint(0, 50, (2, 12))
    want = F.cross_entropy(hy(ids)[:, :-1].transpose(1, 2), ids[:, 1:], reduction='none')
    torch.testing.assert_close(run_docs(hy, ids, Fixed(1)).nll, want, rtol=0, atol=1e-10)
    for pol in (Fixed(0), Fixed(4), RandomK(MIX), Controller('recon', MIX)):
        assert torch.isfinite(run_docs(hy, ids, pol).nll).all()

# --- the gate is causal ---

def test_gate_never_reads_the_mini_batch_it_gates(mamba):
    _, lm = mamba
    torch.manual_seed(3)
    ids = torch.randint(0, 50, (3, 20))
    ref = run_docs(lm, ids, Fixed(1))
    for m in (1, 3):
        ids2 = ids.clone(); ids2[:, 4 * m:4 * m + 4] = (ids2[:, 4 * m:4 * m + 4] + 11) % 50
        pols = [lambda s=s: Threshold(s, quantile_thresholds(ref.signals[s][:, 1:], MIX)) for s in SIGNALS]
        pols += [lambda s=s: Controller(s, MIX, window=4) for s in ('entropy', 'drop')]
        for pol in pols:
            a, c = run_docs(lm, ids, pol()), run_docs(lm, ids2, pol())
            assert torch.equal(a.K[:, :m + 1], c.K[:, :m + 1])
            for s in SIGNALS:
                torch.testing.assert_close(a.signals[s][:, :m + 1], c.signals[s][:, :m + 1], rtol=0, atol=0, equal_nan=True)
                assert not torch.equal(a.signals[s][:, m + 1], c.signals[s][:, m + 1])  # the check can fail

# --- allocation ---

def test_calibration_hits_its_target_mix_on_calibration_data(mamba):
    _, lm = mamba
    torch.manual_seed(1)
    cal = torch.randint(0, 50, (16, 32))
    for s in SIGNALS:
        pol = calibrate(lm, cal, s, MIX, iters=1)
        got = realized_mix(run_docs(lm, cal, pol).K[:, 1:])
        assert all(abs(got[k] - p) < 0.08 for k, p in MIX.items()), (s, got)

def test_controller_holds_target_mean_k(mamba):
    _, lm = mamba
    torch.manual_seed(2)
    mix = {0: 0.25, 1: 0.5, 2: 0.25}
    r = run_docs(lm, torch.randint(0, 50, (16, 64)), Controller('loss', mix, window=64, gain=0.2), batch=16)
    assert abs(r.K.double().mean().item() - mean_k(mix)) < 0.25

def test_random_allocation_follows_its_mix(mamba):
    _, lm = mamba
    r = run_docs(lm, torch.randint(0, 50, (16, 64)), RandomK(MIX, seed=0), batch=16)
    got = realized_mix(r.K)
    assert all(abs(got[k] - p) < 0.1 for k, p in MIX.items())

def test_oracle_follows_its_choices(mamba):
    _, lm = mamba
    ids = torch.randint(0, 50, (2, 12))
    o, cand = oracle_run(lm, ids, KS)
    torch.testing.assert_close(ponder_run(lm, ids, Replay(o.K)).nll, o.nll, rtol=0, atol=1e-10)
    f1, _ = oracle_run(lm, ids, KS, follow=1)
    torch.testing.assert_close(f1.nll, run_docs(lm, ids, Fixed(1)).nll, rtol=0, atol=1e-10)
    assert cand.shape == (2, 3, len(KS))
    # each mini-batch's chosen loss is the best branch's
    assert torch.allclose(cand.min(-1).values, torch.stack([o.nll[:, 4 * m:4 * m + 4].mean(1) for m in range(3)], 1), atol=1e-12)

def test_oracle_reaches_a_target_mean_k_by_mixing_two_prices_by_rows():
    lm = PonderLM.from_ttt(tiny('mamba').float())           # float32, as trained: the per-row replay must not change precision
    torch.manual_seed(4)
    ids = torch.randint(0, 50, (24, 16))
    free, _ = oracle_docs(lm, ids, KS)
    target = 0.5 * free.K.double().mean().item()
    n_prices = []
    for iters in (8, 3):                                    # the first price comes from the free oracle's branch losses
        r, lam = oracle_at_mean_k(lm, ids, target, KS, iters=iters, batch=7)
        prices = torch.unique(lam); n_prices.append(len(prices))
        assert lam.shape == (24,) and (prices > 0).all() and len(prices) <= 2
        # the mixture is a policy: the oracle run with these per-row prices gives the same choices and losses
        again, _ = oracle_docs(lm, ids, KS, lam, batch=5)
        torch.testing.assert_close(again.K, r.K, rtol=0, atol=0)
        torch.testing.assert_close(again.nll, r.nll, rtol=0, atol=1e-10)
        if len(prices) == 2:                                # within half of the largest step one row can make
            k = {float(p): oracle_docs(lm, ids, KS, float(p))[0].K.double().sum(1) for p in prices}
            step = (k[float(prices[0])] - k[float(prices[1])]).abs().max().item() / r.K.numel()
            assert abs(r.K.double().mean().item() - target) <= step / 2 + 1e-12
    assert n_prices[0] == 2                                 # this target needs the mixture: no single price reaches it
    r_free, lam_free = oracle_at_mean_k(lm, ids, target, KS, iters=3, batch=7, free=oracle_docs(lm, ids, KS))
    torch.testing.assert_close(r_free.K, r.K, rtol=0, atol=0); torch.testing.assert_close(lam_free, lam)   # the free run passed in

def test_rows_for_mean_k_switches_rows_at_random_not_by_content():
    hi = torch.tensor([[4, 4], [2, 2], [4, 2], [1, 1], [4, 4], [2, 1]])
    lo = torch.tensor([[1, 0], [1, 1], [0, 0], [1, 1], [2, 2], [0, 1]])
    share = lambda take: torch.where(take.view(-1, 1), lo, hi).double().mean().item()
    for target in (1.0, 1.5, 2.0, 2.2):                    # mean K of hi: 2.58, of lo: 0.83
        picks = [rows_for_mean_k(hi, lo, target, seed=s) for s in range(20)]
        for seed, take in enumerate(picks):                 # the best prefix of its seeded row order
            n = int(take.sum())
            order = torch.randperm(6, generator=torch.Generator().manual_seed(seed))
            near = [share(torch.isin(torch.arange(6), order[:m])) for m in range(7)]
            assert abs(share(take) - target) == min(abs(x - target) for x in near) and near[n] == share(take)
        assert len({tuple(t.tolist()) for t in picks}) > 1  # different seeds switch different rows
    assert not rows_for_mean_k(hi, lo, hi.double().mean().item()).any()   # already at the target: no row switches
    assert rows_for_mean_k(hi, lo, 0.0).all()               # below every mixture: all rows switch

def test_oracle_run_checks_its_per_row_prices(mamba):
    _, lm = mamba
    with pytest.raises(ValueError, match=r'one price or one per row \(2\)'):
        oracle_run(lm, torch.randint(0, 50, (2, 8)), KS, lam=torch.zeros(3))

def test_price_for_mean_k_from_branch_losses():
    torch.manual_seed(0)
    gain = torch.rand(8, 40, 1) * 0.2                                   # per mini-batch: how much extra inner steps help
    k = torch.tensor(KS, dtype=torch.float64)
    cand = 3.0 - gain.double() * torch.log1p(k)                         # diminishing returns in K
    kt = torch.tensor(KS)
    for target in (1.0, 1.5, 2.3, 3.0):
        lam = price_for_mean_k(cand, target, KS)
        got = kt[(cand + lam * k).argmin(-1)].double().mean().item()
        assert abs(got - target) < 0.05, (target, lam, got)
    assert price_for_mean_k(cand, max(KS), KS) == 1e-8                   # every cell already at the largest K: the lowest price

# --- compute accounting ---

@pytest.mark.parametrize('kind', ['linear', 'mlp'])
def test_flops_monotone_in_k(kind):
    for b, d in ((16, 16), (16, 64), (4, 32), (64, 64)):
        f = [inner_flops(kind, k, b, d) for k in range(0, 9)]
        assert all(x < y for x, y in zip(f, f[1:])), (kind, b, d, f)
    lm = PonderLM.from_ttt(tiny('mamba', kind))
    tot = [model_flops(lm, {k: 1.0})['total'] for k in KS]
    assert all(x < y for x, y in zip(tot, tot[1:]))
    assert all(signal_flops(s, kind, 4, 8, 4, 2, 50) > 0 for s in SIGNALS)
    # a policy that computes a signal costs more than random allocation at the same mix
    assert model_flops(lm, MIX, 'drop')['total'] > model_flops(lm, MIX, None)['total']

def test_inner_flops_track_the_measured_matmul_flops():
    "The analytic count's matmul part agrees with torch's FLOP counter on the K-step op (within 15%)."
    from torch.utils.flop_counter import FlopCounterMode
    b, d = 16, 16
    XQ, XK, XV, lr, tok, lw, lb, P = random_inputs('linear', B=1, H=1, T=b, d=d, b=b, dtype=torch.float32)
    for K in (1, 2, 4):
        with FlopCounterMode(display=False) as fc:
            ttt_ksteps('linear', XQ, XK, XV, lr, tok, lw, lb, P, torch.full((1,), K), signals=False)
        measured = fc.get_total_flops()
        analytic = inner_flops('linear', K, b, d)
        assert measured <= analytic * 1.15 and measured >= 0.5 * analytic, (K, measured, analytic)

# --- training paths ---

def test_both_training_paths_reduce_the_loss():
    toks = np.tile(np.arange(20), 200)
    for pol in (None, Controller('entropy', MIX, window=8)):
        lm = PonderLM.hybrid(['ttt'], vocab_size=50, hidden_size=32, num_attention_heads=4, intermediate_size=48, mini_batch_size=4)
        log = train_lm(lm, toks, steps=12, seq_len=8, batch=4, lr=1e-2, policy=pol, warmup=2, log_every=4)['log']
        assert log[-1][1] < log[0][1]

# --- the study in one call (what run_ponder.ipynb calls) ---

def test_evaluate_methods_and_its_table(mamba):
    _, lm = mamba
    torch.manual_seed(0)
    ev, cal = torch.randint(0, 50, (4, 8)), torch.randint(0, 50, (4, 8))
    runs, summ, diffs, extra = evaluate_methods(lm, ev, np.array([0, 0, 1, 1]), cal, {'m': {1: 0.5, 2: 0.5}}, controllers=False,
                                                oracle=False, correlation=False, n_random_seeds=2, n_boot=20, eval_batch=4)
    assert set(summ) == {'fixed_K0', 'fixed_K1', 'fixed_K2', 'fixed_K4', 'random_m_s0', 'random_m_s1', 'random_m'} | {f'adaptive_{s}_m' for s in SIGNALS}
    assert set(diffs) == {f'adaptive_{s}_m - random_m' for s in SIGNALS} and set(extra) == {'thresholds', 'cal_mix'}
    torch.testing.assert_close(runs['random_m'].nll, (runs['random_m_s0'].nll + runs['random_m_s1'].nll) / 2)   # random: seeds averaged
    assert summ['fixed_K4']['mean_k'] == 4 and summ['fixed_K1']['docs'] == 2 and summ['fixed_K1']['tokens'] == 4 * 7
    tab = method_table(summ, diffs).splitlines()
    assert len(tab) == len(summ) - 2 and not any(l.startswith('random_m_s') for l in tab)   # single random seeds left out
    assert all(('vs random' in l) == l.startswith('adaptive_') for l in tab)
    assert set(paired_diffs(runs, runs)) == set(summ) - {'random_m_s0', 'random_m_s1'} and paired_diffs(runs, runs)['fixed_K1']['mean'] == 0
    assert to_json(dict(t=torch.tensor([1.5]), n=np.float64(2.0), p=Fixed(1))) == {'t': [1.5], 'n': 2.0, 'p': 'Fixed(K=1)'}

# --- the papermill template ---

def test_run_ponder_smoke(tmp_path):
    pm = pytest.importorskip('papermill')
    if not (ROOT / 'nbs' / 'run_ponder.ipynb').exists(): pytest.skip('nbs/run_ponder.ipynb not written yet')
    out = tmp_path / 'out.ipynb'
    params = dict(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, mini_batch_size=4, seq_len=16,
                  train_steps=2, train_steps_gated=1, train_batch=2, n_cal_docs=3, n_eval_docs=3, eval_len=8,
                  pieces_per_doc=1, mixes={'mean2.3': {1: 0.3, 2: 0.4, 4: 0.3}}, n_random_seeds=1, oracle_iters=1,
                  n_boot=20, hybrid=False, out_dir=str(tmp_path / 'ponder'))
    pm.execute_notebook(str(ROOT / 'nbs' / 'run_ponder.ipynb'), str(out), parameters=params, kernel_name='python3',
                        cwd=str(ROOT / 'nbs'), progress_bar=False)
    res = json.loads((tmp_path / 'ponder' / 'results.json').read_text())
    assert {'fixed_K1', 'random_mean2.3_s0', 'oracle_mean2.3'} <= set(res['methods'])


def test_run_ponder_from_a_trained_model(tmp_path):
    "init_from: model (b) is the saved model (not trained here); its sizes and b replace the template's; a wrong vocabulary stops the run."
    pm = pytest.importorskip('papermill')
    from ttt_nb.config import TTTConfig
    from ttt_nb.model import TTTForCausalLM
    torch.manual_seed(0)
    m = TTTForCausalLM(TTTConfig.from_preset('tiny', 'mamba', vocab_size=257, hidden_size=16, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=32, mini_batch_size=4))
    m.save_pretrained(tmp_path / 'model')
    params = dict(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, mini_batch_size=8, seq_len=16,
                  train_steps=50, train_steps_gated=1, train_batch=2, n_cal_docs=3, n_eval_docs=3, eval_len=8,
                  pieces_per_doc=1, mixes={'mean2.3': {1: 0.3, 2: 0.4, 4: 0.3}}, n_random_seeds=1, oracle_iters=1,
                  n_boot=20, hybrid=False, out_dir=str(tmp_path / 'ponder'), init_from=str(tmp_path / 'model'))
    pm.execute_notebook(str(ROOT / 'nbs' / 'run_ponder.ipynb'), str(tmp_path / 'out.ipynb'), parameters=params,
                        kernel_name='python3', cwd=str(ROOT / 'nbs'), progress_bar=False)
    res = json.loads((tmp_path / 'ponder' / 'results.json').read_text())
    c = res['config']
    assert (c['hidden_size'], c['num_layers'], c['mini_batch_size'], c['backbone'], c['train_steps']) == (16, 1, 4, 'mamba', 0)
    assert res['train']['b']['seconds'] == 0.0 and res['train']['b']['init_from'] == str(tmp_path / 'model')
    TTTForCausalLM(TTTConfig.from_preset('tiny', vocab_size=300, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=32, mini_batch_size=4)).save_pretrained(tmp_path / 'wrong')
    with pytest.raises(Exception, match='vocabulary 300'):
        pm.execute_notebook(str(ROOT / 'nbs' / 'run_ponder.ipynb'), str(tmp_path / 'out2.ipynb'), parameters=dict(params, init_from=str(tmp_path / 'wrong')),
                            kernel_name='python3', cwd=str(ROOT / 'nbs'), progress_bar=False)
