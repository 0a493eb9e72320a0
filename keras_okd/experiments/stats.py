"""Paired differences over seeds with Student-t confidence intervals.

`t_quantile(p, df)` is scipy's `scipy.stats.t.ppf` (scipy comes with scikit-learn, a dependency), with the checks
of its arguments; `paired_difference` pairs two `{seed: value}` maps on their shared seeds.
"""

import math
import statistics

#: Verdicts of a paired interval: it lies above zero, below zero, or holds zero.
BETTER, WORSE, UNDISTINGUISHED = "better", "worse", "not distinguishable"


def t_quantile(p, df):
    """The `p` quantile of Student's t distribution with `df` degrees of freedom, for 0.5 <= p < 1
    (`scipy.stats.t.ppf`).

    Args:
        p: the probability, e.g. 0.975 for a two-sided 95% interval.
        df: degrees of freedom, a positive integer (n - 1 for n paired differences).

    Returns:
        t such that P(T <= t) = p.

    Raises:
        ValueError: `p` outside [0.5, 1) or `df` not a positive integer.

    Example:

    >>> round(t_quantile(0.975, 4), 9)
    2.776445105
    """
    if isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise ValueError(f"t_quantile: df must be a positive integer (n - 1 for n pairs), got {df!r}.")
    if not 0.5 <= p < 1:
        raise ValueError(f"t_quantile: p must be in [0.5, 1) (e.g. 0.975 for a 95% interval), got {p!r}.")
    from scipy.stats import t

    return float(t.ppf(p, df))


def paired_difference(values, baseline, confidence=0.95):
    """The mean paired difference `values[s] - baseline[s]` over the seeds s both have, with its Student-t interval.

    Args:
        values: `{seed: value}` of the method (e.g. its average peer accuracy per seed).
        baseline: `{seed: value}` of the baseline (e.g. independent training's), or None when there is none.
        confidence: the interval's coverage, in (0, 1).

    Returns:
        A dict: `seeds` (the paired seeds, sorted), `differences` (per seed), `n`, `mean` (None when n = 0), `std`
        (sample standard deviation of the differences, None when n < 2), `t` (the t quantile used), `interval`
        (`[low, high]` = mean -+ t std / sqrt(n), None when n < 2), `verdict` (`"better"`: the interval lies above
        zero, `"worse"`: below zero, `"not distinguishable"`: it holds zero; None without an interval), and `reason`
        (why there is no interval: "no baseline", "no shared seed", "n=1"; None otherwise).

    Example:
    ```python
    paired_difference({0: 0.91, 1: 0.93, 2: 0.92}, {0: 0.90, 1: 0.91, 2: 0.91})["interval"]
    ```
    """
    if not 0 < confidence < 1:
        raise ValueError(f"paired_difference: confidence must be in (0, 1), e.g. 0.95; got {confidence!r}.")
    out = {"seeds": [], "differences": [], "n": 0, "mean": None, "std": None, "t": None, "interval": None,
           "confidence": confidence, "verdict": None, "reason": None}
    if baseline is None:
        out["reason"] = "no baseline"
        return out
    seeds = sorted(set(values) & set(baseline))
    differences = [values[s] - baseline[s] for s in seeds]
    out.update(seeds=seeds, differences=differences, n=len(seeds))
    if not seeds:
        out["reason"] = "no shared seed"
        return out
    out["mean"] = statistics.fmean(differences)
    if len(seeds) < 2:
        out["reason"] = "n=1"
        return out
    out["std"] = statistics.stdev(differences)
    out["t"] = t_quantile((1 + confidence) / 2, len(seeds) - 1)
    half = out["t"] * out["std"] / math.sqrt(len(seeds))
    out["interval"] = [out["mean"] - half, out["mean"] + half]
    low, high = out["interval"]
    out["verdict"] = BETTER if low > 0 else WORSE if high < 0 else UNDISTINGUISHED
    return out
