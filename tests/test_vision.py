"""lmcore.vision: patches are im2col windows, the patch embedding is a strided convolution,
the ViT attends both ways and needs its positions, pixels round-trip through tokens."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from lmcore.vision import (
    AttentionBlock,
    PatchEmbedding,
    ViT,
    ViTConfig,
    patchify,
    pixels_to_tokens,
    tokens_to_pixels,
)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 4), st.integers(1, 3),
       st.integers(1, 3), st.integers(0, 1000))
def test_patchify_cuts_row_major_patches(b, c, p, nh, nw, seed):
    x = torch.randn(b, c, nh * p, nw * p, generator=torch.Generator().manual_seed(seed))
    ours = patchify(x, p)
    # reference by reshaping: (B, C, nh, p, nw, p) -> (B, nh, nw, C, p, p)
    ref = x.view(b, c, nh, p, nw, p).permute(0, 2, 4, 1, 3, 5).reshape(b, nh * nw, c * p * p)
    assert torch.equal(ours, ref)


def test_patch_embedding_is_a_strided_convolution():
    torch.manual_seed(0)
    c = ViTConfig(image_size=8, patch_size=2, in_channels=3, n_embd=16, n_head=2)
    emb = PatchEmbedding(c)
    x = torch.randn(5, 3, 8, 8)
    conv = F.conv2d(x, emb.proj.weight.view(16, 3, 2, 2), emb.proj.bias, stride=2)
    ref = conv.flatten(2).transpose(1, 2) + emb.pos                 # (B, 16 patches, E)
    torch.testing.assert_close(emb(x), ref, atol=1e-5, rtol=1e-5)


def test_attention_block_is_bidirectional_and_cross_attends():
    torch.manual_seed(0)
    block = AttentionBlock(16, 4).eval()
    x = torch.randn(2, 5, 16)
    y = x.clone()
    y[:, -1] = torch.randn(2, 16)      # change the LAST token: the FIRST one must see it
    assert not torch.allclose(block(x)[0][:, 0], block(y)[0][:, 0])
    memory = torch.randn(2, 7, 16)
    pad = torch.zeros(2, 7, dtype=torch.bool)
    pad[:, 5:] = True
    out, w = block(x, memory=memory, key_padding_mask=pad, need_weights=True)
    assert out.shape == (2, 5, 16) and w.shape == (2, 4, 5, 7)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 4, 5))
    assert w[..., 5:].abs().max() == 0  # padded keys get no weight
    other = memory.clone()
    other[:, 0] = torch.randn(2, 16)    # a different (unpadded) key and value
    assert not torch.allclose(out, block(x, memory=other, key_padding_mask=pad)[0])


def test_vit_shapes_and_weights():
    torch.manual_seed(0)
    c = ViTConfig(n_layer=2, n_head=4, n_embd=32)
    logits, weights = ViT(c)(torch.randn(3, 1, 8, 8), need_weights=True)
    assert logits.shape == (3, 10) and len(weights) == 2
    assert weights[0].shape == (3, 4, 17, 17)
    torch.testing.assert_close(weights[1].sum(-1), torch.ones(3, 4, 17))
    assert ViT(c)(torch.randn(3, 1, 8, 8))[1] is None


def test_vit_without_positions_cannot_tell_where_a_patch_is():
    """Attention is permutation-equivariant: without position vectors, shuffling the
    patches leaves the class token's answer unchanged; with them, it changes."""
    torch.manual_seed(0)
    vit = ViT(ViTConfig(n_embd=32)).eval()
    x = torch.randn(2, 1, 8, 8)
    # swap two patches (top-left and bottom-right 2x2 blocks)
    y = x.clone()
    y[..., 0:2, 0:2], y[..., 6:8, 6:8] = x[..., 6:8, 6:8], x[..., 0:2, 0:2]
    with torch.no_grad():
        vit.patches.pos.normal_(std=1.0)
        assert not torch.allclose(vit(x)[0], vit(y)[0], atol=1e-4)
        vit.patches.pos.zero_()
        torch.testing.assert_close(vit(x)[0], vit(y)[0], atol=1e-5, rtol=1e-5)


def test_pixel_tokens_round_trip_within_one_bin():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 17, (6, 8, 8), generator=g).float()
    labels = torch.arange(6)
    seq = pixels_to_tokens(images, labels, levels=4, max_value=16)
    assert seq.shape == (6, 65) and seq.dtype == torch.long
    assert torch.equal(seq[:, 0], labels + 4) and seq[:, 1:].max() <= 3
    back, bad = tokens_to_pixels(seq[:, 1:], levels=4, side=8, max_value=16)
    assert bad == 0 and (back - images).abs().max() <= 16 / 4  # one bin
    assert back.min() == 0 and back.max() == 16             # blank stays blank
    # the extremes land in the first and last bins
    edge = pixels_to_tokens(torch.tensor([[[0.0, 16.0]]]), [0], levels=4, max_value=16)
    assert edge[0, 1:].tolist() == [0, 3]
    # a class token where a pixel should be is counted and drawn as 0
    back, bad = tokens_to_pixels(torch.tensor([[1, 7, 3, 0]]), levels=4, side=2, max_value=16)
    assert bad == 1 and back[0, 0, 1] == 0


@pytest.mark.parametrize("call, message", [
    (lambda: patchify(torch.randn(1, 1, 8, 8), 3), "multiples of patch_size=3"),
    (lambda: patchify(torch.randn(8, 8), 2), "(B, C, H, W)"),
    (lambda: patchify(torch.randn(1, 1, 8, 8), 0), "patch_size"),
    (lambda: ViTConfig(image_size=8, patch_size=3), "not a multiple"),
    (lambda: ViTConfig(n_embd=30, n_head=4), "divisible"),
    (lambda: ViTConfig(n_layer=0), "n_layer"),
    (lambda: ViT(ViTConfig())(torch.randn(1, 1, 16, 16)), "expected 8x8"),
    (lambda: pixels_to_tokens(torch.full((1, 2, 2), 17.0), [0], 4, 16), "max_value=16"),
    (lambda: pixels_to_tokens(torch.full((1, 2, 2), float("nan")), [0], 4, 16), "NaN"),
    (lambda: pixels_to_tokens(torch.zeros(2, 2), [0], 4, 16), "(B, H, W)"),
    (lambda: pixels_to_tokens(torch.zeros(1, 2, 2), [0], 1, 16), "levels"),
    (lambda: pixels_to_tokens(torch.zeros(2, 2, 2), [0], 4, 16), "labels must be"),
    (lambda: pixels_to_tokens(torch.zeros(1, 2, 2), [-1], 4, 16), "classes >= 0"),
])
def test_bad_input_raises_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()


def test_vit_rejects_a_wrong_config_type():
    with pytest.raises(TypeError, match="ViTConfig"):
        ViT({"n_embd": 32})
