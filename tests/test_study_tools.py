"tools/study_table.py: the study pages' table reads the final checkpoint of each run and never lets a below-trigram run claim."
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tools'))
import study_table  # noqa: E402


def _run(tmp_path, name, claims, diff10):
    d = tmp_path / name; d.mkdir()
    first = dict(step=0, ttt_ppl_overall=257.0, regime_label='beats nothing', far_context_claims=False, n_docs=29)
    last = dict(step=600, ttt_ppl_overall=4.5, n_docs=29, memory_scale=[0.25, 1.5], far_context_claims=claims,
                regime_label='beats the 4-gram (paired CI): far context can be studied' if claims else 'beats the bigram (paired CI): no claim',
                **{'diff_at_10xW': dict(mean=diff10, lo=diff10 - 0.01, hi=diff10 + 0.01, excludes_zero=abs(diff10) > 0.01)})
    (d / 'all_summaries.json').write_text(json.dumps([first, last]))
    return d


def test_table_reads_the_final_checkpoint_and_marks_no_claim(tmp_path):
    a, b = _run(tmp_path, 'a', True, -0.05), _run(tmp_path, 'b', False, -0.05)
    rows = study_table.table([a, b]).splitlines()
    assert len(rows) == 4 and rows[2].startswith('| a | 600 | 4.500 | beats the 4-gram (paired CI) |')
    assert '-0.0500 [-0.0600, -0.0400] *' in rows[2] and 'no claim' not in rows[2] and '0.25, 1.50' in rows[2]
    assert '(no claim)' in rows[3].split('|')[5] and 'not reached' in rows[2].split('|')[6]


def test_missing_summaries_exit_with_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e: study_table.main([str(tmp_path / 'absent')])
    assert 'no all_summaries.json' in str(e.value) and 'absent' in str(e.value)


def test_effrem_table_reads_the_longest_context_of_the_final_checkpoint(tmp_path):
    pub, run = tmp_path / 'published', tmp_path / 'run'
    curve = lambda T, k: dict(T=T, t=[16, 64, 304, 624], mean=[k + 0.1, k + 0.2, k + 0.3, k + 0.4], lo=[0.0] * 4, hi=[1.0] * 4, n_docs=8)
    s = dict(W=64, memory=dict(effrem=dict(curves=[curve(1280, 0.0), curve(640, 0.5)])))
    pub.mkdir(); (pub / 'final_eval.json').write_text(json.dumps(s))
    (run / 'eval').mkdir(parents=True)
    (run / 'eval' / 'step_000100.json').write_text(json.dumps(dict(W=64, memory={})))              # an earlier checkpoint, no EffRem
    (run / 'eval' / 'step_001000.json').write_text(json.dumps(s))                                   # the final one
    rows = study_table.effrem_table([pub, run]).splitlines()
    assert len(rows) == 4
    for r in rows[2:]:          # T = 1280 (not 640); t nearest 1 W = 64, 5 W = 320 -> 304, 10 W = 640 -> 624
        assert '| 1280 (8 docs) | t=64: 0.200 [0.000, 1.000] | t=304: 0.300 [0.000, 1.000] | t=624: 0.400 [0.000, 1.000] |' in r
    (run / 'eval' / 'step_002000.json').write_text(json.dumps(dict(W=64, memory={})))              # a later one without it
    assert 'not measured' in study_table.effrem_row(run)
    with pytest.raises(SystemExit) as e: study_table.main(['--effrem', str(tmp_path / 'absent')])
    assert 'final_eval.json' in str(e.value)


def test_ponder_table_reads_every_mix_of_every_run(tmp_path):
    import ponder_table
    src = json.loads((ROOT / 'reports/ponder/results.json').read_text())
    a, b = tmp_path / 's0' / 'results.json', tmp_path / 's1' / 'results.json'
    for f, seed in ((a, 0), (b, 1)):
        f.parent.mkdir(); r = json.loads(json.dumps(src)); r['config']['seed'] = seed; f.write_text(json.dumps(r))
    rows = ponder_table.table([a, b]).splitlines()[2:]
    mixes = list(src['config']['mixes'])
    assert len(rows) == 2 * len(mixes) and rows[len(mixes)].startswith('| s1 | 1 |')
    mix = mixes[-1]; p = src['paired'][f'oracle_{mix} - random_{mix}']
    assert f"{p['mean']:+.4f} [{p['lo']:+.4f}, {p['hi']:+.4f}]" in rows[len(mixes) - 1]
    assert f"{src['methods'][f'oracle_{mix}']['mean_k']:.3f} |" in rows[len(mixes) - 1]
    with pytest.raises(SystemExit, match='no results file'): ponder_table.main([str(tmp_path / 'absent.json')])
    pair = {'adaptive_entropy_m - fixed_K1': dict(mean=-0.01, lo=-0.02, hi=-0.005, excludes_zero=True)}   # the gate against uniform compute
    assert ponder_table._uniform(pair, 'm', 1.0) == '-0.0100 [-0.0200, -0.0050] *' and ponder_table._uniform(pair, 'm', 2.3) == 'no uniform K'
    assert ponder_table._uniform({}, 'm', 2.0) == 'not run'
    pair['oracle_m - fixed_K1'] = dict(mean=-0.03, lo=-0.04, hi=-0.02, excludes_zero=True)       # and the oracle against it
    assert ponder_table._uniform(pair, 'm', 1.0, 'oracle') == '-0.0300 [-0.0400, -0.0200] *'
    row = ponder_table.rows(dict(methods={**src['methods'], 'oracle_m': dict(mean_k=1.0), 'random_m': dict(ppl=4.0)}, paired=pair,
                                 config=dict(src['config'], mixes={'m': {'1': 1.0}})), 'x')[0]
    assert row.endswith('| -0.0100 [-0.0200, -0.0050] * | -0.0300 [-0.0400, -0.0200] * |')


def _cfg_run(sp, seed, **train):
    "A run dict with only the config that `_pairs` reads."
    t = dict(corpus='python-stdlib', state_passing=sp, seed=seed, steps=10, preset='tiny', **train)
    return dict(name=f"{sp}-{seed}-{sorted(train.items())}", config=dict(W=64, train=t, eval=dict(split='test')))


MAMBA = dict(model_overrides=dict(pre_conv=True, share_qk=True, use_gate=True))


def test_pairs_and_claims_keep_the_arms_apart():
    "SP against no SP pairs runs of the same arm only; the seed claims group by arm (backbone, control, initial state)."
    from ttt_nb.curriculum import compare as CMP
    run = _cfg_run
    mamba = MAMBA
    runs = [run(True, 0), run(False, 0), run(True, 0, init_state='other_sequence'), run(True, 0, **mamba), run(False, 0, **mamba),
            run(True, 0, control='no_inner_loop')]
    pairs = CMP._pairs(runs, 'sp')
    assert sorted(name for name, _, _ in pairs) == ['W=64, SP - W=64, no SP', 'W=64, SP, Mamba - W=64, no SP, Mamba']
    for _, a, b in pairs: assert CMP.run_arm(a) == CMP.run_arm(b)


def test_arms_pair_with_the_default_arm_of_their_backbone_w_and_sp():
    "Question 3's pairs: a control or another initial state against the default arm; no inner loop against SP and no SP alike."
    from ttt_nb.curriculum import compare as CMP
    run = _cfg_run
    m = MAMBA
    runs = [run(True, 0, **m), run(False, 0, **m), run(True, 0, control='carry_on', **m), run(True, 0, control='no_inner_loop', **m),
            run(False, 0, init_state='noise', **m), run(True, 0, init_state='other_sequence', **m),
            run(True, 1, control='carry_off', **m),            # no default arm at seed 1: no pair
            run(True, 0, control='carry_off')]                 # another backbone: no pair
    pairs = CMP._pairs(runs, 'arm')
    assert sorted(n for n, _, _ in pairs) == [
        'W=64, SP, Mamba, carry on - W=64, SP, Mamba', 'W=64, SP, Mamba, init other sequence - W=64, SP, Mamba',
        'W=64, SP, Mamba, no inner loop - W=64, SP, Mamba', 'W=64, SP, Mamba, no inner loop - W=64, no SP, Mamba',
        'W=64, no SP, Mamba, init noise - W=64, no SP, Mamba']
    for _, a, b in pairs: assert CMP._base_arm(b) and not CMP._base_arm(a) and a['config']['train']['seed'] == b['config']['train']['seed']
    assert not [a for _, a, _ in CMP._pairs(runs, 'sp') if 'no inner loop' in CMP.run_arm(a)]   # the crossing is for arms only


def test_seed_claims_need_every_seed_above_the_trigram():
    from ttt_nb.curriculum import compare as CMP
    def run(seed, claims, corpus='python-stdlib'):
        t = dict(corpus=corpus, state_passing=True, seed=seed, steps=10, preset='tiny')
        probe = dict(r=10.0, diff={'full-sw_strided': dict(mean=-0.05, lo=-0.08, hi=-0.02)})
        s = dict(methods={'full': {}, 'sw_strided': {}}, probes=[probe], regime=dict(far_context_claims=claims))
        return dict(config=dict(W=64, train=t, eval=dict(split='test')), summaries=[s])
    # SCIENCE.md rule 5: 5 seeds on the embedded corpus, 3 elsewhere
    assert [c['verdict'] for c in CMP.seed_claims([run(s, True) for s in range(5)])] == ['full better']
    assert [c['verdict'] for c in CMP.seed_claims([run(s, True) for s in range(4)])] == ['no claim: 4 of 5 seeds']
    assert [c['verdict'] for c in CMP.seed_claims([run(s, True, 'wikitext-2-raw') for s in range(3)])] == ['full better']
    assert [c['verdict'] for c in CMP.seed_claims([run(s, True, 'wikitext-2-raw') for s in range(2)])] == ['no claim: 2 of 3 seeds']
    assert [c['verdict'] for c in CMP.seed_claims([run(s, True) for s in range(3)], min_seeds=3)] == ['full better']
    v = CMP.seed_claims([run(0, True), run(1, False), run(2, True), run(3, True), run(4, True)])[0]['verdict']
    assert v == 'no claim: below the trigram in seed(s) 1 (else full better)'



def test_seed_claims_count_the_models_past_the_study_bar():
    from ttt_nb.curriculum import compare as CMP
    orders = {str(n): dict(ppl=1.0) for n in range(1, 6)}
    def run(seed, order, ref=True):
        t = dict(corpus='wikitext-2-raw', state_passing=True, seed=seed, steps=10, preset='tiny')
        probe = dict(r=10.0, diff={'full-sw_strided': dict(mean=0.05, lo=0.02, hi=0.08)})
        rg = dict(far_context_claims=order >= 3, order=order, orders=orders if ref else {})
        return dict(config=dict(W=64, train=t, eval=dict(split='test')), summaries=[dict(methods={'full': {}, 'sw_strided': {}}, probes=[probe], regime=rg)])
    c = CMP.seed_claims([run(0, 5), run(1, 4), run(2, 5)])[0]
    assert c['verdict'] == 'SW better' and c['past_bar'] == 2           # a claim by the seed rule; 2 of 3 models past the 5-gram
    assert CMP.claims_markdown([c]).splitlines()[-1].endswith('| SW better | 2/3 |')
    assert CMP.seed_claims([run(s, 5, ref=False) for s in range(3)])[0]['past_bar'] is None
    from ttt_nb.rules import past_bar
    assert past_bar(dict(regime=dict(order=3, orders={'1': {}, '2': {}, '3': {}})))   # only a trigram fitted: the bar is the trigram
    assert past_bar({}) is None and past_bar(dict(regime=dict(order=4, orders=orders))) is False

def test_fit_to_end_stops_the_tool_on_an_unfinished_run():
    import _runs
    class T:
        def __init__(self, state): self.state = state
        def fit(self, resume=False): return dict(state=self.state, step=7, reason='stopped by SIGTERM')
    assert _runs.fit_to_end(T('finished'), 'x')['state'] == 'finished'
    with pytest.raises(SystemExit, match=r"x: training ended 'stopped' at step 7 .*no result written; run it again"):
        _runs.fit_to_end(T('stopped'), 'x', hint='run it again')
    assert _runs.cpu_seconds() > 0


def test_study_recall_table_pools_each_arm_over_its_seeds(tmp_path):
    "tools/study_recall.py --table: one seed with its Wilson CI, several as mean and range; SW - full averaged over seeds; a wrong path is one line."
    import study_recall
    def rec(name, first, diff):
        rows = [dict(r=r, n=100, first=first, first_lo=first - 0.1, first_hi=first + 0.1) for r in study_recall.RATIOS]
        f = tmp_path / f'{name}.json'
        f.write_text(json.dumps(dict(run=name, recall=dict(rows=rows), value_nll=[dict(r=r, sw_minus_full=diff) for r in study_recall.NLL_RATIOS])))
        return f
    files = [rec('w64-sp-s0', 0.10, 0.02), rec('w64-sp-s1', 0.20, 0.04), rec('w64-nosp-s0', 0.50, -0.1)]
    rows = study_recall.table(files).splitlines()
    assert len(rows) == 4 and rows[2].startswith('| w64-nosp | 1 | 0.50 [0.40, 0.60] |') and '| -0.100 |' in rows[2]
    assert rows[3].startswith('| w64-sp | 2 | 0.15 (0.10-0.20) |') and '+0.030 [-0.097, +0.157]' in rows[3]
    with pytest.raises(SystemExit, match='not found'): study_recall.main(['--table', str(tmp_path / 'absent.json')])
    with pytest.raises(SystemExit, match='not a curriculum run folder'): study_recall.main([str(tmp_path)])


def test_study_recall_out_keeps_another_studys_runs_apart(tmp_path, monkeypatch):
    "tools/study_recall.py --out: the JSON goes to that folder, not to the first study's, whose runs have the same names."
    import study_recall
    run = tmp_path / 'runs' / 'stdlib-w64-sp-s0'; run.mkdir(parents=True); (run / 'curriculum.json').write_text('{}')
    monkeypatch.setattr(study_recall, 'OUT', tmp_path / 'default')
    monkeypatch.setattr(study_recall, 'probe', lambda p, n, n_nll: dict(run=p.name, recall=dict(rows=[dict(r=1, first=0.1)]),
                                                                     value_nll=[dict(r=1, sw_minus_full=0.0)], seconds=dict(wall_s=1.0)))
    study_recall.main([str(run), '--out', str(tmp_path / 'b32')])
    assert (tmp_path / 'b32' / 'stdlib-w64-sp-s0.json').exists() and not (tmp_path / 'default').exists()
    study_recall.main([str(run)])
    assert (tmp_path / 'default' / 'stdlib-w64-sp-s0.json').exists()


def test_provenance_names_the_machine_the_load_and_the_commit():
    import _runs
    p = _runs.provenance(threads=1)
    assert p['hardware']['threads'] == 1 and p['hardware']['cpu_count'] and len(p['hardware']['load_avg_end']) == 3
    assert len(p['commit']) in (0, 40)  # empty outside a git checkout


def test_regime_page_follows_its_sweep_and_pairs_with_the_5gram(tmp_path, monkeypatch):
    "tools/regime_sweep.py --markdown: the page is named after the results folder, names the sweep's corpus, and gives the paired 5-gram CI."
    import regime_sweep as RS
    assert RS.default_results_dir('sweeps/regime_stdlib.yaml') == ROOT / 'reports' / 'regime'
    assert RS.default_results_dir('x/regime_wikitext.yaml') == ROOT / 'reports' / 'regime-wikitext'
    doc5, doc_m = [1.0, 1.2, 1.4, 1.1], [0.9, 1.0, 1.3, 1.0]
    ng = dict(eval=dict(all={'5': dict(doc_nll=doc5)}))
    assert RS._vs_ngram(dict(doc_nll=doc_m), ng) == '-0.125 [-0.205, -0.045]'  # diffs -0.1,-0.2,-0.1,-0.1: sd 0.05, t(3) 3.182
    assert RS._vs_ngram(dict(doc_nll=doc_m[:3]), ng) == 'other documents' and RS._vs_ngram(dict(doc_nll=doc_m), None) == 'no n-gram'
    res = tmp_path / 'reports' / 'regime-toy'; res.mkdir(parents=True)
    ppl = lambda d: dict(ppl=2.0, docs=len(d), doc_nll=d)
    (res / 'ngram.json').write_text(json.dumps(dict(kind='KN', fit_s=1.0, fitted_on=dict(corpus='/x/toy-corpus', split='validation'),
                                                    eval=dict(published16={'5': ppl(doc5)}, all={'5': ppl(doc5)}))))
    (res / 'a.json').write_text(json.dumps(dict(name='a', commit='abcdef0123', config=dict(steps=10, batch_size=2, seq_len=8, lr=1e-3),
        train=dict(n_params=5, tokens=160, wall_s=3.0, cpu_s=2.0), eval=dict(published16=ppl(doc_m), all=ppl(doc_m)),
        hardware=dict(cpu='cpu', cpu_count=2, threads=1, torch='t', load_avg_end=[1.5, 1, 1]))))
    sweep = tmp_path / 'regime_toy.yaml'
    sweep.write_text('defaults: {corpus: /x/toy-corpus, seq_len: 8}\nruns:\n  - {name: a, why: first}\n  - {name: b, why: second}\n'
                     '  - {name: c, why: another W, seq_len: 16}\n')
    (res / 'c.json').write_text((res / 'a.json').read_text().replace('"name": "a"', '"name": "c"').replace('"seq_len": 8', '"seq_len": 16')
                                .replace('"cpu_s": 2.0', '"cpu_s": null'))   # resumed from a checkpoint without the trainer's CPU clock
    monkeypatch.setattr(RS, 'ROOT', tmp_path); (tmp_path / 'benchmarks').mkdir()
    RS.main([str(sweep), '--results-dir', str(res), '--markdown'])
    md = (tmp_path / 'benchmarks' / 'regime-toy.md').read_text()
    assert md.startswith('# The regime sweep on toy-corpus') and 'published study' not in md and 'fitted on toy-corpus/validation' in md
    assert '| a | first |' in md and '-0.125 [-0.205, -0.045] | abcdef0 |' in md and '| b | second | | | not run |' in md
    assert '| c | another W |' in md and '| other documents | abcdef0 |' in md   # the n-gram scored the default W's documents
    assert '| 160 | 3 (2) |' in md and '| 160 | 3 (CPU not measured) |' in md
    assert 'load average 1.5 when each run ended' in md and '2 cores' in md
    page = (tmp_path / 'reports' / 'regime-toy.qmd').read_text()
    assert 'title: "The regime on toy-corpus' in page and '--results-dir reports/regime-toy --markdown' in page



def test_regime_page_gives_the_seed_rule_over_configurations_that_differ_only_in_seed(tmp_path, monkeypatch):
    "tools/regime_sweep.py --markdown: seeds of one configuration are grouped, each with its standing, and the seed rule decides across them."
    import regime_sweep as RS
    sweep = dict(defaults=dict(corpus='/x/python-stdlib', seq_len=8, lr=1e-3),
                 runs=[dict(name='a', why='w'), dict(name='a-s1', seed=1), dict(name='b', lr=2e-3), dict(name='a-s2', seed=2)])
    assert [[f['name'] for f in g] for g in RS.seed_groups(sweep)] == [['a', 'a-s1', 'a-s2']]   # b differs in lr: no group
    res = tmp_path / 'reports' / 'regime'; res.mkdir(parents=True)
    doc5 = [1.0, 1.2, 1.4, 1.1]
    (res / 'ngram.json').write_text(json.dumps(dict(eval=dict(all={'5': dict(doc_nll=doc5)}))))
    orders = {str(n): dict(ppl=1.0) for n in range(1, 6)}
    for name, shift, order, hi in (('a', -0.1, 5, -0.01), ('a-s1', -0.2, 4, -0.02)):
        (res / f'{name}.json').write_text(json.dumps(dict(eval=dict(all=dict(ppl=3.0, doc_nll=[d + shift for d in doc5])))))
        (res / 'eval' / name).mkdir(parents=True)
        probes = [dict(r=r, diff={'full-sw_strided': dict(mean=-0.05, lo=-0.08, hi=hi)}) for r in (10.0, 20.0)]
        (res / 'eval' / name / 'summary.json').write_text(json.dumps(dict(
            probes=probes, overall=dict(full=dict(ppl=3.0)), n_docs=4, memory={},
            regime=dict(label='x', order=order, orders=orders, far_context_claims=True))))
    md = '\n'.join(RS.seeds_section(sweep, res, json.loads((res / 'ngram.json').read_text())))
    assert '### a, seeds 0, 1, 2' in md and '| 1 | a-s1 | 3.000 | -0.200 [-0.200, -0.200] | no |' in md and '| 2 | a-s2 | not run |' in md
    assert '| 0 | a | 3.000 | -0.100 [-0.100, -0.100] | yes | -0.0500 [-0.0800, -0.0100] |' in md
    assert 'mean per-seed difference with the 5-gram is -0.150 [-0.785, +0.485]' in md   # t(1) = 12.706, sd 0.0707
    assert 'in 1 of 2 evaluated seeds' in md and '10 W: **no claim: 2 of 5 seeds** (2 of 2 seeds exclude zero)' in md
    monkeypatch.setattr(RS, 'ROOT', tmp_path)
    f = tmp_path / 'regime_stdlib.yaml'; f.write_text(json.dumps(sweep))
    page = RS.site_page('# The regime sweep on python-stdlib (issue 15)\n', res, str(f))
    assert 'One of the seeds of a: the seed rule' in page and RS.seeds_section(dict(runs=[dict(name='a')]), res, None) == []

def _copy_run(tmp_path, name, seed, gain_at_repeats, W=16, L=4, docs_hash=None):
    "A finished curriculum folder as tools/study_copy.py reads it: curriculum.json, the final evaluation's summary and its saved losses."
    from ttt_nb.core import sha256_of
    from ttt_nb.curriculum.run import eval_documents
    from ttt_nb.eval import save_nll
    from ttt_nb.memory import repeat_distance
    cfg = dict(W=W, train=dict(steps=10, seed=seed, corpus='python-stdlib', tokenizer='byte'),
               eval=dict(max_mult=4, docs=1000, min_docs=2, split='test'))   # every long-enough document, as the study
    docs, info = eval_documents(cfg)
    d = tmp_path / name; (d / 'eval').mkdir(parents=True)
    (d / 'curriculum.json').write_text(json.dumps(cfg))
    full, sw = [], []
    for doc in docs:
        s = np.full(len(doc), 2.0); s[0] = np.nan
        sw.append(s); full.append(s - gain_at_repeats * (repeat_distance(doc, L) > W))
    summ = dict(schema='test', step=10, data=dict(docs_hash=docs_hash or sha256_of(*docs)))
    (d / 'eval' / 'step_000010.json').write_text(json.dumps(summ))
    save_nll(dict(full=full, sw_strided=sw), info['doc_ids'], d / 'eval' / 'step_000010_nll.safetensors', summ['data']['docs_hash'])
    return d


def test_study_copy_pools_seeds_per_arm_and_checks_the_documents(tmp_path):
    "tools/study_copy.py: a run whose full context gains only where the context recurred beyond W shows it in that range and nowhere else."
    import study_copy
    runs = [_copy_run(tmp_path, f'w16-copy-s{s}', s, 0.5) for s in (0, 1)] + [_copy_run(tmp_path, 'w16-flat-s0', 0, 0.0)]
    out = tmp_path / 'res.json'
    study_copy.main([str(r) for r in runs] + ['--L', '4', '--out', str(out)])
    res = json.loads(out.read_text())
    copy, flat = (next(a for a in res['arms'] if a['arm'] == n) for n in ('w16-copy', 'w16-flat'))
    assert copy['seeds'] == [0, 1] and flat['seeds'] == [0]
    assert copy['novel'][0] == 0 and flat['novel'][0] == 0
    beyond = [k for k, (lo, hi) in zip(copy['repeat'], res['bins']) if lo >= 1]
    assert all(abs(copy['repeat'][k][0] + 0.5) < 1e-12 for k in beyond if copy['repeat'][k][3]), copy
    assert all(flat['repeat'][k][0] == 0 for k in flat['repeat'] if flat['repeat'][k][3]), flat
    assert any(copy['repeat'][k][3] for k in beyond), 'no recurring context beyond W in the test documents'
    assert '| w16-copy | 2 |' in study_copy.table(res)
    bad = _copy_run(tmp_path, 'w16-bad-s0', 0, 0.0, docs_hash='0' * 64)
    with pytest.raises(SystemExit, match='documents differ'): study_copy.main([str(bad), '--out', str(out)])
    with pytest.raises(SystemExit, match='not a curriculum run folder'): study_copy.main([str(tmp_path), '--out', str(out)])


def test_study_compare_picks_finished_runs_pairs_windows_and_matches_the_published_pages(tmp_path):
    "tools/study_compare.py: finished runs only, a question-2 page keeps the seeds done at both windows, too few groups is one line; every published study page names the runs the registry picks."
    import study_compare as sc
    def run(name, phase):
        d = tmp_path / 'runs' / 'study' / name; d.mkdir(parents=True)
        (d / 'curriculum_status.json').write_text(json.dumps(dict(phase=phase, checkpoint_steps=[0], evaluated=[0] if phase == 'finished' else [])))
    for n in ['stdlib-w64-noise-s0', 'stdlib-w64-noise-s1', 'stdlib-w128-noise-s1', 'stdlib-w128-noise-s2']: run(n, 'finished')
    run('stdlib-w128-noise-s0', 'training')
    got = [p.name for p in sc.page_runs('compare-study-w128-noise', root=tmp_path)]
    assert got == ['stdlib-w64-noise-s1', 'stdlib-w128-noise-s1']
    assert sc.missing('compare-study-w128-q1', sc.page_runs('compare-study-w128-q1', root=tmp_path)) == ['w128-sp', 'w128-nosp', 'w128-other']
    with pytest.raises(SystemExit, match='unknown page nope'): sc.main(['nope'])
    cj = tmp_path / 'reports' / 'compare-study-w128-noise' / 'compare.json'; cj.parent.mkdir(parents=True)
    cj.write_text(json.dumps(dict(runs=[f'/x/runs/study/stdlib-w{W}-noise-s{s}' for W in (64, 128) for s in (1, 2)])))
    assert sc.lost_runs('compare-study-w128-noise', got and sc.page_runs('compare-study-w128-noise', root=tmp_path), root=tmp_path) == \
        ['stdlib-w64-noise-s2', 'stdlib-w128-noise-s2']                             # the page compared seed 2 too: not dropped silently
    assert sc.lost_runs('compare-study-q1', [], root=tmp_path) == []                # no page yet: nothing to lose
    (tmp_path / 'runs' / 'study-b32').mkdir(); (tmp_path / 'runs' / 'study' / 'stdlib-w64-noise-s0').rename(tmp_path / 'runs' / 'study-b32' / 'stdlib-w64-noise-s0')
    assert [p.name for p in sc.page_runs('compare-b32-w128-noise', root=tmp_path, pair=False)] == ['stdlib-w64-noise-s0']  # its own folder
    pub = tmp_path / 'reports' / 'curriculum' / 'b32-stdlib-w128-noise-s3'; (pub / 'eval').mkdir(parents=True)   # a published run, folder gone
    (pub / 'curriculum_status.json').write_text(json.dumps(dict(phase='finished')))
    (pub / 'final_eval.json').write_text(json.dumps(dict(losses_file='step_000004_nll.safetensors')))
    assert [p.name for p in sc.page_runs('compare-b32-w128-noise', root=tmp_path, pair=False)] == ['stdlib-w64-noise-s0']  # no losses: not read
    (pub / 'eval' / 'step_000004_nll.safetensors').write_bytes(b'x')
    got = sc.page_runs('compare-b32-w128-noise', root=tmp_path, pair=False)
    assert [str(p.relative_to(tmp_path)) for p in got] == ['runs/study-b32/stdlib-w64-noise-s0', 'reports/curriculum/b32-stdlib-w128-noise-s3']
    assert sc.missing('compare-b32-w128-noise', got) == [] and sc.page_runs('compare-b32-w128-noise', root=tmp_path) == []   # no seed at both
    assert sc.PAGES['compare-b32-q1'][0].startswith('The study at 41M tokens (batch 32), question 1') and not any('b32-wikitext' in n for n in sc.PAGES)
    t = sc.page_title('compare-b32-w64-sp', ['runs/study-b32/stdlib-w64-sp-s0', 'runs/study-b32/stdlib-w64-nosp-s0'])
    assert t == 'The study at 41M tokens (batch 32), question 1: state passing against none, W = 64, python-stdlib, seed 0', t
    assert sc.page_title('compare-study-q1', [f'x/stdlib-w64-sp-s{i}' for i in (0, 1, 2, 3, 4)]).endswith('W = 64, python-stdlib, seeds 0-4')
    assert sc.seeds_phrase(['a-s0', 'b-s2', 'a-s2']) == 'seeds 0, 2'
    pairs = dict(paired=[dict(comparison='A - B', seed=s, position=128, mean=m, lo=lo, hi=hi)
                         for s, m, lo, hi in [(0, 0.1, 0.05, 0.2), (1, 0.0, -0.1, 0.1), ('pooled', 0.05, 0.01, 0.09)]])
    assert sc.pairs_table(pairs).splitlines() == ['== A - B', '  pooled: 128: +0.050 [+0.010, +0.090]', '  s0: 128: +0.100*', '  s1: 128: +0.000']
    for f in sorted((ROOT / 'reports').glob('compare-study-*/compare.json')):
        name, runs = f.parent.name, json.loads(f.read_text())['runs']
        assert name in sc.PAGES, f'{name}: published but not in tools/study_compare.py'
        _, (corpus, folder, prefix), Ws, arms, paired = sc.PAGES[name]
        groups = [f'{corpus}-w{W}-{a}' for a in arms for W in Ws]
        got = [Path(r).name for r in runs]
        assert all(g.rsplit('-s', 1)[0] in groups for g in got), name
        assert got == sorted(got, key=lambda g: (arms.index(g.split('-')[2]), Ws.index(int(g.split('-')[1][1:])), g)), name


@pytest.mark.slow
def test_study_publish_checks_every_run_first_then_publishes_data_a_comparison_reads(tmp_path, monkeypatch):
    "tools/study_publish.py: a folder outside a study or an unfinished run stops it before anything is written; a finished run gets its prefixed page, its data (losses included), the recall probe into its study's folder and a results page."
    import nbformat
    import study_publish
    import study_recall

    from ttt_nb.curriculum.compare import final_losses
    from ttt_nb.curriculum.run import load_run, run_curriculum
    rep = tmp_path / 'reports'; (rep / 'curriculum').mkdir(parents=True); (rep / 'science.qmd').write_text('---\ntitle: rules\n---\n')
    run = tmp_path / 'runs' / 'study-wikitext-drop' / 'wikitext-w16-sp-s0'
    run_curriculum(W=16, steps=4, batch_size=2, n_checkpoints=2, eval_max_mult=4, eval_docs=5, stride=8, n_boot=100,
                   model_overrides={'num_hidden_layers': 1}, out_dir=str(run))
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell('# Curriculum')]), str(run / 'x.ipynb'))
    calls = []
    monkeypatch.setattr(study_recall, 'main', lambda argv: calls.append(argv))
    other = tmp_path / 'runs' / 'sweep' / 'x'; other.mkdir(parents=True)
    with pytest.raises(SystemExit, match="not a study's folder"): study_publish.main([str(run), str(other)], reports=rep)
    unfinished = run.parent / 'wikitext-w16-nosp-s0'; unfinished.mkdir()
    (unfinished / 'curriculum_status.json').write_text(json.dumps(dict(phase='training', pid=None, updated='2999-01-01T00:00:00+00:00')))
    with pytest.raises(SystemExit, match='wikitext-w16-nosp-s0 is not finished'): study_publish.main([str(run), str(unfinished)], reports=rep)
    assert not list((rep / 'curriculum').iterdir()) and not calls               # nothing written
    study_publish.main([str(run)], reports=rep)
    data = rep / 'curriculum' / 'wdrop-wikitext-w16-sp-s0'
    assert (rep / 'curriculum' / 'wdrop-wikitext-w16-sp-s0.ipynb').exists() and (rep / 'results.qmd').exists()
    assert calls == [[str(run), '--out', str(rep / 'study-recall-wdrop')]]
    assert not list(data.rglob('model.safetensors')) and final_losses(load_run(data))[1] == final_losses(load_run(run))[1]
    study_publish.main([str(run)], reports=rep)                                  # again, same machine: the page is refreshed
    fe = json.loads((data / 'final_eval.json').read_text()); fe['hardware']['cpu'] = 'another CPU'
    (data / 'final_eval.json').write_text(json.dumps(fe))                          # the first page came from another machine
    with pytest.raises(SystemExit, match='published from a run on another CPU.*--rerun'): study_publish.main([str(run)], reports=rep)
    study_publish.main([str(run), '--rerun'], reports=rep)
    assert (rep / 'curriculum' / 'wdrop-rerun-wikitext-w16-sp-s0.ipynb').exists() and calls[-1][-1] == str(rep / 'study-recall-wdrop-rerun')
    assert json.loads((data / 'final_eval.json').read_text())['hardware']['cpu'] == 'another CPU'   # the first page untouched
    s1 = shutil.copytree(run, run.parent / 'wikitext-w16-sp-s1')                 # a rerun needs a first page
    with pytest.raises(SystemExit, match='no first page'): study_publish.main([str(s1), '--rerun'], reports=rep)
    shutil.rmtree(s1)
    import study_compare as sc
    monkeypatch.setitem(sc.PAGES, 'x', ('t', ('wikitext', 'runs/study-wikitext-drop', 'wdrop-'), (16,), ('sp',), False))
    assert sc.page_runs('x', root=tmp_path) == [run]                               # the run folder first
    shutil.rmtree(run); sc.finished.cache_clear()
    assert [p.name for p in sc.page_runs('x', root=tmp_path)] == ['wdrop-wikitext-w16-sp-s0']   # then a published folder with losses
