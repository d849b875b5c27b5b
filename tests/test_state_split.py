"Split-point equivalence: running a sequence in pieces through TTTState equals running it whole (float64, 1e-10)."
import random

import pytest
import torch
import torch.nn.functional as F

from ttt_nb.config import TTTConfig
from ttt_nb.model import TTTForCausalLM

B, T, V, MB = 2, 13, 23, 4
CASES = [(k, bb) for k in ('linear', 'mlp') for bb in ('transformer', 'mamba')]

def make(kind, backbone, seed=0):
    cfg = TTTConfig.from_preset('tiny', backbone=backbone, ttt_layer_type=kind, hidden_size=16, num_attention_heads=2,
                                intermediate_size=32, num_hidden_layers=2, mini_batch_size=MB, vocab_size=V,
                                bos_token_id=None, eos_token_id=None, ttt_impl='torch')
    torch.manual_seed(seed)
    m = TTTForCausalLM(cfg).double()
    with torch.no_grad():                                     # move every parameter away from its init so all matter
        for p in m.parameters(): p.add_(0.05 * torch.randn_like(p))
    return m

def splits(seed):
    "A seeded grid of cut points: aligned to the mini-batch or not, single tokens, several pieces."
    rng = random.Random(seed)
    fixed = [[4], [8], [1], [3], [5, 6], [4, 8, 12], list(range(1, T)), [2, 3, 7, 11], [12]]
    rand = [sorted(rng.sample(range(1, T), rng.randint(1, 5))) for _ in range(4)]
    return fixed + rand

def run_pieces(m, ids, cuts, detach=False):
    s, out = None, []
    for a, b in zip([0] + cuts, cuts + [ids.shape[1]]):
        o = m(ids[:, a:b], state=s, return_state=True); s = o.state; out.append(o.logits)
        if detach: s = s.detach()
    return torch.cat(out, 1), s

def summed_loss(logits, ids):
    return F.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1), reduction='sum')

@pytest.mark.parametrize('kind,backbone', CASES, ids=[f'{k}-{b}' for k, b in CASES])
def test_logits_equal_for_every_split(kind, backbone):
    m = make(kind, backbone)
    ids = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = m(ids, return_state=True)
        for cuts in splits(hash((kind, backbone)) % 1000):
            got, s = run_pieces(m, ids, cuts)
            err = ((got - full.logits).abs().max() / full.logits.abs().max()).item()
            assert err < 1e-10, (cuts, err)
            assert (s.seqlen, s.offset) == (T, T % MB)
            for a, b in zip(s.params + s.grads, full.state.params + full.state.grads):
                for x, y in zip(a, b): torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)

@pytest.mark.parametrize('kind,backbone', CASES, ids=[f'{k}-{b}' for k, b in CASES])
def test_gradients_equal_when_state_is_not_detached(kind, backbone):
    m = make(kind, backbone, seed=3)
    ids = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(2))
    summed_loss(m(ids).logits, ids).backward()
    ref = {n: p.grad.clone() for n, p in m.named_parameters()}
    for cuts in ([5], [4, 8], [1, 2, 3, 9]):
        m.zero_grad(set_to_none=True)
        got, _ = run_pieces(m, ids, cuts)
        summed_loss(got, ids).backward()
        for n, p in m.named_parameters():
            torch.testing.assert_close(p.grad, ref[n], rtol=1e-9, atol=1e-12, msg=lambda s, n=n, cuts=cuts: f'{n} {cuts}: {s}')

def test_learned_initial_weights_get_gradient():
    for kind, backbone in CASES:
        m = make(kind, backbone)
        ids = torch.randint(0, V, (B, T))
        summed_loss(m(ids).logits, ids).backward()
        for layer in m.ttt_init_params():
            for p in layer: assert p.grad is not None and p.grad.abs().sum() > 0

def test_detach_cuts_the_gradient():
    m = make('linear', 'mamba')
    ids = torch.randint(0, V, (B, 10))
    W1 = m.model.layers[0].seq_modeling_block.W1
    for detach in (False, True):
        m.zero_grad(set_to_none=True)
        e1 = m.model.embed_tokens(ids[:, :6]).detach().requires_grad_()   # the first piece's inputs
        s = m(inputs_embeds=e1, return_state=True).state
        if detach: s = s.detach()
        m(ids[:, 6:], state=s).logits.sum().backward()                      # a loss on the second piece only
        if detach: assert e1.grad is None and (W1.grad is None or W1.grad.abs().sum() == 0)
        else: assert e1.grad.abs().sum() > 0 and W1.grad.abs().sum() > 0

@pytest.mark.parametrize('kind,backbone', CASES, ids=[f'{k}-{b}' for k, b in CASES])
def test_reset_rows_is_a_fresh_start(kind, backbone):
    m = make(kind, backbone)
    ids = torch.randint(0, V, (B, 12), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        s = m(ids[:, :8], return_state=True).state       # a mini-batch boundary (8 = 2 * MB)
        cont = m(ids[:, 8:], state=s.clone()).logits
        s.reset([0])
        got = m(ids[:, 8:], state=s).logits
        fresh = m(ids[:1, 8:]).logits
    torch.testing.assert_close(got[:1], fresh, rtol=1e-10, atol=1e-12)     # row 0 starts over
    torch.testing.assert_close(got[1:], cont[1:], rtol=1e-10, atol=1e-12)  # row 1 keeps its memory
    assert not torch.allclose(got[:1], cont[:1])

def test_reset_goes_through_the_initial_parameters_and_needs_a_boundary():
    m = make('mlp', 'transformer')
    ids = torch.randint(0, V, (B, 8))
    s = m(ids[:, :4], return_state=True).state.detach()
    s.reset(torch.tensor([True, False]))
    m.zero_grad(set_to_none=True)
    m(ids[:, 4:], state=s).logits.sum().backward()
    for p in m.ttt_init_params()[0]: assert p.grad is not None and p.grad.abs().sum() > 0
    s2 = m(ids[:, :3], return_state=True).state
    with pytest.raises(ValueError, match='mini-batch boundary'): s2.reset([0])

def test_select_rows_continues_those_rows():
    m = make('linear', 'mamba')
    ids = torch.randint(0, V, (3, 9))
    with torch.no_grad():
        full = m(ids).logits
        s = m(ids[:, :5], return_state=True).state.select([2, 0])
        got = m(ids[[2, 0], 5:], state=s).logits
    torch.testing.assert_close(got, full[[2, 0], 5:], rtol=1e-10, atol=1e-12)
