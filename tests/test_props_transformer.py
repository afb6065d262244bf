"""Property-based tests (hypothesis) and the bad-input table for lmcore.attention,
lmcore.layers, lmcore.transformer and lmcore.seq2seq.

Properties: on random small shapes and masks, our attention equals PyTorch's (1e-5, float32)
and never returns NaN; GPT is causal and its KV cache reproduces the full pass (1e-5); the
loss equals F.cross_entropy when a token is scored and is 0 when none is;
gpt_param_count equals num_params.

BAD_INPUTS: every bad argument we know of, each with the error it must raise and words
the message must contain (the argument's name, and what is expected). The MiniLM cases
(sentences over 512 tokens) are in tests/test_pretrained.py.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lmcore.attention import (
    MultiHeadAttention,
    causal_mask,
    padding_mask,
    scaled_dot_product_attention,
)
from lmcore.layers import (
    FeedForward,
    LearnedPositions,
    SinusoidalPositions,
    token_cross_entropy,
)
from lmcore.seq2seq import EncoderDecoder, EncoderDecoderConfig
from lmcore.transformer import (
    GPT,
    GPTConfig,
    KVCache,
    LayerNorm,
    gpt_param_count,
    kv_cache_bytes,
)

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)
ATOL = 1e-5


def gen(seed):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ properties
@SETTINGS
@given(B=st.integers(1, 3), H=st.integers(1, 3), T=st.integers(1, 7), S=st.integers(1, 7),
       d=st.integers(1, 9), p_keep=st.floats(0.0, 1.0), seed=st.integers(0, 2**16))
def test_sdpa_equals_torch_and_never_nan(B, H, T, S, d, p_keep, seed):
    g = gen(seed)
    q, k, v = (torch.randn(B, H, n, d, generator=g) for n in (T, S, S))
    mask = torch.rand(B, 1, T, S, generator=g) < p_keep             # some rows may see nothing
    alive = mask.any(-1).expand(B, H, T)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    for need in (True, False):
        out, w = scaled_dot_product_attention(q, k, v, mask, need_weights=need)
        assert torch.isfinite(out).all()
        assert (out[alive] - ref[alive]).abs().max().item() <= ATOL if alive.any() else True
        assert out[~alive].abs().sum() == 0                          # no key: zero output
        if need:
            sums = w.sum(-1)
            assert torch.allclose(sums[alive], torch.ones(()), atol=ATOL) and (sums[~alive] == 0).all()


@SETTINGS
@given(H=st.integers(1, 3), hd=st.integers(1, 4), B=st.integers(1, 3), T=st.integers(1, 6),
       S=st.integers(1, 6), kind=st.sampled_from(["bool", "float", "bool3d", "kpm"]),
       seed=st.integers(0, 2**16))
def test_mha_takes_torch_masks_unchanged(H, hd, B, T, S, kind, seed):
    g = gen(seed)
    E = H * hd
    torch.manual_seed(seed)
    ref = nn.MultiheadAttention(E, H, batch_first=True).eval()
    mine = MultiHeadAttention.from_torch(ref).eval()
    query, key = torch.randn(B, T, E, generator=g), torch.randn(B, S, E, generator=g)
    blocked = torch.rand(T, S, generator=g) > 0.5
    blocked[:, 0] = False                                           # every row keeps a key
    kw = {"bool": dict(attn_mask=blocked),
          "float": dict(attn_mask=torch.randn(T, S, generator=g)),
          "bool3d": dict(attn_mask=blocked.repeat(B * H, 1, 1)),
          "kpm": dict(key_padding_mask=torch.arange(S).expand(B, S) > 0)}[kind]
    out, w = mine(query, key, key, need_weights=True, **kw)
    ref_out, ref_w = ref(query, key, key, average_attn_weights=False, **kw)
    assert (out - ref_out).abs().max() <= ATOL and (w - ref_w).abs().max() <= ATOL


def small_gpt(seed, L, H, hd, positions="learned"):
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=11, block_size=12, n_layer=L, n_head=H, n_embd=2 * H * hd,
                    positions=positions)
    return GPT(cfg).eval()


@SETTINGS
@given(L=st.integers(1, 2), H=st.integers(1, 3), hd=st.integers(1, 3), T=st.integers(2, 12),
       positions=st.sampled_from(["learned", "sinusoidal"]), seed=st.integers(0, 2**16),
       data=st.data())
def test_gpt_is_causal_and_the_cache_is_exact(L, H, hd, T, positions, seed, data):
    m = small_gpt(seed, L, H, hd, positions)
    idx = torch.randint(0, 11, (2, T), generator=gen(seed))
    j = data.draw(st.integers(1, T - 1))
    changed = idx.clone()
    changed[:, j] = (changed[:, j] + 1) % 11
    with torch.no_grad():
        full = m(idx).logits
        assert (m(changed).logits[:, :j] - full[:, :j]).abs().max() <= ATOL
        cache, parts, t = m.new_cache(), [], 0
        while t < T:                                                # random chunks
            n = data.draw(st.integers(1, T - t))
            parts.append(m(idx[:, t:t + n], cache=cache).logits)
            t += n
    assert (torch.cat(parts, 1) - full).abs().max() <= ATOL and cache.length == T


@SETTINGS
@given(N=st.integers(0, 12), V=st.integers(1, 9), p_ignore=st.floats(0.0, 1.0),
       seed=st.integers(0, 2**16))
def test_loss_is_cross_entropy_or_zero_never_nan(N, V, p_ignore, seed):
    g = gen(seed)
    logits = torch.randn(N, V, generator=g, requires_grad=True)
    targets = torch.randint(0, V, (N,), generator=g)
    targets[torch.rand(N, generator=g) < p_ignore] = -100
    loss = token_cross_entropy(logits, targets)
    assert torch.isfinite(loss)
    if (targets != -100).any():
        assert abs(loss.item() - F.cross_entropy(logits, targets).item()) <= 1e-6
    else:
        assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all()


@SETTINGS
@given(V=st.integers(1, 60), T=st.integers(1, 40), L=st.integers(1, 3), H=st.integers(1, 3),
       hd=st.integers(1, 4), bias=st.booleans(), tie=st.booleans(),
       positions=st.sampled_from(["learned", "sinusoidal"]))
def test_param_count_formula(V, T, L, H, hd, bias, tie, positions):
    cfg = GPTConfig(vocab_size=V, block_size=T, n_layer=L, n_head=H, n_embd=2 * H * hd,
                    bias=bias, tie_weights=tie, positions=positions)
    assert gpt_param_count(cfg) == GPT(cfg).num_params()


@SETTINGS
@given(T=st.integers(1, 9), extra=st.integers(0, 9))
def test_causal_mask_rows(T, extra):
    m = causal_mask(T, T + extra)
    assert m.sum(-1).tolist() == [i + 1 + extra for i in range(T)]


@SETTINGS
@given(dim=st.integers(1, 16), eps=st.floats(1e-12, 1.0), seed=st.integers(0, 2**16))
def test_layernorm_equals_torch(dim, eps, seed):
    x = torch.randn(3, dim, generator=gen(seed)) * 3
    ref = nn.LayerNorm(dim, eps=eps)
    for fused in (False, True):
        ours = LayerNorm(dim, eps=eps, fused=fused)
        assert (ours(x) - ref(x)).abs().max() <= 1e-4


# ------------------------------------------------------------------ bad inputs
q4 = torch.randn(2, 3, 4)
mha = MultiHeadAttention(8, 2)
x8 = torch.randn(2, 3, 8)
cfg = dict(vocab_size=37, block_size=8, n_layer=2, n_head=4, n_embd=32)
torch.manual_seed(0)
gpt = GPT(GPTConfig(**cfg)).eval()
other = GPT(GPTConfig(**{**cfg, "n_layer": 1})).eval()
ids = torch.randint(0, 37, (2, 5), generator=gen(0))
s2s_cfg = dict(src_vocab_size=13, tgt_vocab_size=11, max_len=16, n_layer=1, n_head=2, n_embd=16)
s2s = EncoderDecoder(EncoderDecoderConfig(**s2s_cfg)).eval()
src = torch.randint(3, 13, (2, 5), generator=gen(1))
tgt = torch.ones(2, 4, dtype=torch.long)


def filled_cache(batch):
    cache = gpt.new_cache()
    gpt(ids[:batch, :2], cache=cache)
    return cache


def replace(base, **kw):
    out = dict(base)
    out.update(kw)
    return out


sdpa = scaled_dot_product_attention
V, T = ValueError, TypeError
# (module, what, call, exception, words in the message)
BAD_INPUTS = [
    # attention
    ("attention", "scale=nan", lambda: sdpa(q4, q4, q4, scale=math.nan), V, "scale must be a finite"),
    ("attention", "scale=inf", lambda: sdpa(q4, q4, q4, scale=math.inf), V, "scale must be a finite"),
    ("attention", "scale='1'", lambda: sdpa(q4, q4, q4, scale="1"), V, "scale"),
    ("attention", "dropout_p=-0.5 training", lambda: sdpa(q4, q4, q4, dropout_p=-0.5, training=True),
     V, r"dropout_p must be a probability in \[0, 1\], got -0.5"),
    ("attention", "dropout_p=-0.5 eval", lambda: sdpa(q4, q4, q4, dropout_p=-0.5), V, "dropout_p"),
    ("attention", "dropout_p=nan", lambda: sdpa(q4, q4, q4, dropout_p=math.nan), V, "dropout_p"),
    ("attention", "dropout_p=1.5", lambda: sdpa(q4, q4, q4, dropout_p=1.5), V, "dropout_p"),
    ("attention", "k float64", lambda: sdpa(q4, q4.double(), q4.double()), T, "one dtype"),
    ("attention", "v float16", lambda: sdpa(q4, q4, q4.half()), T, "one dtype"),
    ("attention", "integer q", lambda: sdpa(q4.long(), q4.long(), q4.long()), V, "float tensor"),
    ("attention", "q 1-D", lambda: sdpa(q4[0, 0], q4, q4), V, "at least 2 dims"),
    ("attention", "long mask", lambda: sdpa(q4, q4, q4, torch.ones(3, 3, dtype=torch.long)), T,
     "mask must be a bool tensor or a float"),
    ("attention", "float64 mask", lambda: sdpa(q4, q4, q4, torch.zeros(3, 3, dtype=torch.float64)),
     T, "dtype torch.float32"),
    ("attention", "NaN mask", lambda: sdpa(q4, q4, q4, torch.full((3, 3), math.nan)), V, "NaN"),
    ("attention", "mask (4, 4) for (3, 3)", lambda: sdpa(q4, q4, q4, torch.ones(4, 4, dtype=torch.bool)),
     V, r"mask has shape \(4, 4\)"),
    ("attention", "d mismatch", lambda: sdpa(q4, torch.randn(2, 3, 5), torch.randn(2, 3, 5)), V,
     "feature size"),
    ("attention", "causal_mask(0)", lambda: causal_mask(0), V, "T must be an int >= 1, got 0"),
    ("attention", "causal_mask(2.5)", lambda: causal_mask(2.5), V, "T must be an int"),
    ("attention", "causal_mask(3, 2)", lambda: causal_mask(3, 2), V, "S=2 keys < T=3"),
    ("attention", "padding_mask([-1, 2])", lambda: padding_mask([-1, 2]), V, "lengths must lie"),
    ("attention", "padding_mask max_len=-1", lambda: padding_mask([1], max_len=-1), V, "max_len"),
    ("attention", "padding_mask floats", lambda: padding_mask([1.5]), V, "ints"),
    ("attention", "num_heads=0", lambda: MultiHeadAttention(8, 0), V, "num_heads must be an int >= 1"),
    ("attention", "embed_dim=-8", lambda: MultiHeadAttention(-8, 2), V, "embed_dim"),
    ("attention", "embed_dim % heads", lambda: MultiHeadAttention(8, 3), V, "divisible"),
    ("attention", "dropout=-0.5", lambda: MultiHeadAttention(8, 2, dropout=-0.5), V, "dropout"),
    ("attention", "kdim=0", lambda: MultiHeadAttention(8, 2, kdim=0), V, "kdim"),
    ("attention", "float64 query", lambda: mha(x8.double()), T, "module's dtype torch.float32"),
    ("attention", "query (2, 3, 6)", lambda: mha(torch.randn(2, 3, 6)), V, r"query must be \(batch"),
    ("attention", "key batch 3", lambda: mha(x8, torch.randn(3, 3, 8)), V, "key"),
    ("attention", "attn_mask (5, 3, 3)", lambda: mha(x8, attn_mask=torch.ones(5, 3, 3, dtype=torch.bool)),
     V, r"3-D attn_mask must be \(B\*H=4"),
    ("attention", "attn_mask long", lambda: mha(x8, attn_mask=torch.zeros(3, 3, dtype=torch.long)), T,
     "attn_mask must be a bool tensor or a float"),
    ("attention", "key_padding_mask (2, 4)", lambda: mha(x8, key_padding_mask=torch.zeros(2, 4) > 0),
     V, r"key_padding_mask must be \(B=2, S=3\)"),
    ("attention", "key_padding_mask list", lambda: mha(x8, key_padding_mask=[[0, 0, 1]] * 2), V,
     "key_padding_mask"),
    # layers
    ("layers", "LayerNorm eps=-1", lambda: LayerNorm(8, eps=-1), V, "eps must be a finite number > 0"),
    ("layers", "LayerNorm eps=nan", lambda: LayerNorm(8, eps=math.nan), V, "eps"),
    ("layers", "LayerNorm eps=0", lambda: LayerNorm(8, eps=0), V, "eps"),
    ("layers", "LayerNorm dim=0", lambda: LayerNorm(0), V, "dim must be an int >= 1"),
    ("layers", "LayerNorm wrong dim", lambda: LayerNorm(8)(torch.randn(2, 7)), V, "last dimension 7"),
    ("layers", "position 8 of 8", lambda: LearnedPositions(8, 4)(torch.arange(9)), V,
     r"positions must be integers in \[0, max_len=8\)"),
    ("layers", "position -1", lambda: SinusoidalPositions(8, 4)(torch.tensor([-1])), V, "positions"),
    ("layers", "float positions", lambda: LearnedPositions(8, 4)(torch.tensor([0.5])), V, "positions"),
    ("layers", "odd sinusoidal dim", lambda: SinusoidalPositions(8, 5), V, "even dim"),
    ("layers", "max_len=0", lambda: LearnedPositions(0, 4), V, "max_len"),
    ("layers", "FeedForward dropout", lambda: FeedForward(8, dropout=-0.5), V, "dropout"),
    # transformer
    *[("transformer", f"GPTConfig {k}={v!r}", (lambda k=k, v=v: GPTConfig(**replace(cfg, **{k: v}))), V, w)
      for k, v, w in [("n_head", 0, "n_head must be an int >= 1"), ("n_layer", 0, "n_layer"),
                      ("n_embd", -32, "n_embd"), ("block_size", -1, "block_size"),
                      ("vocab_size", 0, "vocab_size"), ("dropout", -0.5, "dropout"),
                      ("n_layer", 2.0, "n_layer"), ("n_head", 5, "divisible"),
                      ("positions", "rotary", "'learned' or 'sinusoidal'")]],
    ("transformer", "GPT(dict)", lambda: GPT(dict(cfg)), T, "config must be a GPTConfig"),
    ("transformer", "uint8 ids", lambda: gpt(ids.to(torch.uint8)), T, r"torch.long.*got torch.uint8"),
    ("transformer", "float ids", lambda: gpt(ids.float()), T, "integer token ids"),
    ("transformer", "1-D ids", lambda: gpt(ids[0]), V, r"\(batch, seq\)"),
    ("transformer", "T=0", lambda: gpt(ids[:, :0]), V, "at least one token"),
    ("transformer", "T=0 with targets", lambda: gpt(ids[:, :0], ids[:, :0]), V, "at least one token"),
    ("transformer", "id = vocab", lambda: gpt(ids.clamp(max=36) + 1), V, "vocab_size=37"),
    ("transformer", "negative id", lambda: gpt(torch.tensor([[-1, 3]])), V, r"\[-1, 3\]"),
    ("transformer", "targets >= vocab", lambda: gpt(ids, ids + 37), V, "targets has the id"),
    ("transformer", "targets -5", lambda: gpt(ids, ids * 0 - 5), V, "-100 \\(ignore\\)"),
    ("transformer", "targets shape", lambda: gpt(ids, ids[:, :2]), V, r"targets must be a tensor of shape"),
    ("transformer", "float targets", lambda: gpt(ids, ids.float()), T, "targets must hold integer"),
    ("transformer", "T > block_size", lambda: gpt(torch.zeros(1, 9, dtype=torch.long)), V,
     "exceeds block_size=8"),
    ("transformer", "past block_size with a cache",
     lambda: gpt(torch.zeros(1, 7, dtype=torch.long), cache=filled_cache(1)), V,
     "cache.length 2 = 9 exceeds block_size=8"),
    ("transformer", "cache not a KVCache", lambda: gpt(ids, cache=[]), T, "cache must be a KVCache"),
    ("transformer", "cache of another model", lambda: gpt(ids, cache=other.new_cache()), T, "n_layer=2"),
    ("transformer", "cache batch", lambda: gpt(ids, cache=filled_cache(1)), V, "batch size 2 but the cache"),
    ("transformer", "KVCache(0)", lambda: KVCache(0), V, "n_layer"),
    ("transformer", "crop(99)", lambda: filled_cache(1).crop(99), V, "crop"),
    ("transformer", "gpt_param_count(dict)", lambda: gpt_param_count(cfg), T, "GPTConfig"),
    ("transformer", "kv_cache_bytes seq_len=-1", lambda: kv_cache_bytes(2, 8, -1), V, "seq_len"),
    ("transformer", "kv_cache_bytes n_layer=0", lambda: kv_cache_bytes(0, 8, 4), V, "n_layer"),
    ("transformer", "kv_cache_bytes batch=2.0", lambda: kv_cache_bytes(2, 8, 4, batch=2.0), V, "batch"),
    # seq2seq
    ("seq2seq", "generate(src, -5)", lambda: s2s.generate(src, -5), V, "max_new_tokens must be an int >= 0"),
    ("seq2seq", "generate(src, 16)", lambda: s2s.generate(src, 16), V, "max_new_tokens=16 exceeds max_len - 1"),
    ("seq2seq", "model(src) only", lambda: s2s(src), T, "tgt_in"),
    ("seq2seq", "batch 2 vs 3", lambda: s2s(src, torch.ones(3, 4, dtype=torch.long)), V,
     "tgt_in has batch size 3 but the source"),
    ("seq2seq", "tgt_out >= vocab", lambda: s2s(src, tgt, torch.full((2, 4), 11)), V, "tgt_out has the id 11"),
    ("seq2seq", "tgt_out list", lambda: s2s(src, tgt, [[1, 2, 3, 4]] * 2), V, "tgt_out must be a tensor"),
    ("seq2seq", "src_padding_mask list", lambda: s2s(src, tgt, src_padding_mask=[[False] * 5] * 2), V,
     "src_padding_mask must be a bool tensor"),
    ("seq2seq", "src_padding_mask float", lambda: s2s(src, tgt, src_padding_mask=torch.zeros(2, 5)), V,
     "src_padding_mask must be a bool tensor"),
    ("seq2seq", "empty source", lambda: s2s(src[:, :0], tgt), V, "at least one token"),
    ("seq2seq", "uint8 source", lambda: s2s(src.to(torch.uint8), tgt), T, "src must hold integer"),
    ("seq2seq", "source > max_len", lambda: s2s(torch.ones(1, 17, dtype=torch.long), tgt[:1]), V,
     "exceeds max_len=16"),
    *[("seq2seq", f"config {k}={v!r}", (lambda k=k, v=v: EncoderDecoderConfig(**replace(s2s_cfg, **{k: v}))),
       V, w)
      for k, v, w in [("n_head", 0, "n_head"), ("max_len", 1, "max_len"),
                      ("pad_id", 13, "pad_id=13 must be < src_vocab_size=13"), ("eos_id", -1, "eos_id"),
                      ("dropout", 1.5, "dropout"), ("n_embd", 15, "divisible")]],
    ("seq2seq", "EncoderDecoder(dict)", lambda: EncoderDecoder(dict(s2s_cfg)), T,
     "config must be an EncoderDecoderConfig"),
]


@pytest.mark.parametrize("module, what, call, error, words", BAD_INPUTS,
                         ids=[f"{m}: {w}" for m, w, *_ in BAD_INPUTS])
def test_bad_input_raises_a_clear_error(module, what, call, error, words):
    with pytest.raises(error, match=words):
        call()


def test_the_documented_non_errors():
    """Inputs that are valid on purpose: what they give, so that it is never NaN."""
    assert gpt(ids, torch.full_like(ids, -100)).loss.item() == 0.0        # fully padded batch
    out, w = sdpa(q4, q4, q4, torch.zeros(3, 3, dtype=torch.bool))         # no key at all
    assert out.abs().sum() == 0 and w.abs().sum() == 0
    assert s2s.generate(src, 0).shape == (2, 0)
    assert kv_cache_bytes(2, 8, 0) == 0
