"""Tests for lmcore.transformer and lmcore.layers: LayerNorm and Block vs torch, positions, GPT (+ KV cache).

Tolerances: float32 comparisons with PyTorch's own layers at 1e-5 (absolute and relative);
the KV-cache path and the full forward agree to 1e-5.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lmcore.transformer import (
    GPT,
    Block,
    GPTConfig,
    KVCache,
    LayerNorm,
    SinusoidalPositions,
    gpt_param_count,
    kv_cache_bytes,
)

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


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("positions", ["learned", "sinusoidal"])
def test_gpt_param_count_equals_the_built_model(bias, tie, positions):
    for V, T, L, H, E in [(37, 24, 2, 4, 32), (101, 33, 3, 2, 24), (5, 1, 1, 1, 2)]:
        cfg = GPTConfig(vocab_size=V, block_size=T, n_layer=L, n_head=H, n_embd=E,
                        bias=bias, tie_weights=tie, positions=positions)
        assert gpt_param_count(cfg) == GPT(cfg).num_params()
    assert gpt_param_count(GPTConfig(50257, 1024, 12, 12, 768)) == 124_439_808  # GPT-2 small
    with pytest.raises(TypeError, match="config must be a GPTConfig"):
        gpt_param_count(dict(vocab_size=5))


def test_kv_cache_bytes_equals_a_filled_cache():
    m = tiny()
    cache = m.new_cache()
    m(torch.zeros(3, 11, dtype=torch.long), cache=cache)
    held = sum(t.numel() * t.element_size() for t in cache.keys + cache.values)
    assert held == kv_cache_bytes(2, 32, 11, batch=3) == 2 * 2 * 3 * 11 * 32 * 4
    assert kv_cache_bytes(12, 768, 1024) == 75_497_472  # GPT-2 small, float32
    assert kv_cache_bytes(24, 1024, 1024, bytes_per_value=2, batch=8) == 768 * 2**20
    assert kv_cache_bytes(2, 8, 0) == 0
    for kw, name in [(dict(n_layer=0), "n_layer"), (dict(n_embd=-8), "n_embd"),
                     (dict(seq_len=-1), "seq_len"), (dict(batch=2.0), "batch"),
                     (dict(bytes_per_value=0), "bytes_per_value"), (dict(seq_len=True), "seq_len")]:
        args = dict(n_layer=2, n_embd=8, seq_len=4)
        args.update(kw)
        with pytest.raises(ValueError, match=name):
            kv_cache_bytes(**args)


def copy_into_torch_layer(block: Block, ref: nn.TransformerEncoderLayer) -> None:
    """Our Block's weights into nn.TransformerEncoderLayer (q, k, v rows in the same order)."""
    with torch.no_grad():
        ref.self_attn.in_proj_weight.copy_(block.attn.qkv.weight)
        ref.self_attn.in_proj_bias.copy_(block.attn.qkv.bias)
        ref.self_attn.out_proj.weight.copy_(block.attn.proj.weight)
        ref.self_attn.out_proj.bias.copy_(block.attn.proj.bias)
        for mine, theirs in ((block.mlp.fc, ref.linear1), (block.mlp.proj, ref.linear2),
                             (block.ln1, ref.norm1), (block.ln2, ref.norm2)):
            theirs.weight.copy_(mine.weight)
            theirs.bias.copy_(mine.bias)


@pytest.mark.parametrize("norm_first", [True, False])
def test_block_matches_torch_encoder_layer(norm_first):
    """Block = nn.TransformerEncoderLayer(gelu, 4E, dropout 0) with a causal mask, to 1e-5."""
    E, H, B, T = 32, 4, 3, 9
    torch.manual_seed(0)
    ours = Block(E, H, norm_first=norm_first)
    for p in ours.parameters():  # random everything (not the near-identity init)
        nn.init.normal_(p, std=0.3)
    ref = nn.TransformerEncoderLayer(E, H, dim_feedforward=4 * E, dropout=0.0, activation="gelu",
                                     batch_first=True, norm_first=norm_first)
    copy_into_torch_layer(ours, ref)
    x = torch.randn(B, T, E, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    causal = nn.Transformer.generate_square_subsequent_mask(T)
    expected = ref(x2, src_mask=causal, is_causal=True)
    for need_weights in (False, True):  # the fused path and the weights path
        y, _ = ours(x, need_weights=need_weights)
        torch.testing.assert_close(y, expected, **TOL)
    ours(x)[0].square().sum().backward()
    expected.square().sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.mlp.fc.weight.grad, ref.linear1.weight.grad, atol=1e-4, rtol=1e-4)
    ref.eval()
    with torch.no_grad():  # torch's inference fast path computes the same function
        torch.testing.assert_close(ours(x)[0], ref(x, src_mask=causal, is_causal=True), **TOL)


def test_fully_padded_batch_has_loss_zero_not_nan():
    m = tiny()
    idx = torch.randint(0, 37, (2, 6), generator=torch.Generator().manual_seed(8))
    targets = torch.full_like(idx, -100)
    out = m(idx, targets)
    assert out.loss.item() == 0.0                                   # F.cross_entropy gives NaN here
    assert torch.isnan(F.cross_entropy(out.logits.view(-1, 37), targets.view(-1)))
    out.loss.backward()                                             # and the gradients are 0
    assert all(p.grad is None or (p.grad == 0).all() for p in m.parameters())
    # one scored token: exactly F.cross_entropy's mean again
    targets[1, 3] = 5
    out = m(idx, targets)
    ref = F.cross_entropy(out.logits.view(-1, 37), targets.view(-1), ignore_index=-100)
    assert out.loss.item() == ref.item()
    tgt = idx.roll(-1, 1)
    out = m(idx, tgt)
    assert out.loss.item() == F.cross_entropy(out.logits.view(-1, 37), tgt.view(-1)).item()


def test_gpt_config_is_checked_before_building():
    for kw, pattern in [(dict(n_head=0), "n_head"), (dict(n_layer=0), "n_layer"),
                        (dict(n_embd=-32), "n_embd"), (dict(block_size=-1), "block_size"),
                        (dict(vocab_size=0), "vocab_size"), (dict(dropout=-0.5), "dropout"),
                        (dict(dropout=float("nan")), "dropout"), (dict(n_layer=2.0), "n_layer"),
                        (dict(positions="sinusoidal", n_embd=9, n_head=3), "even n_embd")]:
        cfg = dict(vocab_size=37, block_size=24, n_layer=2, n_head=4, n_embd=32)
        cfg.update(kw)
        with pytest.raises(ValueError, match=pattern):
            GPTConfig(**cfg)


def test_gpt_exports_with_a_dynamic_length():
    """The checks skip themselves under torch.export (symbolic shapes), so the model exports
    once and runs at any length up to block_size (issue 17 needs it for ONNX)."""
    m = tiny()
    length = torch.export.Dim("T", min=2, max=24)
    idx = torch.randint(0, 37, (2, 8), generator=torch.Generator().manual_seed(12))
    ep = torch.export.export(m, (idx,), dynamic_shapes={"idx": {1: length}})
    other = torch.randint(0, 37, (2, 13), generator=torch.Generator().manual_seed(13))
    torch.testing.assert_close(ep.module()(other).logits, m(other).logits, **TOL)
