"Model I/O: save/load (safetensors), Auto classes, presets, state files, bad input, generate()."
import re

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from ttt_nb.config import PRESETS, TTTConfig
from ttt_nb.model import TTTForCausalLM, TTTModel
from ttt_nb.state import TTTState

V = 40
CASES = [(k, bb) for k in ('linear', 'mlp') for bb in ('transformer', 'mamba')]
cid = [f'{k}-{b}' for k, b in CASES]

def cfg(kind='linear', backbone='mamba', **kw):
    base = dict(hidden_size=32, num_attention_heads=2, intermediate_size=48, num_hidden_layers=2, mini_batch_size=4,
                vocab_size=V, bos_token_id=None, eos_token_id=None)
    base.update(kw)
    return TTTConfig.from_preset('tiny', backbone=backbone, ttt_layer_type=kind, **base)

def model(kind='linear', backbone='mamba', seed=0, **kw):
    torch.manual_seed(seed)
    return TTTForCausalLM(cfg(kind, backbone, **kw)).eval()

@pytest.mark.parametrize('kind,backbone', CASES, ids=cid)
def test_save_load_round_trip(tmp_path, kind, backbone):
    m = model(kind, backbone)
    m.save_pretrained(tmp_path)
    assert (tmp_path / 'model.safetensors').exists() and not (tmp_path / 'pytorch_model.bin').exists()
    m2 = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(m2) is TTTForCausalLM and m2.config.to_dict()['ttt_layer_type'] == kind
    assert m2.lm_head.weight.data_ptr() == m2.model.embed_tokens.weight.data_ptr()   # still tied
    for (n, p), (n2, p2) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert n == n2 and torch.equal(p, p2), n
    ids = torch.randint(0, V, (2, 9))
    with torch.no_grad(): torch.testing.assert_close(m2(ids).logits, m(ids).logits, rtol=0, atol=0)

def test_untied_embeddings_round_trip(tmp_path):
    m = model(tie_word_embeddings=False)
    with torch.no_grad(): m.lm_head.weight.add_(1.0)
    m.save_pretrained(tmp_path)
    m2 = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert m2.lm_head.weight.data_ptr() != m2.model.embed_tokens.weight.data_ptr()
    assert torch.equal(m2.lm_head.weight, m.lm_head.weight)

def test_auto_classes():
    c = cfg()
    assert type(AutoConfig.for_model('ttt_nb')) is TTTConfig
    assert type(AutoModelForCausalLM.from_config(c)) is TTTForCausalLM
    assert type(AutoModel.from_config(c)) is TTTModel

# The official sizes, written out here (ttt-lm-pytorch ttt.py, TTT_STANDARD_CONFIGS), and our CPU-sized 'tiny':
# (hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, head_dim)
OFFICIAL_SIZES = {'125m': (768, 2048, 12, 12, 64), '350m': (1024, 2736, 24, 16, 64), '760m': (1536, 4096, 24, 16, 96),
                  '1b': (2048, 5504, 24, 32, 64), 'tiny': (128, 352, 2, 4, 32)}

def test_presets():
    assert set(PRESETS) == set(OFFICIAL_SIZES)
    for name, want in OFFICIAL_SIZES.items():
        c = TTTConfig.from_preset(name)
        assert (c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.num_attention_heads, c.head_dim) == want, name
    c = TTTConfig.from_preset('125m', backbone='mamba', ttt_layer_type='mlp')
    assert (c.pre_conv, c.share_qk, c.use_gate, c.intermediate_size) == (True, True, True, 2048)
    m = TTTForCausalLM(TTTConfig.from_preset('tiny', vocab_size=256))
    n = sum(p.numel() for p in m.parameters())
    assert n < 2_000_000, n                                         # tiny trains on a laptop CPU

@pytest.mark.parametrize('kw,msg', [
    (dict(num_attention_heads=5), 'not divisible by num_attention_heads'),
    (dict(mini_batch_size=0), 'mini_batch_size must be'),
    (dict(mini_batch_size=2.5), 'mini_batch_size must be'),
    (dict(kind='rnn'), 'unknown ttt_layer_type'),
    (dict(ttt_impl='cuda'), 'unknown ttt_impl'),
    (dict(hidden_size=0), 'hidden_size must be a positive int'),
    (dict(num_attention_heads=32, hidden_size=32), 'must be even'),
    (dict(pre_conv='yes'), 'pre_conv must be a bool'),
    (dict(num_attention_heads=0), 'num_attention_heads must be a positive int'),
    (dict(rms_norm_eps=-1e-6), 'rms_norm_eps must be a number > 0'),
    (dict(rms_norm_eps=float('nan')), 'rms_norm_eps must be a number > 0'),
    (dict(rope_theta=0), 'rope_theta must be a number > 0'),
    (dict(max_position_embeddings=0), 'max_position_embeddings must be a positive int'),
    (dict(dropout=1.0), 'dropout must be a number in [0, 1)'),
    (dict(dropout=-0.1), 'dropout must be a number in [0, 1)'),
    (dict(num_layers=3), "unknown field 'num_layers' (did you mean 'num_hidden_layers'?)"),
    (dict(mini_batch_sise=8), "did you mean 'mini_batch_size'"),
])
def test_config_errors(kw, msg):
    with pytest.raises(ValueError, match=re.escape(msg)): cfg(**kw)

def test_impossible_config_is_one_value_error_line():
    "TTTConfig(num_attention_heads=0) used to end in a ZeroDivisionError inside transformers' own validation."
    for kw in (dict(num_attention_heads=0), dict(hidden_size=130, num_attention_heads=4), dict(mini_batch_size=0)):
        with pytest.raises(ValueError) as e: TTTConfig(**kw)
        assert '\n' not in str(e.value) and str(e.value).startswith('TTTConfig: ')

def test_transformers_own_config_keys_still_load(tmp_path):
    "Only keys transformers ignores too are refused: config.json bookkeeping and load kwargs still work."
    import json
    m = model(); m.save_pretrained(tmp_path)
    j = json.loads((tmp_path / 'config.json').read_text())
    j.update(torch_dtype='float32', auto_map={'AutoConfig': 'x.Y'}, _commit_hash='abc', max_length=20, architectures=['TTTForCausalLM'])
    (tmp_path / 'config.json').write_text(json.dumps(j))
    m2 = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16, attn_implementation='eager')
    assert m2.dtype == torch.bfloat16 and m2.config.num_hidden_layers == 2
    assert TTTConfig(**m2.config.to_dict()).hidden_size == 32
    j['num_layers'] = 3; (tmp_path / 'config.json').write_text(json.dumps(j))
    with pytest.raises(ValueError, match="unknown field 'num_layers'"): AutoConfig.from_pretrained(tmp_path)

def test_dropout_acts_in_training_only():
    "dropout > 0: the same weights as the official model, random in training mode, the official function in eval mode; 0 draws no random numbers."
    ids = torch.randint(0, V, (2, 12), generator=torch.Generator().manual_seed(1))
    m0, m1 = model(), model(dropout=0.3)
    assert m0.state_dict().keys() == m1.state_dict().keys()
    m1.load_state_dict(m0.state_dict())
    ref = m0(ids).logits
    assert torch.equal(m1(ids).logits, ref)                      # eval mode: dropout off
    m1.train()
    a, b = m1(ids).logits, m1(ids).logits
    assert not torch.equal(a, ref) and not torch.equal(a, b)     # training mode: random masks
    m0.train(); g = torch.get_rng_state()
    assert torch.equal(m0(ids).logits, ref) and torch.equal(torch.get_rng_state(), g)

def test_bad_input_errors():
    m = model()
    ids = torch.randint(0, V, (2, 6))
    for bad, msg in [(torch.tensor([1, 2, 3]), 'add a batch dim'), (torch.tensor([[1, V]]), r'vocabulary is \[0, 40\)'),
                     (torch.tensor([[-1, 2]]), 'token ids in'), (ids.float(), 'token ids, got torch.float32'),
                     (torch.zeros(2, 0, dtype=torch.long), 'at least one')]:
        with pytest.raises(ValueError, match=msg): m(bad)
    with pytest.raises(ValueError, match='labels must have the shape'): m(ids, labels=ids[:, :3])
    with pytest.raises(ValueError, match='holds 3 rows'): m(ids, state=m.init_state(3))
    with pytest.raises(ValueError, match='another model configuration'): m(ids, state=model('mlp').init_state(2))
    with pytest.raises(ValueError, match='must be a TTTState'): m(ids, state={'W1': 0})
    with pytest.raises(ValueError, match='state.to'): m(ids, state=m.init_state(2).to(dtype=torch.float64))
    with pytest.raises(ValueError, match='exactly one of'): m()
    with pytest.raises(TypeError, match='unexpected arguments'): m(ids, cache_params=None)

def test_state_file_round_trip(tmp_path):
    m = model('mlp', 'mamba').double()
    ids = torch.randint(0, V, (2, 11))
    with torch.no_grad():
        full = m(ids).logits
        s = m(ids[:, :7], return_state=True).state
        s.save(tmp_path / 's.safetensors')
        s2 = TTTState.load(tmp_path / 's.safetensors', model=m)
        got = m(ids[:, 7:], state=s2).logits
    torch.testing.assert_close(got, full[:, 7:], rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match='another model configuration'): TTTState.load(tmp_path / 's.safetensors', model=model('linear'))

def _rewrite(path, **tensors):
    "A copy of a safetensors state file with some tensors replaced (None: dropped)."
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    with safe_open(str(path), framework='pt') as f: md = f.metadata()
    t = {**load_file(str(path)), **tensors}; t = {k: v for k, v in t.items() if v is not None}
    out = path.with_name('bad_' + path.name); save_file(t, str(out), metadata=md); return out

def test_state_file_tensors_are_checked(tmp_path):
    "A state file whose tensors do not fit the model is one ValueError naming the tensor (was a traceback or a silent run)."
    m = model('linear', 'mamba')
    with torch.no_grad(): s = m(torch.randint(0, V, (2, 6)), return_state=True).state
    p = s.save(tmp_path / 's.safetensors')
    W1 = s.params[0][0]
    for bad, msg in [(dict(**{'layers.0.params.0': torch.zeros(2, *W1.shape[1:-1], W1.shape[-1] + 1)}), 'layers.0.params.0 is float32'),
                     (dict(**{'layers.1.grads.1': torch.full_like(s.grads[1][1], float('nan'))}), 'layers.1.grads.1'),
                     (dict(**{'layers.0.conv.qk': None}), 'conv tails'),
                     (dict(**{'layers.1.params.1': None}), 'damaged TTTState file')]:
        with pytest.raises(ValueError, match=re.escape(msg)): TTTState.load(_rewrite(p, **bad), model=m)

def test_session_last_logits_are_checked(tmp_path):
    "A session state file's last_logits must be finite float logits of the model's vocabulary (one row)."
    from ttt_nb.generate import StreamingSession
    from ttt_nb.tokenizers import ByteTokenizer
    m = model(vocab_size=260, bos_token_id=None, eos_token_id=None)
    sess = StreamingSession(m, ByteTokenizer()); sess.generate('abc', max_new_tokens=2, stop_at_eos=False)
    p = sess.save_state(tmp_path / 'mem.safetensors')
    assert StreamingSession(m, ByteTokenizer()).load_state(p).tokens_seen == sess.tokens_seen   # a good file loads
    for bad in (torch.zeros(100), torch.zeros(2, 260), torch.zeros(260, dtype=torch.long), torch.full((260,), float('nan'))):
        with pytest.raises(ValueError, match='session.last_logits must be finite floats of shape \\[260\\]'):
            StreamingSession(m, ByteTokenizer()).load_state(_rewrite(p, **{'session.last_logits': bad}))

def test_logits_dtype():
    m = model()
    ids = torch.randint(0, V, (1, 5))
    assert m(ids).logits.dtype == torch.float32
    assert m.to(torch.bfloat16)(ids).logits.dtype == torch.float32
    s = m(ids, return_state=True).state
    assert s.dtype == torch.float32 and s.conv[0]['pre_conv'].dtype == torch.bfloat16
    assert m.double()(ids).logits.dtype == torch.float64

@pytest.mark.parametrize('kind,backbone', CASES, ids=cid)
def test_greedy_generate_equals_argmax_of_full_forward(kind, backbone):
    m = model(kind, backbone, seed=1)
    prompt = torch.randint(0, V, (2, 5))
    with torch.no_grad():
        gen = m.generate(prompt, max_new_tokens=9, do_sample=False)
        ref = prompt
        for _ in range(9): ref = torch.cat([ref, m(ref).logits[:, -1].argmax(-1, keepdim=True)], 1)
        assert torch.equal(gen, ref)
        assert torch.equal(m.generate(prompt, max_new_tokens=9, do_sample=False, use_cache=False), ref)

def test_sampling_and_generate_from_a_state():
    m = model('mlp', 'mamba')
    prompt = torch.randint(0, V, (2, 6))
    with torch.no_grad():
        torch.manual_seed(0); a = m.generate(prompt, max_new_tokens=5, do_sample=True, top_k=0)
        torch.manual_seed(0); b = m.generate(prompt, max_new_tokens=5, do_sample=True, top_k=0)
        assert a.shape == (2, 11) and torch.equal(a, b) and int(a.max()) < V
        # a state that has read the first 4 tokens continues with the rest as the prompt
        s = m(prompt[:, :4], return_state=True).state
        g1 = m.generate(prompt[:, 4:], state=s, max_new_tokens=4, do_sample=False)
        g2 = m.generate(prompt, max_new_tokens=4, do_sample=False)
    assert torch.equal(g1[:, -4:], g2[:, -4:])
