"Run folders (issue 12): data-only checkpoints, damaged checkpoints, the lock, the log on resume, config changes, exit codes."
import errno
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from _train_run import build

import ttt_nb.cli as C
from ttt_nb.checkpoint import checkpoint_problem, latest_checkpoint, list_checkpoints, load_pretrained, sha256_file
from ttt_nb.train import TrainConfig

PY = sys.executable


def cfg_(tmp_path, **kw):
    d = dict(steps=4, seq_len=8, batch_size=4, out_dir=str(tmp_path / 'run'), eval_every=0, n_checkpoints=0, save_every=1,
             keep_last=10, progress=False, run_eval=False, warmup_steps=1, wandb='disabled', lr=3e-2, lr_end=3e-3)
    d.update(kw)
    return TrainConfig(**d)


def log_steps(run): return [json.loads(l)['step'] for l in (Path(run) / 'log.jsonl').read_text().splitlines()]
def status(run): return json.loads((Path(run) / 'status.json').read_text())


def stop_at(tr, step, sig=signal.SIGTERM):
    "Make the trainer's model send `sig` to this process during optimizer step `step` + 1."
    fwd = tr.model.forward
    def f(x, **kw):
        if tr.step == step and tr.model.training: os.kill(os.getpid(), sig)
        return fwd(x, **kw)
    tr.model.forward = f; tr.fwd = tr.model
    return tr


class _Payload:
    "Unpickling this creates a file: the stand-in for code an attacker puts into a checkpoint."
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (open, (self.marker, 'w'))


def _fix_checksum(ck, name):
    "Record the edited file's checksum in the checkpoint's meta.json, as a tamperer who knows the format would."
    meta = json.loads((ck / 'meta.json').read_text())
    meta['files'][name] = sha256_file(ck / name); (ck / 'meta.json').write_text(json.dumps(meta))


# --- D1: a run folder is data only

def test_checkpoint_is_data_only(tmp_path):
    "A checkpoint holds JSON and safetensors files only (no pickle), each with a checksum in meta.json."
    cfg = cfg_(tmp_path, steps=2); build(cfg).fit()
    ck = latest_checkpoint(cfg.out_dir)
    names = sorted(p.name for p in ck.iterdir())
    assert all(n.endswith(('.json', '.safetensors')) for n in names), names
    meta = json.loads((ck / 'meta.json').read_text())
    assert sorted(meta['files']) == [n for n in names if n != 'meta.json']


def test_pickled_checkpoint_is_refused_and_runs_nothing(tmp_path):
    "A checkpoint holding a pickle (the old trainer.pt format, or one added by someone) is refused; the payload never runs."
    cfg = cfg_(tmp_path, steps=2); build(cfg).fit()
    ck, marker = latest_checkpoint(cfg.out_dir), tmp_path / 'payload-ran'
    torch.save({'identity': _Payload(str(marker))}, ck / 'trainer.pt')
    torch.save({'rng': _Payload(str(marker))}, ck / 'rank0.pt')
    with pytest.raises(Exception) as e: build(cfg).fit(resume=True)
    assert not marker.exists(), 'the pickle payload ran'
    assert e.type is ValueError and 'holds pickled files (rank0.pt, trainer.pt)' in str(e.value) and 'unpickling can run code' in str(e.value)
    with pytest.raises(ValueError, match='holds pickled files'): build(cfg).load_checkpoint(ck)
    assert not marker.exists()


def test_tampered_state_object_is_refused(tmp_path):
    "Even with checksums fixed up, a state file can only rebuild the model's own state class: no other object is created."
    cfg = cfg_(tmp_path, steps=2); build(cfg).fit()
    ck = latest_checkpoint(cfg.out_dir)
    rk = json.loads((ck / 'rank0.json').read_text())
    rk['states'][0] = {'$object': 'subprocess.Popen', 'fields': {'args': 'touch x'}}
    (ck / 'rank0.json').write_text(json.dumps(rk)); _fix_checksum(ck, 'rank0.json')
    with pytest.raises(ValueError, match=r"damaged rank state.*unexpected \$object entry 'subprocess.Popen'"):
        build(cfg).load_checkpoint(ck)


def test_checkpoint_does_not_touch_live_states(tmp_path):
    "Saving reads the TTT states: the live objects and their tensors stay the same objects with the same values."
    cfg = cfg_(tmp_path, steps=2); tr = build(cfg); tr.fit()
    st = tr.states[0]; h, model = st.h, st.model
    h0 = h.clone()
    tr.save_checkpoint('periodic')
    assert tr.states[0] is st and st.h is h and st.model is model and torch.equal(st.h, h0)
    b = build(cfg); b.load_checkpoint(latest_checkpoint(cfg.out_dir))
    assert type(b.states[0]) is type(st) and b.states[0].model is b.model and torch.equal(b.states[0].h, h0)


# --- D4: damaged checkpoints and crashes

def test_damaged_latest_checkpoint_falls_back(tmp_path):
    "A truncated file in the newest checkpoint: resume warns naming it, uses the one before, and ends bit-identical."
    cfg = cfg_(tmp_path, steps=4); build(cfg).fit()
    ck = latest_checkpoint(cfg.out_dir)
    from safetensors.torch import load_file
    good = {k: v.clone() for k, v in load_file(ck / 'model.safetensors').items()}   # load_file maps the file: copy before damaging it
    b = (ck / 'model.safetensors').read_bytes(); (ck / 'model.safetensors').write_bytes(b[:len(b) // 2])
    (ck.parent / 'step_000003' / 'trainer.json').write_text('{"truncated')
    tr = build(cfg)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always'); s = tr.fit(resume=True)
    w = [str(x.message) for x in w if 'skipping damaged' in str(x.message)]
    assert len(w) == 2 and 'step_000004: model.safetensors does not match' in w[0] and 'step_000003: trainer.json' in w[1]
    assert s['state'] == 'finished' and tr.step == 4
    again = load_file(latest_checkpoint(cfg.out_dir) / 'model.safetensors')
    for k in good: assert torch.equal(good[k], again[k]), k


def test_crash_marks_status_crashed(tmp_path):
    "An exception after the run started (here while restoring the stream) leaves status.json 'crashed' with the error."
    cfg = cfg_(tmp_path, steps=2); build(cfg).fit()
    assert status(cfg.out_dir)['state'] == 'finished'
    tr = build(cfg)
    def broken(sd): raise RuntimeError('stream exploded')
    tr.stream.load_state_dict = broken
    with pytest.raises(RuntimeError, match='stream exploded'): tr.fit(resume=True)
    st = status(cfg.out_dir)
    assert st['state'] == 'crashed' and 'RuntimeError: stream exploded' in st['reason']


# --- D7: the log, and one trainer per folder

def test_log_cut_back_to_checkpoint_on_resume(tmp_path):
    "Steps logged after the last checkpoint are dropped on resume: every step appears once."
    cfg = cfg_(tmp_path, steps=6, save_every=2)
    s = stop_at(build(cfg), 3).fit()
    assert s['step'] == 3 and log_steps(cfg.out_dir) == [0, 1, 2, 3]
    build(cfg).fit(resume=True)
    assert log_steps(cfg.out_dir) == [0, 1, 2, 3, 4, 5, 6]


def _set_trainer_field(ck, key, value=None, drop=False):
    "Change one field of a checkpoint's trainer.json, with its checksum fixed up."
    tj = json.loads((ck / 'trainer.json').read_text())
    if drop: del tj[key]
    else: tj[key] = value
    (ck / 'trainer.json').write_text(json.dumps(tj)); _fix_checksum(ck, 'trainer.json')


def test_cpu_time_sums_over_sessions(tmp_path):
    "The trainer keeps its CPU clock in each checkpoint, like its wall clock: a resumed run counts every session; one resumed from a checkpoint without it reports none."
    for i, (kw, check) in enumerate(((dict(value=1000.0), lambda c: 1000.0 < c < 1100.0), (dict(drop=True), lambda c: c is None))):
        cfg = cfg_(tmp_path / str(i), steps=6, save_every=2)
        s = stop_at(build(cfg), 4).fit()
        assert s['step'] == 4 and 0 < s['cpu_s'] < 100
        ck = latest_checkpoint(cfg.out_dir)
        assert json.loads((ck / 'trainer.json').read_text())['cpu'] > 0
        _set_trainer_field(ck, 'cpu', **kw)
        s = build(cfg).fit(resume=True)
        assert s['step'] == 6 and check(s['cpu_s']), s['cpu_s']


def test_fresh_run_moves_earlier_log_aside(tmp_path):
    "A fresh run where an earlier run left no checkpoint starts a new log; the earlier one is kept beside it."
    cfg = cfg_(tmp_path, steps=6, save_every=0)
    stop_at(build(cfg), 2).fit()
    assert list_checkpoints(cfg.out_dir) == [] and log_steps(cfg.out_dir) == [0, 1, 2]
    with pytest.warns(UserWarning, match='earlier run without a checkpoint'): build(cfg).fit()
    assert log_steps(cfg.out_dir) == [0, 1, 2, 3, 4, 5, 6]
    aside = list(Path(cfg.out_dir).glob('earlier-run-*/log.jsonl'))
    assert len(aside) == 1 and log_steps(aside[0].parent) == [0, 1, 2]


def test_second_trainer_fails_at_once(tmp_path):
    "While one process holds the run folder, a trainer on it fails at once naming the holder; a dead holder's file is no obstacle."
    cfg = cfg_(tmp_path, steps=2)
    run = Path(cfg.out_dir); run.mkdir(parents=True)
    holder = subprocess.Popen([PY, '-c', "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); "
                               "f.write('pid 4242 on testhost'); f.flush(); print('locked', flush=True); time.sleep(120)",
                               str(run / 'trainer.lock')], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'locked'
        t0 = time.time()
        with pytest.raises(Exception, match=r'in use by another trainer \(pid 4242 on testhost\)'): build(cfg).fit()
        assert time.time() - t0 < 10 and not (run / 'status.json').exists() and not (run / 'log.jsonl').exists()
    finally:
        holder.kill(); holder.wait()
    assert build(cfg).fit()['state'] == 'finished'     # the holder died: its lock file is stale, not in the way


# --- D8: resuming with other settings

def test_resume_with_changed_settings_is_refused_unless_allowed(tmp_path):
    "lr, heldout split, eval batches ... differ: refused, config.json untouched; allowed: recorded with the step."
    cfg = cfg_(tmp_path, steps=3); build(cfg).fit()
    conf = (Path(cfg.out_dir) / 'config.json').read_text()
    for kw, msg in ((dict(lr=1e-2), 'lr 0.03 -> 0.01'), (dict(heldout_split='test'), "heldout_split 'validation' -> 'test'"),
                    (dict(eval_batches=2), 'eval_batches 32 -> 2'), (dict(steps=5), 'steps 3 -> 5')):
        with pytest.raises(ValueError, match=f'change what the run measures.*{msg}.*--allow-config-change'):
            build(cfg_(tmp_path, **{'steps': 3, **kw})).fit(resume=True)
    assert (Path(cfg.out_dir) / 'config.json').read_text() == conf
    assert not (Path(cfg.out_dir) / 'config_changes.jsonl').exists()
    b = build(cfg_(tmp_path, steps=5, lr=1e-2, log_every=2))
    with pytest.warns(UserWarning, match='changed settings'): b.fit(resume=True, allow_config_change=True)
    rec = [json.loads(l) for l in (Path(cfg.out_dir) / 'config_changes.jsonl').read_text().splitlines()]
    assert len(rec) == 1 and rec[0]['step'] == 3
    assert rec[0]['changes'] == {'steps': [3, 5], 'lr': [0.03, 0.01], 'log_every': [1, 2]}
    assert json.loads((Path(cfg.out_dir) / 'config.json').read_text())['lr'] == 0.01 and b.step == 5


def test_checkpoint_from_before_a_model_field_resumes():
    "A model config field added later (dropout) is absent from older checkpoints: they resume where the run keeps its old value, not otherwise."
    from ttt_nb.config import TTTConfig
    from ttt_nb.model import TTTForCausalLM
    from ttt_nb.train.runfolder import check_resume, run_identity
    def ident(**kw):
        m = TTTForCausalLM(TTTConfig.from_preset('tiny', vocab_size=40, bos_token_id=None, eos_token_id=None, **kw))
        return run_identity(m, cfg_(Path('.')), 1)
    old = ident(); del old['model_config']['dropout']
    saved = dict(identity=old, config=cfg_(Path('.')).to_dict(), step=3)
    assert check_resume('ckpt', saved, ident(), cfg_(Path('.')).to_dict(), 'none') is None
    assert 'dropout' not in saved['identity']['model_config']      # the saved state is not changed
    with pytest.raises(ValueError, match=r'another configuration \(model_config\).*dropout: 0\.0 vs 0\.1'):
        check_resume('ckpt', saved, ident(dropout=0.1), cfg_(Path('.')).to_dict(), 'none')


def test_harmless_change_needs_no_flag(tmp_path):
    "A setting that does not change what is measured (here log_every) may change on resume; it is still recorded."
    cfg = cfg_(tmp_path, steps=3); build(cfg).fit()
    with pytest.warns(UserWarning, match='changed settings.*log_every 1 -> 3'): build(cfg_(tmp_path, steps=3, log_every=3)).fit(resume=True)
    rec = json.loads((Path(cfg.out_dir) / 'config_changes.jsonl').read_text())
    assert rec['changes'] == {'log_every': [1, 3]} and rec['step'] == 3


# --- D2, D5, D9: the command line's exit status

STANDIN_ARGS = ['--seq-len', '8', '--batch-size', '4', '--warmup-steps', '1', '--eval-every', '0', '--n-checkpoints', '0',
                '--progress', 'false', '--run-eval', 'false', '--wandb', 'disabled', '--lr', '3e-2', '--lr-end', '3e-3']


@pytest.fixture
def standin_main(monkeypatch):
    "ttt_nb.cli.train_main (ttt-train) with the stand-in LM; `patch(tr)` may change each trainer it builds."
    hooks = []
    def factory(cfg):
        tr = build(cfg)
        for h in hooks: h(tr)
        return tr
    monkeypatch.setattr(C, 'Trainer', factory)
    def run(tmp_path, *args, patch=None):
        hooks[:] = [patch] if patch else []
        return C.train_main([*STANDIN_ARGS, '--out-dir', str(tmp_path / 'run'), *args])
    return run


def test_main_returns_exit_status(tmp_path, standin_main, capsys):
    "ttt-train's main returns 0 after a finished run (console scripts call sys.exit(main()))."
    assert standin_main(tmp_path, '--steps', '2') == 0
    assert json.loads(capsys.readouterr().out)['state'] == 'finished'


@pytest.mark.parametrize('sig,code', [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signals_exit_143_and_130(tmp_path, standin_main, sig, code):
    "SIGTERM and SIGINT stop the run cleanly (status 'stopped', resumable) and exit 143 and 130."
    # Python's own SIGINT handler, whatever an earlier test in this worker left installed (a fresh-clone `make test`
    # once saw this run finish all 5 steps: its SIGINT never became a KeyboardInterrupt)
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try: _signals_case(tmp_path, standin_main, sig, code, old)
    finally: signal.signal(signal.SIGINT, old)


def _signals_case(tmp_path, standin_main, sig, code, found):
    rc = standin_main(tmp_path, '--steps', '5', '--save-every', '1', patch=lambda tr: stop_at(tr, 2, sig))
    assert rc == code, f"exit {rc}; the SIGINT handler this test found installed: {found!r}"
    st = status(tmp_path / 'run')
    assert st['state'] == 'stopped' and st['step'] == 2 and ('SIGTERM' if code == 143 else 'SIGINT') in st['reason']
    assert standin_main(tmp_path, '--steps', '5', '--save-every', '1', '--resume') == 0


def test_full_disk_is_one_line(tmp_path, standin_main, capsys):
    "No space left while writing a checkpoint: one line, exit 2, status 'crashed', the earlier checkpoints intact."
    def patch(tr):
        save = tr.save_checkpoint
        def full(kind='milestone'):
            if tr.step >= 2: raise OSError(errno.ENOSPC, 'No space left on device', str(tr.out / 'checkpoints'))
            return save(kind)
        tr.save_checkpoint = full
    assert standin_main(tmp_path, '--steps', '4', '--save-every', '1', patch=patch) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('ttt-train: error: cannot write the run folder') and 'No space left' in err and '\n' not in err
    assert status(tmp_path / 'run')['state'] == 'crashed'
    assert [s for s, _ in list_checkpoints(tmp_path / 'run')] == [1] and checkpoint_problem(latest_checkpoint(tmp_path / 'run')) is None


def test_unwritable_out_dir_is_one_line(tmp_path, standin_main, capsys):
    "An out-dir that cannot be created (read-only parent; as root: a path through a file) is one line, exit 2."
    if os.geteuid() != 0:
        ro = tmp_path / 'ro'; ro.mkdir(); ro.chmod(0o555)
        out = ro / 'run'
    else:                                   # root writes anywhere: a parent that is a file gives the same OSError path
        (tmp_path / 'afile').write_text(''); out = tmp_path / 'afile' / 'run'
    assert C.train_main([*STANDIN_ARGS, '--out-dir', str(out), '--steps', '2']) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('ttt-train: error: cannot write the run folder') and '\n' not in err


@pytest.mark.parametrize('args,msg', [(['--seq-len', '2.5'], 'seq_len=2.5 is not an integer'),
                                      (['--batch-size', 'four'], "batch_size='four' is not a number"),
                                      (['--steps', '2.5'], 'steps=2.5 is not an integer')])
def test_non_integer_settings_are_refused(tmp_path, standin_main, capsys, args, msg):
    "--seq-len 2.5, --batch-size four, --steps 2.5: one error line, exit 2 (never rounded)."
    with pytest.raises(SystemExit) as e: standin_main(tmp_path, *args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f'ttt-train: error: {msg}' in err and 'Traceback' not in err
    assert not (tmp_path / 'run').exists()


# --- D3: weights must fit their config

@pytest.fixture(scope='module')
def tiny_folder(tmp_path_factory):
    from ttt_nb.config import TTTConfig
    from ttt_nb.model import TTTForCausalLM
    d = tmp_path_factory.mktemp('tiny')
    TTTForCausalLM(TTTConfig.from_preset('tiny', vocab_size=257, num_hidden_layers=2)).save_pretrained(d)
    return d


def _variant(src, dst, config=None, weights=None):
    import shutil

    from safetensors.torch import load_file, save_file
    shutil.copytree(src, dst)
    if config: (dst / 'config.json').write_text(json.dumps({**json.loads((src / 'config.json').read_text()), **config}))
    if weights:
        sd = {k: v.clone() for k, v in load_file(src / 'model.safetensors').items()}
        save_file(weights(sd), str(dst / 'model.safetensors'), metadata={'format': 'pt'})
    return dst


def test_load_pretrained_is_strict(tmp_path, tiny_folder):
    "Missing, unexpected or size-mismatched weights are refused with one line naming them (never randomly filled in)."
    assert load_pretrained(tiny_folder).config.num_hidden_layers == 2
    cases = [(dict(config={'num_hidden_layers': 3}), r'missing model\.layers\.2\.'),
             (dict(weights=lambda sd: {**sd, 'model.extra.weight': torch.zeros(2)}), r'unexpected model\.extra\.weight'),
             (dict(weights=lambda sd: {k: v for k, v in sd.items() if 'layers.1.mlp.up_proj' not in k}), r'missing model\.layers\.1\.mlp\.up_proj'),
             (dict(config={'vocab_size': 300}), r'size mismatch model\.embed_tokens\.weight: \(257, \d+\) in the file vs \(300, \d+\)')]
    for i, (kw, msg) in enumerate(cases):
        with pytest.raises(ValueError, match=r'the weights do not fit its config\.json: .*' + msg) as e:
            load_pretrained(_variant(tiny_folder, tmp_path / str(i), **kw))
        assert '\n' not in str(e.value)


def test_truncated_weights_are_one_line(tmp_path, tiny_folder):
    "A truncated model.safetensors is one ValueError line, not a loader traceback."
    d = _variant(tiny_folder, tmp_path / 't')
    b = (d / 'model.safetensors').read_bytes(); (d / 'model.safetensors').write_bytes(b[:len(b) // 3])
    with pytest.raises(ValueError, match=r'cannot read the weights \(SafetensorError: .*truncated or damaged weight file') as e: load_pretrained(d)
    assert '\n' not in str(e.value)
