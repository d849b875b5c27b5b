"Parity with the official ttt-lm-pytorch outputs (tests/fixtures/official-ttt, produced by the official code in float64)."
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from ttt_nb.config import TTTConfig
from ttt_nb.model import TTTForCausalLM, load_official_state_dict

FIX = Path(__file__).parent / 'fixtures' / 'official-ttt'
NAMES = ['linear-transformer', 'mlp-transformer', 'linear-mamba', 'mlp-mamba']

@pytest.mark.parametrize('name', NAMES)
def test_logits_and_loss(name):
    m = TTTForCausalLM.from_official(FIX / name)
    assert m.dtype == torch.float64
    io = load_file(str(FIX / name / 'io.safetensors'))
    with torch.no_grad(): out = m(io['input_ids'], labels=io['labels'])
    assert out.logits.dtype == torch.float64
    ref = io['logits']
    l32 = out.logits.float()                                  # the official forward casts its logits with .float()
    assert ((l32 - ref).abs().max() / ref.abs().max()).item() < 1e-10
    loss32 = F.cross_entropy(l32[:, :-1].reshape(-1, l32.shape[-1]), io['labels'][:, 1:].reshape(-1))
    assert abs(loss32.item() - io['loss'].item()) < 1e-12
    assert abs(out.loss.item() - io['loss'].item()) < 1e-6  # our own float64 loss, vs the official float32 one

@pytest.mark.parametrize('name', NAMES)
def test_split_continuation_matches_official(name):
    "The official outputs are also reproduced when the sequence is run in pieces through the state."
    m = TTTForCausalLM.from_official(FIX / name)
    io = load_file(str(FIX / name / 'io.safetensors'))
    ids, s, outs = io['input_ids'], None, []
    with torch.no_grad():
        for a, b in [(0, 5), (5, 21), (21, 22), (22, 37)]:
            o = m(ids[:, a:b], state=s, return_state=True); s = o.state; outs.append(o.logits)
    l32 = torch.cat(outs, 1).float()
    assert ((l32 - io['logits']).abs().max() / io['logits'].abs().max()).item() < 1e-6

def test_official_state_dict_mismatch_is_clear():
    import json
    cfg = TTTConfig.from_official(json.loads((FIX / 'linear-mamba' / 'config.json').read_text()))
    sd = load_file(str(FIX / 'mlp-mamba' / 'model.safetensors'))
    with pytest.raises(ValueError, match='does not fit this configuration'):
        load_official_state_dict(TTTForCausalLM(cfg).double(), sd)
