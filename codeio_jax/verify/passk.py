"""The unbiased pass@k estimator (Chen et al., 2021), as CRUXEval computes it."""

from __future__ import annotations

import math


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k generations drawn from n, c of them
    correct, is correct: 1 - C(n-c, k) / C(n, k).

    CRUXEval's conventions: 0.0 when there are fewer than k generations, 1.0 when
    every draw of k must include a correct one (n - c < k)."""
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n, got n={n}, c={c}")
    if k > n:
        return 0.0
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)
