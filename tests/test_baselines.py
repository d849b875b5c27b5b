"Attention baselines: split-point invariant, SWA window, reset, save/load, greedy generate, training step."
import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from ttt_nb.baselines import SWAConfig, SWAForCausalLM, TransformerConfig, TransformerForCausalLM

V = 40

def _model(window=None, layers=2, seed=0):
    torch.manual_seed(seed)
    kw = dict(vocab_size=V, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=48)
    m = SWAForCausalLM(SWAConfig(sliding_window=window, **kw)) if window else TransformerForCausalLM(TransformerConfig(**kw))
    return m.double().eval()

SPLITS = [[1, 30], [7, 23], [3, 4, 11, 25, 29], list(range(1, 31))]

@pytest.mark.parametrize('window', [None, 1, 5, 8], ids=lambda w: f'W{w}')
@pytest.mark.parametrize('splits', SPLITS, ids=lambda s: f'n{len(s)}')
def test_split_point_invariant(window, splits):
    m = _model(window); ids = torch.randint(0, V, (3, 31))
    with torch.no_grad():
        full = m(ids).logits
        st, out, a = m.init_state(3), [], 0
        for b in splits + [31]:
            o = m(ids[:, a:b], state=st); st, a = o.state, b; out.append(o.logits)
    assert (torch.cat(out, 1) - full).abs().max() < 1e-10
    if window: assert st.cached == min(31, window - 1)  # flat memory

def test_swa_window_effect():
    "Changing a token at position p changes the logits at p..p+L(W-1) and nothing beyond."
    W, L, p = 5, 2, 4
    m = _model(W, layers=L); ids = torch.randint(0, V, (2, 30))
    ids2 = ids.clone(); ids2[:, p] = (ids2[:, p] + 1) % V
    with torch.no_grad(): d = (m(ids2).logits - m(ids).logits).abs().amax((0, 2))
    reach = p + L * (W - 1)
    assert d[p:reach + 1].min() > 0 and d[reach + 1:].max() == 0 and d[:p].max() == 0
    full = _model(None, layers=L)
    with torch.no_grad(): d = (full(ids2).logits - full(ids).logits).abs().amax((0, 2))
    assert d[p:].min() > 0  # full attention sees it everywhere after

def test_reset_rows():
    m = _model(6); ids = torch.randint(0, V, (2, 20))
    with torch.no_grad():
        st = m(ids[:, :9]).state.reset(torch.tensor([False, True]))
        a = m(ids[:, 9:], state=st).logits
        fresh = m(ids[1:, 9:]).logits
        full = m(ids).logits
    assert (a[1] - fresh[0]).abs().max() < 1e-10 and (a[0] - full[0, 9:]).abs().max() < 1e-10

def test_full_attention_cache_is_trimmed_after_reset():
    "Keys before every row's reset are dropped, so a state-passing Transformer does not keep finished documents."
    m = _model(None); ids = torch.randint(0, V, (2, 30))
    with torch.no_grad():
        st = m(ids[:, :20]).state; assert st.cached == 20
        st = m(ids[:, 20:], state=st.reset([0, 1])).state
        assert st.cached == 10 and st.seqlen == 30
        st = m(ids[:, :5], state=st.reset([0])).state; assert st.cached == 15  # row 1 still sees its 10 + 5

def test_state_methods():
    m = _model(4); ids = torch.randint(0, V, (3, 10))
    st = m(ids).state
    assert st.batch_size == 3 and st.select([0, 2]).batch_size == 2 and st.detach().cached == 3
    assert 'KVState(batch=3' in repr(st) and m.init_state(2).cached == 0
    with pytest.raises(ValueError, match='rows'): m(ids[:2], state=st)

@pytest.mark.parametrize('window', [None, 6])
def test_save_load_auto(tmp_path, window):
    m = _model(window); ids = torch.randint(0, V, (2, 12))
    m.save_pretrained(tmp_path)
    assert (tmp_path / 'model.safetensors').exists()
    m2 = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float64)
    assert type(m2) is type(m) and m2.config.sliding_window == window
    assert AutoConfig.from_pretrained(tmp_path).model_type == ('ttt_nb_swa' if window else 'ttt_nb_transformer')
    with torch.no_grad(): assert (m2(ids).logits - m(ids).logits).abs().max() < 1e-12

@pytest.mark.parametrize('window', [None, 4])
def test_generate_greedy_is_argmax(window):
    m = _model(window); prompt = torch.randint(0, V, (2, 5))
    g = m.generate(prompt, max_new_tokens=7, do_sample=False, pad_token_id=0)
    seq = prompt
    with torch.no_grad():
        for _ in range(7): seq = torch.cat([seq, m(seq).logits[:, -1:].argmax(-1)], 1)
    assert torch.equal(g, seq)

def test_trains_with_state_passing():
    "A few optimizer steps on a repeated pattern lower the loss; the detached state carries across segments."
    m = _model(8).float().train(); opt = torch.optim.AdamW(m.parameters(), 3e-3)
    ids = torch.arange(12).repeat(2, 4) % V
    losses = []
    for _ in range(30):
        st = m.init_state(2); tot = 0.
        for a in range(0, 48, 16):
            o = m(ids[:, a:a + 16], state=st, labels=ids[:, a:a + 16]); st = o.state.detach(); tot = tot + o.loss
        opt.zero_grad(); tot.backward(); opt.step(); losses.append(tot.item())
    assert losses[-1] < 0.5 * losses[0]

def test_preset_widths():
    c = TransformerConfig.from_preset('125m', vocab_size=V)
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads) == (768, 12, 12)
    with pytest.raises(ValueError): SWAConfig(sliding_window=None)
