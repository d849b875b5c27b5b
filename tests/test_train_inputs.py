"Bad input to the trainer: clear errors that name the problem (empty corpus, W longer than every document, missing tokenizer)."
import pytest
from _train_standin import StandinLM

from ttt_nb.train import TrainConfig, Trainer


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv('TTT_NB_CACHE', str(tmp_path / 'cache'))


def cfg_(tmp_path, **kw):
    d = dict(steps=2, warmup_steps=1, seq_len=16, batch_size=2, out_dir=str(tmp_path / 'run'), progress=False, run_eval=False, wandb='disabled',
             split='all', heldout_split='all')
    d.update(kw); return TrainConfig(**d)


def test_empty_corpus(tmp_path, cache):
    f = tmp_path / 'empty.txt'; f.write_text('')
    with pytest.raises(ValueError, match=r'empty'):
        Trainer(cfg_(tmp_path, corpus=str(f)), model=StandinLM(257))


def test_window_longer_than_every_document(tmp_path, cache):
    d = tmp_path / 'docs'; d.mkdir()
    for i in range(6): (d / f'{i}.txt').write_text(f'short document {i}\n' * 3)
    with pytest.raises(ValueError, match=r'W=128 is too long for every document'):
        Trainer(cfg_(tmp_path, corpus=str(d), seq_len=128), model=StandinLM(257))


def test_missing_tokenizer_folder(tmp_path, cache):
    with pytest.raises(FileNotFoundError, match=r'tokenizer folder not found: .*no-such-tokenizer'):
        Trainer(cfg_(tmp_path, tokenizer=str(tmp_path / 'no-such-tokenizer')), model=StandinLM(257))


def test_missing_corpus_and_pretrained(tmp_path, cache):
    with pytest.raises(FileNotFoundError, match=r'corpus path does not exist'):
        Trainer(cfg_(tmp_path, corpus=str(tmp_path / 'nothing-here')), model=StandinLM(257))
    with pytest.raises(FileNotFoundError, match=r'init_from: no checkpoint at'):
        Trainer(cfg_(tmp_path, corpus='python-stdlib', split='train', heldout_split='validation', init_from=str(tmp_path / 'nope')))


def test_window_not_multiple_of_mini_batch(tmp_path):
    with pytest.raises(ValueError, match=r'seq_len=18 must be a multiple of the TTT mini_batch_size=4'):
        Trainer(cfg_(tmp_path, corpus='python-stdlib', split='train', heldout_split='validation', seq_len=18), model=StandinLM(257))


def test_cli_error_is_one_clear_line(tmp_path, capsys):
    "ttt-train reports bad input as `ttt-train: error: ...` with exit status 2 (no traceback)."
    from ttt_nb.cli import train_main as main
    assert main(['--tokenizer', str(tmp_path / 'missing-tok'), '--out-dir', str(tmp_path / 'run'), '--steps', '2', '--warmup-steps', '1',
                 '--wandb', 'disabled']) == 2
    err = capsys.readouterr().err
    assert err.startswith('ttt-train: error: tokenizer folder not found') and 'Traceback' not in err
    with pytest.raises(SystemExit):
        main([str(tmp_path / 'no-such-config.yaml')])
    assert 'config file not found' in capsys.readouterr().err


def test_unknown_corpus_option(tmp_path, cache):
    "An option the corpus loader does not take (`name?key=value`) is a ValueError naming it, not a TypeError traceback."
    with pytest.raises(ValueError, match=r"unknown corpus option 'bogus'"):
        Trainer(cfg_(tmp_path, corpus='python-stdlib?bogus=1', split='train', heldout_split='validation'), model=StandinLM(257))


def test_eval_batches_zero_skips_heldout(tmp_path, cache):
    "eval_batches=0 means no held-out loss: null in the log and summary, never NaN; early stopping without it is refused."
    import json
    cfg = cfg_(tmp_path, corpus='python-stdlib', split='train', heldout_split='validation', eval_batches=0, eval_every=1, n_checkpoints=0)
    s = Trainer(cfg, model=StandinLM(257)).fit()
    assert s['state'] == 'finished' and s['heldout_loss'] is None and s['best_heldout_loss'] is None
    def no_nan(c): raise AssertionError(f'{c} written')
    run = tmp_path / 'run'
    json.loads((run / 'train_summary.json').read_text(), parse_constant=no_nan)
    for line in (run / 'log.jsonl').read_text().splitlines(): assert json.loads(line, parse_constant=no_nan)['heldout_loss'] is None
    with pytest.raises(ValueError, match='needs a held-out loss'):
        Trainer(cfg_(tmp_path, eval_batches=0, patience=2), model=StandinLM(257))


def test_steps_must_be_an_integer():
    "--steps 2.5 is refused, not rounded to 3 (YAML's 1e3 and 4.0 are whole numbers and accepted)."
    with pytest.raises(ValueError, match='steps=2.5 is not an integer'): TrainConfig(steps=2.5)
    with pytest.raises(ValueError, match='seq_len=True is not an integer'): TrainConfig(seq_len=True)
    assert (TrainConfig(steps='1e3').steps, TrainConfig(steps=4.0).steps) == (1000, 4)
