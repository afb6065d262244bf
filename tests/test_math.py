"""One test per derivation of the chapter "The math, derived and verified" (08_math).

Each test writes the closed-form formula out and compares it with (a) PyTorch's autograd
and (b) central finite differences in float64 (lmcore.backprop.numerical_grad), so
changing a formula (a sign, a missing factor, a transpose) makes the test fail.
Tolerances: closed form vs autograd 1e-10; vs finite differences (step 1e-6) 1e-6;
optimizer steps vs torch.optim 1e-12.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from torch.autograd.functional import jacobian

from lmcore import backprop as bp
from lmcore import mlp
from lmcore.backprop import numerical_grad
from lmcore.rnn import LSTMCell

D64 = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=gen(seed), dtype=D64)


def close(a, b, tol):
    return torch.allclose(a, b, atol=tol, rtol=0)


def test_linear_layer_gradients():
    W, b, x, u = randn(4, 3, seed=1), randn(4, seed=2), randn(3, seed=3), randn(4, seed=4)
    # vector form: y = W x + b, L = u . y  (u = dL/dy from above)
    dW, db, dx = torch.outer(u, x), u, W.T @ u
    Wg, bg, xg = (t.clone().requires_grad_() for t in (W, b, x))
    ((Wg @ xg + bg) @ u).backward()
    assert close(dW, Wg.grad, 1e-10) and close(db, bg.grad, 1e-10) and close(dx, xg.grad, 1e-10)
    assert close(dW, numerical_grad(lambda W_: (W_ @ x + b) @ u, W), 1e-6)
    # batched form: Y = X W^T + b, G = dL/dY: dW = G^T X, db = column sums of G, dX = G W
    X, G = randn(5, 3, seed=5), randn(5, 4, seed=6)
    dW, db, dX = G.T @ X, G.sum(0), G @ W
    Wg, bg, Xg = (t.clone().requires_grad_() for t in (W, b, X))
    ((Xg @ Wg.T + bg) * G).sum().backward()
    assert close(dW, Wg.grad, 1e-10) and close(db, bg.grad, 1e-10) and close(dX, Xg.grad, 1e-10)
    assert close(dX, numerical_grad(lambda X_: ((X_ @ W.T + b) * G).sum(), X), 1e-6)


@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh"])
def test_activation_derivatives(name):
    f, fprime = mlp.ACTIVATIONS[name]
    z = torch.linspace(-4, 4, 81, dtype=D64) + 0.01  # avoid ReLU's kink exactly at 0
    closed = {"relu": (z > 0).to(D64), "sigmoid": torch.sigmoid(z) * (1 - torch.sigmoid(z)),
              "tanh": 1 - torch.tanh(z) ** 2}[name]
    zg = z.clone().requires_grad_()
    f(zg).sum().backward()
    assert close(fprime(z), closed, 1e-12)
    assert close(closed, zg.grad, 1e-10)
    assert close(closed, numerical_grad(lambda t: f(t).sum(), z), 1e-6)
    peak = {"relu": 1.0, "sigmoid": 0.25, "tanh": 1.0}[name]  # the largest slope
    assert abs(fprime(torch.zeros(1, dtype=D64)).item() - (peak if name != "relu" else 0.0)) < 1e-12
    assert closed.max().item() <= peak + 1e-12


def test_softmax_jacobian():
    z = randn(5, seed=7)
    p = torch.softmax(z, 0)
    J = torch.diag(p) - torch.outer(p, p)
    assert close(J, jacobian(lambda t: torch.softmax(t, 0), z), 1e-10)
    for i in range(5):
        assert close(J[i], numerical_grad(lambda t, i=i: torch.softmax(t, 0)[i], z), 1e-6)
    assert close(J.sum(1), torch.zeros(5, dtype=D64), 1e-12)  # softmax ignores a shift of z


def test_softmax_cross_entropy_gradient():
    z, y = randn(6, 4, seed=8), torch.tensor([0, 3, 1, 1, 2, 0])
    p = torch.softmax(z, 1)
    closed = (p - F.one_hot(y, 4).to(D64)) / 6
    loss, grad = mlp.softmax_cross_entropy(z, y)
    assert close(grad, closed, 1e-12)
    assert abs(loss.item() - F.cross_entropy(z, y).item()) < 1e-12
    zg = z.clone().requires_grad_()
    F.cross_entropy(zg, y).backward()
    assert close(closed, zg.grad, 1e-10)
    assert close(closed, numerical_grad(lambda t: F.cross_entropy(t, y), z), 1e-6)
    zg = z.clone().requires_grad_()
    bp.cross_entropy(zg, y).backward()   # the autograd wrapper uses the same formula
    assert close(closed, zg.grad, 1e-12)


def test_mse_gradient():
    y_hat, y = randn(3, 2, seed=9), randn(3, 2, seed=10)
    closed = y_hat - y  # L = 1/2 sum (y - y_hat)^2
    _, grad = mlp.mse_loss(y_hat, y)
    assert close(grad, closed, 1e-12)
    assert close(closed, numerical_grad(lambda t: 0.5 * ((y - t) ** 2).sum(), y_hat), 1e-6)
    g = y_hat.clone().requires_grad_()
    (0.5 * ((y - g) ** 2).sum()).backward()
    assert close(closed, g.grad, 1e-10)


def test_mlp_backprop_352():
    net = mlp.MLP([3, 5, 2], activation="relu", seed=0, dtype=D64)
    x, y = randn(4, 3, seed=11), randn(4, 2, seed=12)
    W1, b1, W2, b2 = net.parameters()
    z1 = x @ W1.T + b1
    a1 = torch.relu(z1)
    y_hat = a1 @ W2.T + b2
    d2 = y_hat - y                       # dL/dz2 (linear output, L = 1/2 sum (y - y_hat)^2)
    dW2, db2 = d2.T @ a1, d2.sum(0)
    d1 = (d2 @ W2) * (z1 > 0).to(D64)    # chain rule back through W2 and ReLU
    dW1, db1 = d1.T @ x, d1.sum(0)
    closed = [dW1, db1, dW2, db2]
    net.backward(mlp.mse_loss(net.forward(x), y)[1])
    for a, b in zip(closed, net.grads()):
        assert close(a, b, 1e-12)
    model = net.to_torch()
    (0.5 * ((y - model(x)) ** 2).sum()).backward()
    for a, p in zip(closed, model.parameters()):
        assert close(a, p.grad, 1e-10)

    def loss_of_W1(W):
        return 0.5 * ((y - (torch.relu(x @ W.T + b1) @ W2.T + b2)) ** 2).sum()
    assert close(dW1, numerical_grad(loss_of_W1, W1), 1e-6)


def test_layernorm_backward():
    x, w, b, dy = randn(3, 6, seed=13), randn(6, seed=14), randn(6, seed=15), randn(3, 6, seed=16)
    mu, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
    rstd = 1 / torch.sqrt(var + 1e-5)
    xhat = (x - mu) * rstd
    g = dy * w
    dx = rstd * (g - g.mean(-1, keepdim=True) - xhat * (g * xhat).mean(-1, keepdim=True))
    dw, db = (dy * xhat).sum(0), dy.sum(0)
    _, cache = bp.layer_norm_forward(x, w, b)
    for a, c in zip((dx, dw, db), bp.layer_norm_backward(dy, cache)):
        assert close(a, c, 1e-12)
    xg, wg, bg = (t.clone().requires_grad_() for t in (x, w, b))
    F.layer_norm(xg, (6,), wg, bg, 1e-5).backward(dy)
    assert close(dx, xg.grad, 1e-10) and close(dw, wg.grad, 1e-10) and close(db, bg.grad, 1e-10)
    assert close(dx, numerical_grad(lambda t: (F.layer_norm(t, (6,), w, b, 1e-5) * dy).sum(), x), 1e-6)
    assert close(dx.sum(-1), torch.zeros(3, dtype=D64), 1e-10)  # shifting x changes nothing


def test_residual_jacobian():
    W, x = randn(4, 4, seed=17) * 0.1, randn(4, seed=18)
    Jf = torch.diag(1 - torch.tanh(W @ x) ** 2) @ W
    closed = torch.eye(4, dtype=D64) + Jf       # d(x + f(x))/dx = I + J_f
    assert close(closed, jacobian(lambda t: t + torch.tanh(W @ t), x), 1e-10)
    # through 30 such layers the plain chain shrinks like ||J_f||^30, the residual one does not
    Ws = [randn(4, 4, seed=100 + i) * 0.1 for i in range(30)]

    def deep(t, residual):
        for Wi in Ws:
            t = t + torch.tanh(Wi @ t) if residual else torch.tanh(Wi @ t)
        return t
    plain = torch.linalg.matrix_norm(jacobian(lambda t: deep(t, False), x), 2).item()
    res = torch.linalg.matrix_norm(jacobian(lambda t: deep(t, True), x), 2).item()
    assert plain < 1e-10 and res > 0.5


def test_attention_backward():
    q, k, v, do = randn(3, 4, seed=19), randn(5, 4, seed=20), randn(5, 2, seed=21), randn(3, 2, seed=22)
    s = q @ k.T / math.sqrt(4)
    P = torch.softmax(s, -1)
    dV = P.T @ do
    dP = do @ v.T
    dS = P * (dP - (dP * P).sum(-1, keepdim=True))
    dQ, dK = dS @ k / math.sqrt(4), dS.T @ q / math.sqrt(4)
    *_, cache = bp.attention_forward(q, k, v)
    for a, c in zip((dQ, dK, dV), bp.attention_backward(do, cache)):
        assert close(a, c, 1e-12)
    qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
    F.scaled_dot_product_attention(qg, kg, vg).backward(do)
    assert close(dQ, qg.grad, 1e-10) and close(dK, kg.grad, 1e-10) and close(dV, vg.grad, 1e-10)
    assert close(dK, numerical_grad(lambda t: (F.scaled_dot_product_attention(q, t, v) * do).sum(), k), 1e-6)


def test_attention_scaling_variance():
    g = gen(23)
    for d in (4, 16, 64, 256):
        q, k = torch.randn(20000, d, generator=g), torch.randn(20000, d, generator=g)
        dots = (q * k).sum(-1)
        assert abs(dots.var().item() / d - 1) < 0.05          # Var(q.k) = d_k
        assert abs((dots / math.sqrt(d)).var().item() - 1) < 0.05  # scaled: variance 1


def test_bptt_vanishing_bound():
    H, T = 6, 12
    W = randn(H, H, seed=24) * 0.15
    xs = randn(T, H, seed=25)
    h0 = randn(H, seed=26)
    hs, pre = [h0], []
    for t in range(T):
        pre.append(W @ hs[-1] + xs[t])
        hs.append(torch.tanh(pre[-1]))
    steps = [torch.diag(1 - torch.tanh(a) ** 2) @ W for a in pre]  # dh_t/dh_{t-1}
    closed = torch.eye(H, dtype=D64)
    for J in steps:
        closed = J @ closed                                        # chain rule in time

    def run(h):
        for t in range(T):
            h = torch.tanh(W @ h + xs[t])
        return h
    assert close(closed, jacobian(run, h0), 1e-10)
    norm = torch.linalg.matrix_norm(closed, 2).item()
    prod = math.prod(torch.linalg.matrix_norm(J, 2).item() for J in steps)
    bound = (1.0 * torch.linalg.matrix_norm(W, 2).item()) ** T     # gamma = max tanh' = 1
    assert norm <= prod * (1 + 1e-9) and prod <= bound * (1 + 1e-9)
    assert bound < 1e-2  # ||W|| < 1: the gradient vanishes geometrically


def test_lstm_cell_state_gradient():
    torch.manual_seed(0)
    cell = LSTMCell(3, 4).double()
    x, h, c = randn(1, 3, seed=27), randn(1, 4, seed=28), randn(1, 4, seed=29)
    pre = x @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh
    f = torch.sigmoid(pre[:, 4:8])[0]
    J = jacobian(lambda c_: cell(x, (h, c_))[1], c)[0, :, 0, :]
    assert close(J, torch.diag(f), 1e-10)  # dc_t/dc_{t-1} = diag(f_t), h_{t-1} held fixed
    assert close(torch.diag(f), numerical_grad(lambda c_: cell(x, (h, c_))[1].sum(), c)[0].diag(), 1e-6)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_momentum_update(momentum):
    target = randn(5, seed=30)
    p0 = randn(5, seed=31)
    lr = 0.1
    p_t = p0.clone().requires_grad_()
    opt = torch.optim.SGD([p_t], lr=lr, momentum=momentum)
    p, vel = p0.clone(), torch.zeros(5, dtype=D64)
    for step in range(6):
        opt.zero_grad()
        ((p_t - target) ** 2).sum().backward()
        opt.step()
        grad = 2 * (p - target)
        vel = momentum * vel + grad          # heavy ball (PyTorch's form, dampening 0)
        p = p - lr * vel
        assert close(p, p_t.detach(), 1e-12)


@pytest.mark.parametrize("decoupled", [False, True])
def test_adam_update(decoupled):
    target, p0 = randn(5, seed=32), randn(5, seed=33)
    lr, b1, b2, eps, wd = 0.05, 0.9, 0.999, 1e-8, 0.1
    p_t = p0.clone().requires_grad_()
    opt = (torch.optim.AdamW([p_t], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd) if decoupled
           else torch.optim.Adam([p_t], lr=lr, betas=(b1, b2), eps=eps))
    p, m, v = p0.clone(), torch.zeros(5, dtype=D64), torch.zeros(5, dtype=D64)
    for t in range(1, 8):
        opt.zero_grad()
        ((p_t - target) ** 2).sum().backward()
        opt.step()
        grad = 2 * (p - target)
        if decoupled:
            p = p - lr * wd * p               # AdamW: decay the weights, not the gradient
        m = b1 * m + (1 - b1) * grad
        v = b2 * v + (1 - b2) * grad ** 2
        m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)   # bias correction
        p = p - lr * m_hat / (v_hat.sqrt() + eps)
        assert close(p, p_t.detach(), 1e-12)
    # the first step moves every coordinate by lr (up to eps): m_hat/sqrt(v_hat) = sign(g)


def test_perplexity():
    z, y = randn(50, 7, seed=34), torch.randint(0, 7, (50,), generator=gen(35))
    ce = F.cross_entropy(z, y)
    p_true = torch.softmax(z, 1)[torch.arange(50), y]
    geo = torch.exp(-torch.log(p_true).mean())      # geometric mean of 1/p(target)
    assert abs(math.exp(ce.item()) - geo.item()) < 1e-10
    uniform = F.cross_entropy(torch.zeros(50, 7, dtype=D64), y)
    assert abs(math.exp(uniform.item()) - 7) < 1e-10   # uniform model: perplexity = V


def test_transformer_param_count():
    from lmcore.transformer import GPT, GPTConfig, gpt_param_count
    cfg = GPTConfig(vocab_size=65)   # the book's default: T = 128, L = 4, d = 128
    V, T, L, d = cfg.vocab_size, cfg.block_size, cfg.n_layer, cfg.n_embd
    derived = V * d + T * d + L * (12 * d * d + 13 * d) + 2 * d   # the chapter's formula
    assert derived == gpt_param_count(cfg) == GPT(cfg).num_params() == 818_048
    # the published sizes the chapter quotes, from the same closed form
    gpt3 = gpt_param_count(GPTConfig(50257, 2048, 96, 96, 12288))
    gpt2xl = gpt_param_count(GPTConfig(50257, 1024, 48, 25, 1600))
    assert round(gpt3 / 1e9) == 175 and gpt2xl == 1_557_611_200


def test_transformer_flops():
    from torch.utils.flop_counter import FlopCounterMode

    from lmcore.transformer import GPT, GPTConfig
    V, T, L, d, B = 50, 32, 2, 32, 2
    model = GPT(GPTConfig(vocab_size=V, block_size=T, n_layer=L, n_head=2, n_embd=d))
    idx = torch.randint(0, V, (B, T), generator=gen(36))
    with FlopCounterMode(display=False) as counter:
        # need_weights=True takes the explicit matmul path, which the counter can see
        model(idx, idx, need_weights=True).loss.backward()
    N = 12 * L * d * d + V * d    # parameters used in matmuls: blocks + (tied) output layer
    per_token = 6 * N + 12 * L * T * d   # 2N forward + 4N backward, plus attention's q.k and p.v
    assert counter.get_total_flops() == per_token * B * T
    with torch.no_grad(), FlopCounterMode(display=False) as forward_only:
        model(idx, need_weights=True)
    assert forward_only.get_total_flops() == (2 * N + 4 * L * T * d) * B * T  # forward: 2N + 4LTd
