#!/usr/bin/env python
"""README.md from nbs/index.ipynb, without Quarto (nbdev_readme renders through Quarto, which these machines lack).

    python tools/readme.py nbs/index.ipynb README.md

Markdown cells as they are, code cells as python blocks; `#|` directives and `#| hide` cells dropped.
The notebooks are written as notebooks: there is no converter from Python drafts.
"""
import json
import sys
from pathlib import Path


def to_md(src, dst):
    "Write `dst` (markdown) from the notebook `src`."
    nb = json.loads(Path(src).read_text())
    parts = ['<!-- generated from nbs/index.ipynb by tools/readme.py: edit the notebook, not this file -->']
    for c in nb['cells']:
        s = ''.join(c['source']).strip()
        if c['cell_type'] == 'markdown':
            parts.append(s)
            continue
        lines = s.splitlines()
        if any(line.strip() in ('#| hide', '#|hide') for line in lines): continue
        code = '\n'.join(line for line in lines if not line.startswith('#|')).strip()
        if code: parts.append('```python\n' + code + '\n```')
    Path(dst).write_text('\n\n'.join(parts) + '\n')


if __name__ == '__main__':
    if len(sys.argv) != 3: sys.exit(__doc__)
    to_md(sys.argv[1], sys.argv[2])
