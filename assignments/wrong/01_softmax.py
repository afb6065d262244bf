# Wrong solution for 01_softmax: the literal formula, without subtracting the maximum.
# exp() overflows to inf for logits above ~88.7 (float32), and inf / inf = nan.
# expected: 7 of 9 points, fails test_large_logits
def softmax(x, dim=-1):
    """Softmax of ``x`` along ``dim`` (but exp(x) overflows for large x)."""
    e = x.exp()
    return e / e.sum(dim=dim, keepdim=True)
