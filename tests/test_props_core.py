"""Properties and bad inputs for lmcore.mlp, lmcore.backprop and lmcore.device.

Two kinds of test, all deterministic (hypothesis with ``derandomize=True``):

* **properties** on random valid inputs: the hand-written losses, MLP backward, LayerNorm
  and attention agree with PyTorch (float64, tolerances 1e-9 unless stated), invariants
  hold (softmax ignores a shift of the logits, gradient rows sum to zero), a fully masked
  attention row is zero, never NaN;
* **bad inputs**, hand-picked and generated: each raises ``ValueError`` or ``TypeError``
  (``RuntimeError`` for a GPU this machine lacks, or for backward before forward) whose
  message names the argument. ``refuses`` checks that and counts the case.

``LMCORE_BAD_INPUT_REPORT=path pytest tests/test_props_core.py`` writes the number of bad
inputs tried, by module and outcome, to ``path`` (issue 10's closing note quotes it).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from badinputs import Ledger
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

from lmcore import attention as lm_attention
from lmcore import backprop as bp
from lmcore import device as dev
from lmcore import mlp

D64 = torch.float64
PROPS = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow])
BAD = settings(max_examples=25, deadline=None, derandomize=True, database=None,
               suppress_health_check=[HealthCheck.too_slow,
                                      HealthCheck.function_scoped_fixture])
LEDGER = Ledger("test_props_core")
TRIED = LEDGER.tried


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    LEDGER.write_report()


refuses = LEDGER.refuses


handled = LEDGER.handled


def t64(rows, cols, seed):
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed), dtype=D64)


# ===================================================================== properties (valid)
@PROPS
@given(batch=st.integers(1, 6), n_classes=st.integers(1, 7), seed=st.integers(0, 10**6),
       scale=st.sampled_from([1e-3, 1.0, 30.0, 300.0]), shift=st.floats(-1e3, 1e3))
def test_softmax_cross_entropy_matches_torch(batch, n_classes, seed, scale, shift):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, n_classes, generator=g, dtype=D64) * scale
    y = torch.randint(0, n_classes, (batch,), generator=g)
    loss, grad = mlp.softmax_cross_entropy(z, y)
    zg = z.clone().requires_grad_()
    ref = F.cross_entropy(zg, y)
    ref.backward()
    assert torch.isfinite(loss) and loss.item() >= 0
    assert abs(loss.item() - ref.item()) <= 1e-9 * max(1.0, ref.item())
    assert torch.allclose(grad, zg.grad, atol=1e-12, rtol=0)
    assert torch.allclose(grad.sum(1), torch.zeros(batch, dtype=D64), atol=1e-12)
    assert (grad.abs() <= 1 / batch + 1e-15).all()
    loss_s, grad_s = mlp.softmax_cross_entropy(z + shift, y)  # a shift changes nothing
    assert abs(loss_s.item() - loss.item()) <= 1e-9 * max(1.0, loss.item())
    assert torch.allclose(grad_s, grad, atol=1e-9, rtol=0)


@PROPS
@given(batch=st.integers(1, 5), k=st.integers(1, 4), seed=st.integers(0, 10**6),
       reduction=st.sampled_from(["sum", "mean"]))
def test_mse_loss_matches_autograd(batch, k, seed, reduction):
    y_hat, y = t64(batch, k, seed), t64(batch, k, seed + 1)
    loss, grad = mlp.mse_loss(y_hat, y, reduction)
    yg = y_hat.clone().requires_grad_()
    ref = 0.5 * ((yg - y) ** 2).sum() / (batch if reduction == "mean" else 1)
    ref.backward()
    assert abs(loss.item() - ref.item()) < 1e-12 and torch.allclose(grad, yg.grad, atol=1e-12)


@PROPS
@given(sizes=st.lists(st.integers(1, 6), min_size=2, max_size=4), batch=st.integers(1, 5),
       activation=st.sampled_from(sorted(mlp.ACTIVATIONS)),
       output_activation=st.sampled_from([None, *sorted(mlp.ACTIVATIONS)]),
       seed=st.integers(0, 2**64 - 1))
def test_mlp_backward_matches_autograd(sizes, batch, activation, output_activation, seed):
    net = mlp.MLP(sizes, activation, output_activation, seed=seed, dtype=D64)
    x = t64(batch, sizes[0], seed % 1000)
    upstream = t64(batch, sizes[-1], seed % 1000 + 1)
    out = net.forward(x)
    grad_x = net.backward(upstream)
    ref = net.to_torch()
    xg = x.clone().requires_grad_()
    ref_out = ref(xg)
    ref_out.backward(upstream)
    assert torch.allclose(out, ref_out.detach(), atol=1e-12)
    assert torch.allclose(grad_x, xg.grad, atol=1e-10)
    for mine, p in zip(net.grads(), ref.parameters()):
        assert torch.allclose(mine, p.grad, atol=1e-10)
    back = mlp.MLP.from_torch(ref)  # the round trip keeps every weight
    assert all(torch.equal(a, b) for a, b in zip(back.parameters(), net.parameters()))


@PROPS
@given(lead=st.lists(st.integers(1, 3), max_size=2), lq=st.integers(1, 5),
       lk=st.integers(1, 5), d=st.integers(1, 4), dv=st.integers(1, 3),
       seed=st.integers(0, 10**6), p_keep=st.sampled_from([0.0, 0.3, 0.7, 1.0]))
def test_attention_agrees_with_lmcore_attention(lead, lq, lk, d, dv, seed, p_keep):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(*lead, n, m, generator=g, dtype=D64, requires_grad=True)
               for n, m in ((lq, d), (lk, d), (lk, dv)))
    mask = torch.rand(*lead, lq, lk, generator=g) < p_keep  # rows may be fully masked
    out, p, _ = bp.attention_forward(q, k, v, mask)
    ref_out, ref_p = lm_attention.scaled_dot_product_attention(q, k, v, mask)
    assert torch.isfinite(out).all() and torch.isfinite(p).all()
    assert torch.allclose(out, ref_out, atol=1e-12) and torch.allclose(p, ref_p, atol=1e-12)
    blind = ~mask.any(-1)
    assert (p[blind] == 0).all() and (out[blind] == 0).all()
    do = torch.randn(out.shape, generator=g, dtype=D64)
    ours = torch.autograd.grad(bp.attention(q, k, v, mask), (q, k, v), do)
    theirs = torch.autograd.grad(ref_out, (q, k, v), do)
    for a, r in zip(ours, theirs):
        assert a.shape == r.shape and torch.allclose(a, r, atol=1e-10)
    if blind.any():
        handled("backprop")


@PROPS
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3), seed=st.integers(0, 10**6),
       eps=st.sampled_from([1e-12, 1e-5, 0.1, 10.0]), affine=st.booleans())
def test_layer_norm_matches_torch(shape, seed, eps, affine):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(*shape, generator=g, dtype=D64) * 3).requires_grad_()
    d = shape[-1]
    w = torch.randn(d, generator=g, dtype=D64, requires_grad=True) if affine else None
    b = torch.randn(d, generator=g, dtype=D64, requires_grad=True) if affine else None
    out, ref = bp.layer_norm(x, w, b, eps), F.layer_norm(x, (d,), w, b, eps)
    assert torch.allclose(out, ref, atol=1e-9)
    inputs = tuple(t for t in (x, w, b) if t is not None)
    dy = torch.randn(out.shape, generator=g, dtype=D64)
    for a, r in zip(torch.autograd.grad(out, inputs, dy), torch.autograd.grad(ref, inputs, dy)):
        assert torch.allclose(a, r, atol=1e-6 if eps == 1e-12 else 1e-9)


@PROPS
@given(n=st.integers(1, 6), seed=st.integers(0, 10**6))
def test_numerical_grad_matches_autograd(n, seed):
    a, b, x = (t64(1, n, seed + i)[0] for i in range(3))

    def f(t):
        return (a * t**3).sum() + torch.sin(b * t).sum()
    xg = x.clone().requires_grad_()
    (auto,) = torch.autograd.grad(f(xg), xg)
    num = bp.numerical_grad(f, x)
    assert torch.allclose(num, auto, atol=1e-7 * (1 + auto.abs().max().item()), rtol=0)


@PROPS
@given(seed=st.integers(0, 2**64 - 1))
def test_seed_everything_reproduces_for_every_valid_seed(seed):
    gen = dev.seed_everything(seed)
    first = (torch.rand(3), np.random.rand(), torch.rand(2, generator=gen))
    gen = dev.seed_everything(seed)
    again = (torch.rand(3), np.random.rand(), torch.rand(2, generator=gen))
    assert torch.equal(first[0], again[0]) and first[1] == again[1]
    assert torch.equal(first[2], again[2]) and gen.initial_seed() == seed


@PROPS
@given(spelling=st.sampled_from(["cpu", "CPU", " cpu ", "Cpu"]))
def test_get_device_accepts_spellings(spelling):
    assert dev.get_device(spelling) == torch.device("cpu")


# ===================================================================== bad inputs, by hand
def _net():
    return mlp.MLP([3, 4, 2], seed=0)


def _after_forward():
    net = _net()
    net.forward(torch.zeros(5, 3))
    return net


def _trained():
    net = _after_forward()
    net.backward(torch.zeros(5, 2))
    return net


def _nan_linear():
    seq = nn.Sequential(nn.Linear(3, 2))
    with torch.no_grad():
        seq[0].bias[1] = float("inf")
    return seq


Z = torch.zeros(4, 3)
Y = torch.tensor([0, 1, 2, 0])
LONG = torch.zeros(4, dtype=torch.long)
Q, K, V = torch.zeros(2, 3), torch.zeros(4, 3), torch.zeros(4, 5)
CASES = [
    # module, argument(s) the message must name, the call, the exception type(s)
    ("mlp", "sizes", lambda: mlp.MLP([True, 2]), ValueError),
    ("mlp", "sizes", lambda: mlp.MLP([3, False, 2]), ValueError),
    ("mlp", "sizes", lambda: mlp.MLP([3.0, 2]), ValueError),
    ("mlp", "sizes", lambda: mlp.MLP([3, -1]), ValueError),
    ("mlp", "sizes", lambda: mlp.MLP([3]), ValueError),
    ("mlp", "sizes", lambda: mlp.MLP(None), TypeError),
    ("mlp", "sizes", lambda: mlp.MLP("32"), TypeError),
    ("mlp", "activation", lambda: mlp.MLP([3, 2], activation=["relu"]), ValueError),
    ("mlp", "activation", lambda: mlp.MLP([3, 2], activation=None), ValueError),
    ("mlp", "output_activation", lambda: mlp.MLP([3, 2], output_activation="softmax"),
     ValueError),
    ("mlp", "seed", lambda: mlp.MLP([3, 2], seed=2**70), ValueError),
    ("mlp", "seed", lambda: mlp.MLP([3, 2], seed=-1), ValueError),
    ("mlp", "seed", lambda: mlp.MLP([3, 2], seed=None), TypeError),
    ("mlp", "dtype", lambda: mlp.MLP([3, 2], dtype=torch.int64), ValueError),
    ("mlp", "dtype", lambda: mlp.MLP([3, 2], dtype="float32"), TypeError),
    ("mlp", "device", lambda: mlp.MLP([3, 2], device="tpu"), ValueError),
    ("mlp", "device", lambda: mlp.MLP([3, 2], device=0), TypeError),
    ("mlp", "x", lambda: _net().forward(torch.zeros(5, 3, dtype=D64)), ValueError),
    ("mlp", "x", lambda: _net().forward(torch.zeros(5, 4)), ValueError),
    ("mlp", "x", lambda: _net().forward(np.zeros((5, 3))), TypeError),
    ("mlp", "forward", lambda: _net().backward(torch.zeros(5, 2)), RuntimeError),
    ("mlp", "grad_output", lambda: _after_forward().backward(torch.zeros(5, 2, dtype=D64)),
     ValueError),
    ("mlp", "grad_output", lambda: _after_forward().backward(torch.zeros(2, 5)), ValueError),
    ("mlp", "lr", lambda: _trained().sgd_step(True), ValueError),
    ("mlp", "lr", lambda: _trained().sgd_step(torch.tensor(0.1)), ValueError),
    ("mlp", "backward", lambda: _net().sgd_step(0.1), RuntimeError),
    ("mlp", "logits", lambda: mlp.softmax_cross_entropy(torch.zeros(0, 3), LONG[:0]),
     ValueError),
    ("mlp", "logits", lambda: mlp.softmax_cross_entropy(torch.zeros(4, 0), LONG), ValueError),
    ("mlp", "logits", lambda: mlp.softmax_cross_entropy(Z.long(), Y), ValueError),
    ("mlp", "labels", lambda: mlp.softmax_cross_entropy(Z, Y - 100), ValueError),
    ("mlp", "labels", lambda: mlp.softmax_cross_entropy(Z, Y.bool()), TypeError),
    ("mlp", "labels", lambda: mlp.softmax_cross_entropy(Z, Y.tolist()), TypeError),
    ("mlp", "y_hat", lambda: mlp.mse_loss(torch.zeros(0, 2), torch.zeros(0, 2), "mean"),
     ValueError),
    ("mlp", "y", lambda: mlp.mse_loss(Z, Z.double()), ValueError),
    ("mlp", "reduction", lambda: mlp.mse_loss(Z, Z, reduction="none"), ValueError),
    ("mlp", "module", lambda: mlp.MLP.from_torch(_nan_linear()), ValueError),
    ("mlp", "module", lambda: mlp.MLP.from_torch(nn.Sequential()), ValueError),
    ("mlp", "module", lambda: mlp.MLP.from_torch(
        nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.ReLU(), nn.Linear(4, 2))), ValueError),
    ("backprop", "logits", lambda: bp.cross_entropy(torch.full((2, 3), math.nan), Y[:2]),
     ValueError),
    ("backprop", "labels", lambda: bp.cross_entropy(Z, Y + 1), ValueError),
    ("backprop", "x", lambda: bp.layer_norm(torch.zeros(2, 0)), ValueError),
    ("backprop", "x", lambda: bp.layer_norm(torch.tensor([[1.0, math.nan]])), ValueError),
    ("backprop", "eps", lambda: bp.layer_norm(Z, eps="1e-5"), TypeError),
    ("backprop", "eps", lambda: bp.layer_norm(Z, eps=math.inf), ValueError),
    ("backprop", "weight", lambda: bp.layer_norm(Z, torch.ones(3, dtype=D64)), ValueError),
    ("backprop", "q", lambda: bp.attention(torch.full((2, 3), math.inf), K, V), ValueError),
    ("backprop", "q", lambda: bp.attention(torch.zeros(2, 0), K[:, :0], V), ValueError),
    ("backprop", ("k", "q"), lambda: bp.attention(Q, K.double(), V), ValueError),
    ("backprop", "broadcast", lambda: bp.attention(Q.expand(2, 2, 3), K.expand(3, 4, 3),
                                                   V.expand(3, 4, 5)), ValueError),
    ("backprop", "mask", lambda: bp.attention(Q, K, V, torch.ones(2, 4)), TypeError),
    ("backprop", "mask", lambda: bp.attention(Q, K, V, torch.ones(5, 2, 4, dtype=torch.bool)),
     ValueError),
    ("backprop", "f", lambda: bp.numerical_grad(None, Q), TypeError),
    ("backprop", "f", lambda: bp.numerical_grad(lambda t: t, Q), ValueError),
    ("backprop", "f", lambda: bp.numerical_grad(lambda t: t.sum() / 0 * 0, Q), ValueError),
    ("backprop", "x", lambda: bp.numerical_grad(torch.sum, [1.0, 2.0]), TypeError),
    ("backprop", "eps", lambda: bp.numerical_grad(torch.sum, Q, eps=-1e-6), ValueError),
    ("device", "seed", lambda: dev.seed_everything(2**70), ValueError),
    ("device", "seed", lambda: dev.seed_everything(2**64), ValueError),
    ("device", "seed", lambda: dev.seed_everything(-5), ValueError),
    ("device", "seed", lambda: dev.seed_everything(3.0), TypeError),
    ("device", "seed", lambda: dev.seed_everything(False), TypeError),
    ("device", "device", lambda: dev.pick(1, 2, device="gpu"), ValueError),
    ("device", "device", lambda: dev.pick(1, 2, device=1), TypeError),
    ("device", "device", lambda: dev.is_accelerator(None), TypeError),
    ("device", "preferred", lambda: dev.get_device("cuda:one"), ValueError),
    ("device", "preferred", lambda: dev.get_device("cpu:0"), ValueError),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_is_a_clear_error(case):
    module, names, fn, exc = case
    refuses(module, names, fn, exc)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_missing_gpu_is_a_clear_error():
    refuses("mlp", "device", lambda: mlp.MLP([3, 2], device="cuda"), RuntimeError)
    refuses("device", "device", lambda: dev.as_device("cuda:0", available=True), RuntimeError)


# ===================================================================== bad inputs, generated
_not_a_size = st.one_of(st.booleans(), st.integers(max_value=0), st.floats(),
                        st.text(max_size=3), st.none())


@BAD
@given(good=st.lists(st.integers(1, 5), max_size=3), bad=_not_a_size, at=st.integers(0, 3))
def test_generated_bad_sizes(good, bad, at):
    sizes = good[:at] + [bad] + good[at:]
    refuses("mlp", "sizes", lambda: mlp.MLP(sizes))


@BAD
@given(name=st.one_of(st.text(max_size=8), st.integers(), st.none()))
def test_generated_bad_activation(name):
    assume(name not in mlp.ACTIVATIONS)
    refuses("mlp", "activation", lambda: mlp.MLP([2, 2], activation=name))


@BAD
@given(seed=st.one_of(st.integers(max_value=-1), st.integers(min_value=2**64),
                      st.floats(), st.text(max_size=3), st.booleans()))
def test_generated_bad_seeds(seed):
    refuses("device", "seed", lambda: dev.seed_everything(seed))
    refuses("mlp", "seed", lambda: mlp.MLP([2, 2], seed=seed))


def _valid_device_text(text):
    choice = text.strip().lower()
    kind, _, index = choice.partition(":")
    return choice in ("auto", "cpu", "cuda", "mps") or (
        kind == "cuda" and index.isascii() and index.isdigit())


@BAD
@given(text=st.one_of(st.text(max_size=8), st.from_regex(r"cuda:.{1,3}", fullmatch=True)))
def test_generated_bad_device_names(text, monkeypatch):
    assume(not _valid_device_text(text))
    refuses("device", "preferred", lambda: dev.get_device(text))
    monkeypatch.setenv("LMCORE_DEVICE", text.replace("\x00", ""))
    assume(not _valid_device_text(text.replace("\x00", "")))
    refuses("device", "LMCORE_DEVICE", dev.get_device)


@BAD
@given(lr=st.one_of(st.floats(max_value=0.0), st.just(math.inf), st.just(math.nan),
                    st.booleans(), st.text(max_size=3), st.none()))
def test_generated_bad_learning_rates(lr):
    net = _trained()
    before = [p.clone() for p in net.parameters()]
    refuses("mlp", "lr", lambda: net.sgd_step(lr))
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))  # untouched


@BAD
@given(rows=st.integers(1, 4), cols=st.integers(1, 4), at=st.integers(0, 15),
       value=st.sampled_from([math.nan, math.inf, -math.inf]),
       where=st.sampled_from(["logits", "x", "grad_output", "y", "q", "numerical_grad"]))
def test_generated_nan_never_passes(rows, cols, at, value, where):
    t = torch.zeros(rows, cols)
    t.view(-1)[at % t.numel()] = value
    if where == "logits":
        refuses("mlp", "logits", lambda: mlp.softmax_cross_entropy(t, LONG[:rows]))
    elif where == "x":
        refuses("mlp", "x", lambda: mlp.MLP([cols, 2]).forward(t))
    elif where == "grad_output":
        net = mlp.MLP([2, cols])
        net.forward(torch.zeros(rows, 2))
        refuses("mlp", "grad_output", lambda: net.backward(t))
    elif where == "y":
        refuses("mlp", "y", lambda: mlp.mse_loss(torch.zeros(rows, cols), t))
    elif where == "q":
        refuses("backprop", "q", lambda: bp.attention(t, torch.zeros(2, cols), Q[:, :1]))
    else:
        refuses("backprop", "f(", lambda: bp.numerical_grad(lambda u: (u * t).sum(),
                                                             torch.ones(rows, cols)))


@BAD
@given(batch=st.integers(1, 4), n_classes=st.integers(1, 4),
       label=st.one_of(st.integers(max_value=-1), st.integers(min_value=4)))
def test_generated_labels_out_of_range(batch, n_classes, label):
    labels = torch.zeros(batch, dtype=torch.long)
    assume(label >= n_classes or label < 0)
    assume(-(2**63) <= label < 2**63)
    labels[-1] = label
    refuses("mlp", "labels", lambda: mlp.softmax_cross_entropy(torch.zeros(batch, n_classes),
                                                               labels))
    refuses("backprop", "labels", lambda: bp.cross_entropy(torch.zeros(batch, n_classes),
                                                           labels))


@BAD
@given(eps=st.one_of(st.floats(max_value=0.0), st.just(math.inf), st.just(math.nan),
                     st.booleans(), st.text(max_size=2), st.none()))
def test_generated_bad_eps(eps):
    refuses("backprop", "eps", lambda: bp.layer_norm(Z, eps=eps))
    refuses("backprop", "eps", lambda: bp.numerical_grad(torch.sum, Z, eps=eps))


@BAD
@given(x=st.floats(1e3, 1e6), sign=st.sampled_from([1.0, -1.0]))
def test_generated_step_below_float32_resolution(x, sign):
    """In float32, x +- 1e-6 rounds back to x for |x| >= 1e3: the step would be 0."""
    refuses("backprop", "eps", lambda: bp.numerical_grad(torch.sum, torch.tensor([sign * x])))


@BAD
@given(lq=st.integers(1, 4), lk=st.integers(1, 4), extra=st.integers(1, 3))
def test_generated_mask_shapes(lq, lk, extra):
    q, k, v = torch.zeros(lq, 2), torch.zeros(lk, 2), torch.zeros(lk, 3)
    bad_shape = (lq + extra, lk) if extra % 2 else (lq, lk + extra)
    refuses("backprop", "mask", lambda: bp.attention(q, k, v,
                                                     torch.ones(bad_shape, dtype=torch.bool)))


@BAD
@given(lq=st.integers(1, 4), lk=st.integers(1, 4), seed=st.integers(0, 10**6))
def test_generated_fully_masked_attention_is_zero(lq, lk, seed):
    """A mask that hides every key from every query: zeros, not NaN (issue 10)."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(n, m, generator=g) for n, m in ((lq, 2), (lk, 2), (lk, 3)))
    out = bp.attention(q, k, v, torch.zeros(lq, lk, dtype=torch.bool))
    assert torch.equal(out, torch.zeros(lq, 3))
    handled("backprop")
