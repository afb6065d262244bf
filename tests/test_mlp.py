"""lmcore.mlp: the hand-written backward pass checked against PyTorch's autograd.

Tolerances: float64 atol = rtol = 1e-10 (only rounding differs between the two paths);
float32 atol = rtol = 1e-5.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lmcore.mlp import ACTIVATIONS, MLP, mse_loss, softmax_cross_entropy

TOL = {torch.float64: {"atol": 1e-10, "rtol": 1e-10}, torch.float32: {"atol": 1e-5, "rtol": 1e-5}}


def _loss_and_target(loss, y_hat, gen):
    """(our loss, our grad, torch loss fn of the output) for a random target."""
    batch, k = y_hat.shape
    if loss == "mse":
        y = torch.randn(batch, k, generator=gen, dtype=torch.float64).to(y_hat.dtype)
        return (*mse_loss(y_hat, y), lambda out: 0.5 * ((out - y) ** 2).sum())
    labels = torch.randint(0, k, (batch,), generator=gen)
    return (*softmax_cross_entropy(y_hat, labels), lambda out: F.cross_entropy(out, labels))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("loss", ["mse", "ce"])
@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("sizes", [[3, 5, 2], [7, 4], [4, 8, 6, 3], [10, 16, 16, 16, 5]])
def test_backward_matches_autograd(sizes, activation, loss, dtype):
    gen = torch.Generator().manual_seed(sum(sizes) + len(activation))
    out_act = {"relu": None, "sigmoid": "sigmoid", "tanh": "tanh"}[activation] if loss == "mse" else None
    net = MLP(sizes, activation=activation, output_activation=out_act, seed=len(sizes), dtype=dtype)
    # non-zero biases, so the bias path is exercised too
    for b in net.biases:
        b += 0.1 * torch.randn(b.shape, generator=gen, dtype=torch.float64).to(dtype)
    x = torch.randn(6, sizes[0], generator=gen, dtype=torch.float64).to(dtype)

    ref = net.to_torch()
    x_ref = x.clone().requires_grad_(True)
    out = net.forward(x)
    ours, grad, torch_loss = _loss_and_target(loss, out, gen)
    ref_loss = torch_loss(ref(x_ref))
    ref_loss.backward()
    grad_x = net.backward(grad)

    torch.testing.assert_close(ours, ref_loss.detach(), **TOL[dtype])
    torch.testing.assert_close(grad_x, x_ref.grad, **TOL[dtype])
    for g, p in zip(net.grads(), ref.parameters()):
        assert g.shape == p.shape
        torch.testing.assert_close(g, p.grad, **TOL[dtype])


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_derivatives_match_autograd(name):
    f, df = ACTIVATIONS[name]
    z = torch.linspace(-4, 4, 81, dtype=torch.float64).requires_grad_(True)
    f(z).sum().backward()
    torch.testing.assert_close(df(z.detach()), z.grad, atol=1e-12, rtol=0)


def test_losses_match_torch():
    gen = torch.Generator().manual_seed(1)
    y_hat = torch.randn(5, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    for reduction, ref in (("sum", 0.5 * F.mse_loss(y_hat, y, reduction="sum")),
                           ("mean", 0.5 * F.mse_loss(y_hat, y, reduction="sum") / 5)):
        loss, grad = mse_loss(y_hat.detach(), y, reduction=reduction)
        (g_ref,) = torch.autograd.grad(ref, y_hat)
        torch.testing.assert_close(loss, ref.detach(), atol=1e-12, rtol=0)
        torch.testing.assert_close(grad, g_ref, atol=1e-12, rtol=0)
    # the mean reduction is NOT nn.MSELoss's mean (which has no 1/2 and divides by 5 * 3)
    assert not math.isclose(mse_loss(y_hat.detach(), y, "mean")[0].item(), F.mse_loss(y_hat, y).item())
    labels = torch.tensor([0, 2, 1, 2, 0])
    ref = F.cross_entropy(y_hat * 50, labels)  # large logits: the log-softmax must stay finite
    loss, grad = softmax_cross_entropy((y_hat * 50).detach(), labels)
    (g_ref,) = torch.autograd.grad(ref, y_hat)
    torch.testing.assert_close(loss, ref.detach(), atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(grad * 50, g_ref, atol=1e-10, rtol=1e-10)
    p = torch.softmax(y_hat.detach() * 50, dim=1)
    torch.testing.assert_close(grad, (p - F.one_hot(labels, 3)) / 5, atol=1e-12, rtol=0)


@pytest.mark.parametrize("act", [nn.ReLU, nn.Sigmoid, nn.Tanh])
def test_from_torch_forward_matches_sequential(act):
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Linear(4, 8), act(), nn.Linear(8, 8), act(), nn.Linear(8, 3)).double()
    net = MLP.from_torch(seq)
    assert net.sizes == [4, 8, 8, 3] and net.output_activation is None
    x = torch.randn(9, 4, dtype=torch.float64)
    torch.testing.assert_close(net.forward(x), seq(x).detach(), atol=1e-12, rtol=1e-12)
    # an output activation is kept too
    seq2 = nn.Sequential(nn.Linear(4, 2), nn.Sigmoid())
    net2 = MLP.from_torch(seq2)
    assert net2.output_activation == "sigmoid"
    torch.testing.assert_close(net2.forward(x.float()), seq2(x.float()).detach(), atol=1e-6, rtol=1e-6)


def test_to_torch_round_trip_and_independence():
    net = MLP([5, 7, 3], activation="tanh", output_activation="sigmoid", seed=3)
    seq = net.to_torch()
    assert [type(m) for m in seq] == [nn.Linear, nn.Tanh, nn.Linear, nn.Sigmoid]
    back = MLP.from_torch(seq)
    for a, b in zip(net.parameters(), back.parameters()):
        assert torch.equal(a, b)
    x = torch.randn(4, 5)
    torch.testing.assert_close(net.forward(x), seq(x).detach(), atol=1e-6, rtol=1e-6)
    with torch.no_grad():
        seq[0].weight.add_(1.0)  # a copy: changing the module leaves net unchanged
    assert torch.equal(net.weights[0], back.weights[0])
    assert not torch.equal(net.weights[0], seq[0].weight)


def test_sgd_step_matches_torch_optim_sgd():
    net = MLP([6, 10, 4], activation="relu", seed=5, dtype=torch.float64)
    seq = net.to_torch()
    opt = torch.optim.SGD(seq.parameters(), lr=0.3)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(8, 6, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 4, (8,), generator=gen)
    for _ in range(3):
        loss, grad = softmax_cross_entropy(net.forward(x), labels)
        net.backward(grad)
        net.sgd_step(0.3)
        opt.zero_grad()
        F.cross_entropy(seq(x), labels).backward()
        opt.step()
    for a, b in zip(net.parameters(), seq.parameters()):
        torch.testing.assert_close(a, b.detach(), atol=1e-10, rtol=1e-10)
    assert loss.item() < math.log(4)  # it learned something


def test_seed_is_deterministic_and_init_scale():
    a, b, c = MLP([64, 256, 10], seed=0), MLP([64, 256, 10], seed=0), MLP([64, 256, 10], seed=1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.weights[0], c.weights[0])
    assert abs(a.weights[0].std().item() - math.sqrt(2 / 64)) < 0.01  # He et al. (2015)
    g = MLP([64, 256, 10], activation="tanh")
    assert abs(g.weights[0].abs().max().item() - math.sqrt(6 / 320)) < 0.01  # Glorot & Bengio (2010)


# The chapter's worked example: the seed's 3-5-2 ReLU network, loss 1/2 sum (y - y_hat)^2.
def seed_e_network():
    net = MLP([3, 5, 2], activation="relu", dtype=torch.float64)
    net.weights = [torch.tensor([[0.2, -0.1, 0.4], [0.5, 0.3, -0.2], [-0.3, 0.8, 0.1],
                                 [0.1, -0.4, 0.6], [0.6, 0.2, -0.5]], dtype=torch.float64),
                   torch.tensor([[0.3, -0.2, 0.5, 0.1, 0.4], [-0.1, 0.4, 0.2, -0.3, 0.6]], dtype=torch.float64)]
    net.biases = [torch.tensor([0.1, 0.0, 0.2, 0.1, -0.3], dtype=torch.float64),
                  torch.tensor([0.1, -0.1], dtype=torch.float64)]
    return net


def test_seed_e_worked_example_numbers():
    net = seed_e_network()
    x = torch.tensor([[1.0, 0.5, -1.0]], dtype=torch.float64)
    y = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    y_hat = net.forward(x)
    z1, _ = net._cache[1]
    close = {"atol": 1e-12, "rtol": 0}
    torch.testing.assert_close(z1, torch.tensor([[-0.15, 0.85, 0.2, -0.6, 0.9]], dtype=torch.float64), **close)
    torch.testing.assert_close(y_hat, torch.tensor([[0.39, 0.82]], dtype=torch.float64), **close)
    loss, grad = mse_loss(y_hat, y)
    assert abs(loss.item() - 0.52225) < 1e-12
    net.backward(grad)
    dW1, db1, dW2, db2 = net.grads()
    torch.testing.assert_close(db2, torch.tensor([-0.61, 0.82], dtype=torch.float64), **close)
    torch.testing.assert_close(db1, torch.tensor([0.0, 0.45, -0.141, 0.0, 0.248], dtype=torch.float64), **close)
    torch.testing.assert_close(dW1[:, 0], db1, **close)  # x1 = 1.0
    torch.testing.assert_close(dW2[0], -0.61 * torch.relu(z1[0]), **close)
    net.sgd_step(0.1)
    assert abs(mse_loss(net.forward(x), y)[0].item() - 0.2376) < 1e-4


def test_error_messages():
    net = MLP([3, 5, 2])
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 3\), got \(4, 2\)"):
        net.forward(torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 3\), got \(3,\)"):
        net.forward(torch.zeros(3))
    with pytest.raises(ValueError, match="x must be a floating-point tensor.*int64"):
        net.forward(torch.zeros(4, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="x contains NaN or inf"):
        net.forward(torch.tensor([[0.0, float("nan"), 1.0]]))
    with pytest.raises(ValueError, match="x has dtype torch.float64.*weights has dtype torch.float32"):
        net.forward(torch.zeros(4, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        net.forward([[0.0, 1.0, 2.0]])
    with pytest.raises(RuntimeError, match="call forward"):
        MLP([3, 2]).backward(torch.zeros(1, 2))
    net.forward(torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"grad_output must have shape \(4, 2\)"):
        net.backward(torch.zeros(4, 3))
    with pytest.raises(RuntimeError, match="no gradients yet"):
        net.grads()
    logits = torch.zeros(4, 3)
    with pytest.raises(ValueError, match=r"labels must be class ids in \[0, 3\), got values from 0 to 3"):
        softmax_cross_entropy(logits, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match=r"labels must be class ids in \[0, 3\), got values from -1"):
        softmax_cross_entropy(logits, torch.tensor([-1, 1, 2, 0]))
    with pytest.raises(ValueError, match=r"labels must have shape \(4,\)"):
        softmax_cross_entropy(logits, torch.tensor([[0, 1, 2, 0]]))
    with pytest.raises(TypeError, match="labels must be an integer tensor"):
        softmax_cross_entropy(logits, torch.zeros(4))
    with pytest.raises(ValueError, match="logits contains NaN or inf"):
        softmax_cross_entropy(torch.full((4, 3), float("inf")), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"y must have the shape of y_hat"):
        mse_loss(torch.zeros(2, 2), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="reduction must be"):
        mse_loss(torch.zeros(2, 2), torch.zeros(2, 2), reduction="none")
    net.backward(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="lr must be a positive finite number"):
        net.sgd_step(float("nan"))
    with pytest.raises(ValueError, match="sizes must be a list of at least 2 positive ints"):
        MLP([3])
    with pytest.raises(ValueError, match=r"sizes\[0\] = True is not a positive int"):
        MLP([True, 2])  # a bool is an int to Python, but not a layer width
    with pytest.raises(ValueError, match=r"sizes\[1\] = 0 is not a positive int"):
        MLP([3, 0, 2])
    with pytest.raises(TypeError, match="sizes must be a list"):
        MLP(5)
    with pytest.raises(ValueError, match=r"seed=1180591620717411303424 is out of range"):
        MLP([3, 2], seed=2**70)
    with pytest.raises(TypeError, match="seed must be an int"):
        MLP([3, 2], seed=1.5)
    with pytest.raises(ValueError, match="dtype must be a floating dtype"):
        MLP([3, 2], dtype=torch.int64)
    with pytest.raises(TypeError, match="dtype must be a torch.dtype"):
        MLP([3, 2], dtype="float32")
    with pytest.raises(ValueError, match="device='tpu' is not a device"):
        MLP([3, 2], device="tpu")
    with pytest.raises(ValueError, match="lr must be a positive finite number, got True"):
        net.sgd_step(True)
    with pytest.raises(ValueError, match=r"logits must have shape \(batch, n_classes\) with both"):
        softmax_cross_entropy(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))  # mean of nothing
    with pytest.raises(ValueError, match=r"y_hat must have shape \(batch, k\) with both"):
        mse_loss(torch.zeros(0, 2), torch.zeros(0, 2), reduction="mean")
    with pytest.raises(ValueError, match="y has dtype torch.float64 on cpu, but y_hat has dtype torch.float32"):
        mse_loss(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.float64))
    net.forward(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="grad_output has dtype torch.float64 on cpu, but the output"):
        net.backward(torch.zeros(4, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="activation must be one of"):
        MLP([3, 2], activation="gelu")
    with pytest.raises(ValueError, match="output_activation must be one of"):
        MLP([3, 2], output_activation="softmax")
    with pytest.raises(TypeError, match="module must be an nn.Sequential"):
        MLP.from_torch(nn.Linear(3, 2))
    with pytest.raises(ValueError, match="got GELU at position 1"):
        MLP.from_torch(nn.Sequential(nn.Linear(3, 4), nn.GELU(), nn.Linear(4, 2)))
    with pytest.raises(ValueError, match="bias=True"):
        MLP.from_torch(nn.Sequential(nn.Linear(3, 2, bias=False)))
    with pytest.raises(ValueError, match="same activation"):
        MLP.from_torch(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)))
    broken = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        broken[2].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="nn.Linear number 1 has NaN or inf weights"):
        MLP.from_torch(broken)
