"""lmcore.multimodal: every answer follows the rule, the fusion models use both inputs,
the concatenate-with-itself mistake cannot see the question, errors are clear."""
import pytest
import torch

from lmcore.multimodal import (
    ALL_QUESTIONS,
    CrossAttentionFusion,
    DigitQA,
    FusionConfig,
    LateFusion,
    masked_mean,
)

QA = DigitQA()


def test_answers_follow_the_rules_for_every_question_and_digit():
    assert len(ALL_QUESTIONS) == 2 + 20 + 10
    for q in ALL_QUESTIONS:
        w = q.split()
        for d in range(10):
            a = QA.answer(q, d)
            if "even" in w:
                assert a == ("yes" if d % 2 == 0 else "no")
            elif "odd" in w:
                assert a == ("yes" if d % 2 == 1 else "no")
            elif "greater" in w:
                assert a == ("yes" if d > QA.words.index(w[4]) - QA.words.index("zero") else "no")
            elif "less" in w:
                assert a == ("yes" if d < QA.words.index(w[4]) - QA.words.index("zero") else "no")
            else:
                assert int(a) == d + QA.words.index(w[4]) - QA.words.index("zero")
            assert a in QA.answers


def test_sample_is_consistent_and_covers_every_type():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(10).repeat(30)
    image, questions, answers, kinds = QA.sample(labels, 3, g)
    assert len(image) == len(questions) == len(answers) == len(kinds) == 900
    assert questions.shape == (900, QA.max_len)
    for i in range(0, 900, 7):
        text = QA.decode(questions[i].tolist())
        assert QA.answers[answers[i]] == QA.answer(text, int(labels[image[i]]))
        assert QA.encode(text) == questions[i].tolist()
    counts = torch.bincount(kinds, minlength=3)
    assert counts.min() > 250  # roughly a third each
    _, _, _, only_add = QA.sample(labels, 1, g, kind=2)
    assert bool((only_add == 2).all())


def _batch(c, b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    patches = torch.randn(b, c.n_patches, c.patch_dim, generator=g)
    _, questions, _, _ = QA.sample(torch.arange(b), 1, g)
    return patches, questions


def test_masked_mean_ignores_padding():
    x = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert masked_mean(x, torch.tensor([[False, False, True]])).item() == 2.0


@pytest.mark.parametrize("cls", [LateFusion, CrossAttentionFusion])
def test_fusion_models_read_both_the_image_and_the_question(cls):
    torch.manual_seed(0)
    c = FusionConfig(n_patches=16, patch_dim=8, n_embd=32, hidden=32)
    model = cls(c).eval()
    patches, questions = _batch(c)
    out = model(patches, questions)
    logits = out[0] if isinstance(out, tuple) else out
    assert logits.shape == (4, len(QA.answers))
    other_q = torch.tensor([QA.encode("what is it plus nine ?")] * 4)
    other = model(patches, other_q)
    assert not torch.allclose(logits, other[0] if isinstance(other, tuple) else other)
    moved = model(patches.roll(1, dims=1), questions)  # same features, other places
    assert not torch.allclose(logits, moved[0] if isinstance(moved, tuple) else moved)
    # padding words change nothing: a question padded differently is impossible, but the
    # pad positions' embeddings must not leak into the answer
    with torch.no_grad():
        model.inputs.words.weight[0].normal_()
    again = model(patches, questions)
    torch.testing.assert_close(logits, again[0] if isinstance(again, tuple) else again)


def test_cross_attention_weights_cover_the_patches():
    torch.manual_seed(0)
    c = FusionConfig(n_patches=16, patch_dim=8, n_embd=32, n_head=4, hidden=32)
    patches, questions = _batch(c)
    _, w = CrossAttentionFusion(c)(patches, questions, need_weights=True)
    assert w.shape == (4, 4, QA.max_len, 16)
    torch.testing.assert_close(w.sum(-1), torch.ones(4, 4, QA.max_len))


def test_concatenating_the_image_with_itself_ignores_the_question():
    """Seed D's mistake: cat([image, image]) instead of cat([image, question])."""

    class SelfConcat(LateFusion):
        def fuse(self, image_vec, question_vec):
            return torch.cat([image_vec, image_vec], dim=-1)

    torch.manual_seed(0)
    c = FusionConfig(n_patches=16, patch_dim=8, n_embd=32, hidden=32)
    model = SelfConcat(c).eval()
    patches, questions = _batch(c)
    other_q = torch.tensor([QA.encode("is it odd ?")] * 4)
    torch.testing.assert_close(model(patches, questions), model(patches, other_q))


@pytest.mark.parametrize("call, message", [
    (lambda: QA.answer("is it big ?", 3), "one of the 32 questions"),
    (lambda: QA.answer("is it even ?", 12), "digit 0-9"),
    (lambda: QA.encode("is it blue ?"), "unknown: ['blue']"),
    (lambda: QA.sample(torch.tensor([3, 11]), 1, torch.Generator()), "digits 0-9"),
    (lambda: QA.sample(torch.tensor([3]), 0, torch.Generator()), "per_image"),
    (lambda: QA.sample(torch.tensor([3]), 1, torch.Generator(), kind=3), "kind=3"),
    (lambda: FusionConfig(n_embd=30, n_head=4), "divisible"),
    (lambda: LateFusion(FusionConfig(patch_dim=8))(torch.randn(2, 16, 7),
                                                   torch.ones(2, 6, dtype=torch.long)),
     r"\(B, 16, 8\)"),
    (lambda: LateFusion(FusionConfig(patch_dim=8))(torch.randn(2, 16, 8),
                                                   torch.ones(2, 5, dtype=torch.long)),
     "question must be"),
    (lambda: LateFusion(FusionConfig(patch_dim=8))(torch.randn(2, 16, 8),
                                                   torch.full((2, 6), 99)), "vocab_size"),
])
def test_bad_input_raises_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")
                       if not message.startswith(r"\(") else message):
        call()


def test_fusion_rejects_a_wrong_config_type():
    with pytest.raises(TypeError, match="FusionConfig"):
        LateFusion({"n_embd": 32})
