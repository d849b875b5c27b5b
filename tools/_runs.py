"""What the experiment tools under tools/ share: this process's CPU seconds, training a config to its end, and the
record of where a result was measured (machine, load, commit)."""
from __future__ import annotations

import os
import resource
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cpu_seconds() -> float:
    "User + system CPU seconds of this process so far."
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def fit_to_end(trainer, name:str, resume:bool=False, hint:str='') -> dict:
    "Train to the last step; a run that stopped early ends the tool with one line and writes no result."
    summ = trainer.fit(resume=resume)
    if summ.get('state') != 'finished':
        raise SystemExit(f"{name}: training ended {summ.get('state')!r} at step {summ.get('step')} ({summ.get('reason')}): "
                         "no result written" + (f"; {hint}" if hint else ''))
    return summ


def provenance(**extra) -> dict:
    "Where a result was measured: `hardware` (`ttt_nb.core.hardware_info`, the load average at the end, and `extra`) and `commit`."
    from ttt_nb.core import hardware_info
    hw = dict(hardware_info(), load_avg_end=os.getloadavg(), **extra)
    commit = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return dict(hardware=hw, commit=commit)
