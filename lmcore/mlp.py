"""A multilayer perceptron whose backward pass is written by hand (no autograd).

    net = MLP([3, 5, 2], activation="relu", seed=0)
    y_hat = net.forward(x)                  # x: (batch, 3) -> y_hat: (batch, 2)
    loss, grad = mse_loss(y_hat, y)         # grad = dL/dy_hat, same shape as y_hat
    net.backward(grad)                      # fills net.grads() by the chain rule
    net.sgd_step(lr=0.1)                    # W <- W - lr * dL/dW

Weights follow ``torch.nn.Linear``: ``W`` has shape (out_features, in_features) and a
layer computes ``z = x @ W.T + b``. ``from_torch``/``to_torch`` convert to and from an
``nn.Sequential`` of ``nn.Linear`` and activation modules, so every gradient here can be
checked against PyTorch's autograd.
"""
from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from .device import as_device, check_seed


# --- activations: f(z) and its derivative f'(z), both element-wise ----------------------
def relu(z):
    return torch.clamp(z, min=0)


def relu_grad(z):
    return (z > 0).to(z.dtype)  # 0 at z == 0, the same choice PyTorch makes


def sigmoid(z):
    return torch.sigmoid(z)


def sigmoid_grad(z):
    s = torch.sigmoid(z)
    return s * (1 - s)  # at most 1/4, reached at z = 0


def tanh(z):
    return torch.tanh(z)


def tanh_grad(z):
    return 1 - torch.tanh(z) ** 2  # at most 1, reached at z = 0


ACTIVATIONS = {"relu": (relu, relu_grad), "sigmoid": (sigmoid, sigmoid_grad),
               "tanh": (tanh, tanh_grad)}
_TORCH_MODULES = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


# --- argument checks (one place, so the functions below read like the maths) ------------
def _check_finite_float(name, t, shape_text):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {shape_text}, "
                        f"got {type(t).__name__}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor of shape {shape_text}, "
                         f"got dtype {t.dtype}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf; expected finite values "
                         f"(shape {shape_text})")


def _check_matrix(name, t, shape_text):
    """A finite float tensor with two dims and at least one row and one column."""
    _check_finite_float(name, t, shape_text)
    if t.dim() != 2 or 0 in t.shape:
        raise ValueError(f"{name} must have shape {shape_text} with both sizes >= 1, "
                         f"got {tuple(t.shape)}")


def _check_same_place(name, t, ref_name, ref):
    if t.dtype != ref.dtype or t.device != ref.device:
        raise ValueError(f"{name} has dtype {t.dtype} on {t.device}, but {ref_name} has "
                         f"dtype {ref.dtype} on {ref.device}; convert {name} with .to()")


def _check_mse_args(y_hat, y, reduction):
    _check_matrix("y_hat", y_hat, "(batch, k)")
    _check_finite_float("y", y, f"{tuple(y_hat.shape)} like y_hat")
    if y.shape != y_hat.shape:
        raise ValueError(f"y must have the shape of y_hat (batch, k) = "
                         f"{tuple(y_hat.shape)}, got {tuple(y.shape)}")
    _check_same_place("y", y, "y_hat", y_hat)
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")


def _check_logits_labels(logits, labels):
    _check_matrix("logits", logits, "(batch, n_classes)")
    batch, n_classes = logits.shape
    if not isinstance(labels, torch.Tensor) or labels.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"labels must be an integer tensor (int64) of shape ({batch},), "
                        f"got {getattr(labels, 'dtype', type(labels).__name__)}")
    if labels.shape != (batch,):
        raise ValueError(f"labels must have shape ({batch},) to match logits, "
                         f"got {tuple(labels.shape)}")
    if labels.device != logits.device:
        raise ValueError(f"labels are on {labels.device} but logits on {logits.device}; "
                         f"move labels with .to(logits.device)")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= n_classes:
        raise ValueError(f"labels must be class ids in [0, {n_classes}), got values from "
                         f"{low} to {high}")


# --- losses: each returns (loss, dL/dprediction) ----------------------------------------
def mse_loss(y_hat, y, reduction="sum"):
    """Squared error with a factor 1/2, and its gradient.

    y_hat, y: (batch, k). ``reduction="sum"``: L = 1/2 * sum over batch and
    outputs of (y - y_hat)^2, so dL/dy_hat = y_hat - y (the 1/2 cancels the 2
    of the square). ``reduction="mean"``: the same divided by the batch size,
    gradient (y_hat - y) / batch. Note: torch.nn.MSELoss(reduction="mean") has
    no 1/2 and divides by batch * k.
    """
    _check_mse_args(y_hat, y, reduction)
    diff = y_hat - y
    scale = 1.0 if reduction == "sum" else 1.0 / y_hat.shape[0]
    return 0.5 * scale * (diff**2).sum(), scale * diff


def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy of softmax(logits) against class ids, and gradient.

    logits: (batch, n_classes); labels: (batch,) int64 in [0, n_classes).
    L = -(1/batch) * sum_n log p[n, labels[n]] with p = softmax(logits), and
    dL/dlogits = (p - onehot(labels)) / batch. Same as F.cross_entropy.
    """
    _check_logits_labels(logits, labels)
    batch = logits.shape[0]
    rows = torch.arange(batch, device=logits.device)
    # log p = z - log sum_j exp(z_j); the row max is subtracted first so that
    # exp() cannot overflow
    shifted = logits - logits.max(dim=1, keepdim=True).values
    log_p = shifted - shifted.exp().sum(dim=1, keepdim=True).log()
    loss = -log_p[rows, labels].mean()
    grad = log_p.exp()  # p = softmax(logits)
    grad[rows, labels] -= 1  # p - onehot(labels)
    return loss, grad / batch


def _check_lr(lr):
    if (isinstance(lr, bool) or not isinstance(lr, numbers.Real)
            or not math.isfinite(lr) or lr <= 0):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")


def _check_mlp_args(sizes, activation, output_activation, seed, dtype, device):
    """Validated (sizes as ints, seed, device)."""
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__len__"):
        raise TypeError(f"sizes must be a list of at least 2 positive ints, got {sizes!r}")
    if len(sizes) < 2:
        raise ValueError(f"sizes must be a list of at least 2 positive ints, got {sizes!r}")
    for i, s in enumerate(sizes):
        if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s <= 0:
            raise ValueError(f"sizes[{i}] = {s!r} is not a positive int (a layer width); "
                             f"got sizes={sizes!r}")
    for name, act in (("activation", activation), ("output_activation", output_activation)):
        allowed = name == "output_activation" and act is None
        if not allowed and not (isinstance(act, str) and act in ACTIVATIONS):
            raise ValueError(f"{name} must be one of {sorted(ACTIVATIONS)}"
                             f"{' or None' if name == 'output_activation' else ''}, "
                             f"got {act!r}")
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype such as torch.float32, got {dtype!r}")
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype such as torch.float32, got {dtype}")
    return ([int(s) for s in sizes], check_seed(seed),
            as_device(device, "device", available=True))


class MLP:
    """Fully connected layers ``sizes[0] -> sizes[1] -> ... -> sizes[-1]``.

    Every hidden layer applies ``activation``; the last layer applies
    ``output_activation`` (None = identity, e.g. logits for softmax_cross_entropy).
    Initial weights: He et al. (2015) for ReLU, Glorot & Bengio (2010) otherwise;
    biases start at zero.
    """

    def __init__(self, sizes, activation="relu", output_activation=None, seed=0,
                 dtype=torch.float32, device="cpu"):
        sizes, seed, device = _check_mlp_args(sizes, activation, output_activation, seed,
                                              dtype, device)
        self.sizes, self.activation = sizes, activation
        self.output_activation = output_activation
        gen = torch.Generator().manual_seed(seed)  # on the CPU: same weights on every device
        self.weights, self.biases = [], []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            shape = (fan_out, fan_in)
            if activation == "relu":  # keeps the variance of z roughly constant through ReLUs
                std = math.sqrt(2 / fan_in)
                w = torch.randn(shape, generator=gen, dtype=torch.float64) * std
            else:
                limit = math.sqrt(6 / (fan_in + fan_out))
                w = (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * limit
            self.weights.append(w.to(dtype=dtype, device=device))
            self.biases.append(torch.zeros(fan_out, dtype=dtype, device=device))
        self._cache = None
        self.weight_grads = self.bias_grads = None

    def _act(self, layer):
        """Name of the activation after ``layer`` (None for identity)."""
        return self.output_activation if layer == len(self.weights) - 1 else self.activation

    def _check_input(self, x):
        shape = f"(batch, {self.sizes[0]})"
        _check_finite_float("x", x, shape)
        if x.dim() != 2 or x.shape[1] != self.sizes[0]:
            raise ValueError(f"x must have shape {shape}, got {tuple(x.shape)}")
        _check_same_place("x", x, "the weights", self.weights[0])

    def _check_grad_output(self, grad_output):
        if self._cache is None:
            raise RuntimeError("call forward(x) before backward(grad_output)")
        out = self._cache[1][-1]
        shape = f"{tuple(out.shape)} like the output"
        _check_finite_float("grad_output", grad_output, shape)
        if grad_output.shape != out.shape:
            raise ValueError(f"grad_output must have shape {shape}, "
                             f"got {tuple(grad_output.shape)}")
        _check_same_place("grad_output", grad_output, "the output", out)

    def forward(self, x):
        """x: (batch, sizes[0]) -> (batch, sizes[-1]).

        Keeps every layer's input and pre-activation z for backward().
        """
        self._check_input(x)
        inputs, zs = [], []
        a = x
        for layer, (W, b) in enumerate(zip(self.weights, self.biases)):
            inputs.append(a)
            z = a @ W.T + b  # (batch, out)
            zs.append(z)
            act = self._act(layer)
            a = z if act is None else ACTIVATIONS[act][0](z)
        self._cache = (inputs, zs)
        return a

    def backward(self, grad_output):
        """Chain rule from dL/d(output), (batch, sizes[-1]), back to each W, b.

        Stores the gradients (shaped like the parameters) and returns dL/dx,
        (batch, sizes[0]).
        """
        self._check_grad_output(grad_output)
        inputs, zs = self._cache
        n = len(self.weights)
        self.weight_grads, self.bias_grads = [None] * n, [None] * n
        grad = grad_output  # dL/da for the current layer's output a
        for layer in reversed(range(n)):
            act = self._act(layer)
            # delta = dL/dz: through the activation, element-wise
            delta = grad
            if act is not None:
                delta = grad * ACTIVATIONS[act][1](zs[layer])
            # (out, in): the sum over the batch of outer products
            self.weight_grads[layer] = delta.T @ inputs[layer]
            self.bias_grads[layer] = delta.sum(dim=0)  # (out,)
            grad = delta @ self.weights[layer]  # dL/d(layer input): (batch, in)
        return grad

    def parameters(self):
        """[W1, b1, W2, b2, ...] in the order of torch's nn.Sequential.parameters()."""
        return [p for pair in zip(self.weights, self.biases) for p in pair]

    def grads(self):
        """[dL/dW1, dL/db1, ...], matching parameters(); needs a backward() first."""
        if self.weight_grads is None:
            raise RuntimeError("no gradients yet: call forward(x) and backward(grad_output) "
                               "first")
        return [g for pair in zip(self.weight_grads, self.bias_grads) for g in pair]

    def sgd_step(self, lr):
        """Plain gradient descent: p <- p - lr * dL/dp for every parameter."""
        _check_lr(lr)
        for p, g in zip(self.parameters(), self.grads()):
            p -= lr * g

    @classmethod
    def from_torch(cls, module):
        """Copy an nn.Sequential of nn.Linear layers, each optionally followed by nn.ReLU,
        nn.Sigmoid or nn.Tanh (the same one after every hidden layer)."""
        if not isinstance(module, nn.Sequential):
            raise TypeError(f"module must be an nn.Sequential, got {type(module).__name__}")
        names = {v: k for k, v in _TORCH_MODULES.items()}
        linears, acts = [], []
        for m in module:
            if isinstance(m, nn.Linear):
                if m.bias is None:
                    raise ValueError("module: every nn.Linear needs bias=True")
                linears.append(m)
                acts.append(None)
            elif type(m) in names and linears and acts[-1] is None:
                acts[-1] = names[type(m)]
            else:
                raise ValueError(f"module: expected nn.Linear, each optionally followed by "
                                 f"one of nn.ReLU/nn.Sigmoid/nn.Tanh, got "
                                 f"{type(m).__name__} at position {len(acts)}")
        if not linears:
            raise ValueError("module contains no nn.Linear layer")
        hidden = set(acts[:-1])
        if len(hidden) > 1 or None in hidden:
            raise ValueError(f"module: every hidden nn.Linear must be followed by the same "
                             f"activation, got {acts[:-1]}")
        for i, m in enumerate(linears):
            if not (torch.isfinite(m.weight).all() and torch.isfinite(m.bias).all()):
                raise ValueError(f"module: nn.Linear number {i} has NaN or inf weights")
        sizes = [linears[0].in_features] + [m.out_features for m in linears]
        for a, b in zip(linears[:-1], linears[1:]):
            if a.out_features != b.in_features:
                raise ValueError(f"module: layer sizes do not chain "
                                 f"({a.out_features} -> {b.in_features})")
        W = linears[0].weight
        net = cls(sizes, activation=hidden.pop() if hidden else "relu",
                  output_activation=acts[-1], dtype=W.dtype, device=W.device)
        net.weights = [m.weight.detach().clone() for m in linears]
        net.biases = [m.bias.detach().clone() for m in linears]
        return net

    def to_torch(self):
        """The equivalent nn.Sequential (a copy: training one does not change the other)."""
        layers = []
        for layer, (W, b) in enumerate(zip(self.weights, self.biases)):
            lin = nn.Linear(W.shape[1], W.shape[0], dtype=W.dtype, device=W.device)
            with torch.no_grad():
                lin.weight.copy_(W)
                lin.bias.copy_(b)
            layers.append(lin)
            if self._act(layer) is not None:
                layers.append(_TORCH_MODULES[self._act(layer)]())
        return nn.Sequential(*layers)

    def __repr__(self):
        return (f"MLP(sizes={self.sizes}, activation={self.activation!r}, "
                f"output_activation={self.output_activation!r}, "
                f"dtype={self.weights[0].dtype})")
