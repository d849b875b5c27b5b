"""benchmarks/gpu_check.py's machinery, in seconds: a stage that overruns is stopped and keeps what it wrote, a failing
stage keeps its items and its error, the smoke run never writes the committed results, and the markdown says plainly
what was not measured. The stages themselves run end to end in `make gpu-check SMOKE=1` (part of `make test`)."""
import json
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'benchmarks'))
import gpu_check as G  # noqa: E402


def _child(tmp_path, body:str) -> list:
    "A stage-like child process: writes a record to out.json, then runs `body`."
    out = tmp_path / 'out.json'
    code = ("import json, sys, time\n"
            f"json.dump({{'env': {{'device': 'fake'}}, 'items': {{'x': [{{'v': 1}}]}}, 'notes': []}}, open({str(out)!r}, 'w'))\n"
            "print('measured one item', flush=True)\n" + body)
    return [sys.executable, '-c', code], out

def test_overrunning_stage_is_stopped_and_keeps_its_items(tmp_path):
    cmd, out = _child(tmp_path, "time.sleep(60)")
    t0 = time.perf_counter()
    r = G.run_child(cmd, out, budget_s=3)
    assert time.perf_counter() - t0 < 20
    assert r['status'].startswith('overran its 3 s budget'), r['status']
    assert r['items'] == {'x': [{'v': 1}]} and r['env'] == {'device': 'fake'}
    assert any('measured one item' in n for n in r['notes']), r['notes']

def test_failing_stage_keeps_items_and_error(tmp_path):
    cmd, out = _child(tmp_path, "raise SystemExit('boom: the kernel did not compile')")
    r = G.run_child(cmd, out, budget_s=60)
    assert r['status'] == 'failed (exit 1)' and r['items'] == {'x': [{'v': 1}]}
    assert 'boom: the kernel did not compile' in r['notes'][-1]

def test_finished_stage_is_done(tmp_path):
    cmd, out = _child(tmp_path, "pass")
    r = G.run_child(cmd, out, budget_s=60)
    assert r['status'] == 'done' and r['notes'] == [] and r['budget_s'] == 60

def test_smoke_never_writes_the_committed_results(capsys):
    for args in (['--smoke', '--out', str(G.RESULTS)], ['--smoke', '--out', '/tmp/x.json', '--md', str(G.MD)]):
        with pytest.raises(SystemExit) as e: G.main(args)
        assert e.value.code == 2
        assert 'never writes' in capsys.readouterr().err

def test_unknown_stage_is_one_clear_error(capsys):
    with pytest.raises(SystemExit): G.main(['--smoke', '--stages', 'correctness,speed'])
    assert "unknown stage(s) ['speed']" in capsys.readouterr().err

def test_markdown_without_results_says_not_measured_and_gives_the_command():
    md = G.markdown(None)
    assert 'No GPU has been available' in md and 'not measured' in md and G.DEVICE_COMMAND in md and 'make gpu-wheels' in md

def _fake_result(measured=True):
    env = dict(device='NVIDIA H100 80GB HBM3', capability='sm_90', gpu_mem_gib=79.2, cuda='12.8', python='3.12.3',
               torch='2.11.0', triton='3.6.0', transformers='5.17.0', ttt_nb='0.1.0')
    shape = [dict(impl='triton', kind='linear', B=8, T=2048, H=12, d=64, ms=2.0, tflops=100.0, tb_s=1.5, pct_ref_tflops=12.7,
                  pct_ref_tb_s=50.0),
             dict(impl='ref', kind='linear', B=8, T=2048, H=12, d=64, ms=20.0, tflops=10.0, tb_s=0.15),
             dict(impl='fla', kind='linear', B=8, T=2048, H=12, d=64, error="not importable: No module named 'fla'")]
    stages = dict(
        correctness=dict(status='done', seconds=80.0, budget_s=150, env=env, notes=[], items=dict(checks=[
            dict(case='B2-T300-H4-D64-b16', kind='linear', dtype='fp32', ok=True, worst='out', worst_err=1e-6, tol=5e-5, seconds=3.0),
            dict(case='125m-mlp-model-B2-T203', ok=False, error='RuntimeError: boom', seconds=1.0)])),
        kernels=dict(status='overran its 120 s budget: stopped, the items measured before are kept', seconds=120.0, budget_s=120,
                     env=env, notes=['overran'], items=dict(shape=shape, ratios=[dict(kind='linear', T=2048, vs_ours={'ref': 10.0})])),
        train=dict(status='done', seconds=50.0, budget_s=80, env=env, notes=[], items=dict(train=[dict(
            preset='125m', W=2048, B=8, vocab=50257, precision='bfloat16', timed_steps=30, warmup_steps=3, s_per_step=0.08,
            s_per_step_max=0.09, tokens_per_s=204800.0, n_params=124e6, n_params_no_embedding=85e6, last_loss=5.0,
            target_tokens_per_s=200000, meets_target=True, mfu=0.2, mfu_ref=0.25, peak_mem_gib=30.0)])),
        decode=dict(status="skipped: the run's 480 s deadline was reached", items={}, notes=[], env={}))
    res = dict(measured=measured, created='2026-11-28T00:00:00Z', command='python benchmarks/gpu_check.py', seconds=400.0,
               deadline_s=480, flops='6N', env=env, stages=stages)
    res['summary'] = G.summarize(res)
    return res

def test_markdown_of_a_partial_run_labels_every_table_and_each_gap():
    md = G.markdown(_fake_result())
    assert 'No GPU has been available' not in md
    assert md.count('Device: NVIDIA H100 80GB HBM3 (sm_90') == 3               # above each measured stage's table
    assert 'torch 2.11.0, triton 3.6.0, transformers 5.17.0' in md
    assert '| 125m-mlp-model-B2-T203 | | | RuntimeError: boom | | **no** |' in md
    assert 'overran its 120 s budget' in md and "not importable: No module named 'fla'" in md
    assert '| TTT-Linear | ref | 8 | 2048 | 12 | 64 | 20 | 10 |' in md          # x ours: the reference takes 10x our time
    assert '204,800 | 200,000 (met)' in md
    dec = md.split('## decode')[1]
    assert 'skipped' in dec and 'not measured.' in dec

def test_summary_names_failed_checks_and_targets():
    s = _fake_result()['summary']
    assert s['checks_run'] == 2 and s['checks_failed'] == ['125m-mlp-model-B2-T203']
    assert s['train_meets_target'] is True and s['kernel_ratios'] == {'linear': {'ref': 10.0}} and 'decode_min_tokens_per_s' not in s

def test_smoke_markdown_is_not_a_measurement():
    md = G.markdown(_fake_result(measured=False))
    assert 'No GPU has been available' in md and 'not a measurement' in md

def test_committed_section_is_the_current_rendering():
    "benchmarks/gpu_check.md is what --render-only writes from the committed JSON (or the not-measured text without one)."
    res = json.loads(G.RESULTS.read_text()) if G.RESULTS.exists() else None
    assert G.MD.read_text() == G.markdown(res)

def test_stages_past_the_deadline_are_skipped_with_a_note(tmp_path):
    import argparse
    a = argparse.Namespace(smoke=True, stages=['correctness', 'decode'], deadline_s=3.0, budget_scale=1.0, work_dir=str(tmp_path), argv=[])
    res = G.run_all(a)
    assert [s['status'] for s in res['stages'].values()] == ["skipped: the run's 3 s deadline was reached"] * 2
    assert res['summary']['checks_run'] == 0 and res['summary']['train_tokens_per_s'] is None
    assert 'not measured.' in G.markdown(res).split('## decode')[1]


def test_gpu_plan_times_a_sweep_from_the_measured_training_row(tmp_path):
    "tools/gpu_plan.py: tokens per run from the sweep file; hours only from a measured GPU row of the same preset and W."
    sys.path.insert(0, str(ROOT / 'tools'))
    import gpu_plan
    sweep = ROOT / 'sweeps/gpu_125m_w2048.yaml'
    none = gpu_plan.plan(str(sweep), tmp_path / 'absent.json')
    assert none['train_hours'] is None and all(r['train_hours'] is None for r in none['runs'])
    assert none['runs'][0]['tokens'] == 4800 * 256 * 2048
    check = tmp_path / 'gpu_check.json'
    row = dict(preset='125m', W=2048, tokens_per_s=1.0e6)
    check.write_text(json.dumps(dict(measured=True, stages=dict(train=dict(env=dict(device='NVIDIA H100'), items=dict(train=[row]))))))
    got = gpu_plan.plan(str(sweep), check)
    assert got['runs'][0]['measured_on'] == 'NVIDIA H100'
    assert abs(got['runs'][0]['train_hours'] - 4800 * 256 * 2048 / 1.0e6 / 3600) < 1e-9
    assert abs(got['train_hours'] - len(got['runs']) * got['runs'][0]['train_hours']) < 1e-9
    check.write_text(json.dumps(dict(measured=False, stages=dict(train=dict(items=dict(train=[row]))))))  # a smoke run: not a measurement
    assert gpu_plan.plan(str(sweep), check)['train_hours'] is None
    other = dict(row, W=1024)
    check.write_text(json.dumps(dict(measured=True, stages=dict(train=dict(items=dict(train=[other]))))))  # another window: no time
    assert gpu_plan.plan(str(sweep), check)['train_hours'] is None
