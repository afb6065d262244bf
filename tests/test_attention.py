"""lmcore.attention against PyTorch's references.

Tolerance: float32, max abs difference <= 1e-5 (outputs, weights and gradients), on random
shapes. Each function takes the masks of the PyTorch function with its name, unchanged:
scaled_dot_product_attention(mask=) like F.scaled_dot_product_attention(attn_mask=)
(bool True = may attend), MultiHeadAttention(attn_mask=, key_padding_mask=) like
nn.MultiheadAttention (bool True = blocked); float masks are added to the scores.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lmcore.attention import (
    MultiHeadAttention,
    causal_mask,
    padding_mask,
    scaled_dot_product_attention,
)

ATOL = 1e-5


def close(a, b, atol=ATOL):
    return (a - b).abs().max().item() <= atol


@pytest.mark.parametrize("seed", range(6))
def test_sdpa_matches_torch_random_shapes(seed):
    g = torch.Generator().manual_seed(seed)
    B, H = torch.randint(1, 4, (2,), generator=g).tolist()
    T, S = torch.randint(1, 12, (2,), generator=g).tolist()
    d, dv = torch.randint(1, 17, (2,), generator=g).tolist()
    q = torch.randn(B, H, T, d, generator=g, requires_grad=True)
    k = torch.randn(B, H, S, d, generator=g, requires_grad=True)
    v = torch.randn(B, H, S, dv, generator=g, requires_grad=True)
    mask = torch.rand(B, 1, T, S, generator=g) > 0.3
    mask[..., 0] = True  # every row sees at least one key (torch may give NaN otherwise)
    grad = torch.randn(B, H, T, dv, generator=g)
    for m in (None, mask, causal_mask(T, max(S, T))[:, -S:] | (torch.arange(S) == 0)):
        out, w = scaled_dot_product_attention(q, k, v, m)
        ref = F.scaled_dot_product_attention(q, k, v, attn_mask=m)
        assert close(out, ref)
        assert close(w.sum(-1), torch.ones(B, H, T))
        mine = torch.autograd.grad(out, (q, k, v), grad)
        theirs = torch.autograd.grad(ref, (q, k, v), grad)
        assert all(close(a, b) for a, b in zip(mine, theirs))


def test_fast_path_equals_weights_path():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 3, 7, 8, generator=g) for _ in range(3))
    for m in (None, causal_mask(7), torch.rand(2, 1, 7, 7, generator=g) > 0.5):
        slow, w = scaled_dot_product_attention(q, k, v, m)
        fast, none = scaled_dot_product_attention(q, k, v, m, need_weights=False)
        assert none is None and w.shape == (2, 3, 7, 7)
        assert close(slow, fast)
    _out, w = scaled_dot_product_attention(q, k, v, scale=0.0)  # scale 0: uniform weights
    assert close(w, torch.full_like(w, 1 / 7))


def test_fully_masked_rows_are_zero_not_nan():
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(2, 5, 4, generator=g, requires_grad=True) for _ in range(3))
    mask = torch.ones(5, 5, dtype=torch.bool)
    mask[2] = False  # query 2 may see nothing
    for need in (True, False):
        out, w = scaled_dot_product_attention(q, k, v, mask, need_weights=need)
        assert torch.isfinite(out).all() and out[:, 2].abs().max() == 0
        if need:
            assert w[:, 2].abs().max() == 0 and close(w[:, [0, 1, 3, 4]].sum(-1), torch.ones(2, 4))
        grads = torch.autograd.grad(out.square().sum(), (q, k, v))
        assert all(torch.isfinite(gr).all() for gr in grads)
        assert grads[0][:, 2].abs().max() == 0  # the dead query gets no gradient


def test_causal_and_padding_masks():
    assert causal_mask(3).tolist() == [[True, False, False], [True, True, False], [True, True, True]]
    # KV-cache decoding: 2 new queries after 3 cached keys
    assert causal_mask(2, 5).tolist() == [[True, True, True, True, False], [True] * 5]
    m = padding_mask([2, 3])
    assert m.shape == (2, 1, 1, 3) and m[:, 0, 0].tolist() == [[True, True, False], [True, True, True]]
    kpm = torch.tensor([[False, False, True]])  # torch: True = padding
    assert padding_mask(kpm)[0, 0, 0].tolist() == [True, True, False]
    assert padding_mask(torch.tensor([1]), max_len=4).shape == (1, 1, 1, 4)


@pytest.mark.parametrize("seed", range(4))
def test_mha_matches_torch_self_attention(seed):
    g = torch.Generator().manual_seed(seed)
    H = int(torch.randint(1, 5, (1,), generator=g))
    E = H * int(torch.randint(1, 6, (1,), generator=g))
    B, T = (int(x) for x in torch.randint(1, 9, (2,), generator=g))
    torch.manual_seed(seed)
    ref = nn.MultiheadAttention(E, H, batch_first=True, bias=bool(seed % 2)).eval()
    mine = MultiHeadAttention.from_torch(ref).eval()
    x = torch.randn(B, T, E, generator=g, requires_grad=True)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    kpm = torch.arange(T)[None] >= lengths[:, None]                 # True = padding
    blocked = torch.rand(T, T, generator=g) > 0.6                   # True = not allowed
    blocked.fill_diagonal_(False)                                   # keep one key per row
    torch_causal = torch.ones(T, T, dtype=torch.bool).triu(1)       # torch: True = blocked
    float_causal = nn.Transformer.generate_square_subsequent_mask(T)  # 0 / -inf, added
    bias = torch.randn(T, T, generator=g)                           # any float mask: added
    cases = [dict(), dict(key_padding_mask=kpm), dict(attn_mask=blocked),
             dict(attn_mask=torch_causal), dict(attn_mask=torch_causal, is_causal=True),
             dict(attn_mask=float_causal), dict(attn_mask=blocked, key_padding_mask=kpm),
             dict(attn_mask=bias, key_padding_mask=kpm.float().masked_fill(kpm, -math.inf)),
             dict(attn_mask=blocked.repeat(B * H, 1, 1))]           # (B*H, T, S)
    for kw in cases:
        ref_out, ref_w = ref(x, x, x, average_attn_weights=False, **kw)
        out, w = mine(x, **kw, need_weights=True)                   # the same arguments
        assert w.shape == (B, H, T, T)
        alive = ~torch.isnan(ref_out).any(-1)                       # torch: NaN on dead rows
        assert close(out[alive], ref_out[alive]) and close(w[alive.unsqueeze(1).expand(B, H, T)],
                                                           ref_w[alive.unsqueeze(1).expand(B, H, T)])
        _, avg = ref(x, x, x, **kw)                                 # torch averages the heads
        assert close(w.mean(1)[alive], avg[alive])
        out_fast, _ = mine(x, **kw)
        assert close(out_fast, out)
    # is_causal alone (torch needs the mask as well; here the flag builds it)
    out, _ = mine(x, is_causal=True)
    assert close(out, ref(x, x, x, attn_mask=torch_causal, is_causal=True)[0])


def test_mha_torch_style_causal_mask_is_causal():
    """A mask built for nn.MultiheadAttention means the same here: True = not allowed."""
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    mine = MultiHeadAttention.from_torch(ref).eval()
    x = torch.randn(2, 7, 16)
    blocked = torch.ones(7, 7, dtype=torch.bool).triu(1)
    out, w = mine(x, attn_mask=blocked, need_weights=True)
    assert w.triu(1).abs().max() == 0                               # nothing from the future
    assert close(out, ref(x, x, x, attn_mask=blocked)[0])
    changed = x.clone()
    changed[:, 5:] += 1.0                                           # change only the future
    assert close(mine(changed, attn_mask=blocked)[0][:, :5], out[:, :5])


def test_sdpa_float_mask_matches_torch():
    g = torch.Generator().manual_seed(11)
    q, k, v = (torch.randn(2, 3, 5, 8, generator=g, requires_grad=True) for _ in range(3))
    bias = torch.randn(2, 1, 5, 5, generator=g)
    bias[..., 3] = -math.inf                                        # key 3 blocked everywhere
    for need in (True, False):
        out, w = scaled_dot_product_attention(q, k, v, bias, need_weights=need)
        ref = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        assert close(out, ref)
        mine = torch.autograd.grad(out.sum(), (q, k, v))
        theirs = torch.autograd.grad(ref.sum(), (q, k, v))
        assert all(close(a, b) for a, b in zip(mine, theirs))
        if need:
            assert w[..., 3].abs().max() == 0
    dead = torch.zeros(5, 5)
    dead[1] = -math.inf                                             # query 1 sees no key
    for need in (True, False):
        out, w = scaled_dot_product_attention(q, k, v, dead, need_weights=need)
        assert torch.isfinite(out).all() and out[:, :, 1].abs().max() == 0


def test_bad_input_messages():
    q = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="feature size 4 but k has 5"):
        scaled_dot_product_attention(q, torch.randn(2, 3, 5), torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match=r"k .* and v .* must agree"):
        scaled_dot_product_attention(q, q, torch.randn(2, 6, 4))
    with pytest.raises(ValueError, match=r"mask has shape \(4, 4\).*\(2, 3, 3\)"):
        scaled_dot_product_attention(q, q, q, torch.ones(4, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="mask must be a bool tensor or a float tensor"):
        scaled_dot_product_attention(q, q, q, torch.ones(3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="embed_dim=10 must be .* divisible by num_heads=4"):
        MultiHeadAttention(10, 4)
    mha = MultiHeadAttention(8, 2)
    with pytest.raises(ValueError, match=r"query must be \(batch, seq, 8\)"):
        mha(torch.randn(2, 3, 6))
    with pytest.raises(ValueError, match=r"attn_mask has shape \(5, 5\)"):
        mha(torch.randn(2, 3, 8), attn_mask=torch.ones(5, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"key_padding_mask must be \(B=2, S=3\)"):
        mha(torch.randn(2, 3, 8), key_padding_mask=torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="S=2 keys < T=3"):
        causal_mask(3, 2)
    with pytest.raises(ValueError, match="lengths must"):
        padding_mask([[1, 2]])
