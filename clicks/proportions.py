"""How sure a share of choices is: pure functions on counts, the standard library only.

The dashboard shows choices per impression with Wilson score intervals (they stay inside
[0, 1] and keep their coverage for the small counts of a new site, where the normal
approximation's do not) and tests the interleaving win rate with the exact binomial test.
"""

from __future__ import annotations

import math
from statistics import NormalDist

# The standard normal quantile of a two-sided 95 % interval: 1.95996...
Z_95 = NormalDist().inv_cdf(0.975)

# Terms of a binomial tail this much smaller than the sum so far change no printed digit.
TAIL_PRECISION = 1e-17


def wilson_interval(*, successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of the proportion ``successes / trials`` (95 % by default);
    (0, 1) when there are no trials: nothing is known."""
    if trials <= 0:
        return 0.0, 1.0
    share = successes / trials
    spread = z * z / trials
    centre = (share + spread / 2) / (1 + spread)
    margin = z * math.sqrt(share * (1 - share) / trials + spread / (4 * trials)) / (1 + spread)
    # At none or all, the bound is 0 or 1 exactly, whatever the rounding of the two terms.
    low = 0.0 if successes <= 0 else max(0.0, centre - margin)
    high = 1.0 if successes >= trials else min(1.0, centre + margin)
    return low, high


def binomial_test_two_sided(*, successes: int, trials: int) -> float:
    """The p-value of the exact two-sided binomial test of ``successes`` out of ``trials``
    against a probability of one half: twice the smaller tail, at most 1.

    The tail is summed from its largest term outwards, each term the previous one times
    i / (n - i + 1), relative to that largest term (computed with log-gamma): no factorial
    is formed, nothing underflows, and only the terms that still matter are added (a few
    times the square root of ``trials`` of them), so a million trials cost milliseconds.
    """
    if trials <= 0:
        return 1.0
    if not 0 <= successes <= trials:
        raise ValueError(f"{successes} successes out of {trials} trials")
    smaller = min(successes, trials - successes)
    if 2 * smaller == trials:
        return 1.0
    # log P(X = smaller) for X ~ Binomial(trials, 1/2)
    log_largest = (
        math.lgamma(trials + 1) - math.lgamma(smaller + 1) - math.lgamma(trials - smaller + 1) - trials * math.log(2)
    )
    relative_sum, term = 1.0, 1.0
    for i in range(smaller, 0, -1):
        term *= i / (trials - i + 1)  # P(X = i - 1) / P(X = smaller)
        relative_sum += term
        if term < relative_sum * TAIL_PRECISION:
            break
    return min(1.0, 2 * math.exp(log_largest + math.log(relative_sum)))
