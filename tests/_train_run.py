"Run the trainer on the stand-in LM in its own process (two-process test under torchrun): _train_run.py CONFIG.json [--resume]."
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import torch

torch.set_num_threads(1)
from _train_standin import StandinLM, StandinStream, standin_docs

from ttt_nb.train import TrainConfig, Trainer


def build(cfg, ws=1, rank=0):
    torch.manual_seed(cfg.seed)
    docs = standin_docs()
    stream = StandinStream(docs, cfg.batch_size // ws, cfg.seq_len, seed=cfg.seed, rank=rank, world_size=ws)
    held = [next(StandinStream(docs, 4, cfg.seq_len, seed=99, rank=0, world_size=1)) for _ in range(2)]
    return Trainer(cfg, model=StandinLM(), stream=stream, heldout=held)

if __name__ == '__main__':
    cfg = TrainConfig.from_dict(json.loads(Path(sys.argv[1]).read_text()))
    ws, rank = int(os.environ.get('WORLD_SIZE', 1)), int(os.environ.get('RANK', 0))
    tr = build(cfg, ws, rank)
    delay = float(os.environ.get('TTT_TEST_STEP_DELAY', 0))
    if delay:  # slow each step down so that a kill lands mid-run
        import time
        step = tr.train_step
        tr.train_step = lambda: (time.sleep(delay), step())[1]
    s = tr.fit(resume='--resume' in sys.argv)
    tr.dist.close()
    print(json.dumps({k: s[k] for k in ('state', 'step', 'final_loss')}))
