"""How good a candidate gets for a tuning budget: the expected best validation score of ``n`` trials.

Dodge et al. (EMNLP 2019, "Show Your Work: Improved Reporting of Experimental Results") report the
expected maximum validation score as a function of the number of hyper-parameter trials, because which
model wins can depend on the budget. Their estimator draws the ``n`` trials *with* replacement from
the ``N`` observed ones; Tang et al. (2020, "Showing Your Work Doesn't Always Work") show that it is
biased and give the unbiased one, drawing without replacement, which is used here::

    E[max of n] = sum_{i=n..N} v_(i) * C(i-1, n-1) / C(N, n)      (v_(1) <= ... <= v_(N))

for ``n = 1..N``: the probability that the best of a random ``n``-subset is the ``i``-th smallest value
is ``C(i-1, n-1) / C(N, n)``. Both assume the trials are independent draws from the search space: true
for ``tune.sampler: random``; with TPE, later trials depend on earlier ones, so the curve describes
this search, not i.i.d. draws (the report says so).
"""

from __future__ import annotations

from math import comb
from typing import Any

import numpy as np

__all__ = ["expected_max", "curves_cross", "ESTIMATOR"]

#: the estimator's name, as the report states it
ESTIMATOR = "expected best of n trials, unbiased (Tang et al. 2020; the curve of Dodge et al. 2019)"


def expected_max(values: list[float] | np.ndarray) -> list[float]:
    """``E[max]`` of ``n = 1..N`` trials drawn without replacement from ``values`` (see the module
    docstring); NaN values (failed trials) are left out first.

    >>> expected_max([0.2, 0.4])
    [0.30000000000000004, 0.4]
    >>> expected_max([0.5, 0.1, 0.3])[-1]
    0.5
    """
    v = np.sort(np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64))
    n_total = len(v)
    out = []
    for n in range(1, n_total + 1):
        total = comb(n_total, n)
        out.append(float(sum(v[i - 1] * comb(i - 1, n - 1) / total for i in range(n, n_total + 1))))
    return out


def curves_cross(curves: dict[str, list[float]]) -> dict[str, Any]:
    """Whether the candidates' budget curves cross: which one leads at each budget ``n`` (up to the
    smallest number of trials any candidate has), and the budgets where the leader changes.

    Returns:
        ``{"leaders": [name at n = 1, 2, ...], "changes": [n where the leader differs from n - 1],
        "stable": bool, "n_max": the budgets compared}``.
    """
    named = {k: c for k, c in curves.items() if c}
    if len(named) < 2:
        return {"leaders": [], "changes": [], "stable": True, "n_max": 0}
    n_max = min(len(c) for c in named.values())
    leaders = [max(sorted(named), key=lambda k: named[k][n]) for n in range(n_max)]
    changes = [n + 1 for n in range(1, n_max) if leaders[n] != leaders[n - 1]]
    return {"leaders": leaders, "changes": changes, "stable": not changes, "n_max": n_max}
