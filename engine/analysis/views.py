"""What the dashboard pages show, as plain DataFrames: store reads joined with engine statistics.

No Streamlit here (the app wraps these in st.cache_data keyed by the store path and `store.version`).
Every function takes `path` (the store file); the reads themselves are engine.store.queries.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from engine import store
from engine.analysis import stats
from engine.data.simulator import parse_sim_spec
from engine.store import queries
from engine.store.queries import blind_ceiling, persona_scores

# read by the pages as the store answers them
runs, persona_list, runs_with_clusters, KINDS = queries.runs, queries.persona_list, queries.runs_with_clusters, queries.KINDS

METRICS = store.METRIC_COLUMNS
# what the pages call each kind of test target (queries.KINDS), and what it means
KIND_LABELS = {"all": "all targets", "personal": "personal", "general": "general", "stated": "stated",
               "supplied": "supplied"}
KIND_HELP = ("personal: requests whose right reply depends on the persona's habits; general: the request names what "
             "to do. stated / supplied split every reference's settings: stated ones the dialogue named before the "
             "target (copying), supplied ones the assistant brings itself (the persona's habit or a default: where "
             "personalization shows); action_f1 on each part, over the targets that have settings of that part. "
             "Action metrics count only targets whose reference names a setting.")


def run_label(row) -> str:
    name = row.get("name") or ""
    made = "imported" if row.get("task") == "imported" else f"seed {row.get('seed')}"  # imported runs have no seed
    return f"{row['run_id']} · {name} · {made} · {row.get('status')}"


def available_metrics(run_ids, path=None) -> list[str]:
    """Metric columns with at least one value in these runs (score first)."""
    if not run_ids:
        return ["score"]
    counts = queries.metric_counts(run_ids, path)
    return [m for m in METRICS if counts.get(m)] or ["score"]


def _stages_text(details_json) -> str:
    try:
        stages = json.loads(details_json if isinstance(details_json, str) else "{}").get("stages") or {}
    except ValueError:
        return ""
    return " + ".join(f"{k} {v:.0f} s" for k, v in stages.items()) if len(stages) > 1 else ""


def compare_table(run_ids, reference: str = "unified", metric: str = "score", methods=None,
                  path=None, kind: str = "all", margin: float | None = None, effect: float | None = None) -> pd.DataFrame:
    """engine.analysis.stats.method_table per (run, method) joined with time (every stage), epochs, parameters, names,
    and the targets and reference settings the action metrics of `kind` rest on (n_targets, n_settings). Holm's
    family is the methods in the view: `methods` when given, else every method of the run."""
    scores = persona_scores(run_ids, metric, path, kind)
    if methods:
        scores = scores[scores.method.isin(list(methods) + [reference])]
    table = stats.method_table(scores, reference=reference, margin=margin, effect=effect)
    if methods:
        table = table[table.method.isin(list(methods))]
    info = queries.method_info(run_ids, path)
    out = table.merge(info, on=["run_id", "method"], how="left")
    out = out.merge(queries.target_counts(run_ids, path, kind), on=["run_id", "method"], how="left")
    out["total_seconds"] = out.train_seconds.fillna(0) + out.eval_seconds.fillna(0)
    out["stages"] = out.pop("details_json").map(_stages_text)
    return out


def significance_limit_text(table: pd.DataFrame, by: str = "run_id", alpha: float = stats.ALPHA) -> str | None:
    """Words, when no method of a Holm family (a compare_table run; by="point": a study_view grid point) can be
    significant whatever the scores (too few personas for so many comparisons), with what would allow it; None
    when every family can. Families with the same limit share one sentence."""
    said: dict[str, list[str]] = {}  # sentence -> the runs / points it is about
    defined = table[table.wilcoxon_p.notna()]
    for key, g in defined.groupby(by, sort=False):
        untied = (g.helped.astype(int) + g.hurt.astype(int)).tolist()
        floor = stats.holm_floor(untied)
        if not floor >= alpha:
            continue
        n, m = max(untied), len(untied)
        limits = stats.significance_limits(n, m, alpha)
        k = limits["max_comparisons"]
        allow = f"compare at most {k} method{'s' if k > 1 else ''} with the reference, or " if k else ""
        need = f"use at least {limits['fewest_personas']} personas" if limits["fewest_personas"] else "add personas"
        total = int(g.n_personas.max())
        who = f"{n} personas" if n >= total else f"{n} of {total} personas differing from the reference"
        sentence = (f"No method can be significant here, whatever the scores: with {who} the smallest Wilcoxon p is "
                    f"{limits['smallest_p']:.3g}, and Holm over {m} comparisons raises it to {floor:.3g} ≥ "
                    f"{alpha:g}. To test, {allow}{need}; the intervals still say how large a Δ the data allow.")
        said.setdefault(sentence, []).append(f"run …{str(key)[-6:]}" if by == "run_id" else
                                             ", ".join(f"{a}={v}" for a, v in json.loads(key).items()))
    if not said:
        return None
    if defined[by].nunique() == 1:
        return next(iter(said))
    return "\n\n".join(f"{'; '.join(where)}: {sentence}" for sentence, where in said.items())


def routing(run_ids, path=None) -> dict:
    """`routed`'s choices: per (run, persona) the method chosen on validation and the one test would have
    chosen; per run, routed's mean score and the optimistic test-routed mean (the gap is what choosing on
    test overstates)."""
    rows = queries.routed_details(run_ids, path)
    choices, summary = [], []
    for r in rows.itertuples():
        d = json.loads(r.details_json if isinstance(r.details_json, str) else "{}")
        on_test = d.get("routing_on_test", {})
        choices += [(r.run_id, p, m, on_test.get(p)) for p, m in d.get("routing", {}).items()]
        summary.append((r.run_id, r.mean_score, d.get("test_routed_score")))
    return {"choices": pd.DataFrame(choices, columns=["run_id", "persona_id", "method", "method_on_test"]),
            "summary": pd.DataFrame(summary, columns=["run_id", "routed", "routed_on_test"]).assign(
                gap=lambda t: t.routed_on_test - t.routed)}


def persona_detail(run_id, persona_id, path=None) -> dict:
    """Profile row, per-method scores (with the run's mean per method), predictions, merge neighbours."""
    return {"profile": queries.persona_profile(run_id, persona_id, path),
            "scores": queries.persona_method_scores(run_id, persona_id, path),
            "predictions": queries.persona_predictions(run_id, persona_id, path),
            "merge": queries.merge_neighbours(run_id, persona_id, path)}


def cluster_view(run_id, gain_method: str | None = None, reference: str = "unified", path=None) -> dict:
    """Personas with cluster / UMAP / silhouette (+ gain of a method over the reference), cluster_k, summaries."""
    personas = queries.persona_map(run_id, path)
    if gain_method:
        sc = queries.method_scores(run_id, [gain_method, reference], path)
        wide = sc.pivot_table(index="persona_id", columns="method", values="score")
        if gain_method in wide and reference in wide:
            personas = personas.merge((wide[gain_method] - wide[reference]).rename("gain").reset_index(),
                                      on="persona_id", how="left")
    if "gain" not in personas:
        personas["gain"] = np.nan
    ks = queries.cluster_k(run_id, path)
    clustered = personas.dropna(subset=["cluster"])
    per_cluster = (clustered.groupby("cluster").agg(personas=("persona_id", "count"),
                                                    silhouette=("silhouette", "mean"), gain=("gain", "mean"))
                   .reset_index()) if len(clustered) else pd.DataFrame(columns=["cluster", "personas", "silhouette", "gain"])
    chosen = ks[ks.chosen.fillna(False).astype(bool)] if len(ks) else ks
    overall = float(chosen.silhouette.iloc[0]) if len(chosen) else (
        float(clustered.silhouette.mean()) if clustered.silhouette.notna().any() else float("nan"))
    return {"personas": personas, "cluster_k": ks, "per_cluster": per_cluster, "overall_silhouette": overall,
            "has_clusters": bool(len(clustered)), "has_map": bool(personas.umap_x.notna().any())}


# ----------------------------------------------------------------------------- studies

def studies(path=None) -> pd.DataFrame:
    """Every study with its runs landed so far."""
    out = queries.studies(path)
    out.loc[out.n_done >= out.n_runs, "status"] = "done"  # a dashboard study's jobs finish without telling it
    return out


def study_view(study_id, reference: str = "unified", metric: str = "score", kind: str = "all", path=None) -> dict:
    """A study's statistics per grid point (runs that differ only in seed pooled by stats.over_seeds) and method.

    table: one row per (point, method) with the axis values as columns, mean and 95% CI over personas of
    seed-averaged scores, Δ vs `reference` with its paired CI, the seed spread, train + eval seconds and the
    reference settings the action metrics of `kind` rest on per run (n_settings; both means over seeds) and run
    ids. cells: per point the winning method, its margin over the runner-up (paired, seed-averaged per persona)
    and whether that margin is significant. axes: the varied axes.
    """
    members = queries.study_runs(study_id, path)
    spec = queries.study_spec(study_id, path)
    axes = list(spec["vary"]) if spec else []
    empty = {"table": pd.DataFrame(), "cells": pd.DataFrame(), "axes": axes, "ceiling": pd.DataFrame()}
    if members.empty:
        return empty
    coords = {r.run_id: json.loads(r.coords_json or "{}") for r in members.itertuples()}
    point = {rid: json.dumps({a: c.get(a) for a in axes}, sort_keys=True) for rid, c in coords.items()}
    scores = persona_scores(list(coords), metric, path, kind)
    if scores.empty:
        return empty
    draws = {rid: c.get("data_seed") for rid, c in coords.items()}
    if any(d is not None for d in draws.values()):  # another data draw holds other personas: units of their own
        scores = scores.assign(persona_id=[f"data {draws[r]}/{p}" for r, p in zip(scores.run_id, scores.persona_id)])
    table = stats.over_seeds(scores, point, reference=reference).rename(columns={"group": "point"})
    times = queries.run_seconds(list(coords), path)
    times["point"] = times.run_id.map(point)
    table = table.merge(times.groupby(["point", "method"], as_index=False)["seconds"].mean(), on=["point", "method"],
                        how="left")
    counts = queries.target_counts(list(coords), path, kind)
    counts["point"] = counts.run_id.map(point)
    table = table.merge(counts.groupby(["point", "method"], as_index=False)["n_settings"].mean(),
                        on=["point", "method"], how="left")
    points = pd.Series(point).rename_axis("run_id").reset_index(name="point")
    table = table.merge(points.groupby("point")["run_id"].agg(list).rename("run_ids").reset_index(), on="point")
    for a in axes:
        table[a] = table.point.map(lambda p, a=a: json.loads(p)[a])
    ceiling = blind_ceiling(list(coords), metric, path, kind)
    if len(ceiling):
        ceiling = ceiling.assign(point=ceiling.run_id.map(point)).groupby("point", as_index=False)["ceiling"].mean()
        for a in axes:
            ceiling[a] = ceiling.point.map(lambda p, a=a: json.loads(p)[a])
    seed_avg = scores.assign(point=scores.run_id.map(point)).groupby(
        ["point", "method", "persona_id"], as_index=False)["score"].mean()
    return {"table": table.sort_values(axes + ["method"]).reset_index(drop=True), "cells": _winners(seed_avg, axes),
            "axes": axes, "ceiling": ceiling, "coverage": seed_coverage(list(coords), path)}


def _winners(seed_avg: pd.DataFrame, axes: list[str]) -> pd.DataFrame:
    """Per point: the best method by mean, its paired margin over the runner-up and whether the margin's 95%
    t-interval excludes 0 (else "no significant winner")."""
    rows = []
    for p, g in seed_avg.groupby("point"):
        wide = g.pivot_table(index="persona_id", columns="method", values="score")
        ranked = wide.mean().sort_values(ascending=False)
        best, second = ranked.index[0], (ranked.index[1] if len(ranked) > 1 else None)
        row = {"point": p, "winner": best, "runner_up": second, "margin": float("nan"), "margin_ci_low": float("nan"),
               "margin_ci_high": float("nan"), "significant": False}
        if second is not None:
            d = stats.paired_difference(*stats.align(wide[best].dropna().to_dict(), wide[second].dropna().to_dict()))
            row.update(margin=d["mean_diff"], margin_ci_low=d["ci_low"], margin_ci_high=d["ci_high"],
                       significant=bool(d["ci_low"] > 0))
        rows.append(row)
    out = pd.DataFrame(rows)
    for a in axes:
        out[a] = out.point.map(lambda q, a=a: json.loads(q)[a])
    return out


def crossover_text(table: pd.DataFrame, axis: str, method: str, reference: str) -> str:
    """Where `method` beats `reference` along one axis, in words. Significant: Holm-adjusted p < 0.05 (over the
    methods compared at each point) when the table has it, else the paired 95% CI of Δ excluding 0."""
    rows = table[(table.method == method)].sort_values(axis)
    if rows.empty or rows.delta.isna().all():
        return f"{method} has no paired comparison with {reference} in this study."
    significant = rows.holm_p < 0.05 if "holm_p" in rows else (rows.delta_ci_low > 0) | (rows.delta_ci_high < 0)
    wins = rows[significant & (rows.delta > 0)]
    losses = rows[significant & (rows.delta < 0)]
    fmt = lambda r: f"Δ {r.delta:+.3f} [{r.delta_ci_low:+.3f}, {r.delta_ci_high:+.3f}]"
    if len(wins) == 0:
        worse = f"; significantly worse at {axis} ∈ {{{', '.join(str(v) for v in losses[axis])}}}" if len(losses) else ""
        return f"{method} never beats {reference} significantly at these {axis} values{worse}."
    values = list(rows[axis])
    first = wins.iloc[0]
    tail = rows[rows[axis] >= first[axis]]
    if tail.index.isin(wins.index).all():
        return (f"{method} beats {reference} from {axis} ≥ {first[axis]} on; at {axis} = {first[axis]}: {fmt(first)}"
                + ("" if first[axis] != values[0] else " (everywhere in this study)") + ".")
    return (f"{method} beats {reference} significantly at {axis} ∈ {{{', '.join(str(v) for v in wins[axis])}}} "
            f"but not at every larger value; at {axis} = {first[axis]}: {fmt(first)}.")


# ----------------------------------------------------------------------------- who gains

GAIN_ATTRIBUTES = ("n_train", "n_val", "n_test", "silhouette")  # numeric facts of a persona a gain is set against


def gains(run_ids, method: str, reference: str = "unified", metric: str = "score", kind: str = "all",
          attribute: str = "n_train", path=None) -> dict:
    """Who gains: per persona the paired Δ (method − reference) beside a numeric attribute of the persona (by
    default its number of train examples), and per run the least-squares slope of Δ on it with its 95%
    t-interval. personas: run_id, persona_id, delta, <attribute>; slopes: run_id, n, slope, ci_low, ci_high."""
    if attribute not in GAIN_ATTRIBUTES:
        raise ValueError(f"attribute must be one of {GAIN_ATTRIBUTES}")
    scores = persona_scores(run_ids, metric, path, kind)
    wide = scores[scores.method.isin([method, reference])].pivot_table(
        index=["run_id", "persona_id"], columns="method", values="score")
    if method not in wide or reference not in wide or method == reference:
        return {"personas": pd.DataFrame(columns=["run_id", "persona_id", "delta", attribute]),
                "slopes": pd.DataFrame(columns=["run_id", "n", "slope", "ci_low", "ci_high"])}
    delta = (wide[method] - wide[reference]).rename("delta").dropna().reset_index()
    personas = delta.merge(queries.persona_attributes(run_ids, path)[["run_id", "persona_id", attribute]],
                           on=["run_id", "persona_id"], how="left")
    slopes = pd.DataFrame([{"run_id": r, **stats.slope(g[attribute], g.delta)} for r, g in personas.groupby("run_id")],
                          columns=["run_id", "n", "slope", "ci_low", "ci_high", "intercept"])
    return {"personas": personas, "slopes": slopes}


# ----------------------------------------------------------------------------- seeds

def seed_coverage(run_ids, path=None) -> dict:
    """The sources of chance behind these runs: their training seeds, and the simulator's data draws (None in the
    list for a fixed dataset: a file's personas are the only sample of it). Pages say from it what an interval
    covers."""
    rows = queries.runs(path)
    rows = rows[rows.run_id.isin([str(r) for r in run_ids])]
    seeds = sorted({int(s) for s in rows.seed.dropna()})
    draws = {parse_sim_spec(data)["seed"] if data == "sim" or data.startswith("sim:") else None
             for data in rows.dataset.astype(str)}
    return {"train_seeds": seeds, "data_draws": sorted(draws, key=lambda d: (d is None, d or 0))}


def coverage_text(coverage: dict, pooled_seeds: bool = False) -> str:
    """What an interval over personas covers, in words."""
    seeds, draws = coverage["train_seeds"], coverage["data_draws"]
    named = [d for d in draws if d is not None]
    data = ("one fixed dataset" if not named else f"the simulator's data draw{'s' if len(named) > 1 else ''} "
            f"{', '.join(map(str, named))}" + (" and a fixed dataset" if None in draws else ""))
    if not seeds:
        return f"Intervals are over personas (imported results); {data}."
    s = ", ".join(map(str, seeds))
    if pooled_seeds and (len(seeds) > 1 or len(named) > 1):
        over = (f"each persona's score averaged over training seeds {s}" if len(seeds) > 1
                else f"one training seed ({s}), whose spread they do not cover")
        return (f"Intervals are over personas, {over}; {data}"
                + (" (another draw holds other personas: they count as personas of their own)." if len(named) > 1
                   else ", which they do not cover."))
    return (f"Each interval is over the personas of one run: it does not cover the training seed "
            f"({s}) nor another draw of the data ({data}).")


# what may differ between seeds of one setup (threads change float summation order only)
SEED_FREE = ("seed", "name", "methods", "precision_resolved", "device", "study", "threads", "threads_used")


def seed_groups(run_ids, path=None) -> dict:
    """run_id -> a label shared by the runs that differ only in seed (same data, model, hyperparameters,
    options, metric); a run alone keeps a group of its own."""
    import hashlib
    configs = queries.run_configs(run_ids, path)
    keys, labels = {}, {}
    for r in configs.itertuples():
        try:
            cfg = json.loads(r.config_json or "{}")
        except ValueError:
            cfg = {}
        key = json.dumps({k: v for k, v in cfg.items() if k not in SEED_FREE}, sort_keys=True, default=str)
        keys[r.run_id] = key
        labels.setdefault(key, f"{r.model} · {r.dataset[:60]}")
    n = pd.Series(keys).value_counts()
    short = lambda k: hashlib.sha256(k.encode()).hexdigest()[:4]  # two setups on the same data stay apart
    return {rid: f"{labels[k]} · {n[k]} seed{'s' if n[k] > 1 else ''} · {short(k)}" for rid, k in keys.items()}


def compare_over_seeds(run_ids, reference: str = "unified", metric: str = "score", methods=None, path=None,
                       kind: str = "all", margin: float | None = None, effect: float | None = None) -> pd.DataFrame:
    """Compare's table with runs that differ only in seed taken together (stats.over_seeds)."""
    scores = persona_scores(run_ids, metric, path, kind)
    if methods:
        scores = scores[scores.method.isin(list(methods) + [reference])]
    out = stats.over_seeds(scores, seed_groups(run_ids, path), reference=reference, margin=margin, effect=effect)
    return out[out.method.isin(list(methods))] if methods else out
