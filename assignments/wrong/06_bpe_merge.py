# Wrong solution for 06_bpe_merge: finds every position where the pair starts, then
# splices from the right (so that the earlier positions stay valid). Overlapping
# occurrences break it: in "a a a" both positions 0 and 1 hold (a, a), and the second
# splice merges a token with the new one. Counting and ties are right.
# expected: 5 of 10 points, fails test_overlapping_pairs, test_matches_lmcore_training
def bpe_merge_step(ids, new_id):
    """One BPE step (wrong when occurrences of the pair overlap)."""
    counts = {}
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + 1
    if not counts or max(counts.values()) < 2:
        return None, list(ids)
    top = max(counts.values())
    pair = min(p for p, n in counts.items() if n == top)
    starts = [i for i in range(len(ids) - 1) if (ids[i], ids[i + 1]) == pair]
    merged = list(ids)
    for i in reversed(starts):
        merged[i:i + 2] = [new_id]
    return pair, merged
