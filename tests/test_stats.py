import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from engine.analysis.stats import align, method_table, paired_difference, summarize, t_interval


def test_summarize_matches_numpy():
    x = np.random.default_rng(0).normal(0.7, 0.1, size=50)
    s = summarize(x)
    assert s["n"] == 50
    assert s["mean"] == pytest.approx(x.mean())
    assert s["std"] == pytest.approx(x.std(ddof=1))
    assert s["ci_low"] <= s["mean"] <= s["ci_high"]


def test_summarize_single_value_has_no_spread():
    s = summarize([0.5])
    assert s["n"] == 1 and s["mean"] == 0.5
    assert all(math.isnan(s[k]) for k in ("std", "ci_low", "ci_high"))  # undefined, never 0


def test_ci_narrows_with_more_data():
    rng = np.random.default_rng(1)
    small = summarize(rng.normal(size=20))
    large = summarize(rng.normal(size=500))
    assert (large["ci_high"] - large["ci_low"]) < (small["ci_high"] - small["ci_low"])


def test_ci_is_the_t_interval():
    x = np.random.default_rng(2).random(8)
    lo, hi = sps.t.interval(0.95, 7, loc=x.mean(), scale=sps.sem(x))
    s = summarize(x)
    assert (s["ci_low"], s["ci_high"]) == pytest.approx((lo, hi))
    d = paired_difference(x + 0.1 * np.arange(8), x)
    lo, hi = sps.t.interval(0.95, 7, loc=0.35, scale=sps.sem(0.1 * np.arange(8)))
    assert (d["ci_low"], d["ci_high"]) == pytest.approx((lo, hi))


def _persona_scores(rng, reps, n, shift=0.0):
    """reps data sets of n per-persona scores like a lab run's: each the mean of 10 targets scored 0/1
    with a persona-specific success rate p ~ Beta(6, 3) (skewed, bounded); true mean E[p] + shift."""
    p = np.clip(rng.beta(6, 3, size=(reps, n)) + shift, 0, 1)
    return rng.binomial(10, p) / 10.0


def _coverage(lo, hi, truth):
    return float(np.mean((lo <= truth) & (truth <= hi)))


def _bootstrap_intervals(x, rng, n_boot=1000):
    """The percentile bootstrap the lab used before: it under-covers at small n."""
    idx = rng.integers(0, x.shape[1], size=(n_boot, x.shape[1]))
    means = x[:, idx].mean(axis=2)
    return np.quantile(means, 0.025, axis=1), np.quantile(means, 0.975, axis=1)


@pytest.mark.parametrize("n", [5, 8, 50])
def test_ci_coverage_holds_at_the_n_a_run_has(n):
    """3000 simulated runs: the 95% t-interval covers the true mean 93-97% of the time (sd of the
    estimate ~0.4%); the percentile bootstrap it replaced covers < 93% at n <= 8 (the test can fail)."""
    rng = np.random.default_rng(n)
    x = _persona_scores(rng, 3000, n)
    truth = 6 / 9  # E[p] of Beta(6, 3): the expected per-persona score
    lo, hi = np.array([t_interval(row) for row in x]).T
    covered = _coverage(lo, hi, truth)
    assert 0.93 <= covered <= 0.97, covered
    if n <= 8:
        assert _coverage(*_bootstrap_intervals(x, rng), truth) < 0.93


@pytest.mark.parametrize("n", [8, 50])
def test_paired_ci_coverage(n):
    rng = np.random.default_rng(100 + n)
    a, b = _persona_scores(rng, 2000, n, shift=0.05), _persona_scores(rng, 2000, n)
    big = rng.beta(6, 3, size=2_000_000)
    truth = np.clip(big + 0.05, 0, 1).mean() - 6 / 9
    lo, hi = np.array([t_interval(row) for row in a - b]).T  # paired_difference's CI (test_ci_is_the_t_interval)
    covered = _coverage(lo, hi, truth)
    assert 0.93 <= covered <= 0.97, covered


def test_paired_difference_wilcoxon_and_counts():
    rng = np.random.default_rng(3)
    b = rng.random(40)
    a = b + rng.normal(0.05, 0.1, size=40)
    r = paired_difference(a, b)
    assert r["wilcoxon_p"] == pytest.approx(sps.wilcoxon(a - b).pvalue)
    assert r["mean_diff"] == pytest.approx((a - b).mean())
    assert r["ci_low"] <= r["mean_diff"] <= r["ci_high"]
    assert r["helped"] + r["hurt"] + r["tied"] == 40


def test_helped_hurt_tied_by_hand():
    a = [0.9, 0.5, 0.3, 0.7, 0.6]
    b = [0.8, 0.5, 0.4, 0.7 + 1e-12, 0.1]
    r = paired_difference(a, b)
    assert (r["helped"], r["hurt"], r["tied"]) == (2, 1, 2)  # 1e-12 is within tol -> tied


def test_one_tie_rule_for_counts_and_wilcoxon():
    """A float-noise difference is a tie for helped/hurt AND dropped by Wilcoxon, not ranked as a win."""
    b = np.array([0.5, 0.6, 0.7, 0.4, 0.55, 0.65, 0.45, 0.35])
    a = b + np.array([0.1, 0.05, -0.02, 0.08, 0.03, 1e-13, -1e-13, 0.0])
    r = paired_difference(a, b)
    assert (r["helped"], r["hurt"], r["tied"]) == (4, 1, 3)
    clean = np.array([0.1, 0.05, -0.02, 0.08, 0.03])
    assert r["wilcoxon_p"] == pytest.approx(sps.wilcoxon(clean).pvalue)
    assert r["wilcoxon_p"] != pytest.approx(sps.wilcoxon(a - b, zero_method="wilcox").pvalue)


def test_wilcoxon_nan_when_undefined():
    assert math.isnan(paired_difference([0.3, 0.4], [0.3, 0.4])["wilcoxon_p"])
    assert math.isnan(paired_difference([0.3], [0.1])["wilcoxon_p"])


def test_paired_difference_length_mismatch():
    with pytest.raises(ValueError):
        paired_difference([1, 2], [1, 2, 3])


def test_align_drops_missing_personas():
    a, b = align({"p2": 2.0, "p1": 1.0, "p3": 3.0}, {"p3": 30.0, "p1": 10.0, "p4": 40.0})
    assert a.tolist() == [1.0, 3.0]
    assert b.tolist() == [10.0, 30.0]


def _frame():
    rows = []
    scores = {
        ("r1", "unified"): {"p1": 0.5, "p2": 0.6, "p3": 0.7, "p4": 0.4},
        ("r1", "per_persona"): {"p1": 0.6, "p2": 0.5, "p3": 0.9, "p4": 0.45},
        ("r1", "base"): {"p1": 0.2, "p2": 0.3, "p3": 0.1},  # p4 missing: paired on p1..p3 only
        ("r2", "base"): {"p1": 0.1, "p2": 0.2},  # run without the reference
    }
    for (run, method), d in scores.items():
        rows += [(run, method, p, s) for p, s in d.items()]
    return pd.DataFrame(rows, columns=["run_id", "method", "persona_id", "score"]), scores


def test_method_table():
    df, scores = _frame()
    t = method_table(df, reference="unified")
    assert len(t) == 4
    row = lambda run, m: t[(t.run_id == run) & (t.method == m)].iloc[0]

    pp = row("r1", "per_persona")
    s = summarize(list(scores[("r1", "per_persona")].values()))
    d = paired_difference(*align(scores[("r1", "per_persona")], scores[("r1", "unified")]))
    assert pp["n_personas"] == 4
    for k in ("mean", "std", "ci_low", "ci_high"):
        assert pp[k] == pytest.approx(s[k])
    assert pp["delta"] == pytest.approx(d["mean_diff"]) and pp["delta"] == pytest.approx(0.0625)
    assert pp["delta_ci_low"] == pytest.approx(d["ci_low"])
    assert pp["delta_ci_high"] == pytest.approx(d["ci_high"])
    assert pp["wilcoxon_p"] == pytest.approx(d["wilcoxon_p"])
    assert (pp["helped"], pp["hurt"], pp["tied"]) == (3, 1, 0)

    base = row("r1", "base")
    assert base["n_personas"] == 3
    assert base["delta"] == pytest.approx(np.mean([0.2 - 0.5, 0.3 - 0.6, 0.1 - 0.7]))
    assert (base["helped"], base["hurt"]) == (0, 3)

    for r in (row("r1", "unified"), row("r2", "base")):  # reference row, and run lacking it
        assert math.isnan(r["delta"]) and math.isnan(r["wilcoxon_p"])
        assert r["helped"] is None and r["hurt"] is None and r["tied"] is None


# ----------------------------------------------------------------------------- many methods, equivalence, power

from engine.analysis.stats import (holm, minimum_detectable_effect, paired_t_power, personas_needed,  # noqa: E402
                                   slope, tost_p, verdict)


@pytest.mark.parametrize("p, adjusted", [
    # by hand: sorted 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 = 0.04 -> monotone 0.06
    ([0.01, 0.04, 0.03, 0.005], [0.03, 0.06, 0.06, 0.02]),
    ([0.5, float("nan"), 0.01], [0.5, float("nan"), 0.02]),  # an undefined test is not part of the family
    ([0.3, 0.4], [0.6, 0.6]),
    ([0.9], [0.9]),
])
def test_holm_on_known_p_vectors(p, adjusted):
    np.testing.assert_allclose(holm(p), adjusted, equal_nan=True)


def test_holm_is_not_bonferroni_nor_unsorted():
    """Mutants: Bonferroni (x m for all) and step-down without the running maximum both differ here."""
    p = [0.01, 0.04, 0.03, 0.005]
    assert not np.allclose(holm(p), np.minimum(1, np.array(p) * 4))
    assert not np.allclose(holm(p), [0.03, 0.04, 0.06, 0.02])


@pytest.mark.parametrize("d, margin", [
    ([0.012, -0.004, 0.003, 0.008, -0.001, 0.006, 0.002, 0.010], 0.02),
    ([0.05, 0.02, 0.04, 0.01, 0.03], 0.02),
    ([-0.3, 0.2, 0.1, -0.1, 0.05, 0.0], 0.1),
])
def test_tost_equals_two_one_sided_t_tests(d, margin):
    d = np.array(d)
    lower = sps.ttest_1samp(d, -margin, alternative="greater").pvalue
    upper = sps.ttest_1samp(d, margin, alternative="less").pvalue
    assert tost_p(d, margin) == pytest.approx(max(lower, upper), rel=1e-9)


@pytest.mark.parametrize("effect, sd, n, power", [
    (1.0, 1.0, 10, 0.8031),    # G*Power, matched pairs, dz = 1, two-tailed alpha .05
    (0.5, 1.0, 34, 0.8078),    # dz = 0.5
    (0.05, 0.1, 34, 0.8078),   # the same standardised effect
])
def test_power_against_the_noncentral_t(effect, sd, n, power):
    assert paired_t_power(effect, sd, n) == pytest.approx(power, abs=5e-4)


def test_mde_and_personas_needed_invert_the_power():
    for n in (5, 8, 50):
        mde = minimum_detectable_effect(0.1, n)
        assert paired_t_power(mde, 0.1, n) == pytest.approx(0.8, abs=1e-6)
    n = personas_needed(0.05, 0.1)
    assert paired_t_power(0.05, 0.1, int(n)) >= 0.8 > paired_t_power(0.05, 0.1, int(n) - 1)
    assert np.isnan(minimum_detectable_effect(0.1, 1)) and np.isnan(personas_needed(0.0, 0.1))


@pytest.mark.parametrize("n", [8, 50])
def test_tost_holds_its_level_at_the_margin_and_power_holds_at_the_mde(n):
    """Simulated per-persona differences. At a true difference equal to the margin, TOST must claim
    equivalence at most 5% of the time; at a true difference equal to the MDE, the paired t-test must reject
    about 80% of the time (4000 draws: simulation error about ±0.02)."""
    rng = np.random.default_rng(n)
    sd, margin, draws = 0.05, 0.02, 4000
    d = rng.normal(margin, sd, size=(draws, n))
    false_equivalence = np.mean([tost_p(row, margin) < 0.05 for row in d])
    assert false_equivalence <= 0.05 + 0.015, false_equivalence
    mde = minimum_detectable_effect(sd, n)
    d = rng.normal(mde, sd, size=(draws, n))
    rejected = np.mean(sps.ttest_1samp(d, 0.0, axis=1).pvalue < 0.05)
    assert rejected == pytest.approx(0.8, abs=0.025), rejected


def test_equivalent_methods_are_called_equivalent_and_real_differences_are_not():
    rng = np.random.default_rng(0)
    same = rng.normal(0.0, 0.01, 50)
    assert tost_p(same, 0.02) < 0.05
    assert verdict(float(same.mean()), 0.7, tost_p(same, 0.02), 0.02) == "equivalent within ±0.02"
    assert verdict(0.1, 0.001, 0.9, 0.02) == "better" and verdict(-0.1, 0.001, 0.9, 0.02) == "worse"
    assert verdict(0.01, 0.3, 0.4, 0.02) == "inconclusive"


def test_slope_by_hand():
    s = slope([1, 2, 3, 4], [3, 5, 7, 9.5])  # Sxy 10.75, Sxx 5; residuals 0.1 -0.05 -0.2 0.15; t(0.975, 2) 4.3027
    assert s["slope"] == pytest.approx(2.15) and s["intercept"] == pytest.approx(0.75)
    assert (s["ci_low"], s["ci_high"]) == pytest.approx((2.15 - 4.302653 * np.sqrt(0.0375 / 5),
                                                        2.15 + 4.302653 * np.sqrt(0.0375 / 5)), abs=1e-5)
    assert np.isnan(slope([1, 1, 1], [1, 2, 3])["slope"])


def test_method_table_adjusts_over_the_methods_compared_in_the_run():
    rng = np.random.default_rng(3)
    rows = []
    for m, shift in (("unified", 0.0), ("a", 0.05), ("b", 0.0), ("c", 0.001)):
        for i in range(40):
            rows.append(("r1", m, f"p{i}", 0.5 + shift + rng.normal(0, 0.03)))
    table = method_table(pd.DataFrame(rows, columns=["run_id", "method", "persona_id", "score"]), margin=0.02)
    t = table.set_index("method")
    compared = t.drop(index="unified")
    np.testing.assert_allclose(compared.holm_p, holm(compared.wilcoxon_p))
    assert (compared.holm_p >= compared.wilcoxon_p).all()
    assert t.loc["a", "verdict"] == "better"
    assert pd.isna(t.loc["unified", "verdict"]) and np.isnan(t.loc["unified", "holm_p"])
    assert t.loc["a", "mde"] > 0 and t.loc["a", "personas_needed"] >= 2


# ----------------------------------------------------------------------------- when nothing can be significant

@pytest.mark.parametrize("n", range(1, 21))
def test_smallest_wilcoxon_p_is_two_over_two_to_the_n(n):
    from engine.analysis.stats import smallest_wilcoxon_p
    assert smallest_wilcoxon_p(n) == pytest.approx(2 / 2 ** n, rel=1e-12)


def test_no_data_goes_below_the_smallest_wilcoxon_p():
    """Ties and zeros included: the bound holds for what paired_difference really computes."""
    from engine.analysis.stats import smallest_wilcoxon_p
    rng = np.random.default_rng(3)
    for _ in range(400):
        n = int(rng.integers(2, 13))
        d = np.round(rng.normal(rng.choice([0.0, 0.1, 1.0]), 0.1, n), int(rng.integers(1, 3)))  # ties, zeros, one sign
        r = paired_difference(d, np.zeros(n))
        if r["wilcoxon_p"] == r["wilcoxon_p"]:
            assert r["wilcoxon_p"] >= smallest_wilcoxon_p(r["helped"] + r["hurt"]) * (1 - 1e-12), d


def _one_run(n_personas, n_methods, shift=0.1, seed=0):
    """A run where every method beats the reference on every persona (distinct gains): the smallest p there is."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.2, 0.6, n_personas)
    rows = [("r1", "unified", f"p{i}", b) for i, b in enumerate(base)]
    for m in range(n_methods):
        gains = shift + rng.permutation(n_personas) * 0.01
        rows += [("r1", f"m{m}", f"p{i}", b + g) for i, (b, g) in enumerate(zip(base, gains))]
    return pd.DataFrame(rows, columns=["run_id", "method", "persona_id", "score"])


@pytest.mark.parametrize("n_personas, n_methods, floor", [
    (8, 16, 0.125),       # the README's all-methods run: nothing can be significant
    (8, 5, 5 * 2 / 256),  # five comparisons at n = 8 can
    (10, 16, 16 * 2 / 1024),
    (3, 2, 0.5),
])
def test_holm_floor_is_what_holm_gives_the_most_extreme_data(n_personas, n_methods, floor):
    """Every method better on every persona: Holm's smallest adjusted p equals the floor, and no table goes below."""
    from engine.analysis.stats import holm_floor
    table = method_table(_one_run(n_personas, n_methods))
    compared = table[table.wilcoxon_p.notna()]
    untied = list(compared.helped.astype(int) + compared.hurt.astype(int))
    assert holm_floor(untied) == pytest.approx(floor)
    assert compared.holm_p.min() == pytest.approx(min(1.0, floor))
    noisy = _one_run(n_personas, n_methods, shift=0.0, seed=1)
    noisy["score"] += np.random.default_rng(2).normal(0, 0.05, len(noisy))
    t = method_table(noisy)
    t = t[t.wilcoxon_p.notna()]
    assert t.holm_p.min() >= holm_floor(list(t.helped.astype(int) + t.hurt.astype(int))) - 1e-12


def test_holm_floor_counts_comparisons_and_takes_the_largest_n():
    from engine.analysis.stats import holm_floor
    assert holm_floor([8, 6, 3]) == pytest.approx(3 * 2 / 256)  # not the smallest n, not one comparison
    assert holm_floor([0, 8]) == pytest.approx(2 / 256)          # a fully tied comparison has no p: not in the family
    assert math.isnan(holm_floor([]))


@pytest.mark.parametrize("n, m", [(8, 16), (3, 16), (5, 1), (12, 40), (20, 3)])
def test_significance_limits_are_the_boundary(n, m):
    from engine.analysis.stats import ALPHA, significance_limits, smallest_wilcoxon_p
    lim = significance_limits(n, m)
    k, need = lim["max_comparisons"], lim["fewest_personas"]
    assert k * smallest_wilcoxon_p(n) < ALPHA <= (k + 1) * smallest_wilcoxon_p(n)
    assert m * smallest_wilcoxon_p(need) < ALPHA <= m * smallest_wilcoxon_p(need - 1) if need > 1 else True
    assert significance_limits(8, 16) == {"smallest_p": 2 / 256, "max_comparisons": 6, "fewest_personas": 10}


def test_significance_limit_text_says_when_and_what_would_help():
    from engine.analysis.views import significance_limit_text
    text = significance_limit_text(method_table(_one_run(8, 16)))
    assert "No method can be significant" in text
    assert "0.125" in text and "at most 6 methods" in text and "at least 10 personas" in text
    assert significance_limit_text(method_table(_one_run(8, 5))) is None
    two = pd.concat([_one_run(8, 16), _one_run(12, 16).assign(run_id="run-000002")])
    text = significance_limit_text(method_table(two))
    assert text.startswith("run …r1: ") and "000002" not in text  # only the run that cannot

    import json
    grid = pd.concat([_one_run(8, 16).assign(run_id=json.dumps({"personal_fraction": 0.25})),
                      _one_run(30, 16).assign(run_id=json.dumps({"personal_fraction": 0.75}))])
    text = significance_limit_text(method_table(grid).rename(columns={"run_id": "point"}), by="point")
    assert text.startswith("personal_fraction=0.25: ") and "0.75" not in text  # a study's grid point, named
    same = pd.concat([_one_run(8, 16).assign(run_id=json.dumps({"r": r})) for r in (4, 8, 16)])
    text = significance_limit_text(method_table(same).rename(columns={"run_id": "point"}), by="point")
    where, _, rest = text.partition(": ")
    assert set(where.split("; ")) == {"r=4", "r=8", "r=16"} and text.count("No method can be significant") == 1
