import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from engine.stats import align, method_table, paired_difference, summarize


def test_summarize_matches_numpy():
    x = np.random.default_rng(0).normal(0.7, 0.1, size=50)
    s = summarize(x)
    assert s["n"] == 50
    assert s["mean"] == pytest.approx(x.mean())
    assert s["std"] == pytest.approx(x.std(ddof=1))
    assert s["ci_low"] <= s["mean"] <= s["ci_high"]


def test_summarize_single_value():
    s = summarize([0.5])
    assert s == dict(n=1, mean=0.5, std=0.0, ci_low=0.5, ci_high=0.5)


def test_ci_narrows_with_more_data():
    rng = np.random.default_rng(1)
    small = summarize(rng.normal(size=20))
    large = summarize(rng.normal(size=500))
    assert (large["ci_high"] - large["ci_low"]) < (small["ci_high"] - small["ci_low"])


def test_seed_determinism():
    x = np.random.default_rng(2).random(30)
    assert summarize(x, seed=3) == summarize(x, seed=3)
    assert summarize(x, seed=3)["ci_low"] != summarize(x, seed=4)["ci_low"]
    y = x + 0.01
    assert paired_difference(y, x, seed=5) == paired_difference(y, x, seed=5)


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
    assert (pp["helped"], pp["hurt"]) == (3, 1)

    base = row("r1", "base")
    assert base["n_personas"] == 3
    assert base["delta"] == pytest.approx(np.mean([0.2 - 0.5, 0.3 - 0.6, 0.1 - 0.7]))
    assert (base["helped"], base["hurt"]) == (0, 3)

    for r in (row("r1", "unified"), row("r2", "base")):  # reference row, and run lacking it
        assert math.isnan(r["delta"]) and math.isnan(r["wilcoxon_p"])
        assert r["helped"] is None and r["hurt"] is None


def test_bootstrap_ci_coverage():
    """For normal data the 95% percentile CI should cover the true mean roughly 95% of the time
    (the percentile bootstrap under-covers slightly at small n: ~93.5% at n=30 over 2000 draws).
    With 200 draws the count has sd ~3.4, so accept 174..199 (87-99.5%)."""
    rng = np.random.default_rng(7)
    covered = 0
    for i in range(200):
        s = summarize(rng.normal(1.0, 2.0, size=40), n_boot=1000, seed=i)
        covered += s["ci_low"] <= 1.0 <= s["ci_high"]
    assert 174 <= covered <= 199, covered
