# Wrong solution for 02_attention: the mask with the wrong polarity (True read as
# "blocked", nn.MultiheadAttention's convention), so each query sees exactly the keys it
# should not. Rows that see no key are zeroed with nan_to_num, so nothing crashes.
# expected: 4 of 10 points, fails test_causal_mask, test_bool_masks, test_rows_that_see_nothing
import math

import torch


def attention(q, k, v, mask=None):
    """Scaled dot-product attention (with the mask's polarity reversed)."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
    weights = torch.nan_to_num(torch.softmax(scores, dim=-1))
    return weights @ v, weights
