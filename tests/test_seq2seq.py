"""Tests for lmcore.seq2seq: shapes, padding, causality, learning to copy, clear errors.

Tolerances: float32, 1e-5 (absolute and relative) between two computations of one thing.
"""
import pytest
import torch
import torch.nn.functional as F

from lmcore.seq2seq import EncoderDecoder, EncoderDecoderConfig

TOL = dict(atol=1e-5, rtol=1e-5)


def tiny_seq2seq(**kw):
    cfg = dict(src_vocab_size=13, tgt_vocab_size=11, max_len=16, n_layer=2, n_head=2, n_embd=32)
    cfg.update(kw)
    torch.manual_seed(0)
    return EncoderDecoder(EncoderDecoderConfig(**cfg))


def test_encoder_decoder_shapes_and_padding():
    m = tiny_seq2seq().eval()
    g = torch.Generator().manual_seed(5)
    src = torch.randint(3, 13, (2, 7), generator=g)
    src[0, 5:] = 0  # first sentence has 5 real tokens, then padding (pad_id=0)
    tgt_in = torch.randint(3, 11, (2, 6), generator=g)
    out = m(src, tgt_in, need_weights=True)
    assert out.logits.shape == (2, 6, 11) and out.loss is None
    assert [w.shape for w in out.encoder_attentions] == [(2, 2, 7, 7)] * 2
    assert [w.shape for w in out.decoder_attentions] == [(2, 2, 6, 6)] * 2
    assert [w.shape for w in out.cross_attentions] == [(2, 2, 6, 7)] * 2
    for w in out.cross_attentions:
        assert w[0, :, :, 5:].abs().max() == 0  # padding gets no attention
        torch.testing.assert_close(w.sum(-1), torch.ones(2, 2, 6), **TOL)
    assert out.decoder_attentions[0].triu(diagonal=1).abs().max() == 0  # decoder is causal
    # what sits in the padded slots does not matter
    other = src.clone()
    other[0, 5:] = 7
    mask = src == 0
    torch.testing.assert_close(m(other, tgt_in, src_padding_mask=mask).logits, out.logits, **TOL)
    # the decoder is causal: changing the last target token leaves earlier logits alone
    t2 = tgt_in.clone()
    t2[:, -1] = 3
    torch.testing.assert_close(m(src, t2).logits[:, :-1], out.logits[:, :-1], **TOL)
    with pytest.raises(TypeError, match="tgt_in"):
        m(src)  # seed B's mistake: model(src) with one argument
    with pytest.raises(ValueError, match="src_padding_mask must be a bool tensor"):
        m(src, tgt_in, src_padding_mask=mask.float())
    with pytest.raises(ValueError, match="exceeds max_len=16"):
        m(torch.ones(1, 17, dtype=torch.long), tgt_in[:1])


def test_encoder_decoder_learns_to_copy():
    """Copy 5 random symbols: loss falls far below its start and greedy decoding copies."""
    m = tiny_seq2seq(n_layer=1)
    g = torch.Generator().manual_seed(6)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    bos, eos = 1, 2

    def batch(n):
        src = torch.randint(3, 11, (n, 5), generator=g)
        tgt = torch.cat([src, torch.full((n, 1), eos)], 1)
        tgt_in = torch.cat([torch.full((n, 1), bos), src], 1)
        return src, tgt_in, tgt

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread avoids synchronisation overhead
    try:
        losses = train(m, opt, batch)
    finally:
        torch.set_num_threads(threads)
    assert losses[-1] < 0.05 * losses[0]
    m.eval()
    src, _, tgt = batch(50)
    pred = m.generate(src, max_new_tokens=6)
    assert pred.shape == (50, 6)
    assert (pred == tgt).all(1).float().mean() > 0.9


def train(m, opt, batch):
    losses = []
    for step in range(150):
        loss = m(*batch(64)).loss
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return losses




def test_fully_padded_targets_give_loss_zero():
    m = tiny_seq2seq().eval()
    src = torch.randint(3, 13, (2, 5), generator=torch.Generator().manual_seed(9))
    tgt_in = torch.ones(2, 4, dtype=torch.long)
    out = m(src, tgt_in, torch.full((2, 4), -100))
    assert out.loss.item() == 0.0 and torch.isfinite(out.loss)
    tgt_out = torch.tensor([[4, 5, 2, -100], [6, 2, -100, -100]])
    out = m(src, tgt_in, tgt_out)
    ref = F.cross_entropy(out.logits.reshape(-1, 11), tgt_out.reshape(-1), ignore_index=-100)
    assert out.loss.item() == ref.item()


def test_generate_lengths():
    m = tiny_seq2seq().eval()
    src = torch.randint(3, 13, (3, 5), generator=torch.Generator().manual_seed(10))
    assert m.generate(src, 0).shape == (3, 0)
    assert m.generate(src, 4).shape[1] <= 4
    assert m.generate(src).shape[1] <= 15                          # default: max_len - 1
    # bad arguments (-5, 16, ...) are in tests/test_props_transformer.py's table
