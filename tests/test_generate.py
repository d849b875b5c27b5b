"Streaming generation: exactness of the session (greedy, continuation, saved states), sampling, generate() with left padding and streamers, UTF-8 streaming, bad input, ttt-generate on a trained checkpoint."
import io
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from transformers import TextIteratorStreamer, TextStreamer

from ttt_nb import data as D
from ttt_nb.baselines import SWAConfig, SWAForCausalLM, TransformerConfig, TransformerForCausalLM
from ttt_nb.config import TTTConfig
from ttt_nb.generate import GenerateWidget, StreamDecoder, StreamingSession, encode_prompt, load_for_generation, load_state, main, model_step
from ttt_nb.model import TTTForCausalLM

BIN = Path(sys.executable).parent
TOK = D.ByteTokenizer()
V = TOK.vocab_size


def make(kind, seed=0, dtype=torch.float64):
    "A tiny byte-level model of each family (float64: argmax ties cannot flip)."
    torch.manual_seed(seed)
    w = dict(vocab_size=V, hidden_size=32, num_attention_heads=2, intermediate_size=64, eos_token_id=TOK.eos_id)
    if kind.startswith('ttt'):
        layer, backbone = kind.split('-')[1:]
        m = TTTForCausalLM(TTTConfig.from_preset('tiny', backbone=backbone, ttt_layer_type=layer, mini_batch_size=4,
                                                 bos_token_id=None, pad_token_id=TOK.pad_id, **w))
    elif kind == 'transformer': m = TransformerForCausalLM(TransformerConfig(num_hidden_layers=2, **w))
    else: m = SWAForCausalLM(SWAConfig(num_hidden_layers=2, sliding_window=6, **w))
    return m.to(dtype).eval()

KINDS = ['ttt-linear-transformer', 'ttt-mlp-mamba', 'transformer', 'swa']


def argmax_ref(m, ids, n):
    "n greedy tokens by full forwards over the growing sequence."
    seq = torch.tensor([ids])
    with torch.no_grad():
        for _ in range(n): seq = torch.cat([seq, m(seq).logits[:, -1:].argmax(-1)], 1)
    return seq[0, len(ids):].tolist()


@pytest.mark.parametrize('chunk', [1, 3, 64], ids=lambda c: f'chunk{c}')
@pytest.mark.parametrize('kind', KINDS)
def test_greedy_is_argmax_of_full_forward(kind, chunk):
    m = make(kind); ids = list(b'greedy decoding, exactly.')
    s = StreamingSession(m, TOK, prefill_chunk=chunk)
    text = s.generate(ids, max_new_tokens=9, stop_at_eos=False)
    assert s.last_ids == argmax_ref(m, ids, 9)
    assert text == TOK.decode(s.last_ids) and s.tokens_seen == len(ids) + 9


@pytest.mark.parametrize('kind', KINDS)
def test_two_calls_equal_one_call_and_saved_state_continues(kind, tmp_path):
    m = make(kind); p1, p2, p3 = list(b'first, '), list(b'second part'), list(b' & third')
    a = StreamingSession(m, TOK, prefill_chunk=5)
    a.generate(p1, max_new_tokens=6, stop_at_eos=False); g1 = a.last_ids
    a.save_state(tmp_path / 'mem.safetensors')
    a.generate(p2, max_new_tokens=7, stop_at_eos=False); g2 = a.last_ids
    a.generate(p3, max_new_tokens=5, stop_at_eos=False); g3 = a.last_ids
    one = StreamingSession(m, TOK); one.generate(p1 + g1 + p2, max_new_tokens=7, stop_at_eos=False)
    assert one.last_ids == g2 == argmax_ref(m, p1 + g1 + p2, 7)
    assert g3 == argmax_ref(m, p1 + g1 + p2 + g2 + p3, 5)
    b = StreamingSession(make(kind), TOK).load_state(tmp_path / 'mem.safetensors')
    assert b.tokens_seen == len(p1) + 6
    b.generate(p2, max_new_tokens=7, stop_at_eos=False); assert b.last_ids == g2
    b.generate(p3, max_new_tokens=5, stop_at_eos=False); assert b.last_ids == g3
    c = StreamingSession(m, TOK).load_state(tmp_path / 'mem.safetensors')   # '' continues from the state alone
    c.generate('', max_new_tokens=4, stop_at_eos=False)
    assert c.last_ids == argmax_ref(m, p1 + g1, 4)


def test_reset_forgets():
    m = make('ttt-linear-mamba'); s = StreamingSession(m, TOK)
    first = s.generate('abc', max_new_tokens=5, stop_at_eos=False)
    s.generate('more context', max_new_tokens=3, stop_at_eos=False)
    assert s.reset().generate('abc', max_new_tokens=5, stop_at_eos=False) == first and s.tokens_seen == 8


def test_early_close_keeps_state_consistent():
    "Stopping to read a stream early still leaves the state covering every token yielded."
    m = make('ttt-linear-transformer'); s = StreamingSession(m, TOK)
    it = s.stream(list(b'abcdef'), max_new_tokens=50, stop_at_eos=False)
    for _ in range(3): next(it)
    it.close(); first = s.last_ids
    assert len(first) >= 3 and s.tokens_seen == 6 + len(first) and first == argmax_ref(m, list(b'abcdef'), len(first))
    s.generate(list(b'xy'), max_new_tokens=3, stop_at_eos=False)
    assert s.last_ids == argmax_ref(m, list(b'abcdef') + first + list(b'xy'), 3)


TTT_KINDS = [f'ttt-{l}-{b}' for l in ('linear', 'mlp') for b in ('transformer', 'mamba')]

@pytest.mark.parametrize('plen', [3, 5, 6, 8], ids=lambda n: f'prompt{n}')   # b=4: a prompt ends inside or at a mini-batch
@pytest.mark.parametrize('kind', TTT_KINDS + ['transformer', 'swa'])
def test_model_generate_greedy_is_argmax_of_full_forward(kind, plen):
    "transformers' own generate() carries the state between steps (it did not on 5.24 before the fix)."
    m = make(kind); ids = list(b'split the mini-batch')[:plen]
    with torch.no_grad():
        g = m.generate(torch.tensor([ids]), max_new_tokens=9, do_sample=False, eos_token_id=None, pad_token_id=TOK.pad_id)
    assert g[0, plen:].tolist() == argmax_ref(m, ids, 9)


@pytest.mark.parametrize('how', ['dropped', 'stale'])
def test_generate_refuses_when_the_state_is_not_carried(how, monkeypatch):
    "A transformers that drops the state (or hands back an old one) makes generate() raise, naming the versions that work."
    m = make('ttt-linear-mamba'); first = {}
    def lossy(outputs, model_kwargs, is_encoder_decoder=False, num_new_tokens=1):
        first.setdefault('state', outputs.state)
        model_kwargs['state'] = None if how == 'dropped' else first['state']
        if (am := model_kwargs.get('attention_mask')) is not None:
            model_kwargs['attention_mask'] = torch.cat([am, am.new_ones((am.shape[0], num_new_tokens))], -1)
        return model_kwargs
    monkeypatch.setattr(m, '_update_model_kwargs_for_generation', lossy)
    with pytest.raises(RuntimeError, match=r'transformers>=5\.17'):
        m.generate(torch.tensor([list(b'abcdef')]), max_new_tokens=4, do_sample=False, eos_token_id=None, pad_token_id=0)


@pytest.mark.parametrize('kw', [dict(temperature=0.7), dict(top_k=5), dict(top_p=0.8, temperature=1.3),
                                dict(repetition_penalty=1.5, top_k=40, top_p=0.95, temperature=0.9)],
                         ids=['temp', 'topk', 'topp', 'all'])
@pytest.mark.parametrize('kind', ['ttt-linear-mamba', 'swa'])
def test_sampling_matches_model_generate(kind, kw):
    m = make(kind); ids = list(b'sample from here')
    s = StreamingSession(m, TOK); s.generate(ids, max_new_tokens=12, do_sample=True, seed=7, stop_at_eos=False, **kw)
    torch.manual_seed(7)
    ref = m.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=True, eos_token_id=None, pad_token_id=TOK.pad_id,
                     top_k=kw.pop('top_k', 0), **kw)
    assert s.last_ids == ref[0, len(ids):].tolist()


def test_repetition_penalty_greedy_matches_generate():
    m = make('ttt-linear-transformer'); ids = list(b'aaaa bbbb aaaa')
    s = StreamingSession(m, TOK); s.generate(ids, max_new_tokens=10, repetition_penalty=1.8, stop_at_eos=False)
    ref = m.generate(torch.tensor([ids]), max_new_tokens=10, do_sample=False, repetition_penalty=1.8, eos_token_id=None)
    assert s.last_ids == ref[0, len(ids):].tolist()


@pytest.mark.parametrize('kind', KINDS)
def test_generate_left_padding_equals_rows_alone(kind):
    "A left-padded batch (rows of every mini-batch phase) gives each row the tokens it gives alone; greedy and penalized."
    m = make(kind)
    hf = D.as_hf_tokenizer(TOK); hf.padding_side = 'left'
    prompts = ['a', 'two words', 'a longer prompt!', 'abcde', 'xyz12']   # 1, 9, 16, 5, 5 bytes: phases 1, 1, 0, 1, 1 of b=4
    enc = hf(prompts, return_tensors='pt', padding=True)
    assert (enc.attention_mask == 0).any()
    for kw in (dict(), dict(repetition_penalty=1.4)):
        g = m.generate(**enc, max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=TOK.pad_id, **kw)
        for i, p in enumerate(prompts):
            ids = torch.tensor([list(p.encode())])
            alone = m.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False, eos_token_id=None,
                               pad_token_id=TOK.pad_id, **kw)
            assert g[i, -6:].tolist() == alone[0, -6:].tolist(), (p, kw)


def test_left_padding_returns_usable_state_and_refuses_right_padding():
    m = make('ttt-linear-mamba')
    ids = torch.tensor([[256, 256, 1, 2, 3], [4, 5, 6, 7, 8]]); mask = (ids != 256).long()
    out = m(ids, attention_mask=mask, return_state=True)
    assert out.state.batch_size == 2 and sorted(s.offset for _, s in out.state.groups) == [1, 3]   # lengths 3 and 5, b=4
    row0, _ = model_step(m, torch.tensor([[1, 2, 3]]))
    assert torch.allclose(out.logits[0, -1], row0[0], atol=1e-12)
    with pytest.raises(ValueError, match='left padding only'): m(ids, attention_mask=mask.flip(1))
    with pytest.raises(ValueError, match='only padding'): m(ids, attention_mask=torch.tensor([[0] * 5, [1] * 5]))


def test_streamers():
    m = make('ttt-linear-mamba'); hf = D.as_hf_tokenizer(TOK)
    ids = torch.tensor([list(b'stream this: ')])
    it = TextIteratorStreamer(hf, skip_prompt=True, skip_special_tokens=True)
    th = threading.Thread(target=m.generate, kwargs=dict(input_ids=ids, max_new_tokens=10, do_sample=False, streamer=it,
                                                          eos_token_id=None, pad_token_id=TOK.pad_id))
    th.start(); text = ''.join(it); th.join()
    g = m.generate(ids, max_new_tokens=10, do_sample=False, eos_token_id=None, pad_token_id=TOK.pad_id)
    assert text == hf.decode(g[0, ids.shape[1]:], skip_special_tokens=True)
    s = StreamingSession(m, TOK); assert s.generate(ids[0], max_new_tokens=10, stop_at_eos=False) == TOK.decode(g[0, ids.shape[1]:])


def test_text_streamer_prints(capsys):
    m = make('swa'); hf = D.as_hf_tokenizer(TOK); ids = torch.tensor([list(b'hello')])
    g = m.generate(ids, max_new_tokens=6, do_sample=False, streamer=TextStreamer(hf, skip_prompt=True), eos_token_id=None, pad_token_id=0)
    assert capsys.readouterr().out.rstrip('\n') == hf.decode(g[0, 5:], skip_special_tokens=True).rstrip('\n')


def test_eos_and_stop_strings():
    m = make('ttt-linear-transformer')
    s = StreamingSession(m, TOK); full = s.generate('stop?', max_new_tokens=24, stop_at_eos=False); ref = s.last_ids
    eos = ref[5]
    g = m.generate(torch.tensor([list(b'stop?')]), max_new_tokens=24, do_sample=False, eos_token_id=eos, pad_token_id=TOK.pad_id)
    assert g[0, 5:].tolist() == ref[:ref.index(eos) + 1]
    s = StreamingSession(m, TOK); s.tok.eos_id = eos; s.generate('stop?', max_new_tokens=24)
    assert s.last_ids == ref[:ref.index(eos) + 1]
    stop = full[6:8]
    cut = StreamingSession(m, TOK).generate('stop?', max_new_tokens=24, stop=[stop, 'never-there'], stop_at_eos=False)
    assert cut == full[:full.index(stop) + len(stop)] or (stop in cut and full.startswith(cut))


class Scripted(nn.Module):
    "A stand-in LM whose greedy output is a fixed byte string (its state is the count of tokens seen)."
    def __init__(self, script:bytes):
        super().__init__(); self.script, self.dummy = list(script), nn.Parameter(torch.zeros(1))
        self.config = TransformerConfig(vocab_size=V, hidden_size=4, num_hidden_layers=1, num_attention_heads=1)
    def forward(self, input_ids, state=None, return_state=True, **kw):
        n = (state or 0) + input_ids.shape[1]; k = n - self.n_prompt
        lg = torch.full((1, input_ids.shape[1], V), -1e4)
        lg[0, -1, self.script[k] if k < len(self.script) else TOK.eos_id] = 0
        return type('O', (), dict(logits=lg, state=n))


def test_multibyte_utf8_pieces():
    text = 'é😀 ✓ ünï'
    m = Scripted(text.encode()); m.n_prompt = 2
    pieces = list(StreamingSession(m, TOK).stream('hi', max_new_tokens=40))
    assert ''.join(pieces) == text and '\ufffd' not in ''.join(pieces)
    assert pieces[:2] == ['é', '😀']                               # 2-byte and 4-byte characters arrive whole
    dec = StreamDecoder(D.as_hf_tokenizer(TOK))                    # the generic (re-decoding) path agrees
    assert ''.join([dec.put(i) for i in text.encode()] + [dec.flush()]) == text


def test_bad_input_errors(tmp_path):
    m = make('ttt-linear-transformer'); s = StreamingSession(m, TOK, max_prompt_tokens=16)
    with pytest.raises(ValueError, match='empty prompt'): s.generate('')
    with pytest.raises(ValueError, match='17 tokens, more than max_prompt_tokens=16'): s.generate('x' * 17)
    with pytest.raises(ValueError, match=r'outside the model.s vocabulary \[0, 257\)'): s.generate([3, 257])
    with pytest.raises(ValueError, match='max_new_tokens'): s.generate('x', max_new_tokens=-1)
    with pytest.raises(ValueError, match='top_p'): s.generate('x', do_sample=True, top_p=1.5)
    # a word-level tokenizer with an unknown token cannot encode every character
    from tokenizers import Tokenizer, models, pre_tokenizers
    t = Tokenizer(models.WordLevel({'hello': 0, 'world': 1, '[UNK]': 2, '<|endoftext|>': 3}, unk_token='[UNK]'))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    wl = D.HFTokenizer(t, 'words')
    with pytest.raises(ValueError, match=r"cannot encode \['ß'\]"): encode_prompt(wl, 'hello ß', 10)
    assert encode_prompt(wl, 'hello world', 10) == [0, 1]
    big = make('ttt-linear-transformer'); big.config.vocab_size = 100
    with pytest.raises(ValueError, match='tokenizer has 257 ids but the model only 100'): StreamingSession(big, TOK)
    # state files
    with pytest.raises(ValueError, match='nothing to save'): s.save_state(tmp_path / 'x.safetensors')
    with pytest.raises(FileNotFoundError, match='no state file'): s.load_state(tmp_path / 'missing.safetensors')
    (tmp_path / 'junk.safetensors').write_bytes(b'not a state')
    with pytest.raises(ValueError, match='not a saved session state'): s.load_state(tmp_path / 'junk.safetensors')
    s.generate('abc', max_new_tokens=2); s.save_state(tmp_path / 'ttt.safetensors')
    with pytest.raises(ValueError, match='holds a TTT state but the model is a SWAForCausalLM'):
        StreamingSession(make('swa'), TOK).load_state(tmp_path / 'ttt.safetensors')
    with pytest.raises(ValueError, match='another model configuration'):
        StreamingSession(make('ttt-mlp-mamba'), TOK).load_state(tmp_path / 'ttt.safetensors')
    k = StreamingSession(make('swa'), TOK); k.generate('abc', max_new_tokens=2); k.save_state(tmp_path / 'kv.safetensors')
    with pytest.raises(ValueError, match='holds a KV cache'): s.load_state(tmp_path / 'kv.safetensors')


def test_checkpoint_without_tokenizer(tmp_path, capsys):
    m = make('ttt-linear-transformer', dtype=torch.float32); m.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match='has no tokenizer.*--tokenizer byte'): load_for_generation(tmp_path)
    with pytest.raises(FileNotFoundError, match='no checkpoint at'): load_for_generation(tmp_path / 'nope')
    m2, tok = load_for_generation(tmp_path, tokenizer='byte', device='cpu')
    assert isinstance(tok, D.ByteTokenizer)
    assert main([str(tmp_path), '--prompt', 'hi']) == 2
    err = capsys.readouterr().err
    assert 'ttt-generate: error:' in err and 'has no tokenizer' in err and 'Traceback' not in err


def test_cli_one_line_errors(tmp_path, capsys):
    "No CUDA, truncated weights, a damaged state file: one line on stderr and exit status 2, no traceback."
    m = make('ttt-linear-transformer', dtype=torch.float32); m.save_pretrained(tmp_path); TOK.save(tmp_path)
    capsys.readouterr()
    def one_line(argv, want):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith('ttt-generate: error:') and want in err and '\n' not in err and 'Traceback' not in err, err
    if not torch.cuda.is_available(): one_line([str(tmp_path), '-p', 'hi', '--device', 'cuda'], 'sees no CUDA GPU')
    s = StreamingSession(m, TOK); s.generate('abc', max_new_tokens=2); s.save_state(tmp_path / 'mem.safetensors')
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    with safe_open(str(tmp_path / 'mem.safetensors'), framework='pt') as f: meta = f.metadata()
    t = load_file(tmp_path / 'mem.safetensors'); t['session.last_logits'] = t['session.last_logits'][:7]
    save_file(t, tmp_path / 'mem.safetensors', metadata=meta)
    one_line([str(tmp_path), '-p', 'hi', '--keep-state', str(tmp_path / 'mem.safetensors')], 'session.last_logits must be')
    w = tmp_path / 'model.safetensors'; w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    one_line([str(tmp_path), '-p', 'hi'], str(tmp_path))


def test_widget_builds_and_streams():
    w = GenerateWidget(StreamingSession(make('ttt-linear-mamba'), TOK), max_new_tokens=5)
    assert w.box.children and w.keep_memory.value
    w.prompt.value, w.do_sample.value = 'Hi', False
    new = w.generate(); assert len(w.session.last_ids) == 5 and w.output.value == 'Hi' + new
    w.generate(); assert w.session.tokens_seen == 14                       # memory kept
    w.keep_memory.value = False; w.generate(); assert w.session.tokens_seen == 7
    w.button.click(); assert w.session.tokens_seen == 7 and 'tok/s' in w.status.value
    w.reset_button.click(); assert w.session.tokens_seen == 0


def _env(): return {**os.environ, 'OMP_NUM_THREADS': '1', 'TOKENIZERS_PARALLELISM': 'false'}


@pytest.mark.slow
def test_cli_stream_on_trained_checkpoint(tmp_path, capsys, monkeypatch):
    "Train a few steps with the trainer, then `ttt-generate --stream` on the run folder, with a kept state and stdin."
    from ttt_nb.train import TrainConfig, Trainer
    run = tmp_path / 'run'
    cfg = TrainConfig(preset='tiny', corpus='python-stdlib', tokenizer='byte', seq_len=32, batch_size=2, steps=2, warmup_steps=1,
                      n_checkpoints=2, eval_batches=1, eval_batch_size=2, progress=False, wandb='disabled', run_eval=False,
                      out_dir=str(run), model_overrides=dict(hidden_size=32, num_attention_heads=2, intermediate_size=64,
                                                             num_hidden_layers=1))
    Trainer(cfg).fit()
    mem = tmp_path / 'mem.safetensors'
    cmd = [str(BIN / 'ttt-generate'), str(run), '--stream', '--max-new-tokens', '8', '--ignore-eos', '--keep-state', str(mem)]
    r1 = subprocess.run(cmd + ['--prompt', 'def f(x):'], capture_output=True, text=True, env=_env())
    assert r1.returncode == 0, r1.stderr
    capsys.readouterr(); monkeypatch.setattr(sys, 'stdin', io.StringIO('\n    return'))   # prompt from stdin, in-process
    assert main(cmd[1:]) == 0 and mem.exists()
    r2 = capsys.readouterr().out
    model, tok = load_for_generation(run, device='cpu')                   # the latest checkpoint, byte tokenizer from config.json
    assert isinstance(tok, D.ByteTokenizer)
    s = StreamingSession(model, tok)
    t1 = s.generate('def f(x):', max_new_tokens=8, stop_at_eos=False)
    t2 = s.generate('\n    return', max_new_tokens=8, stop_at_eos=False)
    assert r1.stdout == t1 + '\n' and r2 == t2 + '\n'
    assert load_state(mem, model)[1]['tokens_seen'] == s.tokens_seen == 9 + 8 + 11 + 8
    ck = run / 'checkpoints' / 'step_000002'                              # a checkpoint folder directly
    assert main([str(ck), '-p', 'def f(x):', '--max-new-tokens', '8', '--ignore-eos']) == 0
    assert capsys.readouterr().out == t1 + '\n'


def test_bench_static_decode_step_matches_eager():
    "The CUDA-graph decode body (static state buffers, one body per offset), run eagerly on CPU, follows model_step."
    from ttt_nb.generate import TTTDecodeGraphs
    m = make('ttt-linear-mamba')                                  # b = 4
    lg, st = model_step(m, torch.tensor([list(b'static buffers')]))
    gr, tok, es = TTTDecodeGraphs(m, st), int(lg.argmax()), st
    for i in range(9):                                             # across two mini-batch ends
        with torch.no_grad():
            gr.ids.fill_(tok); a = gr._body(gr.offset)[0]; gr.offset = (gr.offset + 1) % gr.b
        b, es = model_step(m, torch.tensor([[tok]]), es)
        assert torch.allclose(a.double(), b[0], atol=1e-5), i
        tok = int(b.argmax())
    assert gr.offset == es.offset
