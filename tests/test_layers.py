"The package's import graph: every module sits in a layer and imports only from layers below it (or its own), with no cycle."
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / 'ttt_nb'

# Lowest first (DESIGN.md, "The map"). A module is named by its dotted path below ttt_nb; a name ending in '.*'
# covers a subpackage.
LAYERS = [
    ['core', 'config', 'stats'],
    ['ops', 'ops.*'],
    ['state', 'model', 'baselines'],
    ['data', 'tokenizers', 'stream', 'checkpoint', 'ngram'],
    ['train', 'train.*', 'eval', 'eval.*', 'rules', 'memory'],
    ['plots', 'plots.*'],
    ['generate', 'ponder', 'ponder_study', 'curriculum', 'curriculum.*'],
    ['cli'],
]
NEVER = [('train', 'eval'), ('eval', 'train')]   # the trainer and the evaluator are peers: neither imports the other


def layer_of(mod:str) -> int:
    for i, names in enumerate(LAYERS):
        for n in names:
            if mod == n or (n.endswith('.*') and mod.startswith(n[:-1])): return i
    raise KeyError(mod)


def modules() -> dict:
    "{dotted name: path} of every generated module (the package's __init__ and _modidx excluded)."
    out = {}
    for p in sorted(PKG.rglob('*.py')):
        rel = p.relative_to(PKG).with_suffix('')
        parts = list(rel.parts)
        if parts[-1] == '__init__': parts = parts[:-1]
        if not parts or parts == ['_modidx']: continue
        out['.'.join(parts)] = p
    return out


def imports(mod:str, path:Path) -> list:
    "[(imported ttt_nb module, line, at module level?)] for every import of a ttt_nb module in `path`."
    tree, pkg = ast.parse(path.read_text()), mod.split('.')[:-1] if path.name != '__init__.py' else mod.split('.')
    top = {id(n) for n in tree.body} | {id(n) for s in tree.body if isinstance(s, (ast.If, ast.Try)) for n in ast.walk(s)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name[len('ttt_nb.'):] for a in node.names if a.name.startswith('ttt_nb.')]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[:len(pkg) - (node.level - 1)] if node.level > 1 else pkg
                src = '.'.join(base + ([node.module] if node.module else []))
            elif node.module and (node.module == 'ttt_nb' or node.module.startswith('ttt_nb.')):
                src = node.module[len('ttt_nb.'):] if node.module != 'ttt_nb' else ''
            else: continue
            # `from . import data` / `from ttt_nb import plots` name modules; `from .core import x` names one
            names = [f'{src}.{a.name}'.strip('.') for a in node.names] if not src or not node.module else [src]
        else: continue
        found += [(n, node.lineno, id(node) in top) for n in names if n]
    return found


def edges() -> list:
    mods = modules()
    out = []
    for mod, path in mods.items():
        for dep, line, at_top in imports(mod, path):
            while dep and dep not in mods: dep = dep.rpartition('.')[0]   # `from .ops.ttt_ref import f` -> ops.ttt_ref
            if dep and dep != mod: out.append((mod, dep, line, at_top))
    return out


def test_every_module_has_a_layer():
    missing = [m for m in modules() if not _has_layer(m)]
    assert not missing, f"modules without a layer: {missing}: add them to LAYERS here and to DESIGN.md's map"


def _has_layer(m):
    try: layer_of(m); return True
    except KeyError: return False


def test_no_upward_import():
    up = [f"{m} (layer {layer_of(m)}) imports {d} (layer {layer_of(d)}) at line {ln}"
          for m, d, ln, _ in edges() if _has_layer(m) and _has_layer(d) and layer_of(d) > layer_of(m)]
    assert not up, 'upward imports:\n' + '\n'.join(up)


def test_peers_stay_apart():
    bad = [(m, d) for m, d, _, _ in edges() for a, b in NEVER if m.split('.')[0] == a and d.split('.')[0] == b]
    assert not bad, f"forbidden edges: {bad}"


def test_ttt_nb_imports_are_at_module_level():
    "A function-level import hides an edge; one of a ttt_nb module is never needed (heavy optional packages may be)."
    hidden = [f"{m} imports {d} inside a function (line {ln})" for m, d, ln, top in edges() if not top]
    assert not hidden, '\n'.join(hidden)


def test_no_cycle():
    graph = {}
    for m, d, _, _ in edges(): graph.setdefault(m, set()).add(d)
    state, stack = {}, []
    def visit(n):
        state[n] = 1; stack.append(n)
        for d in sorted(graph.get(n, ())):
            if state.get(d) == 1: pytest.fail('import cycle: ' + ' -> '.join(stack[stack.index(d):] + [d]))
            if d not in state: visit(d)
        state[n] = 2; stack.pop()
    for n in sorted(graph):
        if n not in state: visit(n)


def test_the_checker_sees_edges(tmp_path, monkeypatch):
    "The test can fail: a module that imports upward, inside a function, and in a cycle is caught."
    pkg = tmp_path / 'ttt_nb'; pkg.mkdir()
    (pkg / 'core.py').write_text('def f():\n    from .plots import g\n')
    (pkg / 'plots.py').write_text('from ttt_nb.core import f\n')
    monkeypatch.setattr(__import__(__name__), 'PKG', pkg)
    assert ('core', 'plots', 2, False) in edges() and ('plots', 'core', 1, True) in edges()
    with pytest.raises(AssertionError, match='core .layer 0. imports plots'): test_no_upward_import()
    with pytest.raises(AssertionError, match='inside a function'): test_ttt_nb_imports_are_at_module_level()
    with pytest.raises(pytest.fail.Exception, match='import cycle'): test_no_cycle()


def test_console_scripts_resolve():
    "Every console script in settings.ini names a function that exists, in the CLI layer or a module of the top layers."
    import configparser
    import importlib
    cfg = configparser.ConfigParser(delimiters=['=']); cfg.read(PKG.parent / 'settings.ini')
    scripts = [s.split('=', 1) for s in cfg['DEFAULT']['console_scripts'].split() if '=' in s]
    assert {n for n, _ in scripts} >= {'ttt-train', 'ttt-eval', 'ttt-generate', 'ttt-status', 'ttt-compare', 'ttt-sweep'}
    for name, target in scripts:
        mod, fn = target.split(':')
        assert callable(getattr(importlib.import_module(mod), fn)), f"{name}: {target} is not a function"
        assert layer_of(mod[len('ttt_nb.'):]) >= layer_of('generate'), f"{name}: {target} sits below the top layers"
