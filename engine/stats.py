"""Statistics over personas (DESIGN §7).

The unit of analysis is the persona: every statistic here takes one score per persona
(already the mean over that persona's test targets) and never pools over examples, so a
persona with many targets does not outweigh one with few.

Bootstraps are vectorised: one rng.integers call draws all resample indices at once, which
keeps a call at a few ms for 200 personas x 2000 resamples (the dashboard calls this for
every (run, method) on every page load).
"""
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy import stats as sps


@lru_cache(maxsize=32)
def _resample_indices(n, n_boot, seed):
    """All bootstrap resamples of n personas in one draw; cached because a dashboard page
    asks for the same (n, n_boot, seed) for every method. Read-only so the cache is safe."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n), dtype=np.int32)
    idx.flags.writeable = False
    return idx


def _bootstrap_mean_ci(x, n_boot, seed, ci):
    """Percentile-bootstrap CI of the mean of x (1-D float array, len >= 1)."""
    means = x[_resample_indices(len(x), int(n_boot), int(seed))].mean(axis=1)
    alpha = (1.0 - ci) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def _as_1d(scores):
    x = np.asarray(scores, dtype=np.float64).ravel()
    return x


def summarize(scores, n_boot=2000, seed=0, ci=0.95):
    """Mean, sample std (ddof=1) and percentile-bootstrap CI of the mean over personas.

    Deterministic for a given seed. With n == 1 the std is 0.0 and the CI collapses to the
    single value; with n == 0 everything but n is NaN.
    """
    x = _as_1d(scores)
    n = len(x)
    if n == 0:
        nan = float("nan")
        return dict(n=0, mean=nan, std=nan, ci_low=nan, ci_high=nan)
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if n > 1 else 0.0
    lo, hi = _bootstrap_mean_ci(x, n_boot, seed, ci)
    return dict(n=n, mean=mean, std=std, ci_low=lo, ci_high=hi)


def align(scores_a, scores_b):
    """Two arrays over the personas present in both dicts, in sorted persona order.

    Pairing by persona id (not by position) is what makes the paired test valid.
    """
    keys = sorted(set(scores_a) & set(scores_b))
    a = np.array([scores_a[k] for k in keys], dtype=np.float64)
    b = np.array([scores_b[k] for k in keys], dtype=np.float64)
    return a, b


def paired_difference(a, b, n_boot=2000, seed=0, ci=0.95, tol=1e-9):
    """Method a minus reference b, paired by persona (a[i], b[i] are the same persona).

    mean_diff with a paired bootstrap CI (resample personas, i.e. resample the differences),
    Wilcoxon signed-rank two-sided p-value, and counts of personas helped (diff > tol),
    hurt (diff < -tol) and tied.

    wilcoxon_p is NaN when n < 2 or when every difference is zero: the test is undefined
    there (scipy would warn or raise), and "no evidence" is better shown as missing than as
    p = 1. Otherwise it is exactly scipy.stats.wilcoxon(d) with its defaults (zero
    differences dropped by the 'wilcox' zero_method).
    """
    a = _as_1d(a)
    b = _as_1d(b)
    if a.shape != b.shape:
        raise ValueError(f"paired_difference: a and b differ in length ({len(a)} vs {len(b)}); use align()")
    d = a - b
    n = len(d)
    nan = float("nan")
    if n == 0:
        return dict(n=0, mean_diff=nan, ci_low=nan, ci_high=nan, wilcoxon_p=nan, helped=0, hurt=0, tied=0)
    lo, hi = _bootstrap_mean_ci(d, n_boot, seed, ci)
    p = nan
    if n >= 2 and np.any(d != 0):
        p = float(sps.wilcoxon(d, alternative="two-sided").pvalue)
    helped = int(np.sum(d > tol))
    hurt = int(np.sum(d < -tol))
    return dict(
        n=n, mean_diff=float(d.mean()), ci_low=lo, ci_high=hi, wilcoxon_p=p,
        helped=helped, hurt=hurt, tied=n - helped - hurt,
    )


def method_table(persona_scores, reference="unified", n_boot=2000, seed=0, ci=0.95, tol=1e-9):
    """One row per (run_id, method) from a long frame (run_id, method, persona_id, score).

    Columns: run_id, method, n_personas, mean, std, ci_low, ci_high, and versus the reference
    method of the same run: delta, delta_ci_low, delta_ci_high, wilcoxon_p, helped, hurt
    (NaN for delta/CI/p and None for counts on the reference row itself and in runs that lack
    the reference). Deltas use only personas scored by both methods. If a persona appears
    more than once for a (run, method), its scores are averaged first.
    """
    cols = ["run_id", "method", "n_personas", "mean", "std", "ci_low", "ci_high",
            "delta", "delta_ci_low", "delta_ci_high", "wilcoxon_p", "helped", "hurt"]
    df = persona_scores[["run_id", "method", "persona_id", "score"]].dropna(subset=["score"])
    df = df.groupby(["run_id", "method", "persona_id"], sort=True, as_index=False)["score"].mean()
    rows = []
    nan = float("nan")
    for run_id, run_df in df.groupby("run_id", sort=True):
        by_method = {m: dict(zip(g["persona_id"], g["score"])) for m, g in run_df.groupby("method", sort=True)}
        ref = by_method.get(reference)
        for method, scores in by_method.items():
            s = summarize(list(scores.values()), n_boot=n_boot, seed=seed, ci=ci)
            row = dict(run_id=run_id, method=method, n_personas=s["n"], mean=s["mean"], std=s["std"],
                       ci_low=s["ci_low"], ci_high=s["ci_high"], delta=nan, delta_ci_low=nan,
                       delta_ci_high=nan, wilcoxon_p=nan, helped=None, hurt=None)
            if ref is not None and method != reference:
                a, b = align(scores, ref)
                pdiff = paired_difference(a, b, n_boot=n_boot, seed=seed, ci=ci, tol=tol)
                row.update(delta=pdiff["mean_diff"], delta_ci_low=pdiff["ci_low"],
                           delta_ci_high=pdiff["ci_high"], wilcoxon_p=pdiff["wilcoxon_p"],
                           helped=pdiff["helped"], hurt=pdiff["hurt"])
            rows.append(row)
    out = pd.DataFrame(rows, columns=cols)
    for c in ("helped", "hurt"):  # keep ints as ints and missing as None (pandas would make floats)
        out[c] = pd.Series([r[c] for r in rows], index=out.index, dtype=object)
    return out
