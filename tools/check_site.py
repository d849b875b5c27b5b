#!/usr/bin/env python
"""Check the results site without Quarto: every page that _quarto.yml names exists, and every figure, link and
include those pages name exists (relative to the page); executed notebooks hold their figures as decodable
embedded PNGs and every `attachment:` they use is attached.

    python tools/check_site.py [ROOT]     # ROOT holds _quarto.yml (default: the repository root)

Exit status 0 when the site is whole, 1 with one line per problem otherwise.
"""
import base64, glob, json, re, sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import yaml

_IMG = re.compile(r'!\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')
_LINK = re.compile(r'(?<!!)\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')
_HTML = re.compile(r'<(?:img|a)\s[^>]*(?:src|href)\s*=\s*"([^"]+)"', re.I)
_INCLUDE = re.compile(r'\{\{<\s*include\s+([^\s>]+)\s*>\}\}')
_PAGE_EXT = ('.qmd', '.md', '.ipynb')


def _local(target: str) -> str | None:
    "The local path a link points to, or None for external links, anchors and mail."
    u = urlparse(target)
    if u.scheme or target.startswith(('#', '//', 'mailto:')): return None
    return unquote(u.path) or None


def _nav_hrefs(node) -> list:
    "Every `href`/`file` in the website navigation (navbar, sidebar, page-footer), recursively."
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ('href', 'file') and isinstance(v, str): out.append(v)
            else: out += _nav_hrefs(v)
    elif isinstance(node, list):
        for v in node:
            out += [v] if isinstance(v, str) and v.endswith(_PAGE_EXT) else _nav_hrefs(v)
    return out


def site_pages(root: Path) -> tuple[list, list]:
    "The pages the project names (render list, expanded; navigation), and problems found while listing them."
    cfg_path = root / '_quarto.yml'
    if not cfg_path.exists(): return [], [f'{cfg_path}: missing']
    cfg = yaml.safe_load(cfg_path.read_text()) or {}
    problems, pages = [], []
    proj = cfg.get('project') or {}
    if proj.get('type') != 'website': problems.append(f"_quarto.yml: project.type is {proj.get('type')!r}, not 'website'")
    ex = cfg.get('execute') or {}
    if ex.get('enabled') is not False and ex.get('freeze') not in (True, 'auto'):
        problems.append('_quarto.yml: the site must not execute code (execute: enabled: false, or freeze)')
    for pat in proj.get('render') or []:
        if pat.startswith('!'): continue
        hits = sorted(glob.glob(str(root / pat), recursive=True))
        if not hits: problems.append(f"_quarto.yml: render entry {pat!r} matches no file")
        pages += [Path(h) for h in hits]
    for href in _nav_hrefs(cfg.get('website') or {}):
        if _local(href) is None: continue
        hits = [Path(h) for h in sorted(glob.glob(str(root / _local(href)), recursive=True))]
        if not hits: problems.append(f"_quarto.yml: navigation names {href!r}, which does not exist")
        pages += [p for p in hits if p not in pages]
    if not pages: problems.append('_quarto.yml: no page to render')
    return pages, problems


def _check_targets(page: Path, text: str, where: str, root: Path) -> list:
    problems = []
    for kind, rx in (('figure', _IMG), ('link', _LINK), ('link', _HTML), ('include', _INCLUDE)):
        for m in rx.finditer(text):
            t = m.group(1)
            if t.startswith('attachment:'): continue
            loc = _local(t)
            if loc is None: continue
            target = (root / loc.lstrip('/')) if loc.startswith('/') else (page.parent / loc)
            if not target.exists(): problems.append(f"{where}: {kind} {t!r} is missing ({target})")
    return problems


def check_notebook(page: Path, root: Path) -> list:
    "Markdown cells' figures and links, attachments, and embedded PNG outputs of an executed notebook."
    rel = page.relative_to(root)
    try: nb = json.loads(page.read_text())
    except (OSError, ValueError) as e: return [f'{rel}: not a readable notebook ({e})']
    problems, n_png = [], 0
    for i, c in enumerate(nb.get('cells', [])):
        src = ''.join(c.get('source', []))
        if c.get('cell_type') == 'markdown':
            problems += _check_targets(page, src, f'{rel} cell {i}', root)
            for a in re.findall(r'attachment:([^)\s"]+)', src):
                if a not in (c.get('attachments') or {}): problems.append(f"{rel} cell {i}: attachment {a!r} is not attached")
        for o in c.get('outputs', []) or []:
            data = o.get('data') or {}
            if 'image/png' in data:
                png = data['image/png']
                try:
                    raw = base64.b64decode(''.join(png) if isinstance(png, list) else png, validate=False)
                    if not raw.startswith(b'\x89PNG'): raise ValueError('not a PNG')
                    n_png += 1
                except Exception as e: problems.append(f"{rel} cell {i}: an embedded figure is not a valid PNG ({e})")
            if 'text/markdown' in data:
                md = data['text/markdown']
                problems += _check_targets(page, ''.join(md) if isinstance(md, list) else md, f'{rel} cell {i} output', root)
            if o.get('output_type') == 'error': problems.append(f"{rel} cell {i}: holds an error output ({o.get('ename')})")
    if n_png == 0: problems.append(f'{rel}: an executed notebook page without any figure (was it executed?)')
    return problems


def check_site(root='.') -> list:
    "Every problem of the site under `root` (empty when whole)."
    root = Path(root).resolve()
    pages, problems = site_pages(root)
    for p in pages:
        if not p.exists(): problems.append(f'{p}: missing'); continue
        if p.suffix == '.ipynb': problems += check_notebook(p, root)
        elif p.suffix in ('.qmd', '.md'):
            text = re.sub(r'```.*?```', '', p.read_text(), flags=re.S)   # code blocks name no files
            problems += _check_targets(p, text, str(p.relative_to(root)), root)
    return problems


if __name__ == '__main__':
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1])
    probs = check_site(root)
    for q in probs: print(q)
    pages, _ = site_pages(root.resolve())
    print(f"{'FAILED' if probs else 'ok'}: {len(pages)} pages checked, {len(probs)} problems")
    sys.exit(1 if probs else 0)
