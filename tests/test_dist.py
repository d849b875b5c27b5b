"DDP and FSDP2 on 2 gloo processes against one process, kill-and-resume under DDP (and resume under FSDP2), another world size refused."
import json
import os
import random
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _train_run import build
from safetensors.torch import load_file

from ttt_nb.checkpoint import list_checkpoints
from ttt_nb.train import TrainConfig, Trainer

HERE = Path(__file__).parent
STANDIN = dict(steps=4, seq_len=8, batch_size=4, grad_accum=2, tbptt=2, eval_every=2, n_checkpoints=2, warmup_steps=1, lr=3e-2,
               lr_end=3e-3, progress=False, run_eval=False, wandb='disabled')
REAL = dict(preset='tiny', corpus='python-stdlib', tokenizer='byte', seq_len=32, batch_size=4, grad_accum=2, tbptt=2, steps=3,
            warmup_steps=1, eval_every=3, eval_batches=1, eval_batch_size=4, n_checkpoints=2, progress=False, run_eval=False, wandb='disabled')
RESUMABLE = dict(STANDIN, steps=6, save_every=1, keep_last=10, n_checkpoints=0)
# name: (config, 'real' for the tiny TTT model on python-stdlib, else the stand-in LM)
RUNS = {'ddp': (dict(STANDIN, dist_mode='ddp'), ''), 'fsdp': (dict(STANDIN, dist_mode='fsdp'), ''),
        'ddp_noreset': (dict(STANDIN, dist_mode='ddp', reset_at_docs=False), ''),      # the learned initial state unused after step 1
        'fsdp_noreset': (dict(STANDIN, dist_mode='fsdp', reset_at_docs=False), ''),
        'fsdp_real': (dict(REAL, dist_mode='fsdp'), 'real'),
        'ddp_full': (dict(RESUMABLE, dist_mode='ddp'), ''), 'fsdp_full': (dict(RESUMABLE, dist_mode='fsdp'), '')}


def weights(run): return load_file(list_checkpoints(run)[-1][1] / 'model.safetensors')
def losses(run): return [r['loss'] for r in map(json.loads, (Path(run) / 'log.jsonl').read_text().splitlines()) if 'loss' in r]


def _write(tmp, name, cfg):
    p = tmp / f'{name}.json'; p.write_text(json.dumps({**cfg, 'out_dir': str(tmp / name)})); return p


def _free_port() -> int:
    "A port nothing listens on now (the OS picks it), so the rendezvous does not collide with another process's."
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def torchrun(*args, **env):
    "2 gloo processes running tests/_dist_run.py on the given configs; returns the finished process (a port taken in between: tried again)."
    e = {**os.environ, 'OMP_NUM_THREADS': '1', 'WANDB_MODE': 'disabled', 'TTT_NB_DIST_BACKEND': 'gloo', **env}
    for _ in range(3):
        r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port',
                            str(_free_port()), HERE / '_dist_run.py', *map(str, args)],
                           env=e, capture_output=True, text=True, timeout=400)
        if 'EADDRINUSE' not in r.stderr: return r
    return r


@pytest.fixture(scope='module')
def two(tmp_path_factory):
    "Every RUNS entry trained by 2 processes (one torchrun), and its folder."
    tmp = tmp_path_factory.mktemp('two')
    r = torchrun(*[f"{_write(tmp, n, c)}{',' + k if k else ''}" for n, (c, k) in RUNS.items()])
    assert r.returncode == 0, r.stderr[-4000:]
    return tmp


def one(tmp, name):
    "The same run on one process, in this process."
    c, kind = RUNS[name]
    cfg = TrainConfig(**{**c, 'out_dir': str(tmp / name)})
    tr = Trainer(cfg) if kind == 'real' else build(cfg)
    tr.fit(); return tmp / name


@pytest.mark.parametrize('name', ['ddp', 'fsdp', 'ddp_noreset', 'fsdp_noreset', 'fsdp_real'])
def test_engine_matches_one_process(two, tmp_path, name):
    "2 processes x 1 row per chunk (DDP or FSDP2) give the losses and weights of 1 process x 2 rows per chunk."
    ref = one(tmp_path, name)
    assert losses(two / name) == pytest.approx(losses(ref), rel=1e-6)
    a, b = weights(ref), weights(two / name)
    assert sorted(a) == sorted(b)                       # the same files and keys under every engine (a tied head once)
    tol = dict(rtol=1e-4, atol=1e-4) if name.endswith('real') else dict(rtol=1e-5, atol=1e-6)
    for k in a: torch.testing.assert_close(b[k], a[k], **tol, msg=k)
    run = json.loads((two / name / 'config.json').read_text())['run']
    assert (run['world_size'], run['dist_mode']) == (2, name.split('_')[0])


def test_kill_and_resume_bit_exact(two, tmp_path):
    "DDP: every rank SIGKILLed after a random step, then --resume, ends bit-identical to the uninterrupted run; FSDP2 resumes bit-identically too."
    kill_at = random.randint(2, 5)
    cut = _write(tmp_path, 'cut', RUNS['ddp_full'][0])
    r = torchrun(cut, TTT_TEST_KILL_AT=str(kill_at))
    assert r.returncode != 0 and max(s for s, _ in list_checkpoints(tmp_path / 'cut')) == kill_at - 1, r.stderr[-3000:]
    shutil.copytree(two / 'fsdp_full', tmp_path / 'fsdp_cut')      # FSDP2: resume from step 3 of a finished run
    for s, p in list_checkpoints(tmp_path / 'fsdp_cut'):
        if s > 3: shutil.rmtree(p)
    fcut = _write(tmp_path, 'fsdp_cut', RUNS['fsdp_full'][0])
    r = torchrun(f'{cut},resume', f'{fcut},resume')
    assert r.returncode == 0, r.stderr[-4000:]
    for full, part in (('ddp_full', 'cut'), ('fsdp_full', 'fsdp_cut')):
        a, b = weights(two / full), weights(tmp_path / part)
        for k in a: assert torch.equal(a[k], b[k]), f'{part}: {k} differs (killed after step {kill_at})'
        assert losses(two / full) == losses(tmp_path / part)


def test_resume_on_another_world_size_refused(two, tmp_path):
    "A checkpoint written by 2 processes does not resume on 1: one line says why and what to do."
    shutil.copytree(two / 'ddp_full', tmp_path / 'run')
    tr = build(TrainConfig(**{**RUNS['ddp_full'][0], 'out_dir': str(tmp_path / 'run')}))
    with pytest.raises(ValueError, match=r'resume on a different world size is not supported: .* written by 2 process\(es\), this run has 1') as e:
        tr.fit(resume=True)
    assert '\n' not in str(e.value)
