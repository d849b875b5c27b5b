"tools/check_site.py: the real results site is whole; a missing figure, page or link makes the check fail."
import json, shutil, subprocess, sys
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
