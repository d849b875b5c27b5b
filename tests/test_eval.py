"The length-generalization evaluator: SW definitions, the two 'done when' tests, statistics, sweep, summaries, CLI."
import json
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ttt_nb.baselines import SWAConfig, SWAForCausalLM, TransformerConfig, TransformerForCausalLM
from ttt_nb.cli import eval_main as main
from ttt_nb.cli import eval_run as run_eval
from ttt_nb.eval import (
    SCHEMA,
    evaluate_checkpoint,
    evaluate_run,
    full_context_nll,
    length_sweep,
    load_summary,
    old_rows,
    read_old_summaries,
    select_documents,
    sliding_window_nll,
    summarize,
    sweep_lengths,
    templated,
    truncated_nll,
    window_plan,
)
from ttt_nb.rules import adjust_multiplicity, probe_edges, seed_verdicts
from ttt_nb.stats import bin_sums, bootstrap_diff, bootstrap_ppl, linear_edges, log_edges

ttt_config = pytest.importorskip('ttt_nb.config')
ttt_model = pytest.importorskip('ttt_nb.model')

def _ttt(V=40, b=4, backbone=None, layers=2, seed=0, lr0=False):
    torch.manual_seed(seed)
    cfg = ttt_config.TTTConfig.from_preset('tiny', backbone=backbone, vocab_size=V, hidden_size=32, num_attention_heads=2,
                                           intermediate_size=48, mini_batch_size=b, num_hidden_layers=layers)
    m = ttt_model.TTTForCausalLM(cfg).double().eval()
    if lr0: m.config.ttt_base_lr = 0.0  # the layers read the shared config at call time
    return m

def _transformer(V=40, seed=0):
    torch.manual_seed(seed)
    return TransformerForCausalLM(TransformerConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                    intermediate_size=48)).double().eval()

def _docs(V=40, lens=(75, 50, 91, 9), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, V, (n,), generator=g) for n in lens]

def _fresh_nll(m, ids, t, a):
    "NLL of token t of `ids` from a fresh forward over ids[a:t] (the window that ends right before t), at token a's mini-batch phase."
    st = m.init_state(1)
    if hasattr(st, 'offset'): st.offset = int(a) % m.config.mini_batch_size     # TTT: the phase a has in full context
    with torch.no_grad(): lg = m(ids[None, a:t], state=st, return_state=False).logits[0, -1]
    return -torch.log_softmax(lg, -1)[ids[t]].item()

# --- the sliding window, by definition

@pytest.mark.parametrize('kind', ['transformer', 'ttt'])
@pytest.mark.parametrize('W,S', [(8, 3), (16, 4), (12, 12)])
def test_strided_sw_equals_fresh_window_forward(kind, W, S):
    m = _ttt() if kind == 'ttt' else _transformer(); docs = _docs()
    sw = sliding_window_nll(m, docs, W, stride=S, max_tokens=40)  # tiny batches: windows from several documents mix
    for i in (0, 2):
        d = docs[i]
        for a, j0, j1 in window_plan(len(d), W, S):
            for t in {a + j0 + 1, a + j1}:               # first and last scored position of the window
                assert abs(sw[i][t] - _fresh_nll(m, d, t, a)) < 1e-10
                assert W - S + 1 <= t - a <= W or a == 0  # its context

@pytest.mark.parametrize('kind', ['transformer', 'ttt'])
def test_exact_sw_sees_exactly_W_tokens(kind):
    m = _ttt() if kind == 'ttt' else _transformer(); docs = _docs(); W = 10
    ex = sliding_window_nll(m, docs, W, stride=None)
    for t in (W + 1, 37, 74): assert abs(ex[0][t] - _fresh_nll(m, docs[0], t, t - W)) < 1e-10

@pytest.mark.parametrize('stride', [None, 4])
def test_sw_equals_full_context_up_to_W(stride):
    m, docs, W = _ttt(), _docs(), 12
    full, sw = full_context_nll(m, docs), sliding_window_nll(m, docs, W, stride=stride)
    for f, s in zip(full, sw, strict=True):
        assert np.isnan(f[0]) and np.isnan(s[0]) and not np.isnan(s[1:]).any()
        assert np.abs(f[1:W + 1] - s[1:W + 1]).max() < 1e-10

def test_full_context_pieces_and_batches_are_exact():
    m, docs = _ttt(b=4), _docs()
    a = full_context_nll(m, docs, chunk=10_000, batch_size=1)
    for chunk, bs in [(5, 2), (16, 4), (33, 3)]:
        b = full_context_nll(m, docs, chunk=chunk, batch_size=bs)
        assert max(np.nanmax(np.abs(x - y)) for x, y in zip(a, b, strict=True)) < 1e-10

def test_truncation_definition():
    "Truncated = full up to 2W; beyond, a fresh pass over segment k-1 and segment k up to the token."
    m, docs, W = _ttt(b=4), _docs(), 8
    full, tr = full_context_nll(m, docs), truncated_nll(m, docs, W)
    d = docs[2]
    assert np.abs(full[2][1:2 * W + 1] - tr[2][1:2 * W + 1]).max() < 1e-10
    for t in (2 * W + 1, 3 * W, 3 * W + 5, 90):
        k = (t - 1) // W                                 # the segment holding the input token t-1
        assert abs(tr[2][t] - _fresh_nll(m, d, t, (k - 1) * W)) < 1e-10

def test_bad_inputs():
    m = _transformer()
    with pytest.raises(ValueError, match='stride'): sliding_window_nll(m, _docs(), 4, stride=5)
    with pytest.raises(ValueError, match='1-D'): full_context_nll(m, [torch.zeros(2, 3, dtype=torch.long)])
    with pytest.raises(ValueError, match='token ids'): full_context_nll(m, [np.array([0.5, 1.5])])

# --- "done when" 2: a TTT model whose inner learning rate is zero has no memory beyond its local receptive field

@pytest.mark.parametrize('b,backbone,W,S', [(1, None, 8, 3), (4, None, 16, 8), (4, 'mamba', 32, 8)],
                         ids=['b1-exact+strided', 'b4-strided', 'b4-mamba-strided'])
def test_zero_inner_lr_full_equals_sw(b, backbone, W, S):
    """ttt_base_lr = 0: the fast weights never move, so full context and SW agree at every position.
    Every window starts at the mini-batch phase its first token has in full context, so exact SW agrees at any b.
    With the Mamba backbone the convs see 2 * (conv_kernel - 1) tokens per layer, which W - S + 1 must exceed."""
    m = _ttt(b=b, backbone=backbone, lr0=True)
    docs = _docs(lens=(150, 97, 130))
    full = full_context_nll(m, docs, chunk=23)
    kinds = {'strided': S} | ({'exact': None} if backbone is None else {})
    for name, s in kinds.items():
        sw = sliding_window_nll(m, docs, W, stride=s)
        assert max(np.nanmax(np.abs(x - y)) for x, y in zip(full, sw, strict=True)) < 1e-10, name
    nll = dict(full=full, sw_strided=sliding_window_nll(m, docs, W, stride=S))
    sm = summarize(nll, W, min_docs=2, n_boot=200)
    for kind in ('linear', 'log'):
        d = sm['bins'][kind]['diff']['full-sw_strided']
        assert np.nanmax(np.abs(d['mean'])) < 1e-10 and not any(d['excludes_zero'])

def test_zero_inner_lr_state_is_constant():
    m = _ttt(b=4, lr0=True); ids = _docs(lens=(40,))[0][None]
    with torch.no_grad(): st = m(ids, state=m.init_state(1), return_state=True).state
    p0, p1 = m.init_state(1), st
    a = [t for t in torch.utils._pytree.tree_leaves(vars(p0)) if isinstance(t, torch.Tensor) and t.is_floating_point()]
    b = [t for t in torch.utils._pytree.tree_leaves(vars(p1)) if isinstance(t, torch.Tensor) and t.is_floating_point()]
    assert a and all(torch.equal(x, y) for x, y in zip(a, b, strict=True) if x.shape == y.shape)

# --- "done when" 1: a tiny TTT trained briefly on synthetic-recall uses context beyond W

def _train_recall_ttt(W=32, steps=40, B=8, L=128, seed=0):
    "Tiny TTT trained like the project trains: segments of W with the state passed (detached) along each document."
    from ttt_nb.data import ByteTokenizer, synthetic_recall_corpus
    tok, kw = ByteTokenizer(), dict(n_pairs=4, min_gap=48, max_gap=96, key_len=2, value_len=2)
    tr = [tok.encode(d).astype(np.int64) for d in synthetic_recall_corpus('train', n_docs=256, **kw).docs]
    te = [tok.encode(d).astype(np.int64) for d in synthetic_recall_corpus('test', n_docs=20, **kw).docs]
    torch.manual_seed(seed); rng = np.random.default_rng(seed)
    cfg = ttt_config.TTTConfig.from_preset('tiny', vocab_size=tok.vocab_size, hidden_size=64, num_attention_heads=4,
                                           intermediate_size=128, mini_batch_size=8, num_hidden_layers=1)
    m = ttt_model.TTTForCausalLM(cfg)
    opt = torch.optim.AdamW(m.parameters(), 3e-3, weight_decay=0.0)
    for s in range(steps):
        for g in opt.param_groups: g['lr'] = 3e-3 * min(1, (s + 1) / 10) * (0.1 + 0.45 * (1 + np.cos(np.pi * s / steps)))
        x = torch.from_numpy(np.stack([tr[i][:L] for i in rng.integers(0, len(tr), B)]))
        st = m.init_state(B); opt.zero_grad()
        for a in range(0, L - 1, W):
            seg = x[:, a:a + W + 1]                      # W inputs; the next segment's first token is the last label
            o = m(seg[:, :-1], state=st, return_state=True)
            loss = F.cross_entropy(o.logits.reshape(-1, o.logits.shape[-1]), seg[:, 1:].reshape(-1))
            (loss * (seg.shape[1] - 1) / (L - 1)).backward(); st = o.state.detach()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0); opt.step()
    return m.eval(), te

@pytest.mark.slow
def test_trained_ttt_full_context_beats_sw_beyond_W(tmp_path):
    W = 32
    m, te = _train_recall_ttt(W)
    s = evaluate_run(m, te, W, tmp_path, stride=8, truncation=False, min_docs=5, n_boot=500,
                     meta=dict(data=dict(corpus='synthetic-recall', split='test'), training=dict(step=40, seeds=[0], converged=False)))
    lin = s['bins']['linear']; d = lin['diff']['full-sw_strided']
    assert d['mean'][0] == 0 and not d['excludes_zero'][0]          # positions < W: identical by definition
    beyond = [k for k in range(1, len(d['mean'])) if lin['docs'][k] >= 5]
    assert len(beyond) >= 3
    for k in beyond: assert d['hi'][k] < 0, (k, d['mean'][k], d['hi'][k])  # full context better, CI excludes zero
    for p in s['probes']:
        if p['r'] >= 2: assert p['diff']['full-sw_strided']['hi'] < 0 and p['ppl']['full']['ppl'] < p['ppl']['sw_strided']['ppl']
    assert s['improvement_at_2xW'] > 0

# --- statistics on synthetic numbers

def _synthetic(delta, D=40, T=200, seed=0):
    rng = np.random.default_rng(seed)
    a = [rng.normal(2.0, 0.3, T) for _ in range(D)]
    shift = rng.normal(0, 0.2, D); shift -= shift.mean()
    b = [x - delta + (s if delta == 0 else 0) + rng.normal(0, 0.05, T) for x, s in zip(a, shift, strict=True)]
    for x in a + b: x[0] = np.nan
    return a, b

def test_ci_excludes_zero_for_a_real_difference():
    a, b = _synthetic(0.1); e = linear_edges(200, 50)
    (Sa, N), (Sb, _) = bin_sums(a, e), bin_sums(b, e)
    d = bootstrap_diff(Sa, Sb, N, n_boot=500)
    assert d['excludes_zero'].all() and np.allclose(d['mean'], 0.1, atol=0.02)

def test_ci_includes_zero_without_a_difference():
    a, b = _synthetic(0.0); e = linear_edges(200, 50)
    (Sa, N), (Sb, _) = bin_sums(a, e), bin_sums(b, e)
    d = bootstrap_diff(Sa, Sb, N, n_boot=500)
    assert not d['excludes_zero'].any() and (d['lo'] < 0).all() and (d['hi'] > 0).all()

def test_bootstrap_resamples_documents_not_tokens():
    "4 documents of 1000 tokens with very different means: the CI is as wide as the spread of documents, not of tokens."
    rng = np.random.default_rng(1)
    docs = [np.r_[np.nan, rng.normal(mu, 0.01, 1000)] for mu in (1.0, 2.0, 3.0, 4.0)]
    p = bootstrap_ppl(*bin_sums(docs, np.array([1, 1001])), n_boot=2000)
    assert p['tokens'][0] == 4000 and p['docs'][0] == 4
    assert np.log(p['hi'][0]) - np.log(p['lo'][0]) > 1.0     # token resampling would give ~0.03 nats
    np.testing.assert_allclose(np.log(p['ppl'][0]), 2.5, atol=0.01)

def test_ppl_is_token_weighted():
    docs = [np.r_[np.nan, np.full(10, 1.0)], np.r_[np.nan, np.full(30, 3.0)]]
    p = bootstrap_ppl(*bin_sums(docs, np.array([1, 100])), n_boot=50)
    np.testing.assert_allclose(p['ppl'][0], np.exp((10 * 1 + 30 * 3) / 40))

def test_edges_and_probes():
    assert linear_edges(100, 32).tolist() == [1, 32, 64, 96, 128]
    e = log_edges(1000); assert e[0] == 1 and e[-1] == 1000 and (np.diff(e) > 0).all()
    pe = probe_edges(64); assert pe['1'] == (32, 96) and pe['0.5'] == (1, 64) and pe['20'] == (1248, 1312)
    assert len(sweep_lengths(64)) == 20 and sweep_lengths(64)[0] == 32 and sweep_lengths(64)[-1] == 640

def test_probe_counts_only_documents_reaching_rW():
    a, b = _synthetic(0.1, D=6, T=200)
    a += [np.r_[np.nan, np.ones(138)]]; b += [np.r_[np.nan, np.ones(138)]]   # positions up to 138 < 7W = 140: not counted
    a += [np.r_[np.nan, np.ones(140)]]; b += [np.r_[np.nan, np.ones(140)]]   # reaches 140: counted with positions 130..140
    s = summarize({'full': a, 'sw_strided': b}, W=20, ratios=(7,), min_docs=2, n_boot=100)
    p = s['probes'][0]; assert (p['lo'], p['hi']) == (130, 150) and p['docs'] == 7 and p['tokens'] == 6 * 20 + 11

def test_length_sweep_skips_and_lists():
    a, b = _synthetic(0.1, D=6, T=200)
    a.append(np.r_[np.nan, np.ones(399)]); b.append(np.r_[np.nan, np.ones(399)])
    ls = length_sweep({'full': a, 'sw': b}, W=20, lengths=[10, 200, 201, 400], min_docs=5, n_boot=100)
    assert ls['lengths'] == [10, 200] and ls['docs'] == [7, 7]
    assert ls['skipped'] == [dict(length=201, docs=1), dict(length=400, docs=1)]
    full = np.exp(np.mean(np.concatenate([x[1:10] for x in a])))
    np.testing.assert_allclose(ls['methods']['full']['ppl'][0], full)
    assert ls['methods']['full']['ppl'][0] > ls['methods']['sw']['ppl'][0]

# --- summaries, figures, the old study, the CLI

def test_summary_json_round_trip(tmp_path):
    m = _transformer(); docs = _docs(lens=(130,) * 6)
    s = evaluate_run(m, docs, 16, tmp_path, stride=4, exact_sw=True, truncation=True, min_docs=3, n_boot=100,
                     meta=dict(data=dict(corpus='x', split='test', corpus_hash='abc'), training=dict(step=7, seeds=[0, 1, 2], converged=True)),
                     name='ck7', log_wandb=True)
    from ttt_nb.plots import save_all  # figures are drawn from the summary, above the evaluator
    save_all(s, tmp_path, 'ck7')
    back = load_summary(tmp_path / 'ck7.json')
    assert back == json.loads(json.dumps(s, default=lambda o: o.tolist() if hasattr(o, 'tolist') else str(o)))
    for k in ('schema', 'created', 'config', 'model', 'package', 'hardware', 'data', 'training', 'methods', 'overall', 'bins',
              'probes', 'probes_skipped', 'length_sweep', 'truncation', 'step'):
        assert k in back, k
    assert back['schema'] == SCHEMA and back['step'] == 7 and back['methods'] == ['full', 'sw_strided', 'sw_exact', 'truncated']
    assert back['data']['corpus_hash'] == 'abc' and back['data']['n_docs'] == 6 and back['hardware']['cpu_count'] >= 1
    assert {'ttt_ppl_at_1xW', 'sw_ppl_at_1xW', 'improvement_at_1xW', 'ttt_ppl_at_0.5xW'} <= set(back)
    assert set(back['bins']['log']['diff']) == {'full-sw_strided', 'full-sw_exact', 'full-truncated'}
    for f in ('ck7_position.png', 'ck7_difference.png', 'ck7_length_sweep.png'):
        assert 0 < (tmp_path / f).stat().st_size < 200_000
    (tmp_path / 'bad.json').write_text('{"schema": "other"}')
    with pytest.raises(ValueError, match='schema'): load_summary(tmp_path / 'bad.json')
    with pytest.raises(ValueError, match='W'): evaluate_run(m, docs, 0, tmp_path)
    with pytest.raises(ValueError, match='sliding-window'): evaluate_run(m, docs, 8, tmp_path, stride=None)
    with pytest.raises(ValueError, match='plots.save_all'): evaluate_run(m, docs, 16, tmp_path, figures=True)

def test_old_study_reader(tmp_path):
    entries = [{'name': 'ttt_w64', 'step': 7755, 'W': 64, 'ttt_ppl_at_1xW': 30.0, 'sw_ppl_at_1xW': 31.0, 'improvement_at_1xW': 3.2,
                'ttt_ppl_at_10xW': 50.0, 'sw_ppl_at_10xW': 40.0, 'improvement_at_10xW': -25.0, 'loss': 3.0},
               {'step': 100, 'ttt_ppl_at_2xW': 12.0}]
    p = tmp_path / 'all_summaries.json'; p.write_text(json.dumps(entries))
    old = read_old_summaries(p)
    assert [e['step'] for e in old] == [7755, 100] and old[0]['W'] == 64
    assert old[0]['probes'][10.0] == dict(ttt_ppl=50.0, sw_ppl=40.0, improvement=-25.0, improvement_recomputed=-25.0)
    assert len(old_rows(old)) == 3
    assert len(read_old_summaries({'summaries': entries})) == 2 and len(read_old_summaries({'a': entries[0]})) == 1
    assert read_old_summaries(entries[0])[0]['step'] == 7755
    with pytest.raises(ValueError): read_old_summaries({'a': {'loss': 1.0}})
    from ttt_nb.plots import plot_position
    m = _transformer(); s = evaluate_run(m, _docs(lens=(100,) * 5), 8, tmp_path, stride=4, min_docs=2, n_boot=50)
    import matplotlib.pyplot as plt
    fig = plot_position(s, old=old); assert any('old study' in t.get_text() for t in fig.axes[0].get_legend().get_texts()); plt.close(fig)

def test_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('TTT_NB_CACHE', str(tmp_path / 'cache'))
    torch.manual_seed(0)
    m = SWAForCausalLM(SWAConfig(vocab_size=257, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, sliding_window=16))
    m.save_pretrained(tmp_path / 'ck')
    args = [str(tmp_path / 'ck'), '--corpus', 'synthetic-recall', '--split', 'test', '--corpus-opt', 'n_docs=6', '--corpus-opt', 'min_gap=64',
            '--corpus-opt', 'max_gap=96', '--tokenizer', 'byte', '-W', '16', '--max-multiple', '8', '--stride', '4',
            '--baselines', 'sw-strided,sw-exact,truncation', '--min-docs', '3', '--n-boot', '50', '--device', 'cpu', '--out', str(tmp_path / 'ev')]
    s = run_eval(args)
    assert (tmp_path / 'ev' / 'summary.json').exists() and (tmp_path / 'ev' / 'summary_position.png').exists()
    assert s['data']['corpus'] == 'synthetic-recall' and s['data']['corpus_hash'] and s['methods'][1:] == ['sw_strided', 'sw_exact', 'truncated']
    assert 'r=   1' in capsys.readouterr().out
    for bad, msg in [([str(tmp_path / 'nope')] + args[1:], 'checkpoint folder not found'),
                     (args[:1] + ['--corpus', 'no-such-corpus', '-W', '16', '--out', str(tmp_path / 'e2')], 'unknown corpus'),
                     (args[:-6] + ['--max-multiple', '1000', '--out', str(tmp_path / 'e3')], 'documents'),
                     (args + ['--stride', '99'], 'stride'),
                     (args + ['--baselines', 'foo'], 'unknown baselines')]:
        with pytest.raises(SystemExit) as e: main(bad)
        assert e.value.code == 2 and msg in capsys.readouterr().err, msg

def test_far_beyond_W_with_ttt(tmp_path):
    "Documents of 25 W through a TTT model in pieces: the probe at 20W is reported, 50W and 100W are skipped and listed."
    m, W = _ttt(b=4), 8
    docs = _docs(lens=(25 * W + 1,) * 5)
    s = evaluate_run(m, docs, W, tmp_path, stride=4, truncation=True, chunk=24, min_docs=5, n_boot=100)
    assert [p['r'] for p in s['probes']][-1] == 20 and [p['r'] for p in s['probes_skipped']] == [50, 100]
    assert s['probes'][-1]['tokens'] == 5 * (W // 2 + 1) and s['ttt_ppl_at_20xW'] > 0  # docs cut at 20W + 1: positions 20W-W/2..20W
    assert s['length_sweep']['lengths'][-1] == 10 * W and not s['length_sweep']['skipped']

def test_seed_verdicts():
    from ttt_nb.rules import seed_verdicts
    mk = lambda lo, hi: dict(probes=[dict(r=2.0, diff={'full-sw_strided': dict(mean=(lo + hi) / 2, lo=lo, hi=hi)})])
    assert seed_verdicts([mk(-.3, -.1)] * 3)[0]['verdict'] == 'full better'
    assert seed_verdicts([mk(-.3, -.1)] * 2)[0]['verdict'] == 'no claim: 2 of 3 seeds'
    assert seed_verdicts([mk(-.3, -.1), mk(-.3, -.1), mk(-.1, .1)])[0]['verdict'] == 'no claim'
    assert seed_verdicts([mk(.1, .2)] * 3)[0]['verdict'] == 'SW better'

def test_cli_reads_the_training_run(tmp_path, monkeypatch):
    "A checkpoint inside a run folder: W, corpus, tokenizer, seed from config.json; step and losses from meta.json."
    monkeypatch.setenv('TTT_NB_CACHE', str(tmp_path / 'cache'))
    run = tmp_path / 'run'; ck = run / 'checkpoints' / 'step_000010'
    torch.manual_seed(0)
    TransformerForCausalLM(TransformerConfig(vocab_size=257, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                             intermediate_size=16)).save_pretrained(ck)
    (run / 'config.json').write_text(json.dumps(dict(seq_len=16, corpus='synthetic-recall', tokenizer='byte', seed=3)))
    (ck / 'meta.json').write_text(json.dumps(dict(step=10, loss=2.0, heldout_loss=2.1)))
    (run / 'train_summary.json').write_text(json.dumps(dict(converged=False)))
    s = run_eval([str(ck), '--corpus-opt', 'n_docs=6', '--corpus-opt', 'min_gap=64', '--max-multiple', '5', '--min-docs', '3',
              '--n-boot', '50', '--no-figures', '--out', str(tmp_path / 'ev')])
    assert s['W'] == 16 and s['step'] == 10 and s['data']['corpus'] == 'synthetic-recall' and s['data']['tokenizer'] == 'byte'
    assert s['training']['seeds'] == [3] and s['training']['converged'] is False and s['training']['heldout_loss'] == 2.1
    assert not list((tmp_path / 'ev').glob('*.png'))


# --- issue 12: exit codes and bad input of `ttt-eval`

def _run_folder(tmp_path, monkeypatch, **cfg):
    "A training-run folder with one checkpoint of a tiny Transformer (seq_len 16) and the CLI arguments that evaluate it fast."
    monkeypatch.setenv('TTT_NB_CACHE', str(tmp_path / 'cache'))
    run_dir = tmp_path / 'run'; ck = run_dir / 'checkpoints' / 'step_000010'
    torch.manual_seed(0)
    TransformerForCausalLM(TransformerConfig(vocab_size=257, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                             intermediate_size=16, **cfg)).save_pretrained(ck)
    (run_dir / 'config.json').write_text(json.dumps(dict(seq_len=16, corpus='synthetic-recall', tokenizer='byte', seed=3)))
    args = ['--corpus-opt', 'n_docs=6', '--corpus-opt', 'min_gap=64', '--max-multiple', '5', '--min-docs', '3',
            '--n-boot', '20', '--no-figures', '--baselines', 'sw-strided', '--out', str(tmp_path / 'ev')]
    return ck, args

def _exit_code(capsys, argv):
    "(exit status as `sys.exit(main(argv))` gives it, stderr)."
    capsys.readouterr()
    with pytest.raises(SystemExit) as e: sys.exit(main(argv))
    code = e.value.code
    return (0 if code is None else code if isinstance(code, int) else 1), capsys.readouterr().err

def test_console_script_exits_0_after_success(tmp_path, monkeypatch, capsys):
    "D2: main returned the summary dict, so `sys.exit(main())` printed it and exited 1 after every good evaluation."
    ck, args = _run_folder(tmp_path, monkeypatch)
    code, err = _exit_code(capsys, [str(ck)] + args)
    assert code == 0 and 'Traceback' not in err and "'schema'" not in err and (tmp_path / 'ev' / 'summary.json').exists()

@pytest.mark.parametrize('extra,msg', [(['-W', '0'], '--window must be >= 1'), (['-W', '-3'], '--window must be >= 1'),
                                       (['--n-boot', '0'], '--n-boot must be an int >= 1'),
                                       (['--min-docs', '0'], '--min-docs must be an int >= 1'),
                                       (['--max-docs', '0'], '--max-docs must be an int >= 1'),
                                       (['--max-multiple', '0'], '--max-multiple must be > 0'),
                                       (['--min-len', '1'], '--min-len must be >= 2')])
def test_cli_refuses_zero_sizes(tmp_path, monkeypatch, capsys, extra, msg):
    "D10: -W 0 silently used the run's W; zero documents or replicates put NaN into the summary JSON."
    ck, args = _run_folder(tmp_path, monkeypatch)
    code, err = _exit_code(capsys, [str(ck)] + args + extra)
    assert code == 2 and msg in err and err.count('\n') == 1, err
    assert not (tmp_path / 'ev' / 'summary.json').exists()

def test_evaluate_run_refuses_zero_sizes(tmp_path):
    "The Python API refuses what gave NaN too (min_docs=0 kept probes with no documents, n_boot=0 gave NaN CIs)."
    m = _transformer(); docs = _docs(lens=(40,) * 3)
    for kw, msg in [(dict(min_docs=0), 'min_docs'), (dict(n_boot=0), 'n_boot'), (dict(batch_size=0), 'batch_size'),
                    (dict(max_multiple=0), 'max_multiple')]:
        with pytest.raises(ValueError, match=msg): evaluate_run(m, docs, 8, tmp_path, **{'n_boot': 20, **kw})
    evaluate_run(m, docs, 8, tmp_path, n_boot=20, min_docs=1)
    def no_nan(c): raise ValueError(f'{c} in the summary JSON')
    json.loads((tmp_path / 'summary.json').read_text(), parse_constant=no_nan)

def test_cli_missing_checkpoint_says_not_found(tmp_path, monkeypatch, capsys):
    "D10: a missing folder said 'give --window'."
    code, err = _exit_code(capsys, [str(tmp_path / 'nope'), '--out', str(tmp_path / 'ev')])
    assert code == 2 and 'checkpoint folder not found' in err and 'window' not in err

def test_cli_bad_weights_one_line_exit_2(tmp_path, monkeypatch, capsys):
    "D9: truncated or size-mismatched weights gave a SafetensorError/RuntimeError traceback."
    ck, args = _run_folder(tmp_path, monkeypatch)
    w = ck / 'model.safetensors'; good = w.read_bytes()
    w.write_bytes(good[:len(good) // 2])                                          # truncated
    code, err = _exit_code(capsys, [str(ck)] + args)
    assert code == 2 and err.startswith('ttt-eval: error: ') and err.count('\n') == 1 and 'Traceback' not in err, err
    w.write_bytes(good)
    c = json.loads((ck / 'config.json').read_text()); c['intermediate_size'] = 24; (ck / 'config.json').write_text(json.dumps(c))
    code, err = _exit_code(capsys, [str(ck)] + args)                              # the weights do not fit config.json
    assert code == 2 and err.splitlines()[-1].startswith('ttt-eval: error: ') and 'Traceback' not in err, err
    assert not (tmp_path / 'ev' / 'summary.json').exists()

@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the message on a machine without CUDA')
def test_cli_device_not_here_one_line(tmp_path, monkeypatch, capsys):
    ck, args = _run_folder(tmp_path, monkeypatch)
    for dev, msg in [('cuda', 'sees no CUDA GPU'), ('nonsense', 'unknown device')]:
        code, err = _exit_code(capsys, [str(ck)] + args + ['--device', dev])
        assert code == 2 and msg in err and err.count('\n') == 1, err


# --- issue 13: one evaluation entry

def test_evaluate_checkpoint_gives_evaluate_run_numbers(tmp_path, monkeypatch):
    "The checkpoint path (select_documents + evaluate_checkpoint) gives the numbers evaluate_run gives on the same weights and documents."
    ck, _ = _run_folder(tmp_path, monkeypatch)
    (ck / 'meta.json').write_text(json.dumps(dict(step=10, loss=2.0)))
    from ttt_nb.data import load_tokenized
    td = load_tokenized('synthetic-recall', 'test', 'byte', n_docs=6, min_gap=64)
    docs, info = select_documents(td, 16, max_multiple=5, min_docs=3)
    assert info['max_multiple'] == 5 and all(len(d) == 5 * 16 + 1 for d in docs) and len(docs) == len(info['doc_ids'])
    a = evaluate_checkpoint(ck, docs, 16, tmp_path / 'a', info, stride=4, min_docs=3, n_boot=20, device='cpu', ngram=None, doc_ids=None)
    m = TransformerForCausalLM.from_pretrained(ck).eval()
    b = evaluate_run(m, docs, 16, tmp_path / 'b', stride=4, min_docs=3, n_boot=20, max_multiple=5)
    assert a['probes'] == b['probes'] and a['bins'] == b['bins'] and a['step'] == 10 and a['training']['seeds'] == [3]
    with pytest.raises(ValueError, match='only 0 documents'): select_documents(td, 16, max_multiple=10**5, min_docs=3, fallback=())


# --- issue 14: the mini-batch phase, the n-gram reference, statistics, documents

def _carry_off(b=4, layers=2):
    "A TTT without convs whose last carry weight is 0 after the clamp: nothing crosses a mini-batch boundary."
    torch.manual_seed(0)
    m = ttt_model.TTTForCausalLM(ttt_config.TTTConfig.from_preset('tiny', vocab_size=40, hidden_size=32, num_attention_heads=2, intermediate_size=48,
                                 mini_batch_size=b, num_hidden_layers=layers, pre_conv=False, share_qk=False)).double().eval()
    with torch.no_grad():
        for layer in m.model.layers: layer.seq_modeling_block.learnable_token_idx[-1] = -1.0 / b
    return m

def test_carry_off_full_equals_sw_for_every_stride_and_exact():
    "Carry off: full == SW exactly (every scored token's window holds its mini-batch from its start: S <= W - b + 1), exact SW too."
    b, W = 4, 16
    m, docs = _carry_off(b), _docs(lens=(70, 53, 90))
    full = full_context_nll(m, docs)
    for S in (None, 1, 2, 3, 5, 6, 7, W - b + 1):
        sw = sliding_window_nll(m, docs, W, stride=S)
        assert max(np.nanmax(np.abs(x - y)) for x, y in zip(full, sw, strict=True)) == 0.0, S
    old = sliding_window_nll(m, docs, W, stride=3, keep_phase=False)    # windows at phase 0: up to ~0.4 nats off
    assert max(np.nanmax(np.abs(x - y)) for x, y in zip(full, old, strict=True)) > 0.05

def test_linear_edges_keep_the_last_position():
    for T, W in ((129, 32), (65, 64), (2, 8), (100, 33), (34, 33)):
        e = linear_edges(T, W)
        assert e[-1] > T - 1 and bin_sums([np.r_[np.nan, np.ones(T - 1)]], e)[1].sum() == T - 1, (T, W, e)

def test_ngram_references_regime_and_endpoints(tmp_path):
    "The n-gram orders are reference methods: binned and probed with CIs, in `references`, `ngram`, `regime`, never SW comparators."
    rng = np.random.default_rng(0)
    pats = [rng.integers(0, 40, 7) for _ in range(10)]
    train = [np.tile(p, 30) for p in pats]                                    # periodic text: high orders predict it
    docs = [np.tile(p, 25)[:161] for p in pats[:6]]
    m = _transformer()
    s = evaluate_run(m, docs, 16, tmp_path, stride=8, n_boot=100, min_docs=3, max_multiple=10, ngram=train, ngram_orders=(1, 2, 3))
    assert s['references'] == ['ngram1', 'ngram2', 'ngram3'] and s['ci_method'] == 'boot-t'
    assert set(s['ngram']['ppl']) == {'1', '2', '3'} and s['ngram']['ppl']['3'] < s['ngram']['ppl']['1']
    assert s['ngram']['kind'] == 'interpolated Kneser-Ney' and s['ngram']['fitted_on']['tokens'] == 2100
    for p in s['probes']: assert 'ngram3' in p['ppl'] and not any('ngram' in k for k in p['diff'])
    assert not any('ngram' in k for k in s['bins']['linear']['diff'])
    assert s['regime']['beats'] == 'none' and not s['regime']['far_context_claims']   # an untrained model beats no n-gram
    assert s['endpoints']['adjustment'] == 'holm' and s['endpoints']['primary'] == ['probe 10xW full-sw_strided']
    assert all(q is None or q >= p for q, p in zip(s['bins']['log']['diff']['full-sw_strided']['p_holm'], s['bins']['log']['diff']['full-sw_strided']['p']))
    assert seed_verdicts([s]) and 'sw_ppl_at_1xW' in s
    assert json.loads((tmp_path / 'summary.json').read_text())['regime'] == s['regime']

def test_holm_primary_family_is_the_two_probes():
    a, b = _synthetic(0.1, D=8, T=420)
    s = summarize({'full': a, 'sw_strided': b}, W=20, n_boot=100)
    ep = adjust_multiplicity(s)
    assert ep['primary'] == ['probe 10xW full-sw_strided', 'probe 20xW full-sw_strided'] and ep['exploratory'] > 10
    pr = {p['r']: p['diff']['full-sw_strided'] for p in s['probes']}
    assert pr[10]['p_holm'] <= 2 * pr[10]['p'] + 1e-12 and pr[1]['p_holm'] >= pr[1]['p']

def test_select_documents_all_seeded_draw_and_templated():
    from ttt_nb.data import Corpus, tokenize
    texts = ['x' * n for n in (50, 300, 310, 320, 330, 340, 350, 360)]
    ids = ['a.py', 'encodings/cp737.py', 'b.py', 'encodings/mac_turkish.py', 'c.py', '_sysconfigdata_x.py', 'd.py', 'e.py']
    import tempfile
    td = tokenize(Corpus('toy', 'test', texts, ids), 'byte', tempfile.mkdtemp())
    docs, info = select_documents(td, 16, max_multiple=10, min_docs=3)
    assert len(docs) == 7 and info['draw'] == 'all'                               # every document long enough, not the first 64
    assert info['templated'] == ['encodings/cp737.py', 'encodings/mac_turkish.py', '_sysconfigdata_x.py']
    d1 = select_documents(td, 16, max_multiple=10, max_docs=4, min_docs=3, seed=1)[1]['doc_ids']
    d2 = select_documents(td, 16, max_multiple=10, max_docs=4, min_docs=3, seed=2)[1]['doc_ids']
    assert len(d1) == 4 and d1 != d2 and d1 == select_documents(td, 16, max_multiple=10, max_docs=4, min_docs=3, seed=1)[1]['doc_ids']
    assert templated('Lib/encodings/ptcp154.py') and templated('ptcp154.py') and not templated('email/encoders.py')

def test_sensitivity_without_templated_documents(tmp_path):
    docs = _docs(lens=(90, 80, 85, 95, 70))
    ids = ['a.py', 'encodings/cp1.py', 'b.py', 'c.py', 'd.py']
    s = evaluate_run(_transformer(), docs, 16, tmp_path, stride=8, n_boot=50, min_docs=2, max_multiple=5, doc_ids=ids)
    se = s['sensitivity']
    assert se['excluded'] == ['encodings/cp1.py'] and se['n_docs'] == 4 and 'full' in se['overall']
    with pytest.raises(ValueError, match='doc_ids'): evaluate_run(_transformer(), docs, 16, tmp_path, doc_ids=ids[:2])

def test_memory_block_for_ttt(tmp_path):
    "TTT models get `summary['memory']` by default (ttt_nb.memory.memory_summary); baselines do not."
    docs = _docs(lens=(70, 66, 80))
    s = evaluate_run(_ttt(b=4), docs, 16, tmp_path, stride=8, n_boot=20, min_docs=2, max_multiple=4, truncation=False,
                     memory_kwargs=dict(n_t=2, max_docs=2, ratios=(1, 2)))
    assert 'memory' in s and 'error' not in s['memory'], s.get('memory')
    t = evaluate_run(_transformer(), docs, 16, tmp_path, stride=8, n_boot=20, min_docs=2, max_multiple=4, truncation=False)
    assert 'memory' not in t and t['convergence']['label'].startswith('convergence unknown')
