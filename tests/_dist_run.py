"Several trainer runs one after another in the same torchrun processes (one start-up): _dist_run.py CONFIG.json[,resume][,real] ..."
import gc
import json
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import torch

torch.set_num_threads(1)
from _train_run import build

from ttt_nb.train import TrainConfig, Trainer

if __name__ == '__main__':
    ws, rank = int(os.environ.get('WORLD_SIZE', 1)), int(os.environ.get('RANK', 0))
    kill_at = int(os.environ.get('TTT_TEST_KILL_AT', 0))   # SIGKILL every rank right after this optimizer step (before its checkpoint)
    for arg in sys.argv[1:]:
        path, *flags = arg.split(',')
        cfg = TrainConfig.from_dict(json.loads(Path(path).read_text()))
        tr = Trainer(cfg) if 'real' in flags else build(cfg, ws, rank)   # the real tiny TTT model and data, or the stand-in
        if kill_at:
            step = tr.train_step
            def killing(step=step, tr=tr):
                out = step()
                if tr.step == kill_at: os.kill(os.getpid(), signal.SIGKILL)
                return out
            tr.train_step = killing
        s = tr.fit(resume='resume' in flags)
        if rank == 0: print(json.dumps({k: s[k] for k in ('state', 'step', 'final_loss')}), flush=True)
        dist = tr.dist; dist.barrier()
        del tr; gc.collect()      # free this run's engine (DDP reducer, FSDP mesh) on every rank in step, not whenever the GC happens to
        dist.barrier()
    dist.close()
