"Sweeps for ttt_nb.data: determinism, exact resume, DDP disjointness, align/pack invariants, tokenizers, caches, errors."
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ttt_nb.data as D
import ttt_nb.tokenizers as TK
from ttt_nb.data import Corpus, heldout_documents, load_corpus, load_tokenized, recall_targets, split_wikitext, stdlib_corpus, synthetic_recall_corpus, text_corpus
from ttt_nb.stream import TokenStream
from ttt_nb.tokenizers import ByteTokenizer, as_hf_tokenizer, corpus_stats, load_tokenizer, stats_caption, tokenize, train_bpe

BT = ByteTokenizer()

def toy(lengths, seed=0):
    "A tokenized corpus of documents with the given lengths (bytes from a seeded generator)."
    rng = np.random.default_rng(seed)
    docs = [''.join(chr(c) for c in rng.integers(97, 123, n)) for n in lengths]
    return tokenize(Corpus('toy', 'train', docs), 'byte', cache_dir=False)

def take(stream, n): return [next(stream) for _ in range(n)]

def same(a, b):
    for x, y in zip(a, b):
        for k in x: assert torch.equal(x[k], y[k]), k

LENGTHS = [5, 40, 17, 100, 9, 64, 33, 250, 12, 3, 77, 48]

# ---- TokenStream -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize('boundary', ['align', 'pack'])
def test_deterministic_and_seeded(boundary):
    data = toy(LENGTHS)
    a = take(TokenStream(data, 2, 8, boundary, seed=3), 30)
    same(a, take(TokenStream(data, 2, 8, boundary, seed=3), 30))
    b = take(TokenStream(data, 2, 8, boundary, seed=4), 30)
    assert any(not torch.equal(x['input_ids'], y['input_ids']) for x, y in zip(a, b))

@pytest.mark.parametrize('boundary', ['align', 'pack'])
@pytest.mark.parametrize('k', [0, 1, 5, 23, 61])  # 23 and 61 cross epoch boundaries of this small corpus
@pytest.mark.parametrize('rank,world', [(0, 1), (1, 2)])
def test_resume_exact(boundary, k, rank, world):
    data = toy(LENGTHS)
    ref = take(TokenStream(data, 2, 8, boundary, seed=1, rank=rank, world_size=world), k + 12)
    s = TokenStream(data, 2, 8, boundary, seed=1, rank=rank, world_size=world); take(s, k)
    sd = s.state_dict()
    import json
    sd = json.loads(json.dumps(sd))  # survives a JSON (checkpoint) round trip
    fresh = TokenStream(data, 2, 8, boundary, seed=1, rank=rank, world_size=world); fresh.load_state_dict(sd)
    same(ref[k:], take(fresh, 12))
    assert fresh.step == k + 12

def test_resume_mismatch_names_setting():
    data = toy(LENGTHS); sd = TokenStream(data, 2, 8).state_dict()
    with pytest.raises(ValueError, match='seq_len'): TokenStream(data, 2, 16).load_state_dict(sd)
    with pytest.raises(ValueError, match='corpus_hash'): TokenStream(toy(LENGTHS, seed=9), 2, 8).load_state_dict(sd)

def _walk_align(data, B, W, world, n):
    "Per (rank, row): the list of (epoch, doc, segment index, tokens) the stream produced, checking invariants."
    seen = {}
    for r in range(world):
        s = TokenStream(data, B, W, 'align', seed=7, rank=r, world_size=world)
        k = [None] * B
        for b in take(s, n):
            assert b['input_ids'].shape == b['labels'].shape == (B, W)
            assert torch.equal(b['labels'][:, :-1], b['input_ids'][:, 1:])
            assert torch.equal(b['doc_start'][:, 0], b['reset']) and not b['doc_start'][:, 1:].any()
            for i in range(B):
                d, e = int(b['doc_id'][i]), int(b['epoch'][i])
                k[i] = 0 if b['reset'][i] else k[i] + 1
                doc = np.asarray(data.doc(d), dtype=np.int64)
                seg = torch.cat([b['input_ids'][i], b['labels'][i, -1:]]).numpy()
                assert np.array_equal(seg, doc[k[i] * W:(k[i] + 1) * W + 1])  # inside one document, in order
                seen.setdefault((r, i), []).append((e, d, k[i]))
    return seen

@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lengths=st.lists(st.integers(0, 90), min_size=1, max_size=25), W=st.integers(1, 12), B=st.integers(1, 3),
       world=st.integers(1, 2))
def test_align_invariants(lengths, W, B, world):
    data = toy(lengths)
    usable = [i for i, n in enumerate(lengths) if n >= W + 1]
    if len(usable) < B * world:
        with pytest.raises(ValueError): TokenStream(data, B, W, rank=0, world_size=world)
        return
    seen = _walk_align(data, B, W, world, 40)
    for segs in seen.values():
        # reset exactly at each document's first segment; a document is read whole before the next one
        for (_e0, d0, k0), (_e1, d1, k1) in zip(segs, segs[1:]):
            if k1 == 0: assert k0 == (lengths[d0] - 1) // W - 1
            else: assert (d1, k1) == (d0, k0 + 1)
    # within epoch 0 no document is read by two rows (of any rank)
    owner = {}
    for row, segs in seen.items():
        for e, d, _k in segs:
            if e == 0: assert owner.setdefault(d, row) == row
    assert set(owner) <= set(usable)

def test_rows_drifting_epochs_apart():
    "One long document keeps its row in an early epoch while the other rows run many epochs ahead."
    data = toy([400] + [9] * 12)
    _walk_align(data, 3, 4, 1, 200)  # invariants hold throughout
    s = TokenStream(data, 3, 4, seed=7); bs = take(s, 200)
    assert int(bs[-1]['epoch'].max()) - int(bs[-1]['epoch'].min()) >= 3
    t = TokenStream(data, 3, 4, seed=7); take(t, 150)
    u = TokenStream(data, 3, 4, seed=7); u.load_state_dict(t.state_dict())
    same(bs[150:], take(u, 50))

def test_align_epoch_covers_every_segment_once():
    data = toy(LENGTHS); W, B = 8, 3
    s = TokenStream(data, B, W, seed=2)
    need = {(d, k) for d in range(len(LENGTHS)) for k in range(max(0, (LENGTHS[d] - 1) // W)) if LENGTHS[d] > W}
    got, k = [], [None] * B
    for b in take(s, 200):
        for i in range(B):
            k[i] = 0 if b['reset'][i] else k[i] + 1
            if b['epoch'][i] == 0: got.append((int(b['doc_id'][i]), k[i]))
    assert sorted(got) == sorted(need)
    assert s.stats['n_docs_skipped'] == sum(n < W + 1 for n in LENGTHS)
    assert s.stats['tokens_dropped'] == sum(n - ((n - 1) // W * W + 1) for n in LENGTHS if n >= W + 1)
    assert s.stats['segments_per_epoch'] == len(need)

@pytest.mark.parametrize('boundary', ['align', 'pack'])
@pytest.mark.parametrize('world', [2, 3])
def test_ddp_ranks_disjoint(world, boundary):
    data = toy(LENGTHS * 3); B = 2
    rows = {}
    for r in range(world):
        for b in take(TokenStream(data, B, 4, boundary, seed=5, rank=r, world_size=world), 60):
            for i in range(B):
                if b['epoch'][i] == 0: rows.setdefault(int(b['doc_id'][i]), set()).add((r, i))
    assert all(len(v) == 1 for v in rows.values())
    assert len({next(iter(v))[0] for v in rows.values()}) == world  # every rank got documents

def test_pack_stream_is_documents_with_eos():
    lengths = [5, 2, 7, 1, 11]; data = toy(lengths); W = 4
    s = TokenStream(data, 1, W, 'pack', seed=0)
    bs = take(s, 20)
    flat = torch.cat([b['input_ids'][0] for b in bs]).numpy()
    starts = torch.cat([b['doc_start'][0] for b in bs]).numpy()
    expect, exp_starts = [], []
    for e in range(3):
        for d in s.assignment(e)[0]:
            expect += list(data.doc(int(d))) + [BT.eos_id]; exp_starts += [1] + [0] * lengths[d]
    n = len(flat)
    assert np.array_equal(flat, np.array(expect[:n])) and np.array_equal(starts, np.array(exp_starts[:n], bool))
    for b in bs:
        assert torch.equal(b['labels'][:, :-1], b['input_ids'][:, 1:])
        assert bool(b['reset'][0]) == bool(b['doc_start'][0, 0])
    assert s.stats['tokens_dropped'] == 0

@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lengths=st.lists(st.integers(0, 40), min_size=1, max_size=20), W=st.integers(1, 12), B=st.integers(1, 3),
       world=st.integers(1, 2), rank=st.integers(0, 1))
def test_pack_invariants(lengths, W, B, world, rank):
    rank = rank % world
    data = toy(lengths)
    if sum(n > 0 for n in lengths) < B * world:
        with pytest.raises(ValueError): TokenStream(data, B, W, 'pack', world_size=world)
        return
    s = TokenStream(data, B, W, 'pack', seed=11, rank=rank, world_size=world)
    bs = take(s, 15)
    for i in range(B):
        flat = torch.cat([b['input_ids'][i] for b in bs] + [bs[-1]['labels'][i, -1:]]).numpy()
        starts = torch.cat([b['doc_start'][i] for b in bs]).numpy()
        expect, exp_starts, e = [], [], 0
        while len(expect) <= len(flat):
            for d in s.assignment(e)[rank * B + i]:
                expect += list(data.doc(int(d))) + [BT.eos_id]; exp_starts += [True] + [False] * lengths[d]
            e += 1
        assert np.array_equal(flat, np.array(expect[:len(flat)]))      # the row is its documents + EOS, in order
        assert np.array_equal(starts, np.array(exp_starts[:len(starts)]))
        assert all(bool(b['reset'][i]) == bool(b['doc_start'][i, 0]) for b in bs)

def test_stream_errors():
    data = toy([5, 9, 3])
    with pytest.raises(ValueError, match=r'W=20 is too long.*longest document has 9'): TokenStream(data, 1, 20)
    with pytest.raises(ValueError, match='empty corpus'): TokenStream(toy([0, 0]), 1, 4)
    with pytest.raises(ValueError, match='rows need'): TokenStream(data, 3, 4)
    with pytest.raises(ValueError, match='boundary'): TokenStream(data, 1, 4, boundary='cut')
    with pytest.raises(ValueError, match='rank'): TokenStream(data, 1, 4, rank=2, world_size=2)

# ---- corpora ----------------------------------------------------------------------------------------------------

def test_stdlib_splits_disjoint_and_complete():
    parts = {s: set(stdlib_corpus(s).ids) for s in ('train', 'validation', 'test')}
    allc = stdlib_corpus('all')
    assert set(allc.ids) == parts['train'] | parts['validation'] | parts['test']
    assert sum(map(len, parts.values())) == len(allc) > 300
    assert not any(i.split('/')[0] in ('test', 'site-packages') for i in allc.ids)
    assert len(parts['validation']) > 10 and len(parts['test']) > 10

def test_stdlib_tokenize_cached(tmp_path, monkeypatch):
    tk = load_tokenized('python-stdlib', 'train', cache_dir=tmp_path)
    assert tk.n_tokens > 10**6 and tk.tokens.dtype == np.uint16
    monkeypatch.setattr(TK, '_encode_all', lambda *a: pytest.fail('re-tokenized despite the cache'))
    again = load_tokenized('python-stdlib', 'train', cache_dir=tmp_path)
    assert again.path == tk.path and isinstance(again.tokens, np.memmap)

def test_cache_keyed_by_content_and_tokenizer(tmp_path):
    a = tokenize(Corpus('c', 'train', ['hello', 'world']), 'byte', cache_dir=tmp_path)
    b = tokenize(Corpus('c', 'train', ['hello', 'world!']), 'byte', cache_dir=tmp_path)
    assert a.path != b.path and len(list((tmp_path / 'tokens').iterdir())) == 2
    c = tokenize(Corpus('c', 'train', ['hello', 'world']), 'byte', cache_dir=tmp_path, refresh=True)
    assert c.path == a.path and np.array_equal(c.tokens, a.tokens)
    assert not any(p.name.count('.tmp') for p in (tmp_path / 'tokens').iterdir())

def test_cache_dir_env(tmp_path, monkeypatch):
    monkeypatch.setenv('TTT_NB_CACHE', str(tmp_path))
    tk = tokenize(Corpus('c', 'train', ['x']), 'byte')
    assert tmp_path in tk.path.parents

def test_synthetic_recall_distances_exceed_W():
    W = 64
    c = synthetic_recall_corpus('validation', n_docs=6, n_pairs=5, min_gap=W + 1, max_gap=3 * W, seed=3)
    tk = tokenize(c, 'byte', cache_dir=False)
    for i, t in enumerate(recall_targets(c)):
        assert len(t['positions']) == 5 * 4 and (t['distance'] > W).all()
        toks = np.asarray(tk.doc(i))
        # each target's value is the same tokens as its binding's value, `distance` earlier
        assert np.array_equal(toks[t['positions']], toks[t['positions'] - t['distance']])
    assert c.hash == synthetic_recall_corpus('validation', n_docs=6, n_pairs=5, min_gap=W + 1, max_gap=3 * W, seed=3).hash

def test_synthetic_recall_targets_with_bpe(tmp_path):
    c = synthetic_recall_corpus('train', n_docs=8, n_pairs=4, min_gap=100, max_gap=200)
    tok = train_bpe(c, 320, tmp_path)
    for text, t, tg in zip(c.docs, recall_targets(c, tok), c.meta['targets']):
        ids = tok.encode(text)
        for q, _ in tg: assert text[q:q + 4] in tok.decode(ids[t['positions']])

def test_wikitext_titles_split():
    t = ' \n = A = \n \n a \n = = Sec = = \n \n b \n = = = Sub = = = \n c \n \n = B = \n \n d \n'
    titles, arts = split_wikitext(t)
    assert titles == ['A', 'B'] and ' = = Sec = = ' in arts[0] and arts[1].startswith(' = B = ')
    assert split_wikitext(' preface \n \n = A = \n \n x \n')[0] == ['', 'A']
    assert split_wikitext(' = A = \n \n x = \n = 1 rad / s k = \n 1 \n')[0] == ['A']  # wrapped formula, not a title
    # the hub's rows ('' for blank lines) joined give the same articles
    rows = ['', ' = A = \n', '', ' a \n', '', ' = B = \n', '', ' b \n']
    assert split_wikitext(''.join(r if r.endswith('\n') else r + '\n' for r in rows))[0] == ['A', 'B']

def test_wikitext2_local(shared_dir):
    wt = shared_dir / 'data' / 'wikitext-2-raw'
    if not wt.is_dir(): pytest.skip('wikitext-2-raw not in ../shared/data')
    v, t = load_corpus(str(wt), 'validation'), load_corpus('wikitext-2', 'test', path=wt)
    assert (len(v), len(t)) == (60, 60)  # the published article counts
    assert v.ids[0].endswith('Homarus gammarus') and t.ids[0].endswith('Robert Boulter')
    import re
    for i, a in zip(v.ids + t.ids, v.docs + t.docs):
        assert re.match(r' = [^=]', a) and split_wikitext(a) == ([i.split(':', 1)[1]], [a])  # one article each
    assert sum(len(re.findall(r'^ = = [^=].* = = $', a, re.M)) for a in v.docs) > 100  # sections stay inside
    raw = (wt / 'wiki.valid.raw').read_text()
    assert sum(len(a.strip()) for a in v.docs) <= len(raw) and 'Homarus gammarus' in v.docs[0]
    # the same articles through `datasets` (the local `text` builder, offline)
    h = load_corpus('hf:text', 'validation', data_files={'validation': str(wt / 'wiki.valid.raw')}, wikitext=True,
                    keep_linebreaks=True)
    assert h.docs == v.docs
    with pytest.raises(FileNotFoundError, match='wiki.train.raw'): load_corpus(str(wt), 'train')
    with pytest.raises(ValueError, match="'validation' split"): load_corpus(str(wt / 'wiki.valid.raw'), 'train')
    assert load_corpus(str(wt / 'wiki.valid.raw'), 'validation').docs == v.docs
    assert len(load_corpus(str(wt), 'all')) == 120  # the splits that are there

def test_local_text_pieces(shared_dir):
    wp = shared_dir / 'data' / 'warandpeace' / 'input.txt'
    if not wp.exists(): pytest.skip('warandpeace not in ../shared/data')
    allc = load_corpus(str(wp), 'all', chunk_chars=100_000)
    assert ''.join(allc.docs) == wp.read_text() and all(len(d) >= 100_000 for d in allc.docs[:-1])
    tr, va, te = (load_corpus(str(wp), s, chunk_chars=100_000) for s in ('train', 'validation', 'test'))
    assert tr.docs + va.docs + te.docs == allc.docs and len(va) >= 1 and len(te) >= 1

def test_registered_books(shared_dir, monkeypatch):
    data = shared_dir / 'data'
    if not (data / 'warandpeace').is_dir() or not (data / 'tinyshakespeare').is_dir(): pytest.skip('books not in ../shared/data')
    monkeypatch.setenv('TTT_NB_DATA', str(data))
    wp = {s: load_corpus('war-and-peace', s) for s in ('train', 'validation', 'test')}
    assert [len(c) for c in wp.values()] == [28, 2, 2] and wp['test'].name == 'war-and-peace'
    assert load_corpus(f"{data / 'warandpeace' / 'input.txt'}?chunk_chars=100000", 'test').docs == wp['test'].docs
    ts = load_corpus('tiny-shakespeare?chunk_chars=20000', 'validation')
    assert len(ts) >= 1 and all(len(d) >= 20000 for d in ts.docs[:-1])
    monkeypatch.delenv('TTT_NB_DATA')
    with pytest.raises(FileNotFoundError, match='TTT_NB_DATA'): load_corpus('war-and-peace')
    assert len(load_corpus('war-and-peace', 'validation', path=data / 'warandpeace')) == 2

def test_options_in_name():
    c = load_corpus('synthetic-recall?n_docs=2&min_gap=30&max_gap=30&seed=4', 'test')
    assert len(c) == 2 and c.meta['options']['seed'] == 4
    with pytest.raises(ValueError, match='key=value'): load_corpus('synthetic-recall?n_docs', 'test')

def test_text_folder(tmp_path):
    for i in range(40): (tmp_path / f'd{i}.txt').write_text(f'doc {i}\n' * 3)
    (tmp_path / '.hidden').write_text('no')
    allc = text_corpus(tmp_path)
    assert len(allc) == 40 and sorted(allc.docs) == sorted(f'doc {i}\n' * 3 for i in range(40))
    splits = [text_corpus(tmp_path, s) for s in ('train', 'validation', 'test')]
    assert sum(map(len, splits)) == 40 and not set(splits[0].ids) & set(splits[2].ids)
    sep = text_corpus(tmp_path / 'd1.txt', separator='\n')
    assert sep.docs == ['doc 1'] * 3

def test_corpus_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown corpus 'wikitext-9'"): load_corpus('wikitext-9')
    with pytest.raises(FileNotFoundError, match='nowhere'): load_corpus(str(tmp_path / 'nowhere'))
    (tmp_path / 'e.txt').write_text('   \n')
    with pytest.raises(ValueError, match='empty'): load_corpus(str(tmp_path / 'e.txt'), 'all')
    with pytest.raises(ValueError, match='split'): load_corpus('python-stdlib', 'training')
    with pytest.raises(RuntimeError, match='offline|local'): load_corpus('hf:surely-not-a-dataset-xyz', 'test')

# ---- tokenizers -------------------------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.text())
def test_byte_roundtrip(s):
    ids = BT.encode(s)
    assert BT.decode(ids) == s.encode('utf-8', 'replace').decode('utf-8', 'replace') and (ids < 256).all()
    hb = as_hf_tokenizer(BT)
    assert hb.decode(ids.tolist()) == BT.decode(ids)

def test_byte_hf_adapter():
    hb = as_hf_tokenizer(BT)
    assert (hb.eos_token_id, hb.pad_token_id, len(hb)) == (256, 256, 257)
    enc = hb(['ab', 'abcd'], padding=True)
    assert enc['input_ids'] == [[97, 98, 256, 256], [97, 98, 99, 100]] and enc['attention_mask'][0] == [1, 1, 0, 0]
    assert hb.decode([104, 195, 169, 256], skip_special_tokens=True) == 'hé'
    assert hb.decode([104, 195]) .startswith('h')  # a partial UTF-8 character does not raise

def test_gpt2_local(shared_dir, tmp_path):
    folder = shared_dir / 'data' / 'gpt2-tokenizer'
    if not folder.is_dir(): pytest.skip('gpt2-tokenizer not in ../shared/data')
    g = load_tokenizer(str(folder))
    assert (g.vocab_size, g.eos_id, g.name) == (50257, 50256, 'gpt2')
    assert g.encode(' Hello world').tolist() == [18435, 995]
    s = 'def f(x):\n    return x  # é\n'
    assert g.decode(g.encode(s)) == s
    assert as_hf_tokenizer(g)(' Hello world')['input_ids'] == [18435, 995]
    back = load_tokenizer(g.save(tmp_path / 'g'))
    assert back.identity == g.identity and back.encode(s).tolist() == g.encode(s).tolist()

def test_tokenizer_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='no-such-tok'): load_tokenizer(str(tmp_path / 'no-such-tok'))
    (tmp_path / 'emptytok').mkdir()
    with pytest.raises(FileNotFoundError, match='emptytok'): load_tokenizer(str(tmp_path / 'emptytok'))
    with pytest.raises(ValueError, match='unknown tokenizer'): load_tokenizer('wordpiece')
    with pytest.raises(RuntimeError, match='gpt2'): load_tokenizer('gpt2')  # hub offline in tests

def test_bpe_train_and_cache(tmp_path, monkeypatch):
    c = synthetic_recall_corpus('train', n_docs=10, n_pairs=3, min_gap=50, max_gap=80)
    tok = train_bpe(c, 300, tmp_path)
    assert tok.vocab_size <= 300 and tok.eos_id == 0 and tok.decode(tok.encode(c.docs[1])) == c.docs[1]
    assert train_bpe(c, 300, tmp_path / 'other').identity == tok.identity  # training is deterministic
    import tokenizers
    monkeypatch.setattr(tokenizers.Tokenizer, 'train_from_iterator', lambda *a, **k: pytest.fail('retrained'))
    again = load_tokenizer('bpe-300', c, tmp_path)
    assert again.identity == tok.identity
    tk = load_tokenized('synthetic-recall', 'validation', 'bpe-300', cache_dir=tmp_path, n_docs=10, n_pairs=3, min_gap=50, max_gap=80)
    assert tk.meta['tokenizer_identity'] == tok.identity

# ---- held-out documents and statistics ---------------------------------------------------------------------------

def test_heldout_documents():
    data = toy(LENGTHS)
    docs = heldout_documents(data, 40)
    assert [len(d) for d in docs] == [n for n in LENGTHS if n >= 40] and docs[0].dtype == np.int64
    ids, cut = heldout_documents(data, 40, max_docs=2, max_len=45, with_ids=True)
    assert ids == ['1', '3'] and [len(d) for d in cut] == [40, 45]
    assert np.array_equal(cut[1], np.asarray(data.doc(3))[:45])
    assert heldout_documents(data, 10**6) == []

def test_corpus_stats():
    s = corpus_stats(toy(LENGTHS))
    assert (s['n_docs'], s['n_tokens'], s['max'], s['min']) == (12, sum(LENGTHS), 250, 3)
    assert s['docs_at_least'][256] == 0 and s['p50'] == float(np.median(LENGTHS))
    assert 'documents' in stats_caption(s)

def test_data_reexports_tokenizers_and_stream():
    "Callers of `ttt_nb.data` (D.TokenStream, D.load_tokenizer, ...) get the very objects of the modules that now hold them."
    for name in ('ByteTokenizer', 'HFTokenizer', 'load_tokenizer', 'as_hf_tokenizer', 'tokenize', 'corpus_stats', 'stats_caption'):
        assert getattr(D, name) is getattr(TK, name), name
    assert D.TokenStream is TokenStream
