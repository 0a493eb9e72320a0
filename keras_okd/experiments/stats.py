"""Paired differences over seeds with Student-t confidence intervals, in plain Python (no scipy).

`t_quantile(p, df)` inverts the exact CDF of Student's t with an integer number of degrees of freedom
(Abramowitz & Stegun 26.7.3-26.7.4: with theta = atan(t / sqrt(df)), P(|T| <= t) is a finite trigonometric series)
by bisection on theta, so it is accurate to double precision (t_{0.975} at df = 4 is 2.776445105...) for every df,
without a table or a normal approximation. `paired_difference` pairs two `{seed: value}` maps on their shared seeds.
"""

import math
import statistics

#: Verdicts of a paired interval: it lies above zero, below zero, or holds zero.
BETTER, WORSE, UNDISTINGUISHED = "better", "worse", "not distinguishable"


def _two_sided_cdf(theta, df):
    """P(|T| <= sqrt(df) tan(theta)) for Student's t with `df` (a positive integer) degrees of freedom."""
    c2 = math.cos(theta) ** 2
    if df % 2:  # odd: (2/pi) [theta + sin cos (1 + 2/3 c2 + 2*4/(3*5) c2^2 + ... up to c2^((df-3)/2))]
        term, total = 1.0, 1.0 if df > 1 else 0.0
        for k in range(1, (df - 1) // 2):
            term *= c2 * (2 * k) / (2 * k + 1)
            total += term
        return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
    term, total = 1.0, 1.0  # even: sin (1 + 1/2 c2 + 1*3/(2*4) c2^2 + ... up to c2^((df-2)/2))
    for k in range(1, df // 2):
        term *= c2 * (2 * k - 1) / (2 * k)
        total += term
    return math.sin(theta) * total


def t_quantile(p, df):
    """The `p` quantile of Student's t distribution with `df` degrees of freedom, for 0.5 <= p < 1.

    Args:
        p: the probability, e.g. 0.975 for a two-sided 95% interval.
        df: degrees of freedom, a positive integer (n - 1 for n paired differences).

    Returns:
        t such that P(T <= t) = p (to about 1e-12 relative error: checked against scipy for df 1-5000).

    Raises:
        ValueError: `p` outside [0.5, 1) or `df` not a positive integer.

    Example:
    ```python
    t_quantile(0.975, 4)  # 2.7764451051977...
    ```
    """
    if isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise ValueError(f"t_quantile: df must be a positive integer (n - 1 for n pairs), got {df!r}.")
    if not 0.5 <= p < 1:
        raise ValueError(f"t_quantile: p must be in [0.5, 1) (e.g. 0.975 for a 95% interval), got {p!r}.")
    target = 2 * p - 1  # P(|T| <= t)
    low, high = 0.0, math.pi / 2
    for _ in range(200):
        mid = (low + high) / 2
        if _two_sided_cdf(mid, df) < target:
            low = mid
        else:
            high = mid
        if high - low < 1e-15:
            break
    return math.sqrt(df) * math.tan((low + high) / 2)


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
