"The trainer with the real TTT model and data: initial weights learn, the state-passing switch, CLI, kill/resume, two processes, init_from."
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from ttt_nb.checkpoint import latest_checkpoint, list_checkpoints
from ttt_nb.train import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SHARED = ROOT.parent / 'shared'
TINY = dict(preset='tiny', corpus='python-stdlib', tokenizer='byte', seq_len=32, batch_size=4, warmup_steps=1, eval_batches=1,
            eval_batch_size=4, progress=False, wandb='disabled', run_eval=False, lr=3e-3, lr_end=3e-4)


def cfg_(tmp_path, **kw): return TrainConfig(**{**TINY, 'out_dir': str(tmp_path / 'run'), **kw})
def weights(p): return load_file(Path(p) / 'model.safetensors')
def log(run): return [json.loads(l) for l in (Path(run) / 'log.jsonl').read_text().splitlines()]
# `ttt-train` as its console script runs it (ttt_nb.cli.train_main), independent of the installed entry points
TTT_TRAIN = [sys.executable, '-c', 'import sys; from ttt_nb.cli import train_main; sys.exit(train_main())']
def env(**kw): return {**os.environ, 'OMP_NUM_THREADS': '1', 'WANDB_MODE': 'disabled', **kw}


def test_ttt_initial_weights_learn(tmp_path):
    "One step from the learned initial state moves W1/b1 of every layer, and the lr gate and token_idx, with state passing on and off."
    for sp in (True, False):
        tr = Trainer(cfg_(tmp_path / str(sp), steps=1, warmup_steps=0, state_passing=sp))
        init = [tuple(w.detach().clone() for w in ws) for ws in tr.model.ttt_init_params()]
        others = {n: p.detach().clone() for n, p in tr.model.named_parameters() if 'learnable' in n}
        assert any(n.endswith(('W1', 'b1')) for n in tr.param_names['decay'])          # decayed by default (the official recipe)
        tr.fit()
        for before, after in zip(init, tr.model.ttt_init_params(), strict=True):
            for a, b in zip(before, after, strict=True): assert not torch.equal(a, b.detach())
        for n, p in tr.model.named_parameters():
            if n in others: assert not torch.equal(others[n], p.detach()), n


def test_ttt_state_passing_switch(tmp_path):
    "Real TTT: same batches and same first-step loss on and off; later losses differ (only the start state changed)."
    logs, xs = {}, {}
    for sp in (True, False):
        tr = Trainer(cfg_(tmp_path / str(sp), steps=3, n_checkpoints=0, eval_every=0, state_passing=sp))
        seen, fwd = xs.setdefault(sp, []), tr.model.forward
        def spy(x, state=None, tr=tr, seen=seen, fwd=fwd, **kw):   # bound now: the loop rebinds the names
            if tr.model.training: seen.append(x.clone())
            return fwd(x, state=state, **kw)
        tr.model.forward = spy; tr.fwd = tr.model
        tr.fit(); logs[sp] = [r['loss'] for r in log(tr.out) if 'loss' in r]
    for a, b in zip(xs[True], xs[False], strict=True): assert torch.equal(a, b)
    assert logs[True][0] == logs[False][0] and logs[True][1:] != logs[False][1:]


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path):
    "compile=True compiles the model as one graph (no graph break) and trains the same function as eager: the same losses and weights over steps with state passing (the learned start state, then carried states and conv tails)."
    small = dict(model_overrides=dict(pre_conv=True, share_qk=True, use_gate=True, num_hidden_layers=1, hidden_size=32,
                                      intermediate_size=64, num_attention_heads=2), steps=4, n_checkpoints=0, eval_every=0, threads=1)
    from torch._dynamo.utils import counters
    counters.clear()
    runs = {}
    for comp in (False, True):
        tr = Trainer(cfg_(tmp_path / str(comp), compile=comp, **small))
        runs[comp] = ([tr.train_step()[0] for _ in range(4)], [p.detach().clone() for p in tr.model.parameters()])
        assert (tr.fwd is tr.model) != comp
    assert counters['stats']['unique_graphs'] >= 1 and not counters['graph_break'], dict(counters['graph_break'])  # compiled, as one graph
    assert runs[True][0] == pytest.approx(runs[False][0], rel=1e-5, abs=0)
    for a, b in zip(runs[True][1], runs[False][1], strict=True): torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def _run_cli(cfg:dict, tmp_path, *extra, name='cfg.yaml', **kw):
    p = tmp_path / name; p.write_text(yaml.safe_dump(cfg))
    return subprocess.Popen([*TTT_TRAIN, str(p), *extra], env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def test_cli_kill_and_resume_bit_identical(tmp_path):
    "ttt-train killed (SIGKILL) at a random step and resumed with --resume ends bit-identical to an uninterrupted run."
    base = {**TINY, 'steps': 16, 'save_every': 1, 'keep_last': 2, 'n_checkpoints': 2, 'eval_every': 5, 'tbptt': 2, 'grad_accum': 2}
    full = _run_cli({**base, 'out_dir': str(tmp_path / 'full')}, tmp_path, name='full.yaml')
    cut_cfg = {**base, 'out_dir': str(tmp_path / 'cut')}
    p = _run_cli(cut_cfg, tmp_path, name='cut.yaml')
    kill_after, t0 = random.randint(2, 8), time.time()
    while time.time() - t0 < 120:
        c = latest_checkpoint(tmp_path / 'cut', verify=False)   # unverified: the trainer prunes meanwhile
        if c is not None and int(c.name[5:]) >= kill_after: break
        assert p.poll() is None, p.stderr.read().decode()[-2000:]
        time.sleep(0.005)
    p.send_signal(signal.SIGKILL); p.wait()
    killed = int(latest_checkpoint(tmp_path / 'cut').name[5:])
    assert killed < 16 and json.loads((tmp_path / 'cut/status.json').read_text())['state'] == 'running'
    r = _run_cli(cut_cfg, tmp_path, '--resume', name='cut.yaml'); out, err = r.communicate(timeout=150)
    assert r.returncode == 0, err.decode()[-3000:]
    assert full.wait(timeout=150) == 0, full.stderr.read().decode()[-3000:]
    a, b = weights(tmp_path / 'full/checkpoints/step_000016'), weights(tmp_path / 'cut/checkpoints/step_000016')
    for k in a: assert torch.equal(a[k], b[k]), f'{k} differs (killed after step {killed})'
    la = {r['step']: r['loss'] for r in log(tmp_path / 'full') if 'loss' in r}
    lb = {r['step']: r['loss'] for r in log(tmp_path / 'cut') if 'loss' in r}
    assert la == lb
    # the CLI smoke part: run folder contents, status and resolved config
    st = json.loads((tmp_path / 'cut/status.json').read_text())
    assert st['state'] == 'finished' and st['step'] == 16 and st['total_steps'] == 16
    conf = json.loads((tmp_path / 'cut/config.json').read_text())
    assert conf['seq_len'] == 32 and conf['run']['resumed'] is True and conf['run']['n_params'] > 0
    assert [s for s, _ in list_checkpoints(tmp_path / 'cut')] == [0, 14, 15, 16]


@pytest.mark.skipif(not shutil.which('torchrun', path=str(BIN)), reason='torchrun not installed')
def test_cli_two_process_gloo_matches_one(tmp_path):
    "torchrun --nproc_per_node 2 (gloo, 2 rows each) gives the losses of one process with 4 rows."
    base = {**TINY, 'steps': 3, 'n_checkpoints': 1, 'eval_every': 3}
    one = _run_cli({**base, 'out_dir': str(tmp_path / 'one')}, tmp_path, name='one.yaml')
    p = tmp_path / 'two.yaml'; p.write_text(yaml.safe_dump({**base, 'out_dir': str(tmp_path / 'two')}))
    r = subprocess.run([str(BIN / 'torchrun'), '--nproc_per_node', '2', '--master_port', str(random.randint(20000, 40000)),
                        '--no-python', *TTT_TRAIN, str(p)], env=env(TTT_NB_DIST_BACKEND='gloo'),
                       capture_output=True, text=True, timeout=200)
    assert r.returncode == 0, r.stderr[-3000:]
    assert one.wait(timeout=100) == 0, one.stderr.read().decode()[-2000:]
    la, lb = log(tmp_path / 'one'), log(tmp_path / 'two')
    assert [x['step'] for x in la] == [x['step'] for x in lb]
    for a, b in zip(la, lb, strict=True):
        for k in ('loss', 'heldout_loss'):
            # train losses to 1e-4; the held-out loss after updates to 1e-3 (Adam amplifies float32 summation-order noise
            # in near-zero gradients: the 2-rank all-reduce adds in another order than one process)
            tol = 1e-4 if k == 'loss' or a['step'] == 0 else 1e-3
            if a.get(k) is not None: assert b[k] == pytest.approx(a[k], rel=tol), (k, a['step'])
    assert json.loads((tmp_path / 'two/config.json').read_text())['run']['world_size'] == 2


def test_init_from_pretrained(tmp_path):
    "A run can start from our checkpoint (weights equal at step 0); an official checkpoint with a smaller vocabulary is a clear error."
    a = Trainer(cfg_(tmp_path / 'a', steps=2, n_checkpoints=1)); a.fit()
    ck = latest_checkpoint(tmp_path / 'a' / 'run')
    b = Trainer(cfg_(tmp_path / 'b', steps=2, n_checkpoints=2, init_from=str(ck), lr=1e-3))
    for k, v in weights(ck).items(): assert torch.equal(b.model.state_dict()[k], v), k
    s = b.fit(); assert s['state'] == 'finished'
    official = SHARED / 'fixtures/official-ttt/linear-mamba'
    if official.exists():
        with pytest.raises(ValueError, match=r"vocab_size 97 is smaller than the tokenizer's 257"):
            Trainer(cfg_(tmp_path / 'c', steps=2, init_from=str(official)))


@pytest.mark.parametrize('model', ['ttt', 'swa'])
def test_states_saved_as_data_and_untouched(tmp_path, model):
    "The real TTTState (and the SWA baseline's KVState) are saved without changing the live objects and come back equal."
    tr = Trainer(cfg_(tmp_path, model=model, steps=2, n_checkpoints=0, eval_every=0))
    tr.fit()
    st = tr.states[0]
    before = {k: v for k, v in vars(st).items()}
    flat = lambda s: [t for v in vars(s).values() for t in torch.utils._pytree.tree_leaves(v) if isinstance(t, torch.Tensor)]
    tensors = [(t, t.clone()) for t in flat(st)]
    ck = tr.save_checkpoint('periodic')
    assert all(vars(st)[k] is v for k, v in before.items())
    for a, (t, c) in zip(flat(st), tensors, strict=True): assert a is t and torch.equal(a, c)
    b = Trainer(cfg_(tmp_path, model=model, steps=2, n_checkpoints=0, eval_every=0))
    b.load_checkpoint(ck)
    got = b.states[0]
    assert type(got) is type(st)
    for x, y in zip(flat(got), flat(st), strict=True): assert x.dtype == y.dtype and torch.equal(x.detach(), y.detach())
    if model == 'ttt':   # the learned initial weights are the new model's live parameters
        assert got.init[0][0] is b.model.ttt_init_params()[0][0] and got.spec == st.spec


def test_cli_second_trainer_and_sigterm(tmp_path):
    "A second ttt-train on a folder in use exits 2 at once with one line; SIGTERM stops the first cleanly with exit 143."
    cfg = {**TINY, 'steps': 400, 'save_every': 1, 'keep_last': 1, 'n_checkpoints': 0, 'eval_every': 0, 'out_dir': str(tmp_path / 'run')}
    a = _run_cli(cfg, tmp_path, name='a.yaml')
    t0 = time.time()
    while latest_checkpoint(tmp_path / 'run', verify=False) is None:   # unverified: the trainer prunes meanwhile
        assert a.poll() is None and time.time() - t0 < 120, a.stderr.read().decode()[-2000:]
        time.sleep(0.05)
    b = _run_cli(cfg, tmp_path, '--resume', name='b.yaml'); _, err = b.communicate(timeout=120)
    assert b.returncode == 2, err.decode()[-2000:]
    lines = err.decode().strip().splitlines()
    assert lines[-1].startswith('ttt-train: error: ') and 'in use by another trainer (pid' in lines[-1] and 'Traceback' not in err.decode()
    assert a.poll() is None
    a.send_signal(signal.SIGTERM); a.wait(timeout=60)
    assert a.returncode == 143, a.stderr.read().decode()[-2000:]
    st = json.loads((tmp_path / 'run/status.json').read_text())
    assert st['state'] == 'stopped' and 'SIGTERM' in st['reason'] and 0 < st['step'] < 400
