"""Hand-written backward passes (lmcore.backprop) against gradcheck and torch's own ops.

Tolerances: gradcheck in float64 with its defaults (eps=1e-6, atol=1e-5, rtol=1e-3);
comparisons with autograd through F.cross_entropy / F.layer_norm /
F.scaled_dot_product_attention in float64 within 1e-10 (values) and 1e-9 (gradients);
numerical_grad against exact gradients within 1e-8 (float64, eps=1e-6).
"""
import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from lmcore import backprop as bp
from lmcore import mlp
from lmcore.attention import scaled_dot_product_attention

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
    assert gradcheck(lambda t: bp.cross_entropy(t, y), (z,))
    loss = bp.cross_entropy(z, y)
    (gz,) = torch.autograd.grad(loss, z)
    ref = F.cross_entropy(z, y)
    (rz,) = torch.autograd.grad(ref, z)
    assert torch.allclose(loss, ref, atol=1e-10)
    assert torch.allclose(gz, rz, atol=1e-9)
    # one home for the formula: the autograd wrapper returns mlp's gradient, scaled
    _, grad = mlp.softmax_cross_entropy(z.detach(), y)
    (g3,) = torch.autograd.grad(3.0 * bp.cross_entropy(z, y), z)
    assert torch.allclose(g3, 3.0 * grad, atol=1e-15)


def test_cross_entropy_is_stable_for_huge_logits():
    z = torch.tensor([[1000.0, 0.0, -1000.0]], dtype=torch.float64, requires_grad=True)
    loss = bp.cross_entropy(z, torch.tensor([0]))
    assert torch.isfinite(loss) and loss.item() < 1e-300 + 1e-12
    loss = bp.cross_entropy(z, torch.tensor([2]))
    assert abs(loss.item() - 2000.0) < 1e-9
    (gz,) = torch.autograd.grad(loss, z)
    assert torch.allclose(gz, torch.tensor([[1.0, 0.0, -1.0]], dtype=torch.float64))


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


def test_fully_masked_row_gives_zeros_like_lmcore_attention():
    """A query that may see no key: zero weights, zero output, zero gradient, no NaN,
    the same values and gradients as lmcore.attention.scaled_dot_product_attention."""
    g = _g(6)
    q, k, v = (torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True)
               for s in ((2, 4, 3), (2, 5, 3), (2, 5, 2)))
    mask = torch.ones(2, 4, 5, dtype=torch.bool).tril(1)
    mask[0, 2] = False  # batch 0, query 2 sees nothing
    mask[1, 0] = False  # batch 1, query 0 sees nothing
    out, p, _ = bp.attention_forward(q, k, v, mask)
    assert torch.isfinite(out).all() and torch.isfinite(p).all()
    assert (out[0, 2] == 0).all() and (out[1, 0] == 0).all() and (p[0, 2] == 0).all()
    assert torch.allclose(p.sum(-1)[mask.any(-1)], torch.ones(6, dtype=torch.float64))
    ref_out, ref_p = scaled_dot_product_attention(q, k, v, mask)
    assert torch.allclose(out, ref_out, atol=1e-12) and torch.allclose(p, ref_p, atol=1e-12)
    do = torch.randn(out.shape, generator=g, dtype=torch.float64)
    ours = torch.autograd.grad(bp.attention(q, k, v, mask), (q, k, v), do)
    theirs = torch.autograd.grad(ref_out, (q, k, v), do)
    for a, r in zip(ours, theirs):
        assert torch.isfinite(a).all() and torch.allclose(a, r, atol=1e-10)
    assert (ours[0][0, 2] == 0).all()  # no gradient reaches a query that saw nothing
    assert gradcheck(lambda q, k, v: bp.attention(q, k, v, mask), (q, k, v))


def test_numerical_grad_central_differences():
    g = _g(7)
    A = torch.randn(4, 4, generator=g, dtype=torch.float64)
    b = torch.randn(4, generator=g, dtype=torch.float64)
    x = torch.randn(4, generator=g, dtype=torch.float64)

    def quadratic(t):
        return 0.5 * t @ A @ t + b @ t
    exact = 0.5 * (A + A.T) @ x + b
    before = x.clone()
    # a forward difference or a step of eps instead of 2 eps would miss by ~1e-6 or ~1
    assert torch.allclose(bp.numerical_grad(quadratic, x), exact, atol=1e-8, rtol=0)
    assert torch.equal(x, before)  # x is not modified
    # any shape, non-contiguous input, a nonlinear f, against autograd
    X = torch.randn(3, 5, generator=g, dtype=torch.float64).T
    Xg = X.clone().requires_grad_()
    (auto,) = torch.autograd.grad(torch.sin(Xg).pow(2).sum() * Xg.exp().mean(), Xg)
    num = bp.numerical_grad(lambda t: torch.sin(t).pow(2).sum() * t.exp().mean(), X)
    assert num.shape == X.shape and torch.allclose(num, auto, atol=1e-8, rtol=0)
    # f may return a Python float
    assert torch.allclose(bp.numerical_grad(lambda t: float((t**2).sum()), x), 2 * x,
                          atol=1e-8, rtol=0)


def test_numerical_grad_errors():
    x = torch.zeros(3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"f must return a scalar, but f\(x \+ h e_0\)"):
        bp.numerical_grad(lambda t: t * 2, x)
    with pytest.raises(ValueError, match=r"f\(x \+ h e_0\) = nan"):
        bp.numerical_grad(lambda t: (t / t).sum(), x)
    with pytest.raises(TypeError, match="f must return a number"):
        bp.numerical_grad(lambda t: "one", x)
    with pytest.raises(TypeError, match="f must be a function"):
        bp.numerical_grad(3.0, x)
    with pytest.raises(TypeError, match="x must be a floating-point torch.Tensor"):
        bp.numerical_grad(torch.sum, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="eps must be > 0"):
        bp.numerical_grad(torch.sum, x, eps=0.0)
    with pytest.raises(TypeError, match="eps must be a positive finite number"):
        bp.numerical_grad(torch.sum, x, eps=True)
    with pytest.raises(ValueError, match="below the resolution of torch.float32"):
        bp.numerical_grad(torch.sum, torch.full((2,), 1e4), eps=1e-6)


def test_errors_name_the_argument():
    z = torch.randn(3, 4)
    with pytest.raises(ValueError, match="logits must be a floating-point tensor"):
        bp.cross_entropy(torch.ones(3, 4, dtype=torch.long), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"labels must be class ids in \[0, 4\)"):
        bp.cross_entropy(z, torch.tensor([0, 1, 4]))
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\)"):
        bp.cross_entropy(z, torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="labels must be an integer tensor"):
        bp.cross_entropy(z, torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"logits must have shape \(batch, n_classes\)"):
        bp.cross_entropy(torch.randn(2, 3, 4), torch.tensor([0, 1]))
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
    with pytest.raises(ValueError, match="q contains NaN or inf"):
        bp.attention(torch.full((2, 3), float("nan")), torch.randn(4, 3), torch.randn(4, 3))
    with pytest.raises(ValueError, match="x contains NaN or inf"):
        bp.layer_norm(torch.tensor([[1.0, float("inf")]]))
    with pytest.raises(ValueError, match="eps must be > 0 and finite"):
        bp.layer_norm(z, eps=float("inf"))
    with pytest.raises(ValueError, match=r"k has dtype torch.float64 on cpu but q has"):
        bp.attention(torch.randn(2, 3), torch.randn(4, 3).double(), torch.randn(4, 3))
    with pytest.raises(ValueError, match="do not broadcast"):
        bp.attention(torch.randn(2, 2, 3), torch.randn(3, 4, 3), torch.randn(3, 4, 3))
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        bp.attention(torch.randn(2, 3), torch.randn(4, 3), torch.randn(4, 3), torch.ones(2, 4))
    with pytest.raises(ValueError, match="mask of shape"):
        bp.attention(torch.randn(2, 3), torch.randn(4, 3), torch.randn(4, 3),
                     torch.ones(3, 4, dtype=torch.bool))
