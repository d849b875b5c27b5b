#!/usr/bin/env python
"Assemble BENCHMARKS.md from the fragments that each benchmark script writes (benchmarks/*.md)."
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = [('ref_cpu', 'Reference TTT layers on CPU vs the official implementation (issue 2)'),
         ('train', 'Training throughput and the tiny demonstration run (issue 3)'),
         ('eval', 'Evaluator cost (issue 8)'),
         ('generate', 'Streaming generation (issue 6)'),
         ('kernels', 'Triton kernels (issue 5)')]
HEAD = """# Benchmarks

Every number here was measured in this repository by the command printed under it, on the hardware printed
next to it; raw numbers are in `benchmarks/results/*.json`. `make bench` re-runs the CPU benchmarks and
rewrites this file (`python tools/benchmarks_md.py`). No GPU was lent to the sessions that wrote these
sections: every GPU figure is **not measured**, and the scripts that would measure it are named in each section.
The CPU machine has 2 cores; when it was shared with other jobs the sections say so and report CPU time or the
load average, and ratios rather than absolute times are the point.
"""

def main():
    parts = [HEAD]
    for name, title in ORDER:
        f = ROOT / 'benchmarks' / f'{name}.md'
        body = f.read_text().strip() if f.exists() else '_not measured yet_'
        body = '\n'.join(('#' + l) if l.startswith('#') else l for l in body.splitlines())  # demote headings
        parts.append(f'## {title}\n\n{body}\n')
    (ROOT / 'BENCHMARKS.md').write_text('\n'.join(parts))

if __name__ == '__main__': main()
