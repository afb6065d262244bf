"""Tests for lmcore.transformer and lmcore.seq2seq: LayerNorm vs torch, positions, GPT (+ KV cache), EncoderDecoder.

Tolerances: float32 comparisons with PyTorch's own layers at 1e-5 (absolute and relative);
the KV-cache path and the full forward agree to 1e-5.
"""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lmcore.seq2seq import EncoderDecoder, EncoderDecoderConfig
from lmcore.transformer import GPT, Block, GPTConfig, KVCache, LayerNorm, SinusoidalPositions

TOL = dict(atol=1e-5, rtol=1e-5)


def tiny(**kw):
    cfg = dict(vocab_size=37, block_size=24, n_layer=2, n_head=4, n_embd=32)
    cfg.update(kw)
    torch.manual_seed(0)
    return GPT(GPTConfig(**cfg)).eval()


@pytest.mark.parametrize("shape", [(5, 8), (2, 3, 16), (4, 1, 7, 33)])
@pytest.mark.parametrize("fused", [False, True])
def test_layernorm_matches_torch(shape, fused):
    g = torch.Generator().manual_seed(sum(shape))
    ref = nn.LayerNorm(shape[-1])
    with torch.no_grad():
        ref.weight.copy_(torch.randn(shape[-1], generator=g))
        ref.bias.copy_(torch.randn(shape[-1], generator=g))
    ours = LayerNorm.from_torch(ref)
    ours.fused = fused
    x = (torch.randn(*shape, generator=g) * 3 + 1).requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    torch.testing.assert_close(ours(x), ref(x2), **TOL)
    ours(x).pow(2).sum().backward()
    ref(x2).pow(2).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, atol=1e-4, rtol=1e-4)


def test_layernorm_output_is_normalised_and_checks_dim():
    y = LayerNorm(64)(torch.randn(10, 64) * 5 + 3)
    assert y.mean(-1).abs().max() < 1e-5
    assert (y.var(-1, unbiased=False) - 1).abs().max() < 1e-3
    with pytest.raises(ValueError, match="last dimension 3, expected dim=64"):
        LayerNorm(64)(torch.randn(2, 3))


def test_sinusoidal_formula():
    d = 8
    pe = SinusoidalPositions(50, d)(torch.arange(50))
    assert pe.shape == (50, d)
    torch.testing.assert_close(pe[0], torch.tensor([0.0, 1.0] * (d // 2)))
    for p, i in [(1, 0), (3, 1), (17, 2), (49, 3)]:
        angle = p / 10000 ** (2 * i / d)
        assert abs(pe[p, 2 * i].item() - math.sin(angle)) < 1e-6
        assert abs(pe[p, 2 * i + 1].item() - math.cos(angle)) < 1e-6
    with pytest.raises(ValueError, match="even dim"):
        SinusoidalPositions(10, 7)


def test_gpt_shapes_and_loss_is_cross_entropy():
    m = tiny()
    idx = torch.randint(0, 37, (3, 11), generator=torch.Generator().manual_seed(1))
    tgt = idx.roll(-1, dims=1)
    tgt[:, -1] = -100
    out = m(idx, tgt)
    assert out.logits.shape == (3, 11, 37) and out.attentions is None
    ref = F.cross_entropy(out.logits.reshape(-1, 37), tgt.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.loss, ref)
    assert m(idx).loss is None
    # an untrained model predicts nearly uniformly: loss close to log(vocab)
    assert abs(out.loss.item() - math.log(37)) < 0.2


@pytest.mark.parametrize("positions", ["learned", "sinusoidal"])
def test_gpt_is_causal(positions):
    m = tiny(positions=positions)
    idx = torch.randint(0, 37, (2, 12), generator=torch.Generator().manual_seed(2))
    changed = idx.clone()
    changed[:, 8] = (changed[:, 8] + 1) % 37
    a, b = m(idx).logits, m(changed).logits
    torch.testing.assert_close(a[:, :8], b[:, :8], **TOL)
    assert (a[:, 8:] - b[:, 8:]).abs().max() > 1e-4  # the change is visible from position 8 on


def test_kv_cache_token_by_token_equals_full_forward():
    m = tiny()
    idx = torch.randint(0, 37, (2, 20), generator=torch.Generator().manual_seed(3))
    full = m(idx).logits
    cache = m.new_cache()
    assert isinstance(cache, KVCache) and cache.length == 0
    steps = [m(idx[:, t:t + 1], cache=cache).logits for t in range(20)]
    torch.testing.assert_close(torch.cat(steps, 1), full, **TOL)
    assert cache.length == 20
    assert cache.keys[0].shape == (2, 4, 20, 8) and cache.values[1].shape == (2, 4, 20, 8)
    # prefill 7 tokens at once, then a chunk of 13: same logits
    cache.reset()
    assert cache.length == 0
    a = m(idx[:, :7], cache=cache).logits
    b = m(idx[:, 7:], cache=cache).logits
    torch.testing.assert_close(torch.cat([a, b], 1), full, **TOL)
    # crop back to 5 positions and redo the rest
    cache.crop(5)
    assert cache.length == 5
    c = m(idx[:, 5:], cache=cache, need_weights=True)
    torch.testing.assert_close(c.logits, full[:, 5:], **TOL)
    assert c.attentions[0].shape == (2, 4, 15, 20)
    with pytest.raises(ValueError, match="crop"):
        cache.crop(99)


def test_attention_weights():
    m = tiny()
    idx = torch.randint(0, 37, (2, 9), generator=torch.Generator().manual_seed(4))
    out = m(idx, need_weights=True)
    assert len(out.attentions) == 2
    for w in out.attentions:
        assert w.shape == (2, 4, 9, 9)
        torch.testing.assert_close(w.sum(-1), torch.ones(2, 4, 9), **TOL)
        assert w.triu(diagonal=1).abs().max() == 0  # nothing from the future
    torch.testing.assert_close(out.logits, m(idx).logits, **TOL)  # slow path = fast path


def test_weight_tying_and_param_count():
    V, T, E, L = 37, 24, 32, 2
    tied, untied = tiny(), tiny(tie_weights=False)
    assert tied.lm_head.weight.data_ptr() == tied.wte.weight.data_ptr()
    assert untied.lm_head.weight.data_ptr() != untied.wte.weight.data_ptr()
    # per block: 2 LayerNorms (4E), qkv (3E^2 + 3E), proj (E^2 + E), MLP (8E^2 + 5E)
    per_block = 12 * E * E + 13 * E
    n = V * E + T * E + L * per_block + 2 * E
    assert tied.num_params() == n
    assert untied.num_params() == n + V * E
    assert tied.num_params(non_embedding=True) == n - T * E
    assert untied.num_params(non_embedding=True) == n - T * E  # token table out, head in
    # residual projections start smaller (std 0.02 / sqrt(2 L))
    big = tiny(n_layer=8, n_embd=64, n_head=4)
    assert abs(big.blocks[0].mlp.proj.weight.std().item() - 0.02 / 4) < 1e-3
    assert abs(big.blocks[0].mlp.fc.weight.std().item() - 0.02) < 1e-3


def test_clear_errors():
    m = tiny()
    with pytest.raises(ValueError, match="exceeds block_size=24.*crop"):
        m(torch.zeros(1, 25, dtype=torch.long))
    cache = m.new_cache()
    m(torch.zeros(1, 20, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="cache.length 20.*block_size=24.*reset the cache"):
        m(torch.zeros(1, 5, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="batch size 2 but the cache holds batch size 1"):
        m(torch.zeros(2, 1, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match=r"idx has token ids in \[0, 37\].*vocab_size=37"):
        m(torch.tensor([[0, 37]]))
    with pytest.raises(ValueError, match=r"\[-1, 3\]"):
        m(torch.tensor([[-1, 3]]))
    with pytest.raises(TypeError, match="integer token ids"):
        m(torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"\(batch, seq\)"):
        m(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="positions must be 'learned' or 'sinusoidal'"):
        tiny(positions="rotary")
    with pytest.raises(ValueError, match="divisible"):
        tiny(n_head=5)


def test_post_ln_block_normalises_its_output():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 16) * 4
    post, pre = Block(16, 2, norm_first=False), Block(16, 2, norm_first=True)
    y = post(x)[0]
    assert (y.var(-1, unbiased=False) - 1).abs().max() < 1e-3  # post-LN: LayerNorm is last
    assert pre(x)[0].var(-1).mean() > 4  # pre-LN: the residual stream keeps its scale


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
