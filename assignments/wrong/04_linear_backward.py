# Wrong solution for 04_linear_backward: right for a 2-D batch, but the weight and bias
# gradients are not summed over every leading dim. With x of shape (B, T, in) the "batch"
# is B * T examples; here grad_weight keeps one matrix per B, (B, out, in), and grad_bias
# sums over B only, (T, out).
# expected: 7 of 9 points, fails test_leading_dims
def linear_backward(grad_output, x, weight):
    """Gradients of a linear layer (summing over the first dim only)."""
    grad_x = grad_output @ weight
    grad_weight = grad_output.transpose(-2, -1) @ x
    grad_bias = grad_output.sum(dim=0)
    return grad_x, grad_weight, grad_bias
