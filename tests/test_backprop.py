"""Hand-written backward passes (lmcore.backprop) against gradcheck and torch's own ops.

Tolerances: gradcheck in float64 with its defaults (eps=1e-6, atol=1e-5, rtol=1e-3);
comparisons with autograd through F.cross_entropy / F.layer_norm /
F.scaled_dot_product_attention in float64 within 1e-10 (values) and 1e-9 (gradients).
"""
import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from lmcore import backprop as bp

SHAPES_CE = [(1, 2), (5, 3), (7, 11)]
SHAPES_LN = [(4,), (3, 6), (2, 3, 5)]
SHAPES_ATT = [((4, 3), (5, 3), (5, 2)), ((2, 3, 4), (2, 6, 4), (2, 6, 5)),
              ((2, 2, 3, 4), (2, 2, 3, 4), (2, 2, 3, 4))]


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("shape", SHAPES_CE)
def test_cross_entropy_gradcheck_and_reference(shape):
    g = _g(1)
    z = torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, shape[1], (shape[0],), generator=g)
    assert gradcheck(lambda t: bp.softmax_cross_entropy(t, y), (z,))
    loss = bp.softmax_cross_entropy(z, y)
    (gz,) = torch.autograd.grad(loss, z)
    ref = F.cross_entropy(z, y)
    (rz,) = torch.autograd.grad(ref, z)
    assert torch.allclose(loss, ref, atol=1e-10)
    assert torch.allclose(gz, rz, atol=1e-9)


def test_cross_entropy_is_stable_for_huge_logits():
    z = torch.tensor([[1000.0, 0.0, -1000.0]], dtype=torch.float64)
    loss, cache = bp.cross_entropy_forward(z, torch.tensor([0]))
    assert torch.isfinite(loss) and loss.item() < 1e-300 + 1e-12
    loss, _ = bp.cross_entropy_forward(z, torch.tensor([2]))
    assert abs(loss.item() - 2000.0) < 1e-9


@pytest.mark.parametrize("shape", SHAPES_LN)
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_gradcheck_and_reference(shape, affine):
    g = _g(2)
    x = torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
    d = shape[-1]
    w = torch.randn(d, generator=g, dtype=torch.float64, requires_grad=True) if affine else None
    b = torch.randn(d, generator=g, dtype=torch.float64, requires_grad=True) if affine else None
    inputs = (x, w, b) if affine else (x,)
    fn = (lambda x, w, b: bp.layer_norm(x, w, b, 1e-5)) if affine else (lambda x: bp.layer_norm(x))
    assert gradcheck(fn, inputs)
    dy = torch.randn(*shape, generator=g, dtype=torch.float64)
    out = bp.layer_norm(x, w, b)
    ref = F.layer_norm(x, (d,), w, b, 1e-5)
    assert torch.allclose(out, ref, atol=1e-10)
    ours = torch.autograd.grad(out, inputs, dy)
    theirs = torch.autograd.grad(ref, inputs, dy)
    for a, r in zip(ours, theirs):
        assert torch.allclose(a, r, atol=1e-9)


@pytest.mark.parametrize("shapes", SHAPES_ATT)
@pytest.mark.parametrize("causal", [False, True])
def test_attention_gradcheck_and_reference(shapes, causal):
    g = _g(3)
    q, k, v = (torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True)
               for s in shapes)
    lq, lk = shapes[0][-2], shapes[1][-2]
    # causal-style mask aligned at the end, so every query row can attend somewhere
    mask = torch.ones(lq, lk, dtype=torch.bool).tril(lk - lq) if causal else None
    assert gradcheck(lambda q, k, v: bp.attention(q, k, v, mask), (q, k, v))
    out = bp.attention(q, k, v, mask)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.allclose(out, ref, atol=1e-10)
    do = torch.randn(out.shape, generator=g, dtype=torch.float64)
    for a, r in zip(torch.autograd.grad(out, (q, k, v), do),
                    torch.autograd.grad(ref, (q, k, v), do)):
        assert torch.allclose(a, r, atol=1e-9)


def test_attention_broadcast_kv_gradcheck():
    g = _g(4)
    q = torch.randn(2, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(1, 5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(5, 2, generator=g, dtype=torch.float64, requires_grad=True)
    assert gradcheck(bp.attention, (q, k, v))


def test_explicit_backward_functions_match_autograd():
    g = _g(5)
    q, k, v = (torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
               for _ in range(3))
    out, p, cache = bp.attention_forward(q, k, v)
    assert torch.allclose(p.sum(-1), torch.ones(3, dtype=torch.float64))
    do = torch.ones_like(out)
    for a, r in zip(bp.attention_backward(do, cache), torch.autograd.grad(out, (q, k, v), do)):
        assert torch.allclose(a, r, atol=1e-12)


def test_errors_name_the_argument():
    z = torch.randn(3, 4)
    with pytest.raises(TypeError, match="logits must have a floating dtype"):
        bp.softmax_cross_entropy(torch.ones(3, 4, dtype=torch.long), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"targets must be class ids in \[0, 3\]"):
        bp.softmax_cross_entropy(z, torch.tensor([0, 1, 4]))
    with pytest.raises(ValueError, match=r"targets must have shape \(3,\)"):
        bp.softmax_cross_entropy(z, torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="targets must be an integer tensor"):
        bp.softmax_cross_entropy(z, torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"logits must have shape \(N, C\)"):
        bp.softmax_cross_entropy(torch.randn(2, 3, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"weight must have shape \(4,\)"):
        bp.layer_norm(z, torch.ones(3))
    with pytest.raises(TypeError, match="x must have a floating dtype"):
        bp.layer_norm(torch.ones(2, 3, dtype=torch.int32))
    with pytest.raises(ValueError, match="eps must be > 0"):
        bp.layer_norm(z, eps=0.0)
    with pytest.raises(ValueError, match="q and k must have the same last dim"):
        bp.attention(torch.randn(2, 3), torch.randn(2, 4), torch.randn(2, 4))
    with pytest.raises(ValueError, match="k and v must have the same length Lk"):
        bp.attention(torch.randn(2, 3), torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(TypeError, match="v must have a floating dtype"):
        bp.attention(torch.randn(2, 3), torch.randn(4, 3), torch.ones(4, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        bp.attention(torch.randn(2, 3), torch.randn(4, 3), torch.randn(4, 3), torch.ones(2, 4))
    with pytest.raises(ValueError, match="mask of shape"):
        bp.attention(torch.randn(2, 3), torch.randn(4, 3), torch.randn(4, 3),
                     torch.ones(3, 4, dtype=torch.bool))
