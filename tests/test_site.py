"tools/check_site.py: the real results site is whole; a missing figure, page or link makes the check fail."
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tools'))
import check_site  # noqa: E402


def test_real_site_is_whole():
    assert check_site.check_site(ROOT) == []
    r = subprocess.run([sys.executable, str(ROOT / 'tools' / 'check_site.py'), str(ROOT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_site_names_its_pages():
    pages, problems = check_site.site_pages(ROOT)
    names = {p.relative_to(ROOT).as_posix() for p in pages}
    assert problems == []
    assert {'reports/index.qmd', 'reports/results.qmd', 'reports/compare.ipynb'} <= names
    assert any(n.startswith('reports/curriculum/') and n.endswith('.ipynb') for n in names)


@pytest.fixture
def site(tmp_path):
    "A copy of the site (project file and reports/) to break."
    shutil.copy(ROOT / '_quarto.yml', tmp_path / '_quarto.yml')
    shutil.copytree(ROOT / 'reports', tmp_path / 'reports')
    assert check_site.check_site(tmp_path) == []
    return tmp_path


def test_missing_figure_fails(site):
    page = site / 'reports' / 'index.qmd'
    page.write_text(page.read_text() + '\n![a figure](figures/not-there.png)\n')
    probs = check_site.check_site(site)
    assert len(probs) == 1 and 'not-there.png' in probs[0]
    r = subprocess.run([sys.executable, str(ROOT / 'tools' / 'check_site.py'), str(site)], capture_output=True, text=True)
    assert r.returncode == 1 and 'not-there.png' in r.stdout


def test_json_with_nan_fails(site):
    "A data file with NaN is not JSON: a browser's parser refuses what Python's writes by default."
    data = site / 'reports' / 'curriculum' / 'x.json'
    data.write_text(json.dumps({'lo': [1.0, float('nan')]}))
    probs = check_site.check_site(site)
    assert len(probs) == 1 and 'reports/curriculum/x.json: NaN is not JSON' in probs[0], probs
    data.write_text(json.dumps({'lo': [1.0, None]}))
    assert check_site.check_site(site) == []


def test_missing_page_and_link_fail(site):
    nb = next((site / 'reports' / 'curriculum').glob('*.ipynb'))
    nb.unlink()
    (site / 'reports' / 'compare.ipynb').unlink()
    probs = '\n'.join(check_site.check_site(site))
    assert 'compare.ipynb' in probs and nb.name in probs   # named by the navigation and linked from the results page


def test_notebook_without_figures_fails(site):
    nb = next((site / 'reports' / 'curriculum').glob('*.ipynb'))
    d = json.loads(nb.read_text())
    for c in d['cells']:
        if c['cell_type'] == 'code':
            c['outputs'] = [o for o in c.get('outputs', []) if 'image/png' not in o.get('data', {})]
    nb.write_text(json.dumps(d))
    assert any('without any figure' in p for p in check_site.check_site(site))


def test_site_does_not_execute(site):
    q = site / '_quarto.yml'
    q.write_text(q.read_text().replace('enabled: false', 'enabled: true').replace('freeze: true', 'freeze: false'))
    assert any('must not execute' in p for p in check_site.check_site(site))


def test_glob_inside_a_contents_list_fails(site):
    "The sidebar glob as an item of `contents:` renders no sidebar; only the bare string is expanded."
    q = site / '_quarto.yml'
    q.write_text(q.read_text().replace('contents: reports/curriculum/*.ipynb', 'contents:\n        - reports/curriculum/*.ipynb'))
    probs = check_site.check_site(site)
    assert any('glob' in p and 'reports/curriculum/*.ipynb' in p for p in probs), probs


def test_every_page_has_its_own_title():
    titles = [check_site.page_title(p) for p in check_site.site_pages(ROOT)[0]]
    assert None not in titles and len(set(titles)) == len(titles), titles
    cur = [t for p, t in zip(check_site.site_pages(ROOT)[0], titles) if p.parent.name == 'curriculum']
    assert all(t.startswith(p.stem + ':') for p, t in zip(sorted(p for p in check_site.site_pages(ROOT)[0] if p.parent.name == 'curriculum'), sorted(cur)))


def test_duplicate_titles_fail(site):
    a, b = sorted((site / 'reports' / 'curriculum').glob('*.ipynb'))[:2]
    for nb in (a, b):   # the title the curriculum pages had before each was titled after its run
        d = json.loads(nb.read_text())
        d['cells'] = [c for c in d['cells'] if c['cell_type'] != 'raw']
        d['cells'].insert(0, dict(cell_type='markdown', metadata={}, source=['# Curriculum: how length generalization emerges']))
        nb.write_text(json.dumps(d))
    probs = check_site.check_site(site)
    assert any('share the title' in p and a.name in p and b.name in p for p in probs), probs


@pytest.mark.parametrize('text,bad', [
    ('**Probe points r*W over training.** Left: PPL.', True),    # the caption that showed its asterisks
    ('**bold** and *italic*, a table mark +0.1 * |', False),
    ('**bold without its end. Then more text', True),
    ('Probe points r×W, escaped r\\*W and `r*W` in code.', False),
    ('* a list item\n* another with **bold**', False),
])
def test_emphasis(text, bad):
    assert bool(check_site.emphasis_problems(text)) == bad, check_site.emphasis_problems(text)


def test_broken_emphasis_in_a_caption_fails(site):
    nb = next((site / 'reports' / 'curriculum').glob('*.ipynb'))
    nb.write_text(nb.read_text().replace('**Probe points r×W over training.**', '**Probe points r*W over training.**'))
    assert any('intraword' in p and nb.name in p for p in check_site.check_site(site))


@pytest.mark.parametrize('text,bad', [
    ('| a | b |\n|---|---:|\n| 1 | 2 |', False),
    ('Some text.\n\n|---|---:|\n| 1 | 2 |', True),                 # the header row was lost: rows render as text
    ('| a | b | c |\n|---|---:|\n| 1 | 2 |', True),                 # header and delimiter disagree
    ('```\n|---|\n```', False),                                       # code is not a table
])
def test_table(text, bad):
    assert bool(check_site.table_problems(text)) == bad, check_site.table_problems(text)


def test_headless_table_on_a_page_fails(site):
    page = site / 'reports' / 'index.qmd'
    text = page.read_text()
    head = next(ln for ln in text.splitlines() if ln.startswith('| run |'))
    page.write_text(text.replace(head + '\n', '', 1))
    assert any('without a header row' in p for p in check_site.check_site(site))


def test_rules_are_on_the_site():
    "The pages point at the site's rules page, never at a file the site does not publish."
    pages, _ = check_site.site_pages(ROOT)
    assert ROOT / 'reports' / 'science.qmd' in pages
    for p in pages:
        assert 'shared/design' not in p.read_text(), p


@pytest.mark.parametrize('text,bad', [
    ('```sh\n# a comment\nmake run\n```', False),
    ('```\ncd nbs && ../.venv/bin/papermill run_ponder.ipynb ../reports/ponder.ipynb -p out_dir ../reports/ponder\n```', True),
    ('A long prose line is no code: ' + 'word ' * 30, False),
])
def test_code_line(text, bad):
    assert bool(check_site.code_line_problems(text)) == bad


def test_long_code_line_in_a_page_fails(site):
    "The ponder page's command ran 102 characters, past the body column, and was cut off there."
    page = site / 'reports' / 'ponder.qmd'
    page.write_text(page.read_text().replace('ponder.ipynb \\\n    -p out_dir', 'ponder.ipynb -p out_dir'))
    probs = check_site.check_site(site)
    assert any('ponder.qmd' in p and 'code line of 102 characters' in p for p in probs), probs


@pytest.mark.parametrize('css,bad', [
    ('td, th { white-space: nowrap; }', True),        # what pushed the ponder table 800 px past the column
    ('table td { font-size: 1em; white-space:nowrap }', True),
    ('table { font-size: 0.85em; }\n.table > :not(caption) > * > * { padding: 0.4rem 0.3rem; }', False),
    ('/* td, th { white-space: nowrap; } */ code { white-space: nowrap; }', False),
])
def test_css(css, bad):
    assert bool(check_site.css_problems(css, 'site.css')) == bad


def test_nowrap_cells_fail(site):
    css = site / 'reports' / 'site.css'
    css.write_text(css.read_text() + '\ntd, th { white-space: nowrap; }\n')
    assert any('site.css' in p and 'nowrap' in p for p in check_site.check_site(site))


def _png(draw) -> bytes:
    from PIL import Image
    im = Image.new('RGBA', (120, 60), (255, 255, 255, 0))
    draw(im.load())
    buf = __import__('io').BytesIO(); im.save(buf, 'PNG'); return buf.getvalue()


def test_figure_edges():
    pytest.importorskip('PIL')
    def label_at(x0):
        def draw(px):
            for y in range(20, 40):
                for x in range(x0, x0 + 3): px[x, y] = (0, 0, 0, 255)
        return draw
    assert check_site.figure_edge_problems(_png(label_at(0))) == ['left']     # a y label cut at the left edge
    assert check_site.figure_edge_problems(_png(label_at(117))) == ['right']
    assert check_site.figure_edge_problems(_png(label_at(5))) == []           # room to spare: whole


def test_cut_figure_warns(site):
    "A real figure cropped through its y label is reported; --strict fails on it."
    pytest.importorskip('PIL')
    import base64
    import io

    from PIL import Image
    before = set(check_site.figure_warnings(site))
    nb = site / 'reports' / 'compare.ipynb'
    d = json.loads(nb.read_text())
    for c in d['cells']:
        for o in c.get('outputs', []):
            if 'image/png' in o.get('data', {}):
                png = o['data']['image/png']
                im = Image.open(io.BytesIO(base64.b64decode(''.join(png) if isinstance(png, list) else png)))
                assert check_site.figure_edge_problems(base64.b64decode(''.join(png) if isinstance(png, list) else png)) == []
                left = Image.eval(im.convert('L'), lambda v: 255 if v < 128 else 0).getbbox()[0]   # the first column with ink
                buf = io.BytesIO(); im.crop((left + 4, 0, im.width, im.height)).save(buf, 'PNG')
                o['data']['image/png'] = base64.b64encode(buf.getvalue()).decode()
                break
        else: continue
        break
    nb.write_text(json.dumps(d))
    new = set(check_site.figure_warnings(site)) - before
    assert len(new) == 1 and 'compare.ipynb' in new.pop()
    assert check_site.check_site(site) == []          # a warning, not a problem, by default
    r = subprocess.run([sys.executable, str(ROOT / 'tools' / 'check_site.py'), str(site), '--strict'], capture_output=True, text=True)
    assert r.returncode == 1 and 'compare.ipynb' in r.stdout and 'cut off' in r.stdout


def test_published_run_data_is_data_only_and_its_losses_read():
    "reports/curriculum/<run>/ holds JSON, JSONL and safetensors only (no pickle, no weights); each published loss file is the final checkpoint's, of its documents."
    from ttt_nb.eval import load_nll
    allowed = {'.json', '.jsonl', '.safetensors'}
    for f in (ROOT / 'reports' / 'curriculum').glob('*/**/*'):
        if f.is_file(): assert f.suffix in allowed and f.name != 'model.safetensors', f
    for f in (ROOT / 'reports' / 'curriculum').glob('*/eval/*_nll.safetensors'):
        fin = json.loads((f.parents[1] / 'final_eval.json').read_text())
        assert f.name == fin['losses_file'], f
        nll, ids = load_nll(f)
        assert len(ids) == fin['n_docs'] and sum(len(x) - 1 for x in nll['full']) == fin['n_tokens'], f   # position 0 is not predicted
