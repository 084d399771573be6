"""Statistics over personas.

The unit of analysis is the persona: every statistic here takes one score per persona (already the
mean over that persona's test targets) and never pools over examples, so a persona with many targets
does not outweigh one with few.

Confidence intervals are Student-t intervals of the mean (and of the mean paired difference). A lab run
has 5 to 200 personas; at n = 8 the percentile bootstrap covered ~89% instead of 95% (it ignores that
the spread itself is estimated from 8 values), the t-interval covers 93-97% on per-persona scores from
n = 5 up (tests/test_stats.py simulates it). With one persona there is no spread: std and CI are NaN,
shown as "—", never 0 (a "std 0.0%" from one number is the artefact the study reported).

Ties: a persona whose difference is within TIE_TOL of zero is tied. The same rule feeds helped / hurt /
tied and the Wilcoxon signed-rank test (which drops tied personas, its "wilcox" zero method).
"""
import numpy as np
import pandas as pd
from scipy import stats as sps

TIE_TOL = 1e-9  # float noise (scores are means of metrics in [0, 1]), not a real difference


def _as_1d(scores):
    return np.asarray(scores, dtype=np.float64).ravel()


def t_interval(x, ci=0.95) -> tuple[float, float]:
    """Student-t confidence interval of the mean of x; NaN for fewer than 2 values."""
    n = len(x)
    if n < 2:
        return float("nan"), float("nan")
    mean, sem = float(x.mean()), float(x.std(ddof=1) / np.sqrt(n))
    half = float(sps.t.ppf(0.5 + ci / 2.0, n - 1)) * sem
    return mean - half, mean + half


def summarize(scores, ci=0.95):
    """n, mean, sample std (ddof=1) and t-interval of the mean over personas (NaN std/CI for n < 2)."""
    x = _as_1d(scores)
    n = len(x)
    nan = float("nan")
    if n == 0:
        return dict(n=0, mean=nan, std=nan, ci_low=nan, ci_high=nan)
    lo, hi = t_interval(x, ci)
    return dict(n=n, mean=float(x.mean()), std=float(x.std(ddof=1)) if n > 1 else nan, ci_low=lo, ci_high=hi)


def align(scores_a, scores_b):
    """Two arrays over the personas present in both dicts, in sorted persona order.

    Pairing by persona id (not by position) is what makes the paired test valid.
    """
    keys = sorted(set(scores_a) & set(scores_b))
    a = np.array([scores_a[k] for k in keys], dtype=np.float64)
    b = np.array([scores_b[k] for k in keys], dtype=np.float64)
    return a, b


def paired_difference(a, b, ci=0.95, tol=TIE_TOL):
    """Method a minus reference b, paired by persona (a[i], b[i] are the same persona).

    mean_diff with its t-interval, the Wilcoxon signed-rank two-sided p-value, and the personas helped
    (diff > tol), hurt (diff < -tol) and tied. Differences within tol count as exactly zero everywhere.
    wilcoxon_p is NaN when fewer than 2 personas or every one is tied: the test is undefined there, and
    "no evidence" is better shown as missing than as p = 1.
    """
    a, b = _as_1d(a), _as_1d(b)
    if a.shape != b.shape:
        raise ValueError(f"paired_difference: a and b differ in length ({len(a)} vs {len(b)}); use align()")
    d = a - b
    d = np.where(np.abs(d) <= tol, 0.0, d)
    n = len(d)
    nan = float("nan")
    if n == 0:
        return dict(n=0, mean_diff=nan, sd_diff=nan, ci_low=nan, ci_high=nan, wilcoxon_p=nan, helped=0, hurt=0,
                    tied=0)
    lo, hi = t_interval(d, ci)
    p = nan
    if n >= 2 and np.any(d != 0):
        p = float(sps.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)
    helped, hurt = int(np.sum(d > 0)), int(np.sum(d < 0))
    return dict(n=n, mean_diff=float(d.mean()), sd_diff=float(d.std(ddof=1)) if n > 1 else nan, ci_low=lo,
                ci_high=hi, wilcoxon_p=p, helped=helped, hurt=hurt, tied=n - helped - hurt, diffs=d)


def method_table(persona_scores, reference="unified", ci=0.95, tol=TIE_TOL, margin=None, effect=None):
    """One row per (run_id, method) from a long frame (run_id, method, persona_id, score).

    Columns: run_id, method, n_personas, mean, std, ci_low, ci_high, and versus the reference method of
    the same run: delta, delta_ci_low, delta_ci_high, wilcoxon_p, holm_p (Holm-adjusted over the methods
    compared with the reference in that run: "significant" means holm_p < 0.05), tost_p (equivalence within
    ±margin), verdict, mde (the smallest difference 80% power would detect at this n), personas_needed (to
    detect `effect`), helped, hurt, tied (NaN / None on the reference row itself and in runs that lack the
    reference). Deltas use only personas scored by both methods. If a persona appears more than once for a
    (run, method), its scores are averaged first.
    """
    margin = DEFAULT_MARGIN if margin is None else margin
    effect = DEFAULT_EFFECT if effect is None else effect
    cols = ["run_id", "method", "n_personas", "mean", "std", "ci_low", "ci_high", "delta", "delta_ci_low",
            "delta_ci_high", "wilcoxon_p", "holm_p", "tost_p", "verdict", "mde", "personas_needed", "helped", "hurt",
            "tied"]
    df = persona_scores[["run_id", "method", "persona_id", "score"]].dropna(subset=["score"])
    df = df.groupby(["run_id", "method", "persona_id"], sort=True, as_index=False)["score"].mean()
    rows = []
    nan = float("nan")
    for run_id, run_df in df.groupby("run_id", sort=True):
        by_method = {m: dict(zip(g["persona_id"], g["score"])) for m, g in run_df.groupby("method", sort=True)}
        ref = by_method.get(reference)
        run_rows = []
        for method, scores in by_method.items():
            s = summarize(list(scores.values()), ci=ci)
            row = dict(run_id=run_id, method=method, n_personas=s["n"], mean=s["mean"], std=s["std"],
                       ci_low=s["ci_low"], ci_high=s["ci_high"], delta=nan, delta_ci_low=nan, delta_ci_high=nan,
                       wilcoxon_p=nan, holm_p=nan, tost_p=nan, verdict=None, mde=nan, personas_needed=nan,
                       helped=None, hurt=None, tied=None)
            if ref is not None and method != reference:
                pdiff = paired_difference(*align(scores, ref), ci=ci, tol=tol)
                row.update(delta=pdiff["mean_diff"], delta_ci_low=pdiff["ci_low"], delta_ci_high=pdiff["ci_high"],
                           wilcoxon_p=pdiff["wilcoxon_p"], tost_p=tost_p(pdiff["diffs"], margin),
                           mde=minimum_detectable_effect(pdiff["sd_diff"], pdiff["n"]),
                           personas_needed=personas_needed(effect, pdiff["sd_diff"]),
                           helped=pdiff["helped"], hurt=pdiff["hurt"], tied=pdiff["tied"])
            run_rows.append(row)
        compared = [r for r in run_rows if r["method"] != reference and ref is not None]
        for r, adjusted in zip(compared, holm([r["wilcoxon_p"] for r in compared])):
            r.update(holm_p=float(adjusted), verdict=verdict(r["delta"], adjusted, r["tost_p"], margin))
        rows += run_rows
    out = pd.DataFrame(rows, columns=cols)
    for c in ("helped", "hurt", "tied"):  # keep ints as ints and missing as None (pandas would make floats)
        out[c] = pd.Series([r[c] for r in rows], index=out.index, dtype=object)
    return out


def over_seeds(persona_scores, groups: dict, reference="unified", ci=0.95, tol=TIE_TOL, margin=None,
               effect=None) -> pd.DataFrame:
    """Runs that differ only in seed, taken together. groups: run_id -> label of its group of seeds.

    Per (group, method): method_table's statistics on each persona's score AVERAGED OVER SEEDS (the
    persona stays the unit: seeds are not extra personas), plus the seed-to-seed spread: n_seeds, and
    seed_mean / seed_std, the mean and std over seeds of each seed's over-persona mean (NaN for one seed).
    """
    df = persona_scores.assign(group=persona_scores.run_id.map(groups)).dropna(subset=["group", "score"])
    per_run = df.groupby(["group", "run_id", "method", "persona_id"], as_index=False)["score"].mean()
    seed_avg = per_run.groupby(["group", "method", "persona_id"], as_index=False)["score"].mean()
    table = method_table(seed_avg.rename(columns={"group": "run_id"}), reference, ci, tol, margin, effect).rename(
        columns={"run_id": "group"})
    run_means = per_run.groupby(["group", "method", "run_id"], as_index=False)["score"].mean()
    spread = run_means.groupby(["group", "method"])["score"].agg(
        n_seeds="count", seed_mean="mean", seed_std=lambda x: x.std(ddof=1) if len(x) > 1 else float("nan"))
    return table.merge(spread.reset_index(), on=["group", "method"], how="left")


# ----------------------------------------------------------------------------- many methods, "no difference", power

ALPHA = 0.05
POWER = 0.8
DEFAULT_MARGIN = 0.02   # ±δ within which two methods count as equivalent (TOST), unless the user sets one
DEFAULT_EFFECT = 0.05   # the difference "personas needed" is computed for, unless the user names one


def holm(pvalues) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1), for the family of tests given.
    NaN entries (undefined tests) are left out of the family and stay NaN."""
    p = _as_1d(pvalues)
    out = np.full_like(p, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    m = len(idx)
    running = 0.0
    for rank, i in enumerate(idx[np.argsort(p[idx], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def smallest_wilcoxon_p(n: int) -> float:
    """The smallest two-sided Wilcoxon signed-rank p that n personas with nonzero differences can give: all of one
    sign, untied (2 / 2**n in the exact distribution scipy uses up to n = 50; ties only raise it). NaN for n < 1."""
    if n < 1:
        return float("nan")
    return float(sps.wilcoxon(np.arange(1.0, n + 1), zero_method="wilcox", alternative="two-sided").pvalue)


def holm_floor(untied) -> float:
    """The smallest Holm-adjusted p any of these comparisons can reach, whatever the scores (untied[i]: the
    personas with a nonzero difference in comparison i): Holm multiplies the smallest p by the number of
    comparisons, and no p is below smallest_wilcoxon_p of the largest n. At or above alpha nothing can be
    significant: the design (too few personas for so many comparisons) decides, not the methods."""
    ns = [int(n) for n in untied if n >= 1]
    if not ns:
        return float("nan")
    return min(1.0, len(ns) * smallest_wilcoxon_p(max(ns)))


def significance_limits(n: int, comparisons: int, alpha: float = ALPHA, max_personas: int = 200) -> dict:
    """What would let a Holm-adjusted Wilcoxon test reach alpha: the smallest p of n personas, the most
    comparisons n personas allow, and the fewest personas (≤ max_personas) these comparisons need (None where
    none within the cap) — the fewest with which significance is possible at all, not personas_needed's power."""
    floor = smallest_wilcoxon_p(n)
    most = max(0, int(np.ceil(alpha / floor)) - 1) if floor == floor else 0
    fewest = next((k for k in range(1, max_personas + 1) if comparisons * smallest_wilcoxon_p(k) < alpha), None)
    return {"smallest_p": floor, "max_comparisons": most, "fewest_personas": fewest}


def tost_p(d, margin: float) -> float:
    """Two one-sided paired t-tests of |mean difference| < margin: the larger of the two one-sided p-values
    (small: the methods are equivalent within ±margin). NaN for fewer than 2 personas; with no spread at all,
    0 when the mean lies inside the margin, else 1."""
    d = _as_1d(d)
    n = len(d)
    if n < 2 or not margin > 0:
        return float("nan")
    sd = d.std(ddof=1)
    if sd == 0:
        return 0.0 if abs(d.mean()) < margin else 1.0
    se = sd / np.sqrt(n)
    p_low = sps.t.sf((d.mean() + margin) / se, n - 1)   # H0: mean <= -margin
    p_high = sps.t.cdf((d.mean() - margin) / se, n - 1)  # H0: mean >= +margin
    return float(max(p_low, p_high))


def paired_t_power(effect: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test at level alpha to detect a true mean difference `effect` when the
    per-persona differences have standard deviation sd (noncentral t)."""
    if n < 2 or not sd > 0:
        return float("nan")
    df, ncp = n - 1, abs(effect) * np.sqrt(n) / sd
    crit = sps.t.ppf(1 - alpha / 2, df)
    return float(sps.nct.sf(crit, df, ncp) + sps.nct.cdf(-crit, df, ncp))


def minimum_detectable_effect(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true mean difference the paired t-test detects with `power` at level alpha, given n personas
    and the per-persona differences' sd. NaN when it cannot be computed (n < 2, no spread)."""
    if n < 2 or not sd > 0:
        return float("nan")
    from scipy.optimize import brentq
    hi = sd
    while paired_t_power(hi, sd, n, alpha) < power:
        hi *= 2
    return float(brentq(lambda e: paired_t_power(e, sd, n, alpha) - power, 0.0, hi, xtol=1e-10))


def personas_needed(effect: float, sd: float, alpha: float = ALPHA, power: float = POWER, cap: int = 100_000) -> float:
    """The fewest personas with which the paired t-test detects a true difference `effect` with `power`, given
    the per-persona differences' sd; NaN when effect or sd is not positive, inf past `cap`."""
    if not (effect and sd > 0):
        return float("nan")
    n = 2
    while paired_t_power(effect, sd, n, alpha) < power:
        n = n * 2 if n < 64 else n + max(1, n // 8)
        if n > cap:
            return float("inf")
    lo = max(2, n // 2)
    while lo < n:  # the first n with enough power between lo and n
        mid = (lo + n) // 2
        if paired_t_power(effect, sd, mid, alpha) >= power:
            n = mid
        else:
            lo = mid + 1
    return float(n)


def verdict(delta: float, p_adjusted: float, tost: float, margin: float, alpha: float = ALPHA) -> str:
    """A comparison in words: better / worse (significant after Holm adjustment), equivalent within ±margin
    (TOST), or inconclusive (neither: not evidence of no difference)."""
    if p_adjusted == p_adjusted and p_adjusted < alpha:
        return "better" if delta > 0 else "worse"
    if tost == tost and tost < alpha:
        return f"equivalent within ±{margin:g}"
    return "inconclusive"


def slope(x, y, ci: float = 0.95) -> dict:
    """Least-squares slope of y on x with its t-interval (n - 2 degrees of freedom); NaN when x does not vary
    or fewer than 3 points."""
    x, y = _as_1d(x), _as_1d(y)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    nan = float("nan")
    if len(x) < 3 or np.ptp(x) == 0:
        return dict(n=int(len(x)), slope=nan, ci_low=nan, ci_high=nan, intercept=nan)
    fit = sps.linregress(x, y)
    half = float(sps.t.ppf(0.5 + ci / 2.0, len(x) - 2)) * fit.stderr
    return dict(n=int(len(x)), slope=float(fit.slope), ci_low=float(fit.slope - half),
                ci_high=float(fit.slope + half), intercept=float(fit.intercept))
