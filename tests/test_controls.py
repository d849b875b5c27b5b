"Issue 14's run options on the real TTT model: the controls, the initial-state interventions, weight decay, the carry's log, convergence, the monitor split."
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ttt_nb.checkpoint import latest_checkpoint, load_pretrained
from ttt_nb.config import TTTConfig
from ttt_nb.data import load_tokenized
from ttt_nb.model import TTTForCausalLM
from ttt_nb.train import TrainConfig, Trainer
from ttt_nb.train.build import carve_monitor
from ttt_nb.train.loop import heldout_convergence

SMALL = dict(hidden_size=32, num_attention_heads=2, intermediate_size=64, num_hidden_layers=2, mini_batch_size=4)


def cfg_(tmp_path, **kw):
    d = dict(preset='tiny', model_overrides=dict(SMALL), corpus='python-stdlib', tokenizer='byte', seq_len=8, batch_size=4,
             steps=3, warmup_steps=1, eval_batches=2, eval_batch_size=2, eval_every=0, n_checkpoints=0, lr=3e-2, lr_end=3e-3,
             threads=1, progress=False, wandb='disabled', run_eval=False, out_dir=str(tmp_path / 'run'))
    return TrainConfig(**{**d, **kw})


def small_lm(**kw):
    torch.manual_seed(0)
    return TTTForCausalLM(TTTConfig.from_preset('tiny', vocab_size=257, **SMALL, **kw)).eval()


def log(run): return [json.loads(l) for l in (Path(run) / 'log.jsonl').read_text().splitlines()]


def test_no_inner_loop_ignores_the_fast_weights_updates():
    "ttt_base_lr=0: the fast weights never leave the learned initial state, so a carried state predicts as a fresh one."
    x = torch.randint(0, 257, (2, 16))
    for lr0, same in ((0.0, True), (1.0, False)):
        m = small_lm(ttt_base_lr=lr0)
        with torch.no_grad():
            st = m(x[:, :8], return_state=True).state
            carried, fresh = m(x[:, 8:], state=st).logits, m(x[:, 8:]).logits
        assert torch.equal(carried, fresh) == same, lr0
        if same:
            for l, init in enumerate(m.ttt_init_params()):
                torch.testing.assert_close(st.params[l][0], init[0].expand_as(st.params[l][0]), rtol=0, atol=0)


@pytest.mark.parametrize('control', ['carry_off', 'carry_on'])
def test_carry_controls_hold_through_training(tmp_path, control):
    "carry_off: the last token_idx stays exactly 0 and its parameter is never updated; carry_on: token_idx stays 1/i, untrained."
    tr = Trainer(cfg_(tmp_path, control=control))
    before = [m.seq_modeling_block.learnable_token_idx.detach().clone() for m in tr.model.model.layers]
    tr.fit()
    for m, p0 in zip(tr.model.model.layers, before, strict=True):
        blk = m.seq_modeling_block
        tok, p = blk.token_idx(torch.float32), blk.learnable_token_idx.detach()
        if control == 'carry_off':
            assert tok[-1].item() == 0.0 and p[-1].item() == p0[-1].item() == 0.0
            assert not torch.equal(p[:-1], p0[:-1])           # the other positions did train
        else:
            torch.testing.assert_close(tok, 1 / torch.arange(1., 5.), rtol=0, atol=0)
            assert torch.equal(p, p0) and not blk.learnable_token_idx.requires_grad
    assert any('learnable_token_idx' in n for n in tr.param_names['decay'] + tr.param_names['no_decay']) == (control == 'carry_off')
    cfg = json.loads((tmp_path / 'run' / 'config.json').read_text())
    assert cfg['control'] == control and cfg['run']['model_config']['carry'] == control.split('_')[1]
    back = load_pretrained(latest_checkpoint(tmp_path / 'run'))       # the checkpoint reloads with the same behaviour
    assert back.config.carry == control.split('_')[1]
    summary = json.loads((tmp_path / 'run' / 'train_summary.json').read_text())
    assert summary['controls']['control'] == control and len(summary['final_carry']) == 2


def test_noise_initial_state_is_seeded(tmp_path):
    "init_state='noise': fresh states differ from the learned one and from each other, and the same seed draws the same noise."
    draws = {}
    for seed in (0, 0, 1):
        tr = Trainer(cfg_(tmp_path / f's{seed}{len(draws)}', init_state='noise', init_noise_std=0.05, seed=seed))
        a, b = tr._fresh_state(4), tr._fresh_state(4)
        learned = tr.model.init_state(4)
        d = (a.params[0][0] - learned.params[0][0]).detach()
        assert 0.04 < float(d.std()) < 0.06                       # N(0, 0.05^2) on the fast weights
        assert not torch.equal(a.params[0][0], b.params[0][0])    # a new draw per call
        draws.setdefault(seed, []).append(d)
    torch.testing.assert_close(draws[0][0], draws[0][1], rtol=0, atol=0)
    assert not torch.allclose(draws[0][0], draws[1][0])


def test_noise_on_reset_rows_only(tmp_path):
    "With state passing, a document reset gives the reset rows a noisy initial state and leaves the others alone."
    tr = Trainer(cfg_(tmp_path, init_state='noise'))
    st = tr.model.init_state(4)
    st.params = [tuple(p + 1.0 for p in layer) for layer in st.params]   # a carried state far from init
    out = tr._start_state(st, torch.tensor([False, True, False, False]), 4)
    w, w0 = out.params[0][0].detach(), tr.model.init_state(4).params[0][0].detach()
    assert torch.equal(w[0], w0[0] + 1.0) and torch.equal(w[2:], w0[2:] + 1.0)
    assert not torch.equal(w[1], w0[1]) and float((w[1] - w0[1]).abs().max()) < 0.2


def test_other_sequence_takes_another_rows_final_state(tmp_path):
    "init_state='other_sequence': row r starts from row r+1's final state (detached), whatever the reset flags say; training runs."
    tr = Trainer(cfg_(tmp_path, init_state='other_sequence'))
    x = torch.randint(0, 257, (4, 8))
    st = tr.model(x, return_state=True).state
    out = tr._start_state(st, torch.tensor([True, False, False, False]), 4)
    for r in range(4): assert torch.equal(out.params[0][0][r], st.params[0][0][(r + 1) % 4].detach())
    assert not out.params[0][0].requires_grad
    s = tr.fit()
    assert s['state'] == 'finished' and s['controls']['init_state'] == 'other_sequence'


def test_reparametrised_carry_has_gradient_below_the_clamp():
    "A carry pushed below 0: the official clamp gives no gradient, softplus and exp do."
    x = torch.randint(0, 257, (2, 12))
    for kind in ('official', 'softplus', 'exp'):
        m = small_lm(token_idx_param=kind)
        with torch.no_grad():
            for blk in (l.seq_modeling_block for l in m.model.layers): blk.learnable_token_idx[-1] = -1.0  # 1/4 - 1 < 0
        m(x, labels=x).loss.backward()
        g = m.model.layers[0].seq_modeling_block.learnable_token_idx.grad[-1].item()
        assert (g == 0.0) == (kind == 'official'), (kind, g)


def test_weight_decay_default_is_the_official_recipe(tmp_path):
    "Every trained parameter decays by default; 'matrices' keeps norms, biases, token_idx and the initial fast weights out."
    tr = Trainer(cfg_(tmp_path / 'a'))
    assert tr.param_names['no_decay'] == [] and any('learnable_token_idx' in n for n in tr.param_names['decay'])
    tr = Trainer(cfg_(tmp_path / 'b', weight_decay_mode='matrices'))
    nd = tr.param_names['no_decay']
    assert any('learnable_token_idx' in n for n in nd) and any(n.endswith('.W1') for n in nd) and any('norm' in n for n in nd)


def test_carry_log_and_its_signal_to_noise(tmp_path):
    "log.jsonl holds the raw carry per layer and the signal-to-noise of its gradient, equal to mean/std of the gradients seen."
    tr = Trainer(cfg_(tmp_path, steps=6, carry_window=4))
    seen = []
    tr.model.model.layers[1].seq_modeling_block.learnable_token_idx.register_hook(lambda g: seen.append(float(g[-1])))
    tr.fit()
    lines = [r for r in log(tmp_path / 'run') if 'loss' in r]
    last = lines[-1]
    assert len(last['carry_raw']) == 2 and last['carry_grad_steps'] == 4
    assert last['carry_raw'][1] == pytest.approx(float(tr.model.model.layers[1].seq_modeling_block.learnable_token_idx[-1].detach()), abs=1e-6)
    g = np.array(seen[-4:])
    assert last['carry_grad_snr'][1] == pytest.approx(g.mean() / g.std(ddof=1), rel=1e-3)
    assert lines[0]['carry_grad_snr'] == [None, None]           # one step is no spread


def test_convergence_summary_and_rising_loss(tmp_path):
    "train_summary.json: best/final held-out loss, best step, the two-sided test with its token count; a rising loss is not converged."
    tr = Trainer(cfg_(tmp_path, eval_every=1, steps=3))
    s = tr.fit()
    c = s['convergence']
    assert c['n_tokens'] == 2 * 2 * 8 and c['n_segments'] == 4 and c['steps'] == [2, 3] and c['enough_tokens'] is False
    assert s['final_heldout_loss'] == s['heldout_loss'] and s['best_step'] in (0, 1, 2, 3)
    assert s['best_heldout_loss'] == min(r['heldout_loss'] for r in tr._heldout_hist)
    prev = dict(step=1, heldout_loss=2.0, seg_nll=[200.0, 210.0, 190.0, 205.0, 195.0], seg_tokens=[100] * 5)
    up = dict(step=2, heldout_loss=2.1, seg_nll=[210.0, 221.0, 199.0, 215.0, 205.0], seg_tokens=[100] * 5)
    assert heldout_convergence(prev, up, 0.01)['within'] is False
    tr._heldout_hist = [prev, up]
    assert tr._train_summary('finished', 'done')['converged'] is False
    flat = dict(up, seg_nll=[200.01, 210.0, 189.99, 205.0, 195.0])
    tr._heldout_hist = [prev, flat]
    assert tr._train_summary('finished', 'done')['converged'] is True


def test_monitor_split_is_carved_from_training(tmp_path):
    "heldout_split='monitor': the held-out documents come from the training split, and the training stream never reads them."
    tr = Trainer(cfg_(tmp_path, heldout_split='monitor'))
    mon = tr.data_info['monitor']
    assert mon['split'] == 'train[monitor]' and mon['n_docs'] >= 2
    assert tr.stream.data.meta['split'] == 'train[minus-monitor]'
    local = sorted({int(d) for _ in range(50) for d in next(tr._it)['doc_id'].tolist()})   # indices into the rest
    read = set(tr.stream.data.keep[local].tolist())                                          # indices into the split
    _, monitor = carve_monitor(load_tokenized('python-stdlib', 'train', 'byte'), 2, 2, 8)
    assert len(read) >= 4 and read.isdisjoint(monitor.keep.tolist())
    assert set(tr.stream.data.keep.tolist()).isdisjoint(monitor.keep.tolist())


def test_convergence_survives_resume(tmp_path):
    "The per-segment held-out sums travel in the checkpoint: a resumed run's test pairs the evaluation before the stop with the next."
    cfg = cfg_(tmp_path, eval_every=1, steps=2, save_every=1)
    Trainer(cfg).fit()
    tr = Trainer(dataclasses.replace(cfg, steps=3))
    with pytest.warns(UserWarning, match='steps 2 -> 3'): s = tr.fit(resume=True, allow_config_change=True)
    assert s['convergence']['steps'] == [2, 3] and s['convergence']['n_tokens'] == 32
    assert [('seg_nll' in r) for r in tr._heldout_hist] == [False, False, True, True]
