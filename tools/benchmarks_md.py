#!/usr/bin/env python
"Assemble BENCHMARKS.md from the fragments that each benchmark script writes (benchmarks/*.md)."
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = [('ref_cpu', 'Reference TTT layers on CPU vs the official implementation (issue 2)'),
         ('train', 'Training throughput and the tiny demonstration run (issue 3)'),
         ('compile', 'torch.compile for training on CPU, paired against eager (issue 15)'),
         ('eval', 'Evaluator cost (issue 8)'),
         ('generate', 'Streaming generation (issue 6)'),
         ('kernels', 'Triton kernels (issue 5)'),
         ('regime', 'The regime sweep on python-stdlib: CPU models against the 5-gram (issue 15)'),
         ('regime-wikitext', 'The regime sweep on WikiText-2 raw (issue 15)'),
         ('gpu_check', 'GPU check: everything a GPU run measures, in one command (issue 16)')]
HEAD = """# Benchmarks

Every number here was measured in this repository by the command printed under it, on the hardware printed
next to it; raw numbers are in `benchmarks/results/*.json`. `make bench` re-runs the CPU benchmarks and
rewrites this file (`python tools/benchmarks_md.py`). No GPU has been available to this project so far: every GPU
figure is **not measured**. One command measures all of them on a GPU machine, `bash tools/gpu_run.sh` (about 8 minutes
on one H100; see the last section, "GPU check", for what to copy along and where the results land).
The CPU machine has 2 cores; when it was shared with other jobs the sections say so and report CPU time or the
load average, and ratios rather than absolute times are the point.
"""

def _demote(body:str, top:int=3) -> str:
    "Shift the fragment's headings so that its highest one sits at level `top` (under this file's `##`)."
    lines, fence = body.splitlines(), False
    levels = []
    for l in lines:
        if l.startswith('```'): fence = not fence
        elif not fence and l.startswith('#'): levels.append(len(l) - len(l.lstrip('#')))
    shift = top - min(levels) if levels else 0
    out, fence = [], False
    for l in lines:
        if l.startswith('```'): fence = not fence
        elif not fence and l.startswith('#') and shift > 0: l = '#' * shift + l
        out.append(l)
    return '\n'.join(out)

def main():
    parts = [HEAD]
    for name, title in ORDER:
        f = ROOT / 'benchmarks' / f'{name}.md'
        body = f.read_text().strip() if f.exists() else '_not measured yet_'
        body = _demote(body)
        parts.append(f'## {title}\n\n{body}\n')
    (ROOT / 'BENCHMARKS.md').write_text('\n'.join(parts))

if __name__ == '__main__': main()
