"Trainer mechanics on a tiny stand-in recurrent LM: schedule, state passing, checkpoints, resume, faults, two processes."
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _train_run import build
from _train_standin import StandinLM, StandinStream, standin_docs
from safetensors.torch import load_file

from ttt_nb.checkpoint import latest_checkpoint, list_checkpoints
from ttt_nb.cli import config_from_args
from ttt_nb.train import TrainConfig, lr_at, milestone_steps, param_groups

HERE = Path(__file__).parent
ROOT = HERE.parent
PY = sys.executable


def cfg_(tmp_path, **kw):
    d = dict(steps=6, seq_len=8, batch_size=4, out_dir=str(tmp_path / 'run'), eval_every=0, n_checkpoints=2,
             progress=False, run_eval=False, warmup_steps=2, wandb='disabled', lr=3e-2, lr_end=3e-3)
    d.update(kw)
    return TrainConfig(**d)


def weights(path): return load_file(Path(path) / 'model.safetensors')


def log(run): return [json.loads(l) for l in (Path(run) / 'log.jsonl').read_text().splitlines()]


def test_schedule_counts_optimizer_steps(tmp_path):
    "Warmup and cosine advance once per optimizer step (not per accumulation chunk) and end at lr_end."
    cfg = cfg_(tmp_path, steps=7, warmup_steps=3, grad_accum=2)
    tr = build(cfg); tr.fit()
    lrs = [r['lr'] for r in log(cfg.out_dir) if 'lr' in r]
    assert np.allclose(lrs, [lr_at(s, cfg) for s in range(7)], rtol=0, atol=1e-12)
    assert lrs[2] == pytest.approx(cfg.lr) and lrs[-1] == pytest.approx(cfg.lr_end, abs=1e-15)
    assert all(s['step'] == 7 for s in tr.opt.state.values())          # AdamW stepped 7 times, not 14


def test_grad_accum_matches_full_batch(tmp_path):
    "Two accumulation chunks of 2 rows give the same update as one chunk of 4 (token-weighted global mean)."
    a = build(cfg_(tmp_path / 'a', steps=3)); a.fit()
    b = build(cfg_(tmp_path / 'b', steps=3, grad_accum=2)); b.fit()
    for (k, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=k)


def test_state_passing_is_the_only_difference(tmp_path):
    "On and off see the same batches and the same initial model; only the state a segment starts from differs."
    calls = {}
    for sp in (True, False):
        tr = build(cfg_(tmp_path / str(sp), steps=4, state_passing=sp))
        rec = calls[sp] = []
        fwd = tr.model.forward
        def spy(x, state=None, fwd=fwd, rec=rec, tr=tr, **kw):   # bound now: the loop rebinds the names
            out = fwd(x, state=state, **kw)
            rec.append((x.clone(), state.h.detach().clone(), tr.model.W1.detach().clone(), out.state.h.detach().clone() if out.state else None))
            return out
        tr.model.forward = spy; tr.fwd = tr.model
        calls[sp, 'w0'] = {k: v.clone() for k, v in tr.model.state_dict().items()}
        tr.fit()
    for k in calls[True, 'w0']: torch.testing.assert_close(calls[True, 'w0'][k], calls[False, 'w0'][k], rtol=0, atol=0)
    on, off = calls[True], calls[False]
    assert len(on) == len(off) == 2 + 4 + 2                             # held-out (2 batches) at step 0, 4 steps, held-out at the end
    for a, b in zip(on, off, strict=True): torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)   # the same tokens in the same order
    torch.testing.assert_close(on[2][1], off[2][1], rtol=0, atol=0)    # first segment: both from the learned initial state
    stream = StandinStream(standin_docs(), 4, 8, seed=0)
    resets = [next(stream)['reset'] for _ in range(4)]
    assert any(r.any() for r in resets[1:]) and not all(r.all() for r in resets[1:])
    for i in range(1, 4):   # later segments: off starts from W1; on continues, rows flagged `reset` go back to W1
        _, h_off, w1_off, _ = off[2 + i]
        _, h_on, w1_on, _ = on[2 + i]
        prev_out, r = on[2 + i - 1][3], resets[i]
        torch.testing.assert_close(h_off, w1_off.expand_as(h_off), rtol=0, atol=0)
        torch.testing.assert_close(h_on[~r], prev_out[~r], rtol=0, atol=0)
        torch.testing.assert_close(h_on[r], w1_on.expand_as(h_on)[r], rtol=0, atol=0)
        assert not torch.allclose(h_on[~r], w1_on.expand_as(h_on)[~r])


def test_learned_initial_state_gets_gradient(tmp_path):
    "After one optimizer step from the initial state the learned initial weights W1 moved (they are not frozen)."
    for sp in (True, False):
        tr = build(cfg_(tmp_path / str(sp), steps=1, warmup_steps=0, state_passing=sp))
        w1 = tr.model.W1.detach().clone()
        tr.fit()
        assert not torch.equal(w1, tr.model.W1.detach())
    _, names = param_groups(StandinLM(), 0.1)
    assert names['decay'] == ['A.weight'] and 'W1' in names['no_decay']
    _, names = param_groups(StandinLM(), 0.1, decay_ttt_init=True)
    assert 'W1' in names['decay']


def test_nan_stops_without_overwriting(tmp_path):
    "A non-finite loss stops the run with a clear reason; earlier checkpoints are untouched and none is added."
    cfg = cfg_(tmp_path, steps=6, save_every=1, keep_last=10, n_checkpoints=0)
    tr = build(cfg)
    fwd = tr.model.forward
    def poisoned(x, **kw):
        out = fwd(x, **kw)
        if tr.step >= 3 and tr.model.training: out.logits = out.logits * float('nan')
        return out
    tr.model.forward = poisoned; tr.fwd = tr.model
    s = tr.fit()
    assert s['state'] == 'stopped' and 'non-finite' in s['reason'] and 'step 3' in s['reason']
    st = json.loads((Path(cfg.out_dir) / 'status.json').read_text())
    assert st['state'] == 'stopped' and 'non-finite' in st['reason']
    def no_nan(c): raise ValueError(f'{c} in a JSON file of the run folder')   # strict JSON, even when a loss was NaN
    run = Path(cfg.out_dir)
    for f in ('status.json', 'train_summary.json'): json.loads((run / f).read_text(), parse_constant=no_nan)
    for line in (run / 'log.jsonl').read_text().splitlines(): json.loads(line, parse_constant=no_nan)
    assert [k for k, _ in list_checkpoints(cfg.out_dir)] == [1, 2, 3]
    w = weights(latest_checkpoint(cfg.out_dir))
    assert all(torch.isfinite(v).all() for v in w.values())
    torch.testing.assert_close(w['W1'], tr.model.W1.detach(), rtol=0, atol=0)


def test_early_stopping(tmp_path):
    "With lr=0 the held-out loss never improves by min_delta: the run stops after `patience` evaluations and saves."
    cfg = cfg_(tmp_path, steps=20, lr=0.0, lr_end=0.0, eval_every=2, patience=2, min_delta=1e-3)
    s = build(cfg).fit()
    assert s['state'] == 'stopped' and s['reason'].startswith('early stopping') and s['step'] == 4
    assert [k for k, _ in list_checkpoints(cfg.out_dir)] == [0, 4]
    assert json.loads((latest_checkpoint(cfg.out_dir) / 'meta.json').read_text())['kind'] == 'final'


def test_checkpoint_retention(tmp_path):
    "Evenly spaced checkpoints (step 0 and the last included) stay; only the last `keep_last` periodic ones are kept."
    cfg = cfg_(tmp_path, steps=8, n_checkpoints=3, save_every=1, keep_last=2)
    assert milestone_steps(cfg) == [0, 4, 8]
    build(cfg).fit()
    assert [k for k, _ in list_checkpoints(cfg.out_dir)] == [0, 4, 6, 7, 8]


def test_atomic_checkpoint_leftover_is_ignored(tmp_path):
    "A temporary folder left by a crash (and a folder without meta.json) is ignored; resume loads the last good one."
    cfg = cfg_(tmp_path, steps=3, n_checkpoints=0, save_every=1, keep_last=5)
    a = build(cfg); a.fit()
    ck = Path(cfg.out_dir) / 'checkpoints'
    junk = ck / '.tmp-step_000004'; junk.mkdir(); (junk / 'model.safetensors').write_bytes(b'half a file')
    bad = ck / 'step_000005'; bad.mkdir(); (bad / 'model.safetensors').write_bytes(b'no meta')
    assert latest_checkpoint(cfg.out_dir).name == 'step_000003'
    b = build(cfg_(tmp_path, steps=4, n_checkpoints=0, save_every=1, keep_last=5))
    with pytest.warns(UserWarning, match='changed settings'): b.fit(resume=True, allow_config_change=True)   # steps 3 -> 4
    assert not junk.exists()
    assert b.step == 4 and [k for k, _ in list_checkpoints(cfg.out_dir)] == [1, 2, 3, 4]


def test_resume_requires_same_config(tmp_path):
    "Resuming with another window or batch is an error naming the difference; a fresh run never overwrites checkpoints."
    cfg = cfg_(tmp_path, steps=2, warmup_steps=1); build(cfg).fit()
    with pytest.raises(ValueError, match=r'another configuration.*seq_len: checkpoint 8 vs this run 16'):
        build(cfg_(tmp_path, steps=4, seq_len=16)).fit(resume=True)
    with pytest.raises(FileExistsError, match='already holds checkpoints'):
        build(cfg).fit()


def _write_cfg(tmp_path, name, **kw):
    cfg = cfg_(tmp_path, **kw); tmp_path.mkdir(parents=True, exist_ok=True); p = tmp_path / f'{name}.json'
    p.write_text(json.dumps(cfg.to_dict())); return cfg, p


def _env(**kw):
    e = dict(os.environ, OMP_NUM_THREADS='1', PYTHONHASHSEED='0', WANDB_MODE='disabled'); e.update(kw); return e


# The kill-and-resume test (a real SIGKILL of `ttt-train` at a random step) runs the real model: test_train_real.py.


def test_two_process_gloo_matches_single_process(tmp_path):
    "torchrun with 2 gloo processes (2 rows each, in 2 accumulation chunks, TBPTT 2) gives the losses and weights of one process with 4 rows."
    kw = dict(steps=3, n_checkpoints=1, eval_every=3, grad_accum=2, tbptt=2)
    one, p1 = _write_cfg(tmp_path / 'one', 'cfg', **kw)
    two, p2 = _write_cfg(tmp_path / 'two', 'cfg', **kw)
    r1 = subprocess.Popen([PY, HERE / '_train_run.py', p1], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    r2 = subprocess.run([PY, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', str(random.randint(20000, 40000)),
                         HERE / '_train_run.py', p2], env=_env(TTT_NB_DIST_BACKEND='gloo'), capture_output=True, text=True, timeout=150)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert r1.wait(timeout=60) == 0, r1.stderr.read().decode()
    la, lb = log(one.out_dir), log(two.out_dir)
    assert [r['step'] for r in la] == [r['step'] for r in lb]
    for a, b in zip(la, lb, strict=True):
        for k in ('loss', 'heldout_loss'):
            if a.get(k) is not None: assert b[k] == pytest.approx(a[k], rel=1e-5), (k, a['step'])
    wa, wb = weights(latest_checkpoint(one.out_dir)), weights(latest_checkpoint(two.out_dir))
    for k in wa: torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)
    assert (Path(two.out_dir) / 'checkpoints/step_000003/rank1.safetensors').exists()


def test_cli_overrides():
    "Every TrainConfig field is a --option (dashes or underscores), values parsed as YAML."
    cfg, a = config_from_args(['--seq-len', '64', '--model-overrides', '{num_hidden_layers: 1}', '--tbptt', '2', '--resume'])
    assert (cfg.seq_len, cfg.model_overrides, cfg.tbptt, a.resume) == (64, {'num_hidden_layers': 1}, 2, True)
    with pytest.raises(SystemExit): config_from_args(['--no-such-field', '1'])


def test_wandb_mode_never_needs_a_key(tmp_path, monkeypatch):
    "Without a configured key 'online' falls back to offline (no prompt, no hang); WANDB_MODE decides 'auto'."
    from ttt_nb.train import resolve_wandb_mode
    monkeypatch.delenv('WANDB_API_KEY', raising=False); monkeypatch.setenv('HOME', str(tmp_path)); monkeypatch.delenv('NETRC', raising=False)
    with pytest.warns(UserWarning, match='no API key'): assert resolve_wandb_mode('online') == 'offline'
    monkeypatch.delenv('WANDB_MODE', raising=False)
    assert resolve_wandb_mode('auto') == 'offline' and resolve_wandb_mode('disabled') == 'disabled'
    monkeypatch.setenv('WANDB_MODE', 'disabled'); assert resolve_wandb_mode('auto') == 'disabled'


def test_sigterm_stops_cleanly(tmp_path):
    "SIGTERM (a scheduler's preemption) stops the run with state 'stopped' and a reason; resume continues from the last checkpoint."
    cfg = cfg_(tmp_path, steps=6, save_every=1, keep_last=10, n_checkpoints=0)
    tr = build(cfg)
    fwd = tr.model.forward
    def term(x, **kw):
        if tr.step == 3 and tr.model.training: os.kill(os.getpid(), signal.SIGTERM)
        return fwd(x, **kw)
    tr.model.forward = term; tr.fwd = tr.model
    before = signal.getsignal(signal.SIGTERM)
    s = tr.fit()
    assert signal.getsignal(signal.SIGTERM) is before                    # the handler is restored
    assert s['state'] == 'stopped' and 'SIGTERM' in s['reason'] and s['step'] == 3
    assert json.loads((Path(cfg.out_dir) / 'status.json').read_text())['state'] == 'stopped'
    b = build(cfg); b.fit(resume=True)
    assert b.step == 6
