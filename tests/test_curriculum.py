"Papermill smoke runs of every run_*.ipynb template, ttt-status on finished and crashed runs, the sweep runner with a failing set."
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ttt_nb import curriculum as C

ROOT = Path(__file__).resolve().parents[1]
# a tiny curriculum: 4 steps of a 1-layer tiny model at W=16, 2 checkpoints, 5 documents cut at 4W + W/2
TINY = dict(W=16, steps=4, batch_size=2, n_checkpoints=2, eval_max_mult=4, eval_docs=5, stride=8, n_boot=100,
            model_overrides={'num_hidden_layers': 1})
pytestmark = pytest.mark.slow


TEMPLATES = sorted(p.name for p in (ROOT / 'nbs').glob('run_*.ipynb'))


def _undefined_and_attrs(src:str):
    "A template's code: the names it reads but never binds, and its `alias.attr` reads, with its ttt_nb imports."
    import ast
    import builtins
    tree = ast.parse(src)   # a syntax error fails here
    bound, read, attrs, imports, star = set(dir(builtins)), set(), [], {}, []
    for n in ast.walk(tree):
        if isinstance(n, ast.Name): (bound if isinstance(n.ctx, (ast.Store, ast.Del)) else read).add(n.id)
        elif isinstance(n, (ast.FunctionDef, ast.ClassDef)): bound.add(n.name)
        elif isinstance(n, ast.arg): bound.add(n.arg)
        elif isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name): attrs.append((n.value.id, n.attr))
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            for a in n.names:
                if a.name == '*': star.append(n.module); continue
                bound.add((a.asname or a.name).split('.')[0])
                if isinstance(n, ast.ImportFrom) and (n.module or '').startswith('ttt_nb'): imports[a.asname or a.name] = (n.module, a.name)
    return read - bound, attrs, imports, star


@pytest.mark.parametrize('name', TEMPLATES)
def test_template_names_exist(name):
    "Every name a template imports from ttt_nb, reads from a star import or calls on a ttt_nb module exists (a renamed function fails here)."
    import importlib
    import types
    nb = json.loads((ROOT / 'nbs' / name).read_text())
    src = '\n'.join(''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'code')
    undefined, attrs, imports, star = _undefined_and_attrs(src)
    objs = {}
    for alias, (mod, attr) in imports.items():
        m = importlib.import_module(mod)
        objs[alias] = getattr(m, attr) if hasattr(m, attr) else importlib.import_module(f'{mod}.{attr}')
    for alias, attr in attrs:
        if isinstance(objs.get(alias), types.ModuleType): assert hasattr(objs[alias], attr), f"{name}: {alias}.{attr} does not exist"
    exported = set().union(*[importlib.import_module(m).__all__ for m in star if m.startswith('ttt_nb')])
    missing = {u for u in undefined if u not in exported and u != 'get_ipython'}
    assert not missing, f"{name} reads names nothing defines: {sorted(missing)}"


def test_template_check_can_fail():
    undefined, attrs, imports, _ = _undefined_and_attrs('from ttt_nb import curriculum as C\nC.run_curriculum(x)\ny = 1\nprint(y)')
    assert undefined == {'x'} and ('C', 'run_curriculum') in attrs and imports == {'C': ('ttt_nb', 'curriculum')}


def test_templates_have_a_parameters_cell():
    for p in (ROOT / 'nbs').glob('run_*.ipynb'):  # every template, not only mine: papermill needs it
        nb = json.loads(p.read_text())
        tagged = [c for c in nb['cells'] if 'parameters' in c.get('metadata', {}).get('tags', [])]
        assert len(tagged) == 1, p.name
        assert not any('default_exp' in ''.join(c['source']) for c in nb['cells']), f"{p.name} must not be exported"


def test_papermill_reads_every_template_parameter():
    """papermill parses each assignment of the parameters cell (a comment holding '=' makes it skip the line: it then calls the
    parameter unknown and prints 'Unable to parse line' on every run)."""
    import ast
    pm = pytest.importorskip('papermill')
    for p in (ROOT / 'nbs').glob('run_*.ipynb'):
        nb = json.loads(p.read_text())
        cell = next(c for c in nb['cells'] if 'parameters' in c.get('metadata', {}).get('tags', []))
        names = [t.id for n in ast.parse(''.join(cell['source'])).body if isinstance(n, (ast.Assign, ast.AnnAssign))
                 for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Name)]
        assert names and list(pm.inspect_notebook(str(p))) == names, f"{p.name}: papermill does not parse {set(names) - set(pm.inspect_notebook(str(p)))}"


TALK = {}   # what run_default printed (stdout, stderr) in the fixture


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
    "run_default (what `make run` calls) executes run_curriculum.ipynb with tiny parameters."
    import contextlib
    import io
    root = tmp_path_factory.mktemp('runs')
    o, e = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        out = C.run_default(root, name='tiny', **TINY)
    TALK.update(out=o.getvalue(), err=e.getvalue())
    return out


def test_run_default_talks(tiny_run):
    "`make run` shows progress over training steps and checkpoint evaluations, the phases, and ends with paths and CIs."
    out, err = TALK['out'], TALK['err']
    assert 'training' in err and 'evaluation' in err and '4/4' in err and '2/2' in err, err[-2000:]   # the two progress bars, finished
    phases = [ln.split('] ', 1)[1] for ln in out.splitlines() if ln.startswith('[') and '] ' in ln]
    # every phase once, in order, however short (a tiny run evaluates faster than the display polls)
    assert phases == ['starting', 'training', 'evaluating', 'evaluating the checkpoint of step 0',
                      'evaluating the checkpoint of step 4', 'figures', 'finished'], out
    assert str(tiny_run / 'all_summaries.json') in out and str(tiny_run / 'figures') in out
    assert 'full - SW' in out and 'nats/token' in out and '[' in out    # headline numbers with their CIs


def test_kernel_runs_without_the_tcp_warning(tmp_path, capfd):
    "The kernel papermill starts gets CurveZMQ keys, so ipykernel has no plain-text TCP transport to warn about."
    import nbformat
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('x = 1 + 1', metadata={'tags': ['parameters']}), nbformat.v4.new_code_cell('print(x)')],
                                  metadata={'kernelspec': {'name': 'python3', 'language': 'python', 'display_name': 'python3'}})
    nbformat.write(nb, tmp_path / 't.ipynb')
    C.execute_template(tmp_path / 't.ipynb', tmp_path / 'out.ipynb', dict(x=3), cwd=tmp_path)
    err = capfd.readouterr().err
    assert 'without encryption' not in err, err
    out = nbformat.read(tmp_path / 'out.ipynb', as_version=4)
    assert out.cells[-1].outputs[0]['text'] == '3\n'


def test_template_outputs_stay_under_runs():
    "Every template writes under runs/ of the folder papermill runs from, never outside it (../runs)."
    for p in sorted((ROOT / 'nbs').glob('run_*.ipynb')):
        cell = next(c for c in json.loads(p.read_text())['cells'] if 'parameters' in c.get('metadata', {}).get('tags', []))
        ns = {}
        exec(''.join(cell['source']), ns)
        for k, v in ns.items():
            if k.endswith('_dir') and isinstance(v, str):
                assert v.startswith('runs/') and '..' not in Path(v).parts, f"{p.name}: {k} = {v!r}"


def test_run_curriculum_template(tiny_run):
    nb = json.loads((tiny_run / 'run_curriculum.ipynb').read_text())
    pngs = sum('image/png' in o.get('data', {}) for c in nb['cells'] for o in c.get('outputs', []))
    assert pngs == 8                      # the five curriculum figures and the memory ones: carry, phase, EffRem
    entries = json.loads((tiny_run / 'all_summaries.json').read_text())
    assert [e['step'] for e in entries] == [0, 4]
    for k in ('ttt_ppl_at_4xW', 'sw_ppl_at_4xW', 'improvement_at_4xW', 'ttt_ppl_at_4xW_ci', 'diff_at_4xW', 'docs_at_4xW', 'tokens_at_4xW'):
        assert k in entries[-1], k
    cfg = json.loads((tiny_run / 'curriculum.json').read_text())
    assert cfg['W'] == 16 and cfg['train']['steps'] == 4 and cfg['data']['corpus_hash']
    assert sorted(p.name for p in (tiny_run / 'figures').glob('*.png')) == \
        ['carry.png', 'difference.png', 'effrem.png', 'evolution.png', 'phase.png', 'position.png', 'probes.png', 'training.png']
    assert len(list((tiny_run / 'checkpoints').glob('step_*'))) == 2


def test_run_compare_template(tiny_run, tmp_path):
    out = C.execute_template('run_compare.ipynb', tmp_path / 'compare.ipynb',
                             dict(run_dirs=[str(tiny_run), str(tiny_run)], out_dir=str(tmp_path / 'cmp')))
    nb = json.loads(out.read_text())
    assert sum('image/png' in o.get('data', {}) for c in nb['cells'] for o in c.get('outputs', [])) == 4
    assert (tmp_path / 'cmp' / 'compare.json').exists()


def _cli(*args, **kw):
    return subprocess.run([sys.executable, '-m', 'ttt_nb.curriculum', *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, **kw)


def test_status_finished(tiny_run):
    st = C.read_status(tiny_run)
    assert st['state'] == 'finished' and st['evaluated'] == [0, 4] and st['step'] == 4
    r = _cli('status', tiny_run)
    assert r.returncode == 0, r.stderr
    assert 'FINISHED' in r.stdout and 'evaluated checkpoints: 2/2' in r.stdout
    exe = Path(sys.executable).parent / 'ttt-status'   # the console script: sys.exit(status_main()) must exit 0 silently
    if not exe.exists(): pytest.skip('ttt-status is not installed (settings.ini console_scripts, pip install -e .)')
    r = subprocess.run([str(exe), str(tiny_run), '--json'], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == '' and json.loads(r.stdout)['state'] == 'finished', r.stderr


def test_status_missing(tmp_path):
    r = _cli('status', tmp_path / 'nothing')
    assert r.returncode == 2 and 'MISSING' in r.stdout


def test_status_crashed_killed(tmp_path):
    "A real curriculum killed while it trains: the status still says running, but its process is gone."
    out = tmp_path / 'killed'
    code = ("from ttt_nb.curriculum import run_curriculum; "
            f"run_curriculum(W=16, steps=100000, batch_size=2, eval_docs=5, eval_max_mult=2, out_dir={str(out)!r}, "
            "model_overrides={'num_hidden_layers': 1})")
    p = subprocess.Popen([sys.executable, '-c', code], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            st = C.read_status(out)
            if st['state'] == 'running' and st.get('step'): break
            assert p.poll() is None, 'the run ended by itself'
            time.sleep(0.5)
        assert st['state'] == 'running', st
    finally:
        p.send_signal(signal.SIGKILL); p.wait()
    st = C.read_status(out)
    assert st['state'] == 'crashed' and 'gone' in st['reason'], st
    r = _cli('status', out)
    assert r.returncode == 1 and 'CRASHED' in r.stdout


def test_status_crashed_error_and_stale(tmp_path):
    "A run that raised says crashed with its error; a running status without a heartbeat for too long is a crash."
    out = tmp_path / 'err'
    with pytest.raises(FileNotFoundError):
        C.run_curriculum(W=16, steps=2, corpus=str(tmp_path / 'no-such-corpus'), eval_docs=5, out_dir=str(out))
    st = C.read_status(out)
    assert st['state'] == 'crashed' and 'FileNotFoundError' in st['reason']
    stale = tmp_path / 'stale'; stale.mkdir()
    (stale / 'status.json').write_text(json.dumps(dict(state='running', step=3, total_steps=10, pid=os.getpid(),
                                                       updated='2020-01-01T00:00:00+00:00')))
    st = C.read_status(stale)
    assert st['state'] == 'crashed' and 'heartbeat' in st['reason']


def test_a_published_page_is_the_same_run_however_it_was_computed():
    "publish_run's check: out_dir and compile (`HOW_NOT_WHAT`) do not make another run; a training setting does."
    from ttt_nb.curriculum.publish import _same_setting
    a = dict(W=64, train=dict(lr=1e-3, out_dir='runs/a', compile=False))
    assert _same_setting(a, dict(W=64, train=dict(lr=1e-3, out_dir='runs/b', compile=True)))
    assert not _same_setting(a, dict(W=64, train=dict(lr=2e-3, out_dir='runs/a', compile=False)))
    assert not _same_setting(a, dict(W=128, train=a['train']))


def test_interrupted_training_resumes_not_evaluated(tmp_path):
    "A train summary left by SIGTERM (state 'stopped', not early stopping) is no end: the run trains on; an early stop is one."
    from ttt_nb.train import training_ended as _training_done
    sigterm = dict(state='stopped', reason='terminated (SIGTERM); resume from the last checkpoint with --resume', step=1, total_steps=4, signal='SIGTERM')
    assert not _training_done(sigterm) and not _training_done(dict(sigterm, reason='non-finite training loss (nan)', signal=None))
    assert _training_done(dict(sigterm, reason='early stopping: held-out loss did not improve')) and _training_done(dict(state='finished'))
    out = tmp_path / 'r'; out.mkdir()
    (out / 'train_summary.json').write_text(json.dumps(sigterm))
    C.run_curriculum(**TINY, out_dir=str(out))
    ts = json.loads((out / 'train_summary.json').read_text())
    assert ts['state'] == 'finished' and ts['step'] == TINY['steps'], ts
    st = json.loads((out / 'curriculum_status.json').read_text())   # the run's times: the trainer's clocks (kept across sessions) + the evaluations
    assert st['wall_s'] == round(ts['elapsed_s'] + sum(st['eval_seconds']), 1) and len(st['eval_cpu_seconds']) == len(st['eval_seconds'])
    assert st['cpu_s'] == round(ts['cpu_s'] + sum(st['eval_cpu_seconds']), 1) and st['cpu_s'] > 0


def test_sweep_with_a_failing_set(tmp_path):
    sweep = tmp_path / 'sweep.yaml'
    sweep.write_text(yaml.safe_dump(dict(defaults=TINY, runs=[dict(name='bad', eval_docs=2), dict(name='good')])))
    res = C.run_sweep(sweep, tmp_path / 'out')
    assert res['failed'] == ['bad'] and res['ok'] == ['good']
    summ = json.loads((tmp_path / 'out' / 'sweep_summary.json').read_text())
    bad = next(r for r in summ['runs'] if r['name'] == 'bad')
    assert 'min_docs' in bad['error']
    assert (tmp_path / 'out' / 'good' / 'good.ipynb').exists() and (tmp_path / 'out' / 'bad' / 'bad.ipynb').exists()
    assert (tmp_path / 'out' / 'good' / 'all_summaries.json').exists()
    r = _cli('sweep', sweep, '--out', tmp_path / 'out2', '--only', 'bad')
    assert r.returncode == 1 and '1 failed' in r.stdout
    # where the sweep stands, from the run folders; a done set is skipped; another process's records survive a later call
    r = _cli('sweep', sweep, '--out', tmp_path / 'out', '--status')
    assert r.returncode == 0 and re.search(r'^bad +failed', r.stdout, re.M) and re.search(r'^good +done$', r.stdout, re.M), r.stdout
    assert r.stdout.strip().splitlines()[-1] == '1 failed, 1 done (of 2)'
    res = C.run_sweep(sweep, tmp_path / 'out', only=['good'])
    assert res['skipped'] == ['good'] and res['ok'] == [] and res['failed'] == []
    summ = json.loads((tmp_path / 'out' / 'sweep_summary.json').read_text())
    assert summ['ok'] == ['good'] and summ['failed'] == ['bad'], summ
    # compile (like out_dir) changes how a run ran, not what it measured: a done set stays done; a measured change does not
    for extra, want in ((dict(compile=True), 'done'), (dict(lr=0.006), 'changed')):
        sweep.write_text(yaml.safe_dump(dict(defaults={**TINY, **extra}, runs=[dict(name='bad', eval_docs=2), dict(name='good')])))
        assert {r['name']: r['state'] for r in C.sweep_status(sweep, tmp_path / 'out')}['good'] == want, extra
    r = _cli('sweep', sweep, '--out', tmp_path / 'out', '--only', 'goood')
    assert r.returncode == 2 and r.stderr.strip().count('\n') == 0 and 'no set named goood' in r.stderr, r.stderr


def _template_parameters(tpl) -> set:
    "The names the parameters cell of a template defines."
    import re
    nb = json.loads((ROOT / 'nbs' / Path(tpl).name).read_text())
    cell = next(c for c in nb['cells'] if 'parameters' in c.get('metadata', {}).get('tags', []))
    return {m for line in ''.join(cell['source']).splitlines() if (m := (re.match(r'^(\w+)\s*[:=]', line) or [None, None])[1])}

def _check_regime_sweep(f):
    "A regime sweep file parses, and every run's fields (the defaults and its own) are `TrainConfig` fields, its names unique."
    import dataclasses

    import yaml

    from ttt_nb.train import TrainConfig
    sw = yaml.safe_load(f.read_text())
    fields = {x.name for x in dataclasses.fields(TrainConfig)}
    assert set(sw['defaults']) <= fields, (f.name, sorted(set(sw['defaults']) - fields))
    names = [r['name'] for r in sw['runs']]
    assert len(names) == len(set(names)), f.name
    for r in sw['runs']:
        assert set(r) - {'name', 'why'} <= fields, (f.name, r['name'], sorted(set(r) - {'name', 'why'} - fields))

def test_sweep_files_parse():
    import inspect
    known = set(inspect.signature(C.curriculum_config).parameters)
    for f in (ROOT / 'sweeps').glob('*.yaml'):
        if f.name.startswith('regime_'):   # TrainConfig fields for tools/regime_sweep.py (regime_X.yaml -> reports/regime-X), not a ttt-sweep file
            _check_regime_sweep(f); continue
        tpl, sets = C.load_sweep(f)
        assert sets and (ROOT / 'nbs' / Path(tpl).name).exists(), f
        names = _template_parameters(tpl)
        for s in sets:
            assert set(s['parameters']) <= names, (f.name, sorted(set(s['parameters']) - names))
            if Path(tpl).name == 'run_curriculum.ipynb': C.curriculum_config(**{k: v for k, v in s['parameters'].items() if k in known})


# --- issue 14: paired comparisons across runs (W against W, state passing against none), by document and seed

def _fake_run(root, W, sp, seed, shift, ids):
    "A curriculum folder as `load_run` returns it, with only what `paired_runs` reads: config, final summary, per-document losses."
    import numpy as np

    from ttt_nb.eval import save_nll
    d = root / f'W{W}-sp{int(sp)}-s{seed}'
    base = {i: 2.0 + 0.05 * (ord(i) - ord('a')) + 0.01 * seed for i in ids}   # a document's loss, the same in every run of a seed
    nll = {'full': [np.r_[np.nan, np.full(20 * W, base[i] + shift)] for i in ids]}
    save_nll(nll, ids, d / 'eval' / 'step_000010_nll.safetensors')
    cfg = dict(W=W, train=dict(corpus='toy', state_passing=sp, seed=seed, steps=10, preset='tiny'), eval=dict(split='test'))
    return dict(dir=str(d), name=d.name, config=cfg, summaries=[dict(step=10, losses_file='step_000010_nll.safetensors')])

def test_paired_runs_by_document_and_seed(tmp_path):
    from ttt_nb.curriculum.compare import paired_markdown, paired_runs
    runs = []
    for seed in (0, 1, 2):
        runs += [_fake_run(tmp_path, 16, True, seed, 0.0, ['a', 'b', 'c', 'd']), _fake_run(tmp_path, 32, True, seed, 0.1, ['b', 'c', 'd', 'e']),
                 _fake_run(tmp_path, 16, False, seed, 0.3, ['a', 'b', 'c', 'd'])]
    rows = paired_runs(runs, ratios=(1, 10), n_boot=200)
    w = [r for r in rows if r['varies'] == 'W' and r['seed'] == 0]
    assert [r['position'] for r in w] == [32, 320] and all(r['docs'] == 3 for r in w)           # b, c, d: the documents both hold
    assert all(abs(r["mean"] + 0.1) < 1e-6 for r in rows if r['varies'] == 'W')                 # W=16 is 0.1 nats better everywhere
    sp = [r for r in rows if r['varies'] == 'state_passing' and r['seed'] == 'pooled']
    assert len(sp) == 2 and all(r['docs'] == 12 and abs(r["mean"] + 0.3) < 1e-6 for r in sp)    # 4 documents x 3 seeds
    assert 'W=16, SP - W=32, SP' in paired_markdown(rows)


def test_two_sweep_processes_share_the_sets(tmp_path):
    "Two ttt-sweep processes started together on one sweep run each set once: each passes by the set the other holds or has done."
    sweep = tmp_path / 'sweep.yaml'
    sweep.write_text(yaml.safe_dump(dict(defaults=TINY, runs=[dict(name='a'), dict(name='b')])))
    cmd = [sys.executable, '-m', 'ttt_nb.curriculum', 'sweep', str(sweep), '--out', str(tmp_path / 'out')]
    ps = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in ps]
    assert [p.returncode for p in ps] == [0, 0], outs
    ran = [m for o in outs for m in re.findall(r'^\[ok\] (\w+)', o, re.M)]
    assert sorted(ran) == ['a', 'b'], outs
    assert all(re.search(r'^\[(busy|done)\] ', o, re.M) for o in outs if len(re.findall(r'^\[ok\]', o, re.M)) < 2), outs
    summ = json.loads((tmp_path / 'out' / 'sweep_summary.json').read_text())
    assert sorted(summ['ok']) == ['a', 'b'] and summ['failed'] == []
