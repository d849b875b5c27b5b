"Direct measures of context use (ttt_nb.memory): carry-off zeros, recall probe placement and chance, summary schema."
import copy
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from ttt_nb.config import TTTConfig
from ttt_nb.memory import carry_weights, effective_remembrance, memory_summary, recall_summary, wilson_ci
from ttt_nb.model import TTTForCausalLM


def _ttt(V=40, b=4, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = TTTConfig.from_preset('tiny', vocab_size=V, hidden_size=32, num_attention_heads=2, intermediate_size=48,
                                mini_batch_size=b, num_hidden_layers=2, **kw)
    return TTTForCausalLM(cfg).double().eval()

def _carry_off(m):
    m = copy.deepcopy(m)
    for blk in m.model.layers: blk.seq_modeling_block.learnable_token_idx.data[-1] = -1 / m.config.mini_batch_size
    return m

def _docs(V=40, lens=(70, 66, 40), seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, V, (n,), generator=g).numpy() for n in lens]


class CopyOracle(nn.Module):
    "A 'model' that predicts what followed the last earlier occurrence of its current k-gram within `window` tokens ('0' when none)."
    def __init__(self, window=None, k=7, V=257, fallback=48):     # 48 = '0' in the byte tokenizer
        super().__init__()
        self.window, self.k, self.V, self.fallback = window, k, V, fallback
        self.dummy = nn.Parameter(torch.zeros(1))                    # gives the model a device
    def init_state(self, B): return torch.zeros(B, 0, dtype=torch.long)
    def forward(self, ids, state=None, return_state=False):
        hist = torch.cat([self.init_state(ids.shape[0]) if state is None else state, ids.cpu()], 1)  # [B, past + T]
        T0, logits = hist.shape[1] - ids.shape[1], torch.zeros(*ids.shape, self.V)
        for r, row in enumerate(hist.tolist()):
            last = {}
            for i in range(len(row)):
                key = tuple(row[max(0, i - self.k + 1):i + 1])
                if i >= T0:
                    j = last.get(key)
                    ok = j is not None and (self.window is None or i - j <= self.window)
                    logits[r, i - T0, row[j + 1] if ok else self.fallback] = 1.0
                if i + 1 < len(row): last[key] = i
        return SimpleNamespace(logits=logits, state=hist if return_state else None)


def test_recall_probe_sees_the_planted_distance():
    "An unbounded copy oracle recalls at every r; one that looks back 30 tokens recalls only where the distance is <= 30, and is at chance beyond."
    ratios, n = (1, 2, 8), 40
    full = recall_summary(CopyOracle(), 16, ratios=ratios, n=n, chunk=64)
    assert [r['acc'] for r in full['rows']] == [1.0, 1.0, 1.0]
    near = recall_summary(CopyOracle(window=30), 16, ratios=ratios, n=n, chunk=64, ci=0.999)
    d = [r['distance']['median'] for r in near['rows']]
    assert abs(d[2] - 128) <= 4 and d[0] <= 30 < d[1], d        # r=1 floors at the format's ~25 tokens
    assert near['rows'][0]['acc'] == 1.0 and near['rows'][1]['acc'] < 0.05
    for row in near['rows'][1:]: assert row['first_lo'] <= 0.1 <= row['first_hi'], row


def test_recall_no_inner_loop_at_chance():
    "ttt_base_lr = 0 (no fast weight moves): the first digit is right 1 time in 10, within its interval, at every r."
    ctrl = _ttt(V=257, b=8, ttt_base_lr=0.0).float()
    rs = recall_summary(ctrl, 16, ratios=(1, 4), n=60, ci=0.999, batch_size=60)
    for row in rs['rows']: assert row['first_lo'] <= 0.1 <= row['first_hi'], row
    pooled = wilson_ci(round(sum(r['first'] * r['n'] for r in rs['rows'])), sum(r['n'] for r in rs['rows']), 0.999)
    assert pooled[1] <= 0.1 <= pooled[2]
    assert rs['chance'] == dict(acc=1e-4, first=0.1)


def test_effrem_zero_beyond_one_mini_batch_with_carry_off():
    "Carry off: dropping every token before T's mini-batch changes nothing; carry on: it does (same weights otherwise)."
    m = _ttt(); m0 = _carry_off(m); docs = _docs()
    assert carry_weights(m0)['carry_off'] and not carry_weights(m)['carry_off']
    e0, e = effective_remembrance(m0, docs, [16, 64], n_t=6), effective_remembrance(m, docs, [16, 64], n_t=6)
    assert e0['curves'][1]['t'][-1] == 60                        # T - b is in the grid
    assert max(v for c in e0['curves'] for v in c['mean']) < 1e-12
    assert min(v for c in e['curves'] for v in c['mean']) > 1e-3


def test_effrem_needs_aligned_t():
    with pytest.raises(ValueError, match='multiple of b=4'): effective_remembrance(_ttt(), _docs(), [16], ts=[6])


def test_memory_summary_strict_json_and_carry_off():
    m0 = _carry_off(_ttt()); docs = _docs()
    s = memory_summary(m0, docs, 16, ratios=(1, 2), n_t=4)
    assert json.loads(json.dumps(s, allow_nan=False)) == s
    assert s['carry']['carry_off'] and s['phase']['diff']['full-sw_strided']['mean'] == [0.0] * 4
    assert np.allclose([v for c in s['effrem']['curves'] for v in c['mean']], 0, atol=1e-12)


def test_carry_off_control_from_the_config():
    "TTTConfig(carry='off') (the controls' run option) is read as carry off, and its EffRem is 0 beyond one mini-batch."
    m = _ttt(carry='off'); cw = carry_weights(m)
    assert cw['carry_off'] and cw['mode'] == 'off' and cw['raw'][0][-1] == 0.0
    e = effective_remembrance(m, _docs(), [32], n_t=4)
    assert max(e['curves'][0]['mean']) < 1e-12
