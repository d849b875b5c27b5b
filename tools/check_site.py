#!/usr/bin/env python
"""Check the results site without Quarto: every page that _quarto.yml names exists, and every figure, link and
include those pages name exists (relative to the page); executed notebooks hold their figures as decodable
embedded PNGs and every `attachment:` they use is attached. Also what renders without error but wrong: a glob that is
an item of a `contents:` list (Quarto expands a glob only when `contents:` is that bare string), two pages with the
same title, and emphasis markup that cannot render as written (an intraword `*`, as in `r*W`, or an odd number of
`*` delimiters in a paragraph), and a line of a code block in a page longer than the body column holds
(CODE_COLS characters: at 1300 px the column is about 740 px, some 80 characters of code, and a longer line is
wrapped or scrolled instead of read as written), and a JSON file under reports/ that is not strict JSON (NaN or Infinity,
which Python writes and reads but a browser's parser refuses; undefined numbers are written as null).

Warnings, which do not fail the check unless --strict: a figure with ink on its outermost row or column of pixels,
i.e. an axis label, tick label or title cut off at the edge of the image (the drawing's own margins are too small).

    python tools/check_site.py [ROOT] [--strict]   # ROOT holds _quarto.yml (default: the repository root)

Exit status 0 when the site is whole, 1 with one line per problem otherwise (warnings are printed either way).
"""
import base64
import glob
import io
import json
import re
import sys
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


_GLOB = re.compile(r'[*?\[]')


def _nav_hrefs(node) -> list:
    "Every `href`/`file` in the website navigation (navbar, sidebar, page-footer), recursively; a bare `contents:` string too."
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ('href', 'file', 'contents') and isinstance(v, str): out.append(v)
            else: out += _nav_hrefs(v)
    elif isinstance(node, list):
        for v in node:
            out += [v] if isinstance(v, str) and v.endswith(_PAGE_EXT) else _nav_hrefs(v)
    return out


def glob_items(website: dict) -> list:
    "Problems: a glob that is an item of a `contents:` list (Quarto lists nothing for it) instead of the bare string."
    out = []
    def walk(node, where):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == 'contents' and isinstance(v, list):
                    for item in v:
                        t = item if isinstance(item, str) else (item.get('href') or item.get('file')) if isinstance(item, dict) else None
                        if isinstance(t, str) and _GLOB.search(t):
                            out.append(f"_quarto.yml: {where}.contents lists the glob {t!r} as an item; Quarto expands a glob only "
                                       f"when contents: is that bare string (contents: {t})")
                walk(v, f'{where}.{k}')
        elif isinstance(node, list):
            for i, v in enumerate(node): walk(v, f'{where}[{i}]')
    walk(website, 'website')
    return out


def page_title(page: Path) -> str | None:
    "The title Quarto gives a page: front matter `title` (a .qmd's header, a notebook's first raw cell), else the first H1."
    try:
        if page.suffix == '.ipynb':
            cells = json.loads(page.read_text()).get('cells', [])
            texts = [(c.get('cell_type'), ''.join(c.get('source', []))) for c in cells]
        else: texts = [('raw', page.read_text())]
    except (OSError, ValueError): return None
    if texts and texts[0][0] == 'raw':
        m = re.match(r'\s*---\n(.*?)\n---', texts[0][1], re.S)
        if m:
            try: t = (yaml.safe_load(m[1]) or {}).get('title')
            except yaml.YAMLError: t = None
            if t: return str(t)
    for kind, text in texts:
        if kind == 'markdown':
            m = re.search(r'^# (.+)$', text, re.M)
            if m: return m[1].strip()
        if kind == 'raw' and page.suffix != '.ipynb':
            m = re.search(r'^# (.+)$', re.sub(r'```.*?```', '', text, flags=re.S), re.M)
            if m: return m[1].strip()
    return None


def emphasis_problems(text: str) -> list:
    "Markup that Pandoc cannot render as written: an intraword `*` (r*W opens or closes emphasis), an odd number of `**` or of `*` delimiters in a paragraph."
    out = []
    text = re.sub(r'```.*?```|<!--.*?-->', '', text, flags=re.S)   # code blocks and HTML comments are not markup
    for para in re.split(r'\n\s*\n', text):
        p = re.sub(r'`[^`]*`', '', para).replace('\\*', '')
        p = re.sub(r'^\s*\* ', '', p, flags=re.M)          # list bullets
        strong, em, bad = 0, 0, []
        for m in re.finditer(r'\*+', p):
            before = p[m.start() - 1] if m.start() else ' '
            after = p[m.end()] if m.end() < len(p) else ' '
            if before.isspace() and after.isspace(): continue   # a lone `*` between spaces is literal
            if before.isalnum() and after.isalnum(): bad.append(p[max(0, m.start() - 12):m.end() + 12])
            strong += len(m[0]) // 2; em += len(m[0]) % 2
        snippet = ' '.join(para.split())[:70]
        out += [f"intraword '*' in {b.strip()!r} (write r×W, or escape it as \\*)" for b in bad]
        if (strong % 2 or em % 2) and not bad: out.append(f"unbalanced '*' emphasis in {snippet!r}")
    return out


def table_problems(text: str) -> list:
    "Pipe tables Pandoc cannot read as tables: a delimiter row (`|---|...`) with no header row above it, or a header whose cell count differs from the delimiter's; the rows then render as literal text."
    lines = re.sub(r'```.*?```', lambda m: '\n' * m[0].count('\n'), text, flags=re.S).splitlines()  # code out, line numbers kept
    out = []
    for i, line in enumerate(lines):
        if not re.fullmatch(r'\s*\|(\s*:?-{3,}:?\s*\|)+\s*', line): continue
        head, delim = (lines[i - 1] if i else '').strip(), line.strip()
        if not head.startswith('|'): out.append(f"a table without a header row (its delimiter row is line {i + 1}): {delim[:40]!r}")
        elif head.count('|') != delim.count('|'):
            out.append(f"a table header with {head.count('|') - 1} cells over a delimiter row of {delim.count('|') - 1}: {head[:50]!r}")
    return out


CODE_COLS = 80


def css_problems(css: str, where: str) -> list:
    "A stylesheet rule that keeps every table cell on one line (`td`/`th` with `white-space: nowrap`): long cells then push tables past the body column."
    out = []
    css = re.sub(r'/\*.*?\*/', '', css, flags=re.S)
    for sel, body in re.findall(r'([^{}]+)\{([^{}]*)\}', css):
        if not re.search(r'white-space\s*:\s*nowrap', body): continue
        for one in sel.split(','):
            last = re.split(r'[\s>+~]+', one.strip())[-1]
            if re.fullmatch(r'(?:table\b.*)?(?:td|th)', last) or last in ('td', 'th'):
                out.append(f"{where}: '{one.strip()} {{ white-space: nowrap }}' keeps every table cell on one line, so a "
                           f"long cell pushes its table past the body column")
    return out


def code_line_problems(text: str) -> list:
    "Lines of fenced code blocks longer than CODE_COLS characters: cut off (scrolled) or wrapped at page width."
    out = []
    for block in re.findall(r'^```[^\n]*\n(.*?)^```', text, flags=re.S | re.M):
        for line in block.splitlines():
            if len(line) > CODE_COLS:
                out.append(f"a code line of {len(line)} characters (at most {CODE_COLS} fit the page): {line[:50]!r}...")
    return out


def figure_edge_problems(raw: bytes) -> list:
    """Edges of a PNG (left, right, top, bottom) with ink on their outermost pixels: text or lines cut off there.
    Ink is a pixel that differs from the median colour of the image's border by more than 100 of 255 grey levels;
    two such pixels on one edge count (one can be antialiasing). Needs Pillow (a matplotlib dependency); without it,
    nothing is checked."""
    try:
        from PIL import Image
    except ImportError: return []
    im = Image.open(io.BytesIO(raw))
    if im.mode in ('RGBA', 'LA', 'P'):
        im = im.convert('RGBA'); bg = Image.new('RGBA', im.size, (255, 255, 255, 255)); bg.alpha_composite(im); im = bg
    im = im.convert('L'); w, h = im.size; px = im.load()
    edges = {'left': [px[0, y] for y in range(h)], 'right': [px[w - 1, y] for y in range(h)],
             'top': [px[x, 0] for x in range(w)], 'bottom': [px[x, h - 1] for x in range(w)]}
    ring = sorted(v for e in edges.values() for v in e)
    base = ring[len(ring) // 2]
    return [name for name, e in edges.items() if sum(abs(v - base) > 100 for v in e) >= 2]


def _edge_warning(where: str, raw: bytes) -> list:
    cut = figure_edge_problems(raw)
    return [f"{where}: figure cut off at its {' and '.join(cut)} edge (ink on the outermost pixels: a label or title "
            f"does not fit the drawing; redraw it with room for its text)"] if cut else []


def figure_warnings(root='.') -> list:
    "Figures of the site (embedded PNG outputs of notebooks, PNG files that pages show) cut off at an edge."
    root = Path(root).resolve()
    pages, _ = site_pages(root)
    out = []
    for p in pages:
        if not p.exists(): continue
        rel = p.relative_to(root)
        if p.suffix == '.ipynb':
            try: nb = json.loads(p.read_text())
            except ValueError: continue
            for i, c in enumerate(nb.get('cells', [])):
                for j, o in enumerate(c.get('outputs', []) or []):
                    png = (o.get('data') or {}).get('image/png')
                    if png is None: continue
                    try: raw = base64.b64decode(''.join(png) if isinstance(png, list) else png)
                    except ValueError: continue
                    out += _edge_warning(f'{rel} cell {i} output {j}', raw)
        else:
            for t in _IMG.findall(p.read_text()):
                loc = _local(t)
                if loc and loc.lower().endswith('.png') and (p.parent / loc).is_file():
                    out += _edge_warning(f'{rel}: {t}', (p.parent / loc).read_bytes())
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
    problems += glob_items(cfg.get('website') or {})
    for href in _nav_hrefs(cfg.get('website') or {}):
        if _local(href) is None: continue
        hits = [Path(h) for h in sorted(glob.glob(str(root / _local(href)), recursive=True))]
        if not hits: problems.append(f"_quarto.yml: navigation names {href!r}, which does not exist")
        pages += [p for p in hits if p not in pages]
    if not pages: problems.append('_quarto.yml: no page to render')
    css = ((cfg.get('format') or {}).get('html') or {}).get('css') or []
    for c in [css] if isinstance(css, str) else css:
        if (root / c).is_file(): problems += css_problems((root / c).read_text(), c)
        else: problems.append(f"_quarto.yml: the stylesheet {c!r} does not exist")
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
            problems += [f'{rel} cell {i}: {q}' for q in emphasis_problems(src)]
            problems += [f'{rel} cell {i}: {q}' for q in code_line_problems(src)]
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
                md = ''.join(md) if isinstance(md, list) else md
                problems += _check_targets(page, md, f'{rel} cell {i} output', root)
                problems += [f'{rel} cell {i} output: {q}' for q in emphasis_problems(md)]
            if o.get('output_type') == 'error': problems.append(f"{rel} cell {i}: holds an error output ({o.get('ename')})")
    if n_png == 0: problems.append(f'{rel}: an executed notebook page without any figure (was it executed?)')
    return problems


def json_problems(root: Path) -> list:
    "Data files under reports/ that a strict JSON parser (a browser's, Quarto's) refuses: NaN and Infinity are not JSON."
    def refuse(c): raise ValueError(f'{c} is not JSON (write null: ttt_nb.core.write_json_atomic does)')
    problems = []
    for p in sorted((root / 'reports').rglob('*.json')):
        try: json.loads(p.read_text(), parse_constant=refuse)
        except ValueError as e: problems.append(f'{p.relative_to(root)}: {e}')
    return problems


def check_site(root='.') -> list:
    "Every problem of the site under `root` (empty when whole)."
    root = Path(root).resolve()
    pages, problems = site_pages(root)
    problems += json_problems(root)
    for p in pages:
        if not p.exists(): problems.append(f'{p}: missing'); continue
        if p.suffix == '.ipynb': problems += check_notebook(p, root)
        elif p.suffix in ('.qmd', '.md'):
            problems += [f'{p.relative_to(root)}: {q}' for q in code_line_problems(p.read_text())]
            text = re.sub(r'```.*?```', '', p.read_text(), flags=re.S)   # code blocks name no files
            text = re.sub(r'\A\s*---\n.*?\n---', '', text, flags=re.S)   # nor does the front matter
            problems += _check_targets(p, text, str(p.relative_to(root)), root)
            problems += [f'{p.relative_to(root)}: {q}' for q in emphasis_problems(text)]
            problems += [f'{p.relative_to(root)}: {q}' for q in table_problems(text)]
    titles = {}
    for p in pages:
        if p.exists(): titles.setdefault(page_title(p), []).append(p.relative_to(root).as_posix())
    for t, ps in titles.items():
        if t is None: problems += [f'{q}: no title (front matter title or a first-level heading)' for q in ps]
        elif len(ps) > 1: problems.append(f"{len(ps)} pages share the title {t!r}: {', '.join(ps)}")
    return problems


if __name__ == '__main__':
    args = [a for a in sys.argv[1:] if a != '--strict']
    strict = '--strict' in sys.argv[1:]
    root = Path(args[0] if args else Path(__file__).resolve().parents[1])
    probs = check_site(root)
    warns = figure_warnings(root)
    if strict: probs += warns
    for q in probs: print(q)
    if not strict:
        for q in warns: print('warning:', q)
    pages, _ = site_pages(root.resolve())
    print(f"{'FAILED' if probs else 'ok'}: {len(pages)} pages checked, {len(probs)} problems"
          + ('' if strict else f", {len(warns)} warnings"))
    sys.exit(1 if probs else 0)
