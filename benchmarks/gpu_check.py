#!/usr/bin/env python
"""The one GPU run (issue 16): correctness on the hardware, kernel speed, training throughput and decode speed.

    python benchmarks/gpu_check.py             # on a GPU, about 8 minutes on one H100: benchmarks/results/gpu_check.json
                                               #   and benchmarks/gpu_check.md (then tools/benchmarks_md.py -> BENCHMARKS.md)
    python benchmarks/gpu_check.py --smoke     # the same code path at tiny sizes (CPU: Triton's interpreter), written to a
                                               #   temporary folder, never over the committed results (make gpu-check SMOKE=1)
    bash tools/gpu_run.sh                      # on a bare GPU image: installs the carried wheels (.gpu-wheels/), runs this,
                                               #   copies the results to $OUT
    python benchmarks/gpu_check.py --render-only   # rewrite the markdown from the JSON (or the not-measured text)

Each stage runs in its own process with a time budget (unused seconds pass to the next stage; the whole run stops at
--deadline-s). A stage writes its JSON after every item, so one that overruns is stopped, noted, and keeps what it had
measured; one that fails keeps its items and the last lines of its error. Stages:
  correctness  the Triton kernels through the dispatch against the float64 reference (outputs, final state, every
               input's gradient; fp32 and bf16, real sizes; tests/_kernel_check.py), split-state continuation, and a
               whole 125m model, kernel path against reference path, loss and every parameter's gradient on one batch;
  kernels      forward+backward at B8 T2048 H12 d64 bf16: ours (Triton) vs our PyTorch reference vs flash-linear-
               attention's chunk_ttt_linear (when importable), TTT-MLP too, and ours vs causal SDPA at 1k-32k tokens
               (benchmarks/bench_kernels.py's timing, FLOP and byte counts);
  train        Trainer steps of the 125m preset at W=2048, B=8, bf16 autocast, GPT-2's vocabulary: tokens/s, MFU, peak memory;
  decode       single-stream decode of 125m bf16 after contexts of 128..32k tokens, TTT with CUDA graphs vs the
               Transformer with a KV cache (benchmarks/bench_generate.py's measurement).
Every stage records the device and package versions it ran with; the markdown prints them above each table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS, MD = ROOT / 'benchmarks/results/gpu_check.json', ROOT / 'benchmarks/gpu_check.md'
SCHEMA = 'ttt_nb.gpu_check/v1'
STAGES = ('correctness', 'kernels', 'train', 'decode')
BUDGET_S = dict(correctness=150, kernels=120, train=80, decode=110)   # on a GPU; 460 s in all, under the 480 s deadline
SMOKE_BUDGET_S = dict(correctness=150, kernels=150, train=150, decode=150)   # generous: CPUs in CI are shared
REF_PEAK = dict(tflops=790.0, tb_s=3.0)   # the H100 figures issue 16 measures against (bf16 dense TFLOP/s, HBM TB/s)
TARGETS = dict(train_tokens_per_s=200_000, decode_tokens_per_s=300)
DEVICE_COMMAND = 'bash tools/gpu_run.sh'
GPU_RUN_HELP = ("`make gpu-wheels` here (fills the git-ignored `.gpu-wheels/`, ~1.5 MB), then on the GPU machine, in a copy "
                "of this repository that includes `.gpu-wheels/`: `" + DEVICE_COMMAND + "` (no network or pip needed; about 8 "
                "minutes on one H100, inside a 10-minute limit; results in `$OUT`, default `gpu_out/`)")


# ---- the environment every number is measured in ----

def env_info() -> dict:
    "Device and versions: the GPU (name, capability, memory, driver's CUDA) or the CPU, and every package that matters."
    import torch
    info = dict(python=platform.python_version(), platform=platform.platform(), torch=torch.__version__,
                cuda=torch.version.cuda, triton_interpret=os.environ.get('TRITON_INTERPRET', '') == '1')
    for m in ('triton', 'transformers', 'safetensors', 'tokenizers', 'numpy', 'fastcore', 'fla'):
        try: info[m] = __import__(m).__version__
        except Exception: info[m] = None                     # absent (fla: flash-linear-attention) or without a version
    from ttt_nb import __version__
    info['ttt_nb'] = __version__
    try: info['git'] = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT, capture_output=True, text=True,
                                      timeout=10).stdout.strip() or None
    except Exception: info['git'] = None
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(device=p.name, capability=f"sm_{p.major}{p.minor}", gpu_mem_gib=round(p.total_memory / 2**30, 1),
                    gpu_count=torch.cuda.device_count())
    else:
        from ttt_nb.core import hardware_info
        info.update(device=f"CPU: {hardware_info()['cpu']} ({os.cpu_count()} cores)")
    return info

def env_line(e:dict) -> str:
    "One line naming the device and versions, printed above every table."
    if not e: return 'Device and versions: not recorded.'
    dev = e.get('device', '?') + (f" ({e['capability']}, {e['gpu_mem_gib']} GiB, CUDA {e['cuda']})" if e.get('capability') else '')
    v = ', '.join(f"{k} {e[k]}" for k in ('torch', 'triton', 'transformers', 'fla') if e.get(k))
    return (f"Device: {dev}; Python {e.get('python')}, {v}; ttt_nb {e.get('ttt_nb')}" + (f" at {e['git']}" if e.get('git') else '')
            + ('; Triton interpreter' if e.get('triton_interpret') else '') + '.')


# ---- a stage's record: written after every item, so a stopped stage keeps what it measured ----

class Record:
    "The JSON a stage process writes: env, items by section, notes; rewritten atomically after every change."
    def __init__(self, path:Path):
        self.path, self.data = Path(path), dict(env=env_info(), items={}, notes=[])
        self.save()
    def add(self, section:str, item:dict):
        self.data['items'].setdefault(section, []).append(item); self.save()
        print(f"[{section}] " + json.dumps(item, default=str)[:300], flush=True)
    def note(self, text:str):
        self.data['notes'].append(text); self.save(); print('note: ' + text, flush=True)
    def save(self):
        tmp = self.path.with_suffix('.tmp')
        tmp.write_text(json.dumps(self.data, indent=1, default=str)); os.replace(tmp, self.path)

def _err(e:BaseException) -> str:
    return f"{type(e).__name__}: {e}".splitlines()[0][:300]

def _import_helpers():
    "benchmarks/ and tests/ on the path: the bench_* measurements and tests/_kernel_check.py's cases and error measure."
    for d in (ROOT, ROOT / 'benchmarks', ROOT / 'tests'):
        if str(d) not in sys.path: sys.path.insert(0, str(d))


# ---- stage (a): correctness on the hardware ----

def dispatch_errors(c, device) -> dict:
    "Relative RMS errors of every output, final state and input gradient of the dispatch's Triton path vs the float64 reference."
    import functools
    import warnings

    import _kernel_check as K

    from ttt_nb.ops import dispatch, ttt_ref
    xs = K.make_inputs(c, device)
    op = functools.partial(getattr(dispatch, f"ttt_{c.kind}"), impl='triton')
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        got = K.run(op, xs, c.offset, c.kind)
    fell = [str(x.message) for x in w if 'falls back' in str(x.message)]
    if fell: raise RuntimeError(f"the dispatch ran the reference, not the kernel: {fell[0]}")
    want = K.run(getattr(ttt_ref, f"ttt_{c.kind}"), xs, c.offset, c.kind, upcast=True)
    res = {}
    for k, v in want.items():
        if v is None: continue
        res[k] = float('inf') if got[k] is None else K.rel_rms(got[k], v) if v.abs().max() > 0 else got[k].abs().max().item()
    return res

def judge(errs:dict, tol:dict) -> dict:
    "The worst error relative to its tolerance, and whether every error is within its tolerance."
    import _kernel_check as K
    worst = max(errs, key=lambda k: errs[k] / tol[K.kind_of(k)])
    return dict(ok=all(e <= tol[K.kind_of(k)] for k, e in errs.items()), worst=worst, worst_err=errs[worst],
                tol=tol[K.kind_of(worst)], errors=errs)

def correctness_cases(smoke:bool) -> list:
    "Kernel cases, most telling first (a stage that runs out of time drops the last): bf16/fp32 at the model's head dim first."
    import _kernel_check as K
    if smoke:
        return [K.Case(1, 21, 2, 16, 16), K.Case(1, 21, 1, 16, 16, offset=5, dtype='bf16', kind='mlp')]
    first = [K.Case(2, 300, 4, 64, 16), K.Case(2, 300, 4, 64, 16, dtype='bf16'), K.Case(4, 100, 12, 64, 16, offset=3, dtype='bf16'),
             K.Case(2, 300, 4, 64, 16, kind='mlp'), K.Case(2, 300, 4, 64, 16, offset=5, dtype='bf16', kind='mlp')]
    return first + [c for c in K.GPU_CASES if c not in first]

def stage_correctness(rec:Record, smoke:bool, device):
    "Kernel cases through the dispatch, split continuation, and the 125m model (tiny in smoke) kernel path vs reference path."
    import _kernel_check as K
    import torch
    cpu = device.type == 'cpu'
    tols = K.TOL if cpu else K.GPU_TOL
    cases = correctness_cases(smoke)
    order = cases[:5] + ['model-linear', 'model-mlp'] + list(K.SPLIT_CASES) + cases[5:]   # the models early: they matter most
    if smoke: order = cases + ['model-linear', 'split']        # the same paths, the fewest interpreted kernels
    for it in order:
        t0 = time.perf_counter()
        try:
            if isinstance(it, K.Case):
                r = dict(case=it.id, kind=it.kind, dtype=it.dtype, **judge(dispatch_errors(it, device), tols[it.dtype]))
            elif it.startswith('model-'):
                kind = it[len('model-'):]
                kw = dict(preset='tiny', layers=1, B=1, T=20) if smoke else dict(preset='125m', B=2, T=203, vocab=None)
                m = K.model_errors(kind, device, dtype=torch.float32, **kw)
                tol = K.MODEL_TOL if cpu else dict(loss=1e-5, grad=5e-3)    # tests/test_kernels.py's GPU tolerances
                r = dict(case=f"{kw['preset']}-{kind}-model-B{kw['B']}-T{kw['T']}", kind=kind, dtype='fp32',
                         ok=m['same_params'] and m['loss'] <= tol['loss'] and m['grad'] <= tol['grad'], worst=m['worst'],
                         worst_err=m['grad'], tol=tol['grad'], loss_rel=m['loss'], loss_tol=tol['loss'], n_grads=m['n_grads'])
            else:
                e = K.split_errors(K.SPLIT_CASES[it], device=device)
                lim = 1e-5 if cpu else 1e-4
                worst = max(e, key=e.get)
                r = dict(case=it, kind='mlp' if 'mlp' in it else 'linear', dtype='fp32', ok=e[worst] < lim, worst=worst,
                         worst_err=e[worst], tol=lim, errors=e)
        except Exception as e:  # recorded as a failed check, never fatal to the stage
            r = dict(case=getattr(it, 'id', it), ok=False, error=_err(e))
            if device.type == 'cuda': torch.cuda.empty_cache()
        rec.add('checks', dict(r, seconds=round(time.perf_counter() - t0, 2)))


# ---- stage (b): kernel speed ----

def stage_kernels(rec:Record, smoke:bool, device):
    "Forward+backward times of ours, the reference, fla and SDPA at one shape, TTT-MLP, and ours vs SDPA over T."
    import bench_kernels as BK
    import torch
    dtype = torch.float32 if device.type == 'cpu' else torch.bfloat16   # the interpreter's bf16 dots are not trustworthy
    B, H, T, d, b = (1, 2, 16, 16, 16) if smoke else (8, 12, 2048, 64, 16)
    reps = 1 if smoke else 20
    sweep = (16, 32) if smoke else (1024, 2048, 4096, 8192, 16384, 32768)
    def one(kind, name, shape, section):
        BK.KIND = kind
        try: impl = BK.make_impl(name, compile_max_T=0)
        except Exception as e:
            row = dict(impl=name, kind=kind, B=shape[0], H=shape[1], T=shape[2], d=shape[3], b=shape[4], mode='fwd+bwd', error=str(e)[:300])
        else: row = BK.bench_one(name, impl, shape, dtype, device, 'fwd+bwd', reps)
        for k, ref in (('tflops', 'tflops'), ('tb_s', 'tb_s')):
            if k in row: row[f"pct_ref_{k}"] = 100 * row[k] / REF_PEAK[ref]
        rec.add(section, row)
        return row
    for kind, names in (('linear', ('triton', 'ref', 'fla', 'sdpa')), ('mlp', ('triton', 'ref'))):
        rows = {n: one(kind, n, (B, H, T, d, b), 'shape') for n in names}
        ours = rows['triton'].get('ms')
        ratios = {n: r['ms'] / ours for n, r in rows.items() if n != 'triton' and ours and 'ms' in r}
        rec.add('ratios', dict(kind=kind, T=T, vs_ours=ratios))   # > 1: the other takes that many times our time
        if kind == 'linear':
            BK.KIND = 'linear'
            try: rec.add('agreement', dict(kind=kind, T=T, rel_rms_vs_ref=BK.check_against_reference((B, H, T, d, b), dtype, device)))
            except Exception as e: rec.note(f"Triton vs reference agreement at T={T}: {_err(e)}")
    for Tn in sweep:
        rows = {n: one('linear', n, (B, H, Tn, d, b), 'sweep') for n in ('triton', 'sdpa')}
        if 'ms' in rows['triton'] and 'ms' in rows['sdpa']:
            rec.add('sweep_ratio', dict(T=Tn, sdpa_over_ours=rows['sdpa']['ms'] / rows['triton']['ms']))


# ---- stage (c): training throughput ----

def stage_train(rec:Record, smoke:bool, device):
    "Optimizer steps of the Trainer (bf16 autocast on CUDA) with GPT-2's vocabulary: tokens/s, MFU, peak memory."
    import bench_kernels as BK
    import torch

    from ttt_nb.config import TTTConfig
    from ttt_nb.model import TTTForCausalLM
    from ttt_nb.train import TrainConfig, Trainer
    preset, W, Bsz, steps, warm, vocab = ('tiny', 32, 2, 2, 1, 512) if smoke else ('125m', 2048, 8, 30, 3, 50257)
    cuda = device.type == 'cuda'
    with tempfile.TemporaryDirectory() as d:
        # The trainer sizes the vocabulary by its tokenizer (bytes: 257); a saved model with GPT-2's 50257 ids, passed as
        # init_from, trains on the same byte ids with a realistic LM head.
        torch.manual_seed(0)
        TTTForCausalLM(TTTConfig.from_preset(preset, vocab_size=vocab)).save_pretrained(f"{d}/init")
        kw = dict(preset=preset, init_from=f"{d}/init", tokenizer='byte', seq_len=W, batch_size=Bsz, steps=steps + warm + 1,
                  warmup_steps=1, eval_batches=1, eval_batch_size=1, n_checkpoints=0, eval_every=0, out_dir=f"{d}/run",
                  progress=False, wandb='disabled', run_eval=False, device=device.type)
        try: tr, corpus = Trainer(TrainConfig(corpus='python-stdlib', **kw)), 'python-stdlib'
        except (FileNotFoundError, ValueError) as e:   # an image without the standard library's sources: any bytes time the same
            rec.note(f"python-stdlib unavailable ({_err(e)}): trained on synthetic-recall instead")
            tr, corpus = Trainer(TrainConfig(corpus='synthetic-recall', **kw)), 'synthetic-recall'
        for _ in range(warm): tr.train_step()
        if cuda: torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
        times, losses = [], []
        for _ in range(steps):
            t0 = time.perf_counter(); losses.append(float(tr.train_step()[0]))
            if cuda: torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        m = tr.model
        n = sum(p.numel() for p in m.parameters())
        emb = m.get_input_embeddings().weight
        n_emb, V, hid = emb.numel(), emb.shape[0], emb.shape[1]
        tok_s = steps * Bsz * W / sum(times)
        flops_tok = 6 * (n - n_emb) + 6 * V * hid          # 6N without the embedding, plus the (tied) LM head's matmul
        row = dict(preset=preset, W=W, B=Bsz, vocab=V, corpus=corpus, precision=str(tr.precision).replace('torch.', ''), timed_steps=steps,
                   warmup_steps=warm, s_per_step=sum(times) / steps, s_per_step_max=max(times), tokens_per_s=tok_s,
                   n_params=n, n_params_no_embedding=n - n_emb, flops_per_token=flops_tok, last_loss=losses[-1],
                   losses_finite=all(x == x and abs(x) != float('inf') for x in losses),
                   target_tokens_per_s=TARGETS['train_tokens_per_s'], meets_target=tok_s >= TARGETS['train_tokens_per_s'])
        lim = BK.device_limits(device)
        if cuda:
            row['peak_mem_gib'] = torch.cuda.max_memory_allocated() / 2**30
            if lim and 'bf16_tflops' in lim: row['mfu'] = flops_tok * tok_s / (lim['bf16_tflops'] * 1e12)
            row['mfu_ref'] = flops_tok * tok_s / (REF_PEAK['tflops'] * 1e12)
        rec.add('train', row)


# ---- stage (d): decode ----

def stage_decode(rec:Record, smoke:bool, device):
    "Single-stream decode after growing contexts, TTT (CUDA graphs on a GPU) and the Transformer with a KV cache, interleaved."
    import bench_generate as BG
    import torch
    preset, vocab, dtype = ('tiny', 257, torch.float32) if smoke else ('125m', 50257, torch.bfloat16)
    args = argparse.Namespace(prefill_chunk=2048, cuda_graphs='auto', warmup=1 if smoke else 3, decode_tokens=3 if smoke else 32)
    contexts = (16, 32) if smoke else (128, 2048, 32768, 512, 8192, 256, 1024, 4096, 16384)   # coarse first
    models, graphs = {k: BG.build(k, preset, vocab, dtype, device) for k in ('ttt', 'transformer')}, {}
    for L in contexts:
        for kind, m in models.items():
            try: r = BG.measure(m, kind, L, args, device, graphs)
            except Exception as e:
                r = dict(model=kind, context=L, error='OOM' if 'out of memory' in str(e) else _err(e))
                if device.type == 'cuda': torch.cuda.empty_cache()
            rec.add('decode', dict(r, preset=preset, vocab=vocab, dtype=str(dtype).replace('torch.', '')))
    rec.add('ttt_decode_step', dict(mode='eager' if device.type != 'cuda' or not graphs.get('ok', True) else 'cuda_graphs',
                                    reason=graphs.get('reason') or ('not on CUDA' if device.type != 'cuda' else None)))

STAGE_FNS = dict(correctness=stage_correctness, kernels=stage_kernels, train=stage_train, decode=stage_decode)


# ---- the parent: one process per stage, each time-boxed ----

def run_child(cmd:list, out:Path, budget_s:float, env:dict|None=None) -> dict:
    "Run one stage process for at most budget_s seconds; its record (what it wrote to `out`) with status, seconds and notes."
    t0 = time.perf_counter()
    log = out.with_suffix('.log')
    with open(log, 'w') as lf:
        p = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=ROOT)
        try: p.wait(timeout=max(budget_s, 0.1)); status = 'done' if p.returncode == 0 else f"failed (exit {p.returncode})"
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL); p.wait()
            status = f"overran its {budget_s:.0f} s budget: stopped, the items measured before are kept"
    try: rec = json.loads(out.read_text())
    except (OSError, ValueError): rec = dict(env={}, items={}, notes=[])
    rec.update(status=status, seconds=round(time.perf_counter() - t0, 1), budget_s=round(budget_s, 1))
    if status != 'done':
        tail = [l for l in log.read_text(errors='replace').splitlines() if l.strip()][-6:]
        rec.setdefault('notes', []).append(f"{status}; last output: " + ' | '.join(tail)[-800:])
    return rec

def run_all(a) -> dict:
    "Every stage in turn within the deadline; the combined result."
    import torch
    cuda = torch.cuda.is_available()
    budgets = SMOKE_BUDGET_S if a.smoke else BUDGET_S
    start, carry, stages = time.perf_counter(), 0.0, {}
    env = dict(os.environ)
    if not cuda: env['TRITON_INTERPRET'] = '1'                    # the kernels in Triton's interpreter (set before import)
    env.pop('TTT_NB_IMPL', None)
    work = Path(a.work_dir) if a.work_dir else Path(tempfile.mkdtemp(prefix='gpu_check-stages-'))
    work.mkdir(parents=True, exist_ok=True)
    for name in a.stages:
        left = a.deadline_s - (time.perf_counter() - start)
        budget = min(budgets[name] * a.budget_scale + carry, left)
        if budget < 5:
            stages[name] = dict(status=f"skipped: the run's {a.deadline_s:.0f} s deadline was reached", items={}, notes=[], env={})
            continue
        print(f"== stage {name}: budget {budget:.0f} s", flush=True)
        cmd = [sys.executable, str(Path(__file__).resolve()), '--stage', name, '--stage-out', str(work / f"{name}.json")]
        stages[name] = run_child(cmd + (['--smoke'] if a.smoke else []), work / f"{name}.json", budget, env)
        carry = max(0.0, budget - stages[name]['seconds'])
        print(f"== stage {name}: {stages[name]['status']} in {stages[name]['seconds']} s", flush=True)
    first_env = next((s['env'] for s in stages.values() if s.get('env')), {})
    res = dict(schema=SCHEMA, created=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()), smoke=a.smoke,
               measured=cuda and not a.smoke, command='python benchmarks/gpu_check.py ' + ' '.join(a.argv), env=first_env,
               deadline_s=a.deadline_s, seconds=round(time.perf_counter() - start, 1), ref_peak=REF_PEAK, targets=TARGETS,
               flops=('TTT-Linear per (row, head, token): forward 6d^2+4bd, backward (with recomputation) 16d^2+12bd; TTT-MLP: '
                      'forward 56d^2+20bd, forward+backward 3x; causal SDPA per (row, head): 2T^2d forward, x3.5 forward+backward; '
                      'bytes: the minimum traffic of our kernels (benchmarks/bench_kernels.py); training: 6N (N without the '
                      'embedding) + 6Vd (tied LM head) per token, the TTT inner loop not counted (MFU is a lower bound)'),
               stages=stages, work_dir=str(work))
    res['summary'] = summarize(res)
    return res

def summarize(res:dict) -> dict:
    "The headline: correctness verdict, kernel ratios, training and decode against their targets (None: not measured)."
    it = lambda s, k: res['stages'].get(s, {}).get('items', {}).get(k, [])
    checks = it('correctness', 'checks')
    tr = it('train', 'train')
    dec = [r for r in it('decode', 'decode') if r.get('model') == 'ttt' and 'tokens_per_s' in r]
    out = dict(checks_run=len(checks), checks_failed=[c['case'] for c in checks if not c.get('ok')],
               kernel_ratios={r['kind']: r['vs_ours'] for r in it('kernels', 'ratios')},
               train_tokens_per_s=tr[0]['tokens_per_s'] if tr else None, train_meets_target=tr[0]['meets_target'] if tr else None)
    if dec:
        tps = [r['tokens_per_s'] for r in dec]
        out.update(decode_min_tokens_per_s=min(tps), decode_max_over_min_latency=max(tps) / min(tps),
                   decode_contexts=sorted(r['context'] for r in dec), decode_meets_target=min(tps) >= TARGETS['decode_tokens_per_s'])
    return out


# ---- markdown ----

def _f(x, fmt='%.3g'):
    return '-' if x is None else (fmt % x)

def markdown(res:dict|None) -> str:
    "The BENCHMARKS.md section: the not-measured text without results, else one table per stage under its device line."
    L = ['# GPU check: correctness, kernel speed, training throughput, decode (issue 16)', '']
    if res is None or not res.get('measured'):
        L += ['**No GPU has been available to this project so far: every number in this section is not measured.** '
              'One command measures all of it: ' + GPU_RUN_HELP + '. Then copy `gpu_check.json` to `benchmarks/results/` and '
              '`gpu_check.md` to `benchmarks/`, and run `python tools/benchmarks_md.py`.', '',
              'What it will measure: the Triton kernels through the dispatch against the float64 reference at real sizes (fp32, '
              'bf16; forward, backward, state) and the 125m model kernel path against the reference path; forward+backward '
              'at B8 T2048 H12 d64 bf16 against our PyTorch reference, flash-linear-attention\'s `chunk_ttt_linear` and '
              'causal SDPA at 1k-32k tokens (TFLOP/s and GB/s against the H100\'s 790 TFLOP/s and 3 TB/s), TTT-MLP too; '
              f"125m training at W=2048 bf16 (target {TARGETS['train_tokens_per_s']:,} tok/s); 125m decode at contexts "
              f"128-32k with CUDA graphs against a KV-cache Transformer (target {TARGETS['decode_tokens_per_s']} tok/s, flat).", '']
        if res is not None:
            L += [f"The rows below are a smoke run ({env_line(res.get('env', {}))}), **not a measurement**: they show the "
                  'script runs end to end.', '']
        else: return '\n'.join(L)
    else:
        L += [f"Measured {res['created']} by `{res['command']}` in {res['seconds']} s (deadline {res['deadline_s']} s). "
              f"Percentages of peak are against the H100's {REF_PEAK['tflops']:.0f} TFLOP/s and {REF_PEAK['tb_s']:.0f} TB/s "
              "(the JSON also has the device's data-sheet peak). FLOP counts: " + res['flops'] + '.', '']
    for name in STAGES:
        st = res['stages'].get(name)
        if st is None: L += [f"## {name}", '', 'not run.', '']; continue
        L += [f"## {name}", '', env_line(st.get('env', {})), '', f"Status: {st['status']}"
              + (f" ({st['seconds']} s of a {st['budget_s']} s budget)" if 'seconds' in st else '') + '.', '']
        L += [f"Note: {n}" for n in st.get('notes', [])] + ([''] if st.get('notes') else [])
        L += RENDER[name](st.get('items', {}))
    return '\n'.join(L).rstrip() + '\n'

def _md_correctness(items):
    rows = items.get('checks', [])
    if not rows: return ['not measured.', '']
    L = ['| check | dtype | worst quantity | relative RMS error | tolerance | ok | s |', '|---|---|---|---:|---:|---|---:|']
    for r in rows:
        if 'error' in r: L.append(f"| {r['case']} | | | {r['error']} | | **no** | {r.get('seconds')} |"); continue
        L.append(f"| {r['case']} | {r['dtype']} | {r['worst']} | {r['worst_err']:.2e} | {r['tol']:.0e} | {'yes' if r['ok'] else '**no**'} | {r['seconds']} |")
    return L + ['']

def _md_kernels(items):
    if not items.get('shape'): return ['not measured.', '']
    ratios = {r['kind']: r['vs_ours'] for r in items.get('ratios', [])}
    L = ['Forward+backward at one shape; `x ours` is the implementation\'s time over ours (above 1: ours is faster).', '',
         '| op | impl | B | T | H | d | ms | x ours | TFLOP/s | % of 790 | GB/s | % of 3 TB/s | note |',
         '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|']
    for r in items['shape']:
        x = ratios.get(r.get('kind') if r['impl'] != 'sdpa' else 'linear', {}).get(r['impl'])
        L.append(f"| {'TTT-MLP' if r.get('kind') == 'mlp' else 'TTT-Linear' if r['impl'] != 'sdpa' else 'causal SDPA'} | {r['impl']} | "
                 f"{r['B']} | {r['T']} | {r['H']} | {r['d']} | {_f(r.get('ms'), '%.4g')} | {_f(x, '%.3g')} | {_f(r.get('tflops'), '%.3g')} | "
                 f"{_f(r.get('pct_ref_tflops'), '%.3g')} | {_f(r['tb_s'] * 1e3 if 'tb_s' in r else None, '%.4g')} | "
                 f"{_f(r.get('pct_ref_tb_s'), '%.3g')} | {r.get('error', '')} |")
    for a in items.get('agreement', []): L += ['', f"Ours vs the reference at T={a['T']} (relative RMS of `out`): {a['rel_rms_vs_ref']:.1e}."]
    sw = {}
    for r in items.get('sweep', []): sw.setdefault(r['T'], {})[r['impl']] = r
    if sw:
        L += ['', 'TTT-Linear (ours) vs causal SDPA, forward+backward, same B, H, d:', '',
              '| T | ours ms | SDPA ms | SDPA / ours | ours TFLOP/s | SDPA TFLOP/s | note |', '|---:|---:|---:|---:|---:|---:|---|']
        for T, rs in sorted(sw.items()):
            o, s = rs.get('triton', {}), rs.get('sdpa', {})
            ratio = s['ms'] / o['ms'] if 'ms' in o and 'ms' in s else None
            L.append(f"| {T} | {_f(o.get('ms'), '%.4g')} | {_f(s.get('ms'), '%.4g')} | {_f(ratio, '%.3g')} | {_f(o.get('tflops'), '%.3g')} | "
                     f"{_f(s.get('tflops'), '%.3g')} | {' '.join(x.get('error', '') for x in (o, s)).strip()} |")
    return L + ['']

def _md_train(items):
    rows = items.get('train', [])
    if not rows: return ['not measured.', '']
    r = rows[0]
    return ['| preset | W | B | vocab | precision | s/step | tokens/s | target | MFU (data sheet) | MFU (of 790) | peak mem GiB |',
            '|---|---:|---:|---:|---|---:|---:|---|---:|---:|---:|',
            f"| {r['preset']} | {r['W']} | {r['B']} | {r['vocab']} | {r['precision']} | {r['s_per_step']:.3f} | {r['tokens_per_s']:,.0f} | "
            f"{r['target_tokens_per_s']:,} ({'met' if r['meets_target'] else 'not met'}) | {_f(100 * r['mfu'] if 'mfu' in r else None, '%.1f%%')} | "
            f"{_f(100 * r['mfu_ref'] if 'mfu_ref' in r else None, '%.1f%%')} | {_f(r.get('peak_mem_gib'), '%.2f')} |", '',
            f"{r['timed_steps']} timed steps after {r['warmup_steps']} warm-up steps of `ttt_nb.train.Trainer` (state passing, AdamW, "
            f"grad clip) on {r.get('corpus', 'python-stdlib')} bytes; {r['n_params'] / 1e6:.1f}M parameters ({r['n_params_no_embedding'] / 1e6:.1f}M without the "
            f"embedding); slowest step {r['s_per_step_max']:.3f} s; last loss {r['last_loss']:.3f}.", '']

def _md_decode(items):
    rows = items.get('decode', [])
    if not rows: return ['not measured.', '']
    by = {}
    for r in rows: by.setdefault(r['context'], {})[r['model']] = r
    step = (items.get('ttt_decode_step') or [{}])[0]
    L = [f"{rows[0]['preset']}, {rows[0]['dtype']}, vocabulary {rows[0]['vocab']}, batch 1, greedy; median over the timed steps. "
         f"TTT decode step: {step.get('mode', '?')}" + (f" ({step['reason']})" if step.get('reason') else '') + '.', '',
         '| context | TTT tok/s | TTT ms/token | Transformer (KV cache) tok/s | Transformer ms/token | note |', '|---:|---:|---:|---:|---:|---|']
    for L_, rs in sorted(by.items()):
        t, a = rs.get('ttt', {}), rs.get('transformer', {})
        L.append(f"| {L_} | {_f(t.get('tokens_per_s'), '%.1f')} | {_f(t.get('decode_ms_median'), '%.3f')} | {_f(a.get('tokens_per_s'), '%.1f')} | "
                 f"{_f(a.get('decode_ms_median'), '%.3f')} | {' '.join(x.get('error', '') for x in (t, a)).strip()} |")
    return L + ['', "The Transformer decodes eagerly from its KV cache (no CUDA graphs); the prefill (pieces of 2048 tokens) is timed apart, in the JSON. "
                f"Target: TTT at least {TARGETS['decode_tokens_per_s']} tok/s at every context, flat in context.", '']

RENDER = dict(correctness=_md_correctness, kernels=_md_kernels, train=_md_train, decode=_md_decode)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--smoke', action='store_true', help='tiny sizes (CPU: Triton interpreter); results in a temporary folder')
    p.add_argument('--stages', default=','.join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    p.add_argument('--deadline-s', type=float, default=None, help='the whole run stops by then (default 480; smoke 600)')
    p.add_argument('--budget-scale', type=float, default=1.0, help="multiply every stage's budget")
    p.add_argument('--out', default=None, help=f"JSON path (default {RESULTS.relative_to(ROOT)}; smoke: a temporary folder)")
    p.add_argument('--md', default=None, help=f"markdown path (default {MD.relative_to(ROOT)}; smoke: beside --out)")
    p.add_argument('--work-dir', default=None, help="each stage's JSON and log (default: a temporary folder)")
    p.add_argument('--render-only', action='store_true', help='rewrite --md from --out without measuring')
    p.add_argument('--stage', help=argparse.SUPPRESS)        # internal: run one stage in this process
    p.add_argument('--stage-out', help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.argv = argv
    if a.stage:
        _import_helpers()
        import torch
        if not torch.cuda.is_available(): torch.set_num_threads(1)   # the CPU smoke run: tiny sizes, often on shared cores
        rec = Record(Path(a.stage_out))
        STAGE_FNS[a.stage](rec, a.smoke, torch.device('cuda' if torch.cuda.is_available() else 'cpu'))
        return
    stages = [s.strip() for s in a.stages.split(',') if s.strip()]
    bad = [s for s in stages if s not in STAGES]
    if bad: p.error(f"unknown stage(s) {bad}: use some of {','.join(STAGES)}")
    a.stages = stages
    if a.smoke:
        out = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix='gpu_check-smoke-')) / 'gpu_check.json'
        if out.resolve() == RESULTS.resolve(): p.error(f"--smoke never writes {RESULTS.relative_to(ROOT)} (the committed GPU results): pass another --out")
    else: out = Path(a.out) if a.out else RESULTS
    md = Path(a.md) if a.md else (out.with_suffix('.md') if a.smoke else MD)
    if a.smoke and not a.work_dir: a.work_dir = str(out.parent / 'stages')   # one temporary folder holds the whole smoke run
    if a.smoke and md.resolve() == MD.resolve(): p.error(f"--smoke never writes {MD.relative_to(ROOT)}: pass another --md")
    if a.render_only:
        md.write_text(markdown(json.loads(out.read_text()) if out.exists() else None)); print(f"wrote {md}"); return
    _import_helpers()
    import torch
    if not a.smoke and not torch.cuda.is_available():
        p.error("no CUDA device: the GPU check measures a GPU (use --smoke for the CPU smoke run)")
    a.deadline_s = a.deadline_s or (600.0 if a.smoke else 480.0)
    res = run_all(a)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix('.tmp'); tmp.write_text(json.dumps(res, indent=1, default=str) + '\n'); os.replace(tmp, out)
    md.write_text(markdown(res))
    s = res['summary']
    print(f"wrote {out} and {md}\nsummary: {json.dumps(s, default=str)}")
    incomplete = [n for n, st in res['stages'].items() if st['status'] != 'done']
    if s['checks_failed']: print(f"gpu-check: correctness checks FAILED: {s['checks_failed']}")
    if incomplete: print(f"gpu-check: stages not completed: {incomplete} (see their notes in {out})")
    if s['checks_failed'] or (a.smoke and incomplete): sys.exit(1)


if __name__ == '__main__':
    main()
