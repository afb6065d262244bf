# Wrong solution for 05_top_p: keeps the tokens whose running sum, *including*
# themselves, is <= p, so the token that crosses p is dropped (the nucleus then holds
# less than p). The most likely token is still always kept, and ties still go to the
# lower id. With p = 1 the same rule also keeps a token whose probability is 0 (its
# running sum equals the one before it, <= 1), where lmcore's filter removes it.
# expected: 2 of 10 points, fails test_crossing_token_is_kept, test_matches_lmcore, test_ties, test_edge_cases
import torch


def top_p_filter(logits, p):
    """Nucleus filter (that drops the token crossing p)."""
    probs = torch.softmax(logits.float(), dim=-1)
    probs, order = torch.sort(probs, dim=-1, descending=True, stable=True)
    keep_sorted = probs.cumsum(dim=-1) <= p
    keep_sorted[:, 0] = True  # the most likely token is always kept
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return logits.masked_fill(~keep, float("-inf"))
