"""lmcore.textdata: the shipped movie-review sentences (checksums, split, labels), word
vocabulary, padding (against torch's pad_sequence) and MiniLM sentence embeddings (against
sentence-transformers, and the shipped cache against a fresh computation)."""
import hashlib
import shutil

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lmcore import textdata
from lmcore.data import assets_dir
from lmcore.textdata import WordVocab, load_movie_reviews, pad_batch, words

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is faster

EXPECTED = {  # (bytes, SHA-256), as in assets/data/README.md
    textdata.SNIPPETS: (1448645, textdata.SNIPPETS_SHA256),
    textdata.MINILM_CACHE: (8114816, textdata.MINILM_CACHE_SHA256),
}


@pytest.mark.parametrize("filename", sorted(EXPECTED))
def test_shipped_file_matches_its_provenance(filename):
    blob = (assets_dir() / "data" / filename).read_bytes()
    size, digest = EXPECTED[filename]
    assert len(blob) == size
    assert hashlib.sha256(blob).hexdigest() == digest
    readme = (assets_dir() / "data" / "README.md").read_text(encoding="utf-8")
    assert digest in readme and f"{size:,}" in readme


def test_splits_counts_and_labels():
    data = load_movie_reviews()
    assert {k: len(v.texts) for k, v in data.items()} == {"train": 8452, "val": 1057, "test": 1057}
    texts = [t for s in data.values() for t in s.texts]
    assert len(set(texts)) == len(texts) == 10566  # no sentence in two splits
    rows = sorted(r for s in data.values() for r in s.rows)
    assert rows == list(range(10566))
    for s in data.values():
        assert len(s.texts) == len(s.labels) == len(s.ratings) == len(s.ids) == len(s.rows)
        assert all(y == int(r > 0) and r != 0 and -4 <= r <= 4 for r, y in zip(s.ratings, s.labels))
    assert sum(data["test"].labels) == 531
    assert data["train"].texts[0].startswith("The Rock is destined")
    assert load_movie_reviews("val") == data["val"]
    with pytest.raises(ValueError, match="split='dev'"):
        load_movie_reviews("dev")


def test_a_changed_file_is_refused(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    src = assets_dir() / "data" / textdata.SNIPPETS
    blob = bytearray(src.read_bytes())
    blob[-3] ^= 1  # flip one bit of the last sentence
    (tmp_path / "data" / textdata.SNIPPETS).write_bytes(bytes(blob))
    monkeypatch.setenv("LMCORE_ASSETS", str(tmp_path))
    with pytest.raises(ValueError, match="SHA-256"):
        load_movie_reviews()
    (tmp_path / "data" / textdata.SNIPPETS).unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        load_movie_reviews()
    shutil.copy(src, tmp_path / "data" / textdata.SNIPPETS)  # the original loads again
    assert len(load_movie_reviews("test").texts) == 1057


def test_words():
    assert words("Isn't it GREAT?! 10/10") == ["isn't", "it", "great", "?", "!", "10", "/", "10"]
    assert words("  ") == []
    with pytest.raises(TypeError, match="text must be a str"):
        words(["a"])


def test_vocab_build_encode_decode():
    vocab = WordVocab.build(["good film", "bad film", "good good plot"], min_count=2)
    assert vocab.itos == ["<pad>", "<unk>", "good", "film"]  # by count, then alphabetically
    assert vocab.encode("Good plot, bad FILM") == [2, 1, 1, 1, 3]
    assert vocab.decode([2, 3, 0]) == ["good", "film", "<pad>"]
    assert len(WordVocab.build(["a b c d"], min_count=1, max_size=2)) == 4
    with pytest.raises(TypeError, match="list of sentences"):
        WordVocab.build("good film")
    with pytest.raises(ValueError, match="distinct"):
        WordVocab(["a", "a"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(2, 50), min_size=1, max_size=9), min_size=1, max_size=6),
       st.integers(0, 3))
def test_pad_batch_matches_torch_pad_sequence(seqs, pad_id):
    ids, lengths = pad_batch(seqs, pad_id=pad_id)
    ref = torch.nn.utils.rnn.pad_sequence([torch.tensor(s) for s in seqs], batch_first=True,
                                          padding_value=pad_id)
    assert ids.dtype == torch.long and torch.equal(ids, ref)
    assert lengths.tolist() == [len(s) for s in seqs]
    cut, cut_len = pad_batch(seqs, pad_id=pad_id, max_len=3)  # keeps the first tokens
    assert torch.equal(cut, ref[:, :3]) and cut_len.tolist() == [min(len(s), 3) for s in seqs]


@pytest.mark.parametrize("seqs, kw, err, match", [
    (["This movie is terrible"], {}, TypeError, "not raw text"),
    ([], {}, ValueError, "seqs is empty"),
    ([[1], []], {}, ValueError, r"seqs\[1\] is empty"),
    ([[1, 2]], {"max_len": 0}, ValueError, "max_len"),
])
def test_pad_batch_errors(seqs, kw, err, match):
    with pytest.raises(err, match=match):
        pad_batch(seqs, **kw)


SENTENCES = ["This movie is terrible", "A gorgeous, witty, seductive movie.", "Meh."]


@pytest.mark.slow
def test_minilm_embed_matches_sentence_transformers():
    st_mod = pytest.importorskip("sentence_transformers")
    from lmcore.pretrained import minilm_path

    ref = st_mod.SentenceTransformer(str(minilm_path()), device="cpu").encode(
        SENTENCES, normalize_embeddings=True, convert_to_numpy=True)
    ours = textdata.minilm_embed(SENTENCES, batch_size=2).numpy()  # two batches, re-ordered
    assert ours.shape == (3, 384)
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-6)


@pytest.mark.slow
def test_shipped_cache_matches_a_fresh_computation():
    cache = textdata.load_minilm_cache()
    assert cache.shape == (10566, 384) and cache.dtype == torch.float32
    test = load_movie_reviews("test")
    fresh = textdata.minilm_embed(test.texts[:8])
    assert (fresh - cache[test.rows[:8]]).abs().max() < 2e-3  # float16 storage
    with pytest.raises(ValueError, match="non-empty list"):
        textdata.minilm_embed("one string")
