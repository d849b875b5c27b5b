#!/usr/bin/env python
"""Convert between notebooks and percent-format Python drafts, so notebooks can be written as text.

    python tools/nbpy.py to-nb draft.py nbs/06_model.ipynb     # `# %%` code cells, `# %% [markdown]` prose
    python tools/nbpy.py to-py nbs/06_model.ipynb draft.py     # the other way, for editing
    python tools/nbpy.py to-md nbs/index.ipynb README.md       # README from the index notebook (no Quarto needed)

A code cell whose first line is `# %% tags=["parameters"]` gets that papermill tag. Outputs are dropped:
notebooks in nbs/ are committed clean (nbdev_clean). The notebook stays the source of truth.
"""
import hashlib, json, re, sys
from pathlib import Path

_HDR = re.compile(r'^# %%(?P<md> \[markdown\])?(?: tags=(?P<tags>\[.*\]))?\s*$')

def py_to_cells(text):
    cells, cur = [], None
    for line in text.splitlines():
        m = _HDR.match(line)
        if m:
            if cur is not None: cells.append(cur)
            cur = dict(md=bool(m['md']), tags=json.loads(m['tags']) if m['tags'] else [], lines=[])
            continue
        if cur is None: cur = dict(md=False, tags=[], lines=[])
        cur['lines'].append(line)
    if cur is not None: cells.append(cur)
    out = []
    for c in cells:
        lines = c['lines']
        while lines and not lines[-1].strip(): lines.pop()
        while lines and not lines[0].strip(): lines.pop(0)
        if not lines: continue
        if c['md']: lines = [l[2:] if l.startswith('# ') else l[1:] if l.startswith('#') else l for l in lines]
        src = [l + '\n' for l in lines]; src[-1] = src[-1].rstrip('\n')
        cell = dict(cell_type='markdown' if c['md'] else 'code', metadata={}, source=src)
        if c['tags']: cell['metadata']['tags'] = c['tags']
        if not c['md']: cell.update(execution_count=None, outputs=[])
        out.append(cell)
    return out

def _assign_ids(cells, old_nb):
    "Cell ids: a cell whose source is unchanged keeps its old id; a new one gets an id from its source, so exports are stable."
    old = {}
    for c in (old_nb or {}).get('cells', []):
        if c.get('id'): old.setdefault(''.join(c['source']), c['id'])
    used = set()
    for c in cells:
        src = ''.join(c['source'])
        cid = old.get(src) or hashlib.sha1(src.encode()).hexdigest()[:8]
        while cid in used: cid = hashlib.sha1((cid + src).encode()).hexdigest()[:8]
        used.add(cid); c['id'] = cid
    return cells

def to_nb(src, dst):
    old = json.loads(Path(dst).read_text()) if Path(dst).exists() else None
    nb = dict(cells=_assign_ids(py_to_cells(Path(src).read_text()), old), nbformat=4, nbformat_minor=5,
              metadata=dict(kernelspec=dict(display_name='python3', language='python', name='python3')))
    Path(dst).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')

def to_py(src, dst):
    nb = json.loads(Path(src).read_text())
    parts = []
    for c in nb['cells']:
        s = ''.join(c['source'])
        tags = c.get('metadata', {}).get('tags')
        t = f' tags={json.dumps(tags)}' if tags else ''
        if c['cell_type'] == 'markdown':
            parts.append(f'# %% [markdown]{t}\n' + '\n'.join('# ' + l if l else '#' for l in s.splitlines()))
        else: parts.append(f'# %%{t}\n' + s)
    Path(dst).write_text('\n\n'.join(parts) + '\n')

def to_md(src, dst):
    "Markdown cells as they are, code cells as python blocks; `#|` directives and hidden cells dropped."
    nb = json.loads(Path(src).read_text())
    parts = ['<!-- generated from nbs/index.ipynb by tools/nbpy.py to-md: edit the notebook, not this file -->']
    for c in nb['cells']:
        s = ''.join(c['source']).strip()
        if c['cell_type'] == 'markdown': parts.append(s); continue
        lines = s.splitlines()
        if any(l.strip() in ('#| hide', '#|hide') for l in lines): continue
        code = '\n'.join(l for l in lines if not l.startswith('#|')).strip()
        if code: parts.append('```python\n' + code + '\n```')
    Path(dst).write_text('\n\n'.join(parts) + '\n')

if __name__ == '__main__':
    cmds = {'to-nb': to_nb, 'to-py': to_py, 'to-md': to_md}
    if len(sys.argv) != 4 or sys.argv[1] not in cmds: sys.exit(__doc__)
    cmds[sys.argv[1]](sys.argv[2], sys.argv[3])
