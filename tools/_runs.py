"""What the experiment tools under tools/ share: this process's CPU seconds, and training a config to its end."""
from __future__ import annotations

import resource


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
