"Shared pytest setup: offline, no wandb, small sizes, one torch thread per worker, paths to ../shared."
import os
import tempfile
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
os.environ.setdefault('WANDB_MODE', 'disabled')
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
os.environ.setdefault('IN_TEST', '1')
# token and tokenizer caches of a test session go to a private folder, never to ~/.cache/ttt_nb
os.environ.setdefault('TTT_NB_CACHE', tempfile.mkdtemp(prefix='ttt_nb-test-cache-'))
import pytest
import torch

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / 'shared'

@pytest.fixture(scope='session')
def shared_dir():
    "The ../shared folder beside the checkout; tests that need it skip cleanly when it is absent."
    if not SHARED.is_dir(): pytest.skip('../shared is not present beside this checkout')
    return SHARED

def pytest_configure(config):
    config.addinivalue_line('markers', 'gpu: needs a CUDA device (skipped on CPU machines)')
    config.addinivalue_line('markers', 'slow: takes more than a few seconds')

def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available(): return
    skip = pytest.mark.skip(reason='no CUDA device on this machine')
    for it in items:
        if 'gpu' in it.keywords: it.add_marker(skip)
