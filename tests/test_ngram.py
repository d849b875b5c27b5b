"ttt_nb.ngram: every order is a distribution over the vocabulary; scoring matches it; a hand-checked corpus."
import numpy as np
import pytest

from ttt_nb.ngram import fit_ngram, load_ngram, ngram_nll, ngram_probs, save_ngram


@pytest.fixture(scope='module')
def model():
    rng = np.random.default_rng(0)
    train = [rng.integers(0, 10, rng.integers(3, 80)) for _ in range(60)] + [np.tile([1, 2, 3, 4], 20)]
    return fit_ngram(train, vocab_size=12, order=5)   # tokens 10, 11 never seen

def test_every_order_sums_to_one_over_the_vocabulary(model):
    rng = np.random.default_rng(1)
    for _ in range(200):
        ctx = rng.integers(0, 12, rng.integers(0, 6))            # seen and unseen contexts, unseen tokens included
        for n in range(1, 6):
            p = ngram_probs(model, ctx, n)
            assert p.shape == (12,) and (p > 0).all() and abs(p.sum() - 1) < 1e-12, (ctx, n, p.sum())

def test_scoring_matches_the_distribution(model):
    rng = np.random.default_rng(2)
    docs = [rng.integers(0, 12, 40) for _ in range(3)]
    nll = ngram_nll(model, docs)
    for i, d in enumerate(docs):
        assert np.isnan(nll[1][i][0]) and len(nll[5][i]) == len(d)
        for t in (1, 2, 5, 39):
            for n in (1, 3, 5):
                assert abs(np.exp(-nll[n][i][t]) - ngram_probs(model, d[max(0, t - n + 1):t], n)[d[t]]) < 1e-12

def test_hand_checked_bigram():
    m = fit_ngram([[0, 1, 0, 1, 0, 2]], vocab_size=3, order=2)
    np.testing.assert_allclose(ngram_probs(m, [0], 2), [2 / 45, 29 / 45, 14 / 45], atol=1e-12)

def test_save_load_and_errors(model, tmp_path):
    back = load_ngram(save_ngram(model, tmp_path / 'm.npz'))
    d = [np.arange(12)]
    assert np.array_equal(ngram_nll(back, d)[5][0], ngram_nll(model, d)[5][0], equal_nan=True)
    with pytest.raises(ValueError, match='wrong tokenizer'): fit_ngram([[0, 12]], vocab_size=12)
    with pytest.raises(ValueError, match='orders must lie'): ngram_nll(model, d, orders=[6])
