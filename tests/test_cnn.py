"""lmcore.cnn against torch.nn.functional: outputs and gradients on random shapes (float32,
within 1e-5), the loop version, im2col against F.unfold, receptive fields, clear errors."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lmcore.cnn import (
    Conv2d,
    MaxPool2d,
    conv2d,
    conv2d_sliding,
    im2col,
    max_pool2d,
    receptive_field,
)

TOL = dict(atol=1e-5, rtol=1e-5)


@st.composite
def conv_case(draw):
    """Random batch (1 included), channels, kernel (1x1 included), stride, padding, size."""
    n, c_in, c_out = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    h = draw(st.integers(max(1, kh - 2 * padding[0]), 9))
    w = draw(st.integers(max(1, kw - 2 * padding[1]), 9))
    if draw(st.booleans()):  # also the int form of stride and padding
        stride, padding = stride[0], padding[0]
        h, w = max(h, kh - 2 * padding), max(w, kw - 2 * padding)
    seed = draw(st.integers(0, 2**31 - 1))
    return (n, c_in, h, w), (c_out, c_in, kh, kw), stride, padding, seed


def _leaves(seed, *shapes):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g).requires_grad_() for s in shapes]


def _grads(out, inputs, seed):
    """Backpropagate a fixed random upstream gradient, so every output element matters."""
    up = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed + 1))
    return torch.autograd.grad(out, inputs, up)


@settings(max_examples=150, deadline=None)
@given(conv_case(), st.booleans())
def test_conv2d_matches_torch_outputs_and_gradients(case, with_bias):
    xs, ws, stride, padding, seed = case
    x, w, b = _leaves(seed, xs, ws, (ws[0],))
    b = b if with_bias else None
    ours = conv2d(x, w, b, stride=stride, padding=padding)
    ref = F.conv2d(x, w, b, stride=stride, padding=padding)
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, **TOL)
    inputs = [x, w] + ([b] if with_bias else [])
    for g_ours, g_ref in zip(_grads(ours, inputs, seed), _grads(ref, inputs, seed)):
        torch.testing.assert_close(g_ours, g_ref, **TOL)


@settings(max_examples=60, deadline=None)
@given(conv_case())
def test_sliding_dot_product_equals_the_matrix_product(case):
    xs, ws, stride, padding, seed = case
    x, w, b = _leaves(seed, xs, ws, (ws[0],))
    slow = conv2d_sliding(x, w, b, stride=stride, padding=padding)
    torch.testing.assert_close(slow, F.conv2d(x, w, b, stride=stride, padding=padding), **TOL)
    for g_slow, g_ref in zip(_grads(slow, [x, w, b], seed),
                             _grads(F.conv2d(x, w, b, stride=stride, padding=padding),
                                    [x, w, b], seed)):
        torch.testing.assert_close(g_slow, g_ref, **TOL)


@settings(max_examples=60, deadline=None)
@given(conv_case())
def test_im2col_is_f_unfold(case):
    xs, ws, stride, padding, seed = case
    (x,) = _leaves(seed, xs)
    ours = im2col(x, ws[2:], stride=stride, padding=padding)
    torch.testing.assert_close(ours, F.unfold(x, ws[2:], stride=stride, padding=padding),
                               atol=0, rtol=0)


@st.composite
def pool_case(draw):
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = draw(st.one_of(st.none(), st.integers(1, 3),
                            st.tuples(st.integers(1, 3), st.integers(1, 3))))
    h, w = draw(st.integers(kh, 10)), draw(st.integers(kw, 10))
    kernel = (kh, kw) if kh != kw else kh
    return (n, c, h, w), kernel, stride, draw(st.integers(0, 2**31 - 1)), draw(st.booleans())


@settings(max_examples=150, deadline=None)
@given(pool_case())
def test_max_pool2d_matches_torch_outputs_and_gradients(case):
    shape, kernel, stride, seed, ties = case
    (x,) = _leaves(seed, shape)
    if ties:  # few distinct values: the gradient must go to the FIRST maximum, as in torch
        x = x.detach().round().clamp(-1, 1).requires_grad_()
    ours, ref = max_pool2d(x, kernel, stride), F.max_pool2d(x, kernel, stride)
    torch.testing.assert_close(ours, ref, atol=0, rtol=0)
    torch.testing.assert_close(_grads(ours, [x], seed)[0], _grads(ref, [x], seed)[0], **TOL)


def test_modules_copy_torch_and_agree():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, (3, 2), stride=(2, 1), padding=(1, 0))
    pool = nn.MaxPool2d(2)
    x = torch.randn(2, 3, 9, 8)
    ours = MaxPool2d.from_torch(pool)(Conv2d.from_torch(conv)(x))
    torch.testing.assert_close(ours, pool(conv(x)), **TOL)
    no_bias = nn.Conv2d(3, 4, 1, bias=False)
    torch.testing.assert_close(Conv2d.from_torch(no_bias)(x), no_bias(x), **TOL)
    assert Conv2d.from_torch(no_bias).bias is None


def test_conv2d_module_has_torch_shapes_and_init_scale():
    torch.manual_seed(0)
    ours, ref = Conv2d(16, 32, 3, padding=1), nn.Conv2d(16, 32, 3, padding=1)
    assert [p.shape for p in ours.parameters()] == [p.shape for p in ref.parameters()]
    bound = 1 / (16 * 9) ** 0.5  # both draw uniform(-bound, bound)
    assert 0.95 * bound < ours.weight.abs().max() <= bound
    assert 0 < ours.bias.abs().max() <= bound
    assert abs(ours.weight.std() - ref.weight.std()) < 0.1 * ref.weight.std()


def test_float64_and_training_step_gradients_flow():
    conv = Conv2d(1, 2, 3, padding=1).double()
    x = torch.randn(4, 1, 6, 6, dtype=torch.float64)
    out = MaxPool2d(2)(torch.relu(conv(x)))
    assert out.shape == (4, 2, 3, 3) and out.dtype == torch.float64
    out.sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


def test_receptive_field_matches_the_gradient_footprint():
    # conv3 s1 -> pool2 s2 -> conv3 s1 -> pool2 s2 -> conv3 s1
    layers = [(3, 1), (2, 2), (3, 1), (2, 2), (3, 1)]
    assert receptive_field(layers) == [3, 4, 8, 10, 18]
    # measure: which input pixels can change one unit in the middle of the last map? (A
    # max-pool passes gradient to one pixel per window, so pool with a 2x2 stride-2 sum,
    # which has the same geometry and sees every pixel.)
    x = torch.zeros(1, 1, 40, 40, requires_grad=True)
    ones3, ones2 = torch.ones(1, 1, 3, 3), torch.ones(1, 1, 2, 2)
    h = conv2d(x, ones3)
    h = conv2d(conv2d(conv2d(h, ones2, stride=2), ones3), ones2, stride=2)
    h = conv2d(h, ones3)
    c = h.shape[-1] // 2
    (g,) = torch.autograd.grad(h[0, 0, c, c], x)
    rows = g[0, 0].abs().sum(1).nonzero()
    assert rows.max() - rows.min() + 1 == 18


@pytest.mark.parametrize("call, message", [
    (lambda: conv2d(torch.randn(1, 3, 5, 5), torch.randn(4, 2, 3, 3)), "3 channels"),
    (lambda: conv2d(torch.randn(1, 1, 2, 2), torch.randn(1, 1, 3, 3)), "larger than the padded"),
    (lambda: conv2d(torch.randn(1, 1, 2, 2), torch.randn(1, 1, 5, 5), padding=1),
     "larger than the padded input 4x4"),
    (lambda: conv2d(torch.randn(3, 5, 5), torch.randn(1, 3, 3, 3)), "(N, C, H, W)"),
    (lambda: conv2d(torch.randn(1, 1, 5, 5), torch.randn(1, 3, 3)), "(C_out, C_in, kH, kW)"),
    (lambda: conv2d(torch.ones(1, 1, 5, 5, dtype=torch.long), torch.randn(1, 1, 3, 3)), "float"),
    (lambda: conv2d(torch.randn(1, 1, 5, 5), torch.randn(2, 1, 3, 3), torch.randn(3)), "bias"),
    (lambda: conv2d(torch.randn(1, 1, 5, 5), torch.randn(1, 1, 3, 3), stride=0), "stride=0"),
    (lambda: conv2d(torch.randn(1, 1, 5, 5), torch.randn(1, 1, 3, 3), stride=1.5), "stride"),
    (lambda: conv2d(torch.randn(1, 1, 5, 5), torch.randn(1, 1, 3, 3), padding=-1), "padding=-1"),
    (lambda: conv2d(torch.randn(1, 1, 5, 5), torch.randn(1, 1, 3, 3), padding="same"), "padding"),
    (lambda: conv2d(torch.randn(1, 1, 5, 5), torch.randn(1, 1, 3, 3), stride=(1, 2, 3)), "pair"),
    (lambda: max_pool2d(torch.randn(1, 1, 3, 3), 4), "larger than the padded"),
    (lambda: max_pool2d(torch.randn(1, 1, 3, 3), 0), "kernel_size=0"),
    (lambda: max_pool2d(torch.randn(1, 1, 3, 3), 2, stride=-1), "stride=-1"),
    (lambda: max_pool2d(torch.randn(9, 9), 2), "x[None]"),
    (lambda: im2col(torch.randn(1, 1, 3, 3), True), "kernel_size=True"),
    (lambda: Conv2d(0, 3, 3), "in_channels=0"),
    (lambda: Conv2d(1, 3, 3)(torch.randn(1, 2, 5, 5)), "C_in=1"),
    (lambda: Conv2d.from_torch(nn.Conv2d(2, 2, 3, dilation=2)), "dilation"),
    (lambda: Conv2d.from_torch(nn.Conv2d(2, 2, 3, padding="same")), "padding='same'"),
    (lambda: MaxPool2d.from_torch(nn.MaxPool2d(2, padding=1)), "padding=1"),
])
def test_bad_input_raises_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        call()


def test_wrong_types_raise_type_errors():
    with pytest.raises(TypeError, match="float64"):
        conv2d(torch.randn(1, 1, 5, 5), torch.randn(1, 1, 3, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="nn.Conv2d"):
        Conv2d.from_torch(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="nn.MaxPool2d"):
        MaxPool2d.from_torch(nn.AvgPool2d(2))
