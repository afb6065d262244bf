"""Properties and bad inputs for lmcore.tokenize, lmcore.ngram, lmcore.data and lmcore.rnn.

Two kinds of test, all deterministic (hypothesis with ``derandomize=True``):

* **properties** on random valid inputs: tokenizers round-trip any text, the BPE encoder
  gives the ids of the textbook merge-by-merge loop, n-gram distributions sum to 1 and
  seeded samples repeat, batches are shifted windows of the data, and the scratch
  RNN/LSTM/GRU equal ``torch.nn`` on random shapes in both layouts (1e-5, float32);
* **bad inputs**: each raises ``ValueError``/``TypeError`` (``FileNotFoundError`` for a
  missing folder) whose message names the argument or the value; and **hostile but
  valid** inputs (empty text, emoji sequences, int32 ids, zero-length samples), which
  must work and give the right result.

``LMCORE_BAD_INPUT_REPORT=path pytest tests/test_props_text.py`` adds the number of
inputs tried, by module and outcome ("error" or "ok"), to the JSON list in ``path``.
"""
from __future__ import annotations

import json
import os
import re
from unittest import mock

import numpy as np
import pytest
import torch
from badinputs import Ledger
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmcore import rnn
from lmcore.charlm import CharLM
from lmcore.data import CORPORA, assets_dir, get_batch, load_corpus, train_val_split
from lmcore.ngram import NGramLM
from lmcore.tokenize import BytePairTokenizer, CharTokenizer

PROPS = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow])
LEDGER = Ledger("test_props_text")
TRIED = LEDGER.tried
# any Unicode text except lone surrogates (UTF-8 cannot encode them: a bad input below)
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=60)
MIXED = ("the cat sat on the mat. the dog ate the hat! " * 8
         + "床前明月光，疑是地上霜。举头望明月，低头思故乡。" * 6 + "🙂🙂👍🏽 naïve\r\n\t" * 3)
BPE = BytePairTokenizer().train(MIXED, vocab_size=420)


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    LEDGER.write_report()


# ---- properties -----------------------------------------------------------------------
def textbook_encode(tok, text):
    """Merge-by-merge BPE: the earliest-learned pair present, all occurrences left to right."""
    out = []
    for chunk in tok._chunks(text):
        ids = list(chunk.encode("utf-8"))
        while len(ids) >= 2:
            pair = min(zip(ids, ids[1:]), key=lambda p: tok._rank.get(p, float("inf")))
            if pair not in tok._rank:
                break
            i, new = 0, []
            while i < len(ids):
                if tuple(ids[i:i + 2]) == pair:
                    new.append(256 + tok._rank[pair])
                    i += 2
                else:
                    new.append(ids[i])
                    i += 1
            ids = new
        out += ids
    return out


@PROPS
@given(text=TEXT, repeat=st.integers(1, 4))
def test_bpe_encode_equals_textbook_and_round_trips(text, repeat):
    text = text * repeat  # repeats make merges apply
    ids = BPE.encode(text)
    assert ids == textbook_encode(BPE, text)
    assert BPE.decode(ids) == text and all(0 <= i < BPE.vocab_size for i in ids)


@PROPS
@given(text=TEXT.filter(len), vocab=st.integers(256, 300), pattern=st.sampled_from(["words", None]))
def test_bpe_trained_on_any_text_round_trips(text, vocab, pattern):
    tok = BytePairTokenizer(pattern=pattern).train(text * 3, vocab_size=vocab)
    assert tok.vocab_size <= vocab
    back = BytePairTokenizer.from_dict(json.loads(json.dumps(tok.to_dict())))
    assert back.merges == tok.merges and back.decode(back.encode(text)) == text
    assert tok.encode(text) == textbook_encode(tok, text)


@PROPS
@given(text=st.text(min_size=1, max_size=60))  # surrogates included: they are characters
def test_char_tokenizer_round_trips(text):
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)
    assert len(ids) == len(text) and tok.decode(ids) == text
    assert CharTokenizer.from_dict(tok.to_dict()).encode(text) == ids


@PROPS
@given(text=st.text("abcde", min_size=1, max_size=80), context=st.text("abcdef", max_size=6),
       n=st.integers(1, 5), smoothing=st.sampled_from(["add-k", "interpolated"]),
       k=st.floats(1e-6, 10))
def test_ngram_distribution_sums_to_one_and_seeded_samples_repeat(text, context, n,
                                                                  smoothing, k):
    lm = NGramLM(n, smoothing=smoothing, k=k).fit(text, vocab="abcdef")
    p = lm.next_distribution(context)
    assert p.shape == (6,) and (p > 0).all() and abs(p.sum() - 1) < 1e-9
    a = lm.sample(10, context=context, seed=7)
    assert a == lm.sample(10, context=context, seed=7) and set(a) <= set("abcdef")


@PROPS
@given(n_data=st.integers(2, 200), block=st.integers(1, 20), batch=st.integers(1, 8),
       seed=st.integers(0, 2**31))
def test_batches_are_shifted_windows_of_the_data(n_data, block, batch, seed):
    data = torch.randperm(n_data, generator=torch.Generator().manual_seed(seed)) * 3
    if n_data < block + 1:
        with pytest.raises(ValueError, match=f"block_size={block}"):
            get_batch(data, block, batch)
        return
    g = torch.Generator().manual_seed(seed)
    x, y = get_batch(data, block, batch, generator=g)
    assert x.shape == y.shape == (batch, block) and x.dtype == torch.long
    pos = {int(v): i for i, v in enumerate(data)}
    for row_x, row_y in zip(x.tolist(), y.tolist()):
        start = pos[row_x[0]]
        assert row_x == data[start:start + block].tolist()
        assert row_y == data[start + 1:start + block + 1].tolist()


@PROPS
@given(kind=st.sampled_from(["rnn", "lstm", "gru"]), seq=st.integers(1, 6),
       batch=st.integers(1, 3), inp=st.integers(1, 5), hidden=st.integers(1, 5),
       layers=st.integers(1, 3), batch_first=st.booleans(), seed=st.integers(0, 1000))
def test_scratch_layers_equal_torch_on_random_shapes(kind, seq, batch, inp, hidden, layers,
                                                     batch_first, seed):
    torch.manual_seed(seed)
    ref = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](
        inp, hidden, layers, batch_first=batch_first)
    ours = {"rnn": rnn.RNN, "lstm": rnn.LSTM, "gru": rnn.GRU}[kind].from_torch(ref)
    x = torch.randn((batch, seq, inp) if batch_first else (seq, batch, inp))
    (o1, s1), (o2, s2) = ref(x), ours(x)
    torch.testing.assert_close(o2, o1, atol=1e-5, rtol=1e-5)
    for a, b in zip(s2 if kind == "lstm" else [s2], s1 if kind == "lstm" else [s1]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


# ---- bad inputs: a clear error each ----------------------------------------------------
TOK_DICT = BytePairTokenizer([(97, 98)]).to_dict()
CHAR = CharTokenizer.from_text("abc")
LM = NGramLM(2).fit("abcab")


def _char_lm():
    torch.manual_seed(0)
    return CharLM(11, emb=4, hidden=5).eval()


def _env_assets(path):
    return mock.patch.dict(os.environ, {"LMCORE_ASSETS": str(path)})


def _modified_corpus(tmp):
    (tmp / "data").mkdir()
    for filename, _, _ in CORPORA.values():
        blob = (assets_dir() / "data" / filename).read_bytes()
        (tmp / "data" / filename).write_bytes(blob[:-1] + b"!")  # last byte changed
    with _env_assets(tmp):
        load_corpus("shakespeare")


def _nonexistent_assets(_):
    with _env_assets("/nonexistent"):
        load_corpus("tang300")


LSTM = rnn.LSTM(3, 4)
X = torch.randn(5, 2, 3)
# (module, fn(tmp_path), exception, regex the message must match)
BAD_INPUTS = [
    # tokenize
    ("tokenize", lambda _: BPE.encode("ab\ud800c"), ValueError, r"lone surrogate '\\ud800' at index 2"),
    ("tokenize", lambda _: BytePairTokenizer().train("x\udfff", 300), ValueError, r"lone surrogate"),
    ("tokenize", lambda _: BPE.encode(None), TypeError, r"text must be a str, got NoneType"),
    ("tokenize", lambda _: CharTokenizer.from_text(None), TypeError, r"text must be a str"),
    ("tokenize", lambda _: BPE.decode(None), TypeError, r"ids must be a list of ints or a 1-D integer tensor, got NoneType"),
    ("tokenize", lambda _: BPE.decode([97, 98.0]), TypeError, r"ids must be ints.*98.0.*float"),
    ("tokenize", lambda _: CHAR.decode([True]), TypeError, r"ids must be ints.*True"),
    ("tokenize", lambda _: BPE.decode(torch.tensor([97.0])), ValueError, r"1-D integer tensor.*torch.float32"),
    ("tokenize", lambda _: BPE.decode(np.array([[97]])), ValueError, r"1-D integer tensor.*shape \(1, 1\)"),
    ("tokenize", lambda _: BytePairTokenizer().train("abc", vocab_size=300.0), ValueError, r"vocab_size must be an int >= 256 .*, got 300.0"),
    ("tokenize", lambda _: BytePairTokenizer.from_dict(None), ValueError, r"d must be a dict made by BytePairTokenizer.to_dict\(\)"),
    ("tokenize", lambda _: BytePairTokenizer.from_dict({"type": "bpe"}), ValueError, r"lacks the key\(s\) \['merges'\]"),
    ("tokenize", lambda _: BytePairTokenizer.from_dict({**TOK_DICT, "merges": "ab"}), TypeError, r"merges must be a list"),
    ("tokenize", lambda _: BytePairTokenizer.from_dict({**TOK_DICT, "merges": [[1, 2, 3]]}), ValueError, r"merges\[0\] must be a pair of int ids, got \[1, 2, 3\]"),
    ("tokenize", lambda _: BytePairTokenizer.from_dict({**TOK_DICT, "merges": [[97, 98.5]]}), ValueError, r"merges\[0\] must be a pair of int ids"),
    ("tokenize", lambda _: BytePairTokenizer.from_dict({**TOK_DICT, "merges": [["a", "b"]]}), ValueError, r"merges\[0\] must be a pair"),
    ("tokenize", lambda _: BytePairTokenizer.from_dict({**TOK_DICT, "merges": [[97, 98], [97, 98]]}), ValueError, r"merges\[1\] = \(97, 98\) repeats merges\[0\]"),
    ("tokenize", lambda _: BytePairTokenizer.from_dict({**TOK_DICT, "merges": [[97, 256]]}), ValueError, r"merges\[0\] = \(97, 256\) uses an id not defined before it"),
    ("tokenize", lambda _: BytePairTokenizer.from_dict({**TOK_DICT, "pattern": r"(a|aa)+$"}), ValueError, r"pattern must be None, a name in"),
    ("tokenize", lambda _: CharTokenizer.from_dict({"type": "char"}), ValueError, r"lacks the key\(s\) \['chars'\]"),
    ("tokenize", lambda _: CharTokenizer.from_dict({"type": "char", "chars": None}), TypeError, r"chars must be a list of single characters, got NoneType"),
    ("tokenize", lambda _: CharTokenizer.from_dict({"type": "char", "chars": ["ab"]}), ValueError, r"single-character"),
    ("tokenize", lambda _: CharTokenizer.from_dict({"type": "char", "chars": ["a"], "unknown": "drop"}), ValueError, r"unknown must be one of"),
    ("tokenize", lambda _: CharTokenizer.from_dict(TOK_DICT), ValueError, r"type 'char'\), got 'bpe'"),
    # ngram
    ("ngram", lambda _: NGramLM(2, smoothing="add-k", k=float("inf")), ValueError, r"k must be a finite number > 0 .*got inf"),
    ("ngram", lambda _: NGramLM(2, k=float("nan")), ValueError, r"k must be a finite number > 0 .*got nan"),
    ("ngram", lambda _: NGramLM(2, lam=float("nan")), ValueError, r"lam must be in \(0, 1\]"),
    ("ngram", lambda _: NGramLM(2).fit(None), TypeError, r"tokens must be a str, a list of tokens or a 1-D tensor of ids, got NoneType"),
    ("ngram", lambda _: NGramLM(2).fit([[1], [2]]), TypeError, r"tokens must hold hashable tokens.*\[1\] \(list\)"),
    ("ngram", lambda _: NGramLM(2).fit(torch.zeros(2, 3, dtype=torch.long)), ValueError, r"tokens must be a 1-D integer tensor.*shape \(2, 3\)"),
    ("ngram", lambda _: NGramLM(2).fit(torch.tensor([0.5, 1.5])), ValueError, r"tokens must be a 1-D integer.*torch.float32"),
    ("ngram", lambda _: NGramLM(2).fit("abc", vocab=5), TypeError, r"vocab must be a str, a list"),
    ("ngram", lambda _: LM.next_distribution(None), TypeError, r"context must be a str"),
    ("ngram", lambda _: LM.prob("a", ["b"]), TypeError, r"token must hold hashable tokens"),
    ("ngram", lambda _: LM.perplexity(np.array([[0, 1]])), ValueError, r"tokens must be a 1-D integer"),
    ("ngram", lambda _: LM.perplexity("abz"), ValueError, r"tokens contains 1 token\(s\) not in the model's vocabulary, e.g. 'z'"),
    ("ngram", lambda _: LM.sample(5, temperature=float("inf")), ValueError, r"temperature must be a finite number > 0, got inf"),
    ("ngram", lambda _: LM.sample(True), ValueError, r"length must be an int >= 0, got True"),
    ("ngram", lambda _: LM.sample(5, seed="1"), TypeError, r"seed must be an int in \[0, 2\*\*64\), got '1'"),
    ("ngram", lambda _: LM.sample(5, seed=2**70), ValueError, r"seed=1180591620717411303424 is out of range"),
    ("ngram", lambda _: LM.sample(5, seed=1, generator=torch.Generator()), ValueError, r"give seed or generator, not both"),
    ("ngram", lambda _: LM.sample(5, generator=np.random.default_rng(0)), ValueError, r"generator must be a CPU torch.Generator"),
    ("ngram", lambda _: LM.sample(5, context="az"), ValueError, r"context contains 1 token\(s\) not in the model's vocabulary"),
    # data
    ("data", lambda _: get_batch(torch.tensor([0.5, 1.7, 2.2, 3.9]), 2, 1), TypeError, r"data must hold integer token ids, got dtype torch.float32"),
    ("data", lambda _: get_batch(torch.ones(9, dtype=torch.bool), 2, 1), TypeError, r"dtype torch.bool"),
    ("data", lambda _: get_batch(torch.arange(9), 2.5, 1), ValueError, r"block_size must be an int >= 1, got 2.5"),
    ("data", lambda _: get_batch(torch.arange(9), "2", 1), ValueError, r"block_size must be an int >= 1, got '2'"),
    ("data", lambda _: get_batch(torch.arange(9), 2, 0), ValueError, r"batch_size must be an int >= 1, got 0"),
    ("data", lambda _: get_batch([1, 2, 3], 1, 1), ValueError, r"data must be a 1-D tensor of token ids, got list"),
    ("data", lambda _: train_val_split(torch.arange(100), "0.1"), ValueError, r"val_fraction must be in \(0, 1\), got 0.1"),
    ("data", lambda _: train_val_split(torch.arange(100), float("nan")), ValueError, r"val_fraction must be in \(0, 1\), got nan"),
    ("data", lambda _: train_val_split(torch.rand(100)), TypeError, r"dtype torch.float32"),
    ("data", lambda _: load_corpus(None), ValueError, r"unknown corpus name=None"),
    ("data", _nonexistent_assets, FileNotFoundError, r"LMCORE_ASSETS='/nonexistent' is not the book's assets/ folder"),
    ("data", _modified_corpus, ValueError, r"tiny_shakespeare.txt does not match its recorded checksum"),
    # rnn
    ("rnn", lambda _: LSTM(X.double()), TypeError, r"input has dtype torch.float64 but the weights are torch.float32"),
    ("rnn", lambda _: LSTM(X.long()), TypeError, r"input has dtype torch.int64"),
    ("rnn", lambda _: LSTM(X, (torch.zeros(1, 2, 4, dtype=torch.float64), torch.zeros(1, 2, 4))), TypeError, r"h_0 has dtype torch.float64"),
    ("rnn", lambda _: LSTM(X.to("meta")), ValueError, r"input is on meta but the weights are on cpu"),
    ("rnn", lambda _: LSTM(X, (torch.zeros(1, 2, 4),) * 3), ValueError, r"hx of an LSTM must be a pair"),
    ("rnn", lambda _: LSTM(X[:0]), ValueError, r"empty sequence"),
    ("rnn", lambda _: rnn.LSTMCell(3, 4)(X[0].long()), TypeError, r"input has dtype torch.int64"),
    ("rnn", lambda _: rnn.LSTMCell(3, 4)(X[0], torch.zeros(2, 4)), ValueError, r"hx of an LSTMCell must be a pair"),
    ("rnn", lambda _: rnn.GRUCell(3, 4)(X[0], torch.zeros(2, 4, dtype=torch.float16)), TypeError, r"h has dtype torch.float16"),
    ("rnn", lambda _: rnn.GRU(3, 4, bidirectional=True), ValueError, r"bidirectional=True"),
    ("rnn", lambda _: rnn.RNN(3, 4, 2, dropout=-0.1), ValueError, r"dropout must be a number in \[0, 1\], got -0.1"),
    ("rnn", lambda _: CharLM(11, emb=0), ValueError, r"emb must be a positive int, got 0"),
    ("rnn", lambda _: _char_lm()(torch.rand(1, 3)), TypeError, r"ids must be an int64 tensor .*torch.float32"),
    ("rnn", lambda _: _char_lm()(torch.tensor([[1, 11]])), ValueError, r"ids must be in 0..10 \(vocab_size=11\), got values from 1 to 11"),
    ("rnn", lambda _: _char_lm()(torch.tensor([[-1, 2]])), ValueError, r"ids must be in 0..10"),
    ("rnn", lambda _: _char_lm()(torch.tensor([1, 2])), ValueError, r"ids must have shape \(batch, seq\)"),
    ("rnn", lambda _: _char_lm().sample([], 5), ValueError, r"prompt_ids must be a non-empty list of int ids, got \[\]"),
    ("rnn", lambda _: _char_lm().sample([1], -1), ValueError, r"n must be an int >= 0.*got -1"),
    ("rnn", lambda _: _char_lm().sample([1], 2.5), ValueError, r"n must be an int >= 0.*got 2.5"),
    ("rnn", lambda _: _char_lm().sample([1.0], 3), ValueError, r"prompt_ids must be a non-empty list of int ids"),
    ("rnn", lambda _: _char_lm().sample([99], 3), ValueError, r"ids must be in 0..10"),
]


@pytest.mark.parametrize("module,fn,exc,pattern", BAD_INPUTS,
                         ids=[f"{m}-{i}" for i, (m, *_) in enumerate(BAD_INPUTS)])
def test_bad_input_is_a_clear_error(module, fn, exc, pattern, tmp_path):
    with pytest.raises(exc, match=pattern):
        fn(tmp_path)
    TRIED[module, "error"] += 1


# ---- hostile but valid: must work and be right ------------------------------------------
def _ok_char_lm_prompt_tensor():
    model = _char_lm()
    a = model.sample(torch.tensor([1, 2]), 4, generator=torch.Generator().manual_seed(0))
    return a == model.sample([1, 2], 4, generator=torch.Generator().manual_seed(0))


VALID = [
    ("tokenize", lambda: BPE.encode("") == [] and BPE.decode([]) == ""),
    ("tokenize", lambda: BPE.decode(BPE.encode("👩‍👩‍👧 e\u0301 \x00\r\n")) == "👩‍👩‍👧 e\u0301 \x00\r\n"),
    ("tokenize", lambda: BPE.decode(np.array([104, 105], dtype=np.int64)) == "hi"),
    ("tokenize", lambda: BPE.decode(torch.tensor([104, 105], dtype=torch.int32)) == "hi"),
    ("tokenize", lambda: BPE.decode([228, 189]) == "\ufffd"),  # a cut character
    ("tokenize", lambda: CharTokenizer.from_text("a\ud800").decode([1, 0]) == "\ud800a"),
    ("tokenize", lambda: BPE.encode("明" * 5000) == BPE.encode("明") * 5000),  # one chunk
    ("ngram", lambda: NGramLM(2).fit(torch.tensor([3, 1, 3], dtype=torch.int32)).vocab == [1, 3]),
    ("ngram", lambda: NGramLM(2).fit(np.array([3, 1, 3])).perplexity([1, 3]) > 1),
    ("ngram", lambda: LM.sample(0) == []),
    ("ngram", lambda: bool(abs(LM.next_distribution("babcab").sum() - 1) < 1e-12)),
    ("ngram", lambda: abs(NGramLM(2, smoothing="add-k", k=1e-12).fit("ab").prob("a", "b") - 1) < 1e-9),
    ("data", lambda: get_batch(torch.arange(5, dtype=torch.uint8), 4, 2)[0].tolist() == [[0, 1, 2, 3]] * 2),
    ("data", lambda: [len(t) for t in train_val_split(torch.arange(20, dtype=torch.int32), 0.5)] == [10, 10]),
    ("rnn", lambda: _char_lm().sample([1], 0) == []),
    ("rnn", _ok_char_lm_prompt_tensor),
    ("rnn", lambda: _char_lm()(torch.tensor([[1, 2]], dtype=torch.int32))[0].shape == (1, 2, 11)),
    ("rnn", lambda: rnn.LSTM(3, 4)(X[:, 0])[0].shape == (5, 4)),  # unbatched (seq, input)
]


@pytest.mark.parametrize("module,fn", VALID, ids=[f"{m}-{i}" for i, (m, _) in enumerate(VALID)])
def test_hostile_but_valid_input_works(module, fn):
    assert fn() is True
    TRIED[module, "ok"] += 1


def test_every_bad_input_message_is_short_enough_to_read():
    """Messages fit on a few lines: no 100 KB dumps of the offending value."""
    long_text = "x" * 100_000 + "\ud800"
    with pytest.raises(ValueError) as info:
        BPE.encode(long_text)
    assert len(str(info.value)) < 300 and re.search(r"index 100000", str(info.value))
    with pytest.raises(ValueError) as info:
        BytePairTokenizer.from_dict({**TOK_DICT, "pattern": "(a|aa)+$" * 1000})
    assert len(str(info.value)) < 400
