"""Confidence intervals for comparing notified customers against a held-out control group.

Proportions use the Wilson score interval (honest at small n and near 0 or 1); the difference of two
proportions uses Newcombe's method built from the two Wilson intervals. Means use the normal approximation.

>>> lo, hi = wilson(5, 50)
>>> round(lo, 4), round(hi, 4)
(0.0435, 0.2136)
>>> wilson(0, 0)
(None, None)
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> tuple[float | None, float | None]:
    """Wilson score interval for ``k`` successes out of ``n``."""
    if n <= 0:
        return None, None
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_diff(k1: int, n1: int, k2: int, n2: int, z: float = Z95) -> tuple[float | None, float | None]:
    """Interval for ``k1/n1 - k2/n2`` (Newcombe's hybrid score method).

    >>> lo, hi = newcombe_diff(10, 100, 20, 100)
    >>> round(lo, 4), round(hi, 4)
    (-0.1995, -0.0001)
    """
    l1, u1 = wilson(k1, n1, z)
    l2, u2 = wilson(k2, n2, z)
    if l1 is None or l2 is None or u1 is None or u2 is None:
        return None, None
    p1, p2 = k1 / n1, k2 / n2
    d = p1 - p2
    lo = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    hi = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return lo, hi


def mean_ci(n: int, total: float, total_sq: float, z: float = Z95) -> tuple[float | None, float | None]:
    """Normal-approximation interval for a mean from its sufficient statistics (n, sum, sum of squares).

    >>> mean_ci(4, 10.0, 30.0)  # doctest: +ELLIPSIS
    (1.234..., 3.765...)
    """
    if n < 2:
        return None, None
    mean = total / n
    var = max(0.0, (total_sq - n * mean * mean) / (n - 1))
    half = z * math.sqrt(var / n)
    return mean - half, mean + half
