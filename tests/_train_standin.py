"A tiny stand-in recurrent LM and token stream with the interfaces of ttt_nb.model / ttt_nb.data (for trainer tests)."
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from torch import nn


class StandinState:
    "Recurrent memory h [B, d]; `reset(rows)` returns rows to the learned initial W1 (with gradient)."
    def __init__(self, h, model): self.h, self.model, self.offset = h, model, 0
    @property
    def batch_size(self): return self.h.shape[0]
    def detach(self): return StandinState(self.h.detach(), self.model)
    def reset(self, rows):
        mask = torch.zeros(self.h.shape[0], dtype=torch.bool, device=self.h.device)
        mask[torch.as_tensor(rows, device=self.h.device)] = True
        self.h = torch.where(mask[:, None], self.model.W1.expand_as(self.h), self.h)
        return self


class StandinLM(nn.Module):
    "h_t = tanh(h_{t-1} A + emb(x_t)); logits = h_t @ emb^T + bias; learned initial state W1."
    def __init__(self, vocab_size=32, d=16):
        super().__init__()
        self.config = SimpleNamespace(vocab_size=vocab_size, mini_batch_size=4, hidden_size=d)
        self.emb = nn.Embedding(vocab_size, d)
        self.A = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)
        self.W1 = nn.Parameter(torch.randn(d) * 0.1)
    def init_state(self, batch_size): return StandinState(self.W1.expand(batch_size, -1), self)
    def forward(self, input_ids, state=None, return_state=True, labels=None):
        B, T = input_ids.shape
        state = state if state is not None else self.init_state(B)
        h, e, hs = state.h, self.emb(input_ids), []
        for t in range(T):
            h = torch.tanh(self.A(h) + e[:, t]); hs.append(h)
        logits = self.norm(torch.stack(hs, 1)) @ self.emb.weight.T  # [B, T, V]
        return SimpleNamespace(logits=logits.float(), state=StandinState(h, self) if return_state else None, loss=None)
    def save_pretrained(self, path, state_dict=None, **kw):
        from safetensors.torch import save_file
        sd = state_dict if state_dict is not None else self.state_dict()   # FSDP2: the gathered full state dict
        save_file({k: v.contiguous() for k, v in sd.items()}, f'{path}/model.safetensors')


class StandinStream:
    "B contiguous rows over documents; labels are next tokens; `reset` marks a row whose segment starts a document."
    def __init__(self, docs, batch_size, seq_len, seed=0, rank=0, world_size=1):
        self.docs, self.B, self.W, self.seed, self.rank, self.ws = docs, batch_size, seq_len, seed, rank, world_size
        self.pos = 0
    def state_dict(self): return dict(pos=self.pos)
    def load_state_dict(self, d): self.pos = d['pos']
    def __iter__(self): return self
    def __next__(self):
        rng = np.random.default_rng([self.seed, self.pos])
        rows = self.B * self.ws
        xs, ys, rs = [], [], []
        for r in range(rows):
            d = self.docs[(self.pos * rows + r) % len(self.docs)]
            i = int(rng.integers(0, max(1, len(d) - self.W - 1)))
            xs.append(d[i:i + self.W]); ys.append(d[i + 1:i + self.W + 1]); rs.append(bool(rng.random() < 0.3))
        sl = slice(self.rank * self.B, (self.rank + 1) * self.B)
        self.pos += 1
        return dict(input_ids=torch.tensor(np.stack(xs[sl])), labels=torch.tensor(np.stack(ys[sl])),
                    reset=torch.tensor(rs[sl]))


def standin_docs(n=20, length=200, vocab=32, seed=0):
    rng = np.random.default_rng(seed)
    return [np.cumsum(rng.integers(0, 3, size=length)) % vocab for _ in range(n)]
