"""What the dashboard pages show, as plain DataFrames: store reads joined with engine statistics.

No Streamlit here (the app wraps these in st.cache_data keyed by the store path and `store_version`).
Every function takes `path` (the store file) and opens only short read-only connections.
"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd

from engine import store
from engine.analysis import stats

METRICS = ("score", "action_f1", "param_f1", "device_precision", "numerical_precision", "embedding_similarity",
           "accuracy")
KINDS = ("all", "personal", "general")  # which test targets a figure is over


def store_version(path) -> tuple:
    """Changes whenever the store file (or its WAL) is written: the cache key of every read."""
    path = store.store_path(path)
    out = []
    for f in (path, path + ".wal"):
        try:
            st = os.stat(f)
            out += [st.st_mtime_ns, st.st_size]
        except OSError:
            out += [0, 0]
    return tuple(out)


def _ids(run_ids) -> list[str]:
    return [str(r) for r in (run_ids or [])]


def runs(path=None) -> pd.DataFrame:
    """Every run with its number of finished methods, newest first."""
    return store.query(
        "SELECT r.*, coalesce(m.n_methods, 0) AS n_methods_done FROM runs r "
        "LEFT JOIN (SELECT run_id, count(*) AS n_methods FROM method_results GROUP BY run_id) m USING (run_id) "
        "ORDER BY r.created_at DESC", path=path)


def run_label(row) -> str:
    name = row.get("name") or ""
    made = "imported" if row.get("task") == "imported" else f"seed {row.get('seed')}"  # imported runs have no seed
    return f"{row['run_id']} · {name} · {made} · {row.get('status')}"


def table_counts(path=None) -> dict:
    tables = ("runs", "method_results", "persona_results", "persona_kind_results", "predictions", "personas",
              "cluster_k", "merge_weights", "persona_blind", "jobs")
    df = store.query(" UNION ALL ".join(f"SELECT '{t}' AS t, count(*) AS n FROM {t}" for t in tables), path=path)
    return dict(zip(df.t, df.n.astype(int)))


def available_metrics(run_ids, path=None) -> list[str]:
    """Metric columns with at least one value in these runs (score first)."""
    if not run_ids:
        return ["score"]
    cols = ", ".join(f"count({m}) AS {m}" for m in METRICS)
    df = store.query(f"SELECT {cols} FROM persona_results WHERE run_id IN (SELECT unnest(?))", [_ids(run_ids)], path)
    return [m for m in METRICS if len(df) and df[m].iloc[0] > 0] or ["score"]


def _scores_source(metric: str, kind: str) -> tuple[str, str]:
    """(table, extra WHERE) of per-persona figures over the test targets of `kind`."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    return ("persona_results", "") if kind == "all" else ("persona_kind_results", f"AND kind = '{kind}'")


def persona_scores(run_ids, metric: str = "score", path=None, kind: str = "all") -> pd.DataFrame:
    """Long frame run_id, method, persona_id, score (= the chosen metric over the test targets of `kind`)."""
    table, where = _scores_source(metric, kind)
    return store.query(f"SELECT run_id, method, persona_id, {metric} AS score FROM {table} "
                       f"WHERE run_id IN (SELECT unnest(?)) {where} ORDER BY run_id, method, persona_id",
                       [_ids(run_ids)], path)


def blind_ceiling(run_ids, metric: str = "score", path=None, kind: str = "all") -> pd.DataFrame:
    """Per run: the persona-blind ceiling (mean over personas of the data's persona-blind replies' metric);
    no row for runs whose data has no persona-blind replies."""
    _scores_source(metric, kind)
    return store.query(f"SELECT run_id, avg({metric}) AS ceiling, count(*) AS n_personas FROM persona_blind "
                       "WHERE run_id IN (SELECT unnest(?)) AND kind = ? GROUP BY run_id ORDER BY run_id",
                       [_ids(run_ids), kind], path)


def _stages_text(details_json) -> str:
    import json
    try:
        stages = json.loads(details_json if isinstance(details_json, str) else "{}").get("stages") or {}
    except ValueError:
        return ""
    return " + ".join(f"{k} {v:.0f} s" for k, v in stages.items()) if len(stages) > 1 else ""


def compare_table(run_ids, reference: str = "unified", metric: str = "score", methods=None,
                  path=None, kind: str = "all") -> pd.DataFrame:
    """engine.analysis.stats.method_table per (run, method) joined with time (every stage), epochs, parameters, names."""
    scores = persona_scores(run_ids, metric, path, kind)
    if methods:
        scores = scores[scores.method.isin(list(methods) + [reference])]
    table = stats.method_table(scores, reference=reference)
    if methods:
        table = table[table.method.isin(list(methods))]
    info = store.query(
        "SELECT m.run_id, m.method, m.train_seconds, m.eval_seconds, m.trainable_params, m.peak_mem_mb, "
        "m.n_adapters, m.device, m.epochs_trained, m.details_json, r.name AS run_name, r.model, r.seed, r.metric "
        "FROM method_results m JOIN runs r USING (run_id) WHERE m.run_id IN (SELECT unnest(?))", [_ids(run_ids)], path)
    out = table.merge(info, on=["run_id", "method"], how="left")
    out["total_seconds"] = out.train_seconds.fillna(0) + out.eval_seconds.fillna(0)
    out["stages"] = out.pop("details_json").map(_stages_text)
    return out


def routing(run_ids, path=None) -> dict:
    """`routed`'s choices: per (run, persona) the method chosen on validation and the one test would have
    chosen; per run, routed's mean score and the optimistic test-routed mean (the gap is what choosing on
    test overstates)."""
    import json
    rows = store.query("SELECT run_id, mean_score, details_json FROM method_results WHERE method = 'routed' "
                       "AND run_id IN (SELECT unnest(?))", [_ids(run_ids)], path)
    choices, summary = [], []
    for r in rows.itertuples():
        d = json.loads(r.details_json if isinstance(r.details_json, str) else "{}")
        on_test = d.get("routing_on_test", {})
        choices += [(r.run_id, p, m, on_test.get(p)) for p, m in d.get("routing", {}).items()]
        summary.append((r.run_id, r.mean_score, d.get("test_routed_score")))
    return {"choices": pd.DataFrame(choices, columns=["run_id", "persona_id", "method", "method_on_test"]),
            "summary": pd.DataFrame(summary, columns=["run_id", "routed", "routed_on_test"]).assign(
                gap=lambda t: t.routed_on_test - t.routed)}


def persona_list(run_id, path=None) -> pd.DataFrame:
    return store.query("SELECT persona_id, profile, cluster, n_train, n_val, n_test, silhouette FROM personas "
                       "WHERE run_id = ? ORDER BY persona_id", [run_id], path)


def persona_detail(run_id, persona_id, path=None) -> dict:
    """Profile row, per-method scores (with the run's mean per method), predictions, merge neighbours."""
    prof = store.query("SELECT * FROM personas WHERE run_id = ? AND persona_id = ?", [run_id, persona_id], path)
    scores = store.query(
        "SELECT p.method, p.score, p.n_test, a.mean_score AS run_mean, p.* EXCLUDE (run_id, method, persona_id, "
        "score, n_test) FROM persona_results p JOIN (SELECT method, avg(score) AS mean_score FROM persona_results "
        "WHERE run_id = ? GROUP BY method) a USING (method) WHERE p.run_id = ? AND p.persona_id = ? ORDER BY method",
        [run_id, run_id, persona_id], path)
    preds = store.query("SELECT method, example_id, kind, context, reference, persona_blind, prediction, score "
                        "FROM predictions WHERE run_id = ? AND persona_id = ? ORDER BY example_id, method",
                        [run_id, persona_id], path)
    merge = store.query("SELECT method, neighbour_id, weight, val_score, centrality, similarity FROM merge_weights "
                        "WHERE run_id = ? AND persona_id = ? ORDER BY method, weight DESC", [run_id, persona_id], path)
    return {"profile": prof.iloc[0].to_dict() if len(prof) else None, "scores": scores, "predictions": preds,
            "merge": merge}


def cluster_view(run_id, gain_method: str | None = None, reference: str = "unified", path=None) -> dict:
    """Personas with cluster / UMAP / silhouette (+ gain of a method over the reference), cluster_k, summaries."""
    personas = store.query("SELECT persona_id, profile, cluster, umap_x, umap_y, silhouette FROM personas "
                           "WHERE run_id = ? ORDER BY persona_id", [run_id], path)
    if gain_method:
        sc = store.query("SELECT persona_id, method, score FROM persona_results WHERE run_id = ? AND method IN (?, ?)",
                         [run_id, gain_method, reference], path)
        wide = sc.pivot_table(index="persona_id", columns="method", values="score")
        if gain_method in wide and reference in wide:
            personas = personas.merge((wide[gain_method] - wide[reference]).rename("gain").reset_index(),
                                      on="persona_id", how="left")
    if "gain" not in personas:
        personas["gain"] = np.nan
    ks = store.query("SELECT k, silhouette, chosen FROM cluster_k WHERE run_id = ? ORDER BY k", [run_id], path)
    clustered = personas.dropna(subset=["cluster"])
    per_cluster = (clustered.groupby("cluster").agg(personas=("persona_id", "count"),
                                                    silhouette=("silhouette", "mean"), gain=("gain", "mean"))
                   .reset_index()) if len(clustered) else pd.DataFrame(columns=["cluster", "personas", "silhouette", "gain"])
    chosen = ks[ks.chosen.fillna(False).astype(bool)] if len(ks) else ks
    overall = float(chosen.silhouette.iloc[0]) if len(chosen) else (
        float(clustered.silhouette.mean()) if clustered.silhouette.notna().any() else float("nan"))
    return {"personas": personas, "cluster_k": ks, "per_cluster": per_cluster, "overall_silhouette": overall,
            "has_clusters": bool(len(clustered)), "has_map": bool(personas.umap_x.notna().any())}


def runs_with_clusters(path=None) -> list[str]:
    df = store.query("SELECT DISTINCT run_id FROM personas WHERE cluster IS NOT NULL OR umap_x IS NOT NULL", path=path)
    return list(df.run_id)


# ----------------------------------------------------------------------------- run-time estimate

# Fallback speeds when the store has no measurement for a model yet (CPU; a CUDA device is assumed 10x faster).
DEFAULT_TRAIN_TOKENS_PER_S = {"tiny-random": 3000.0, "smollm2-135m": 250.0}
DEFAULT_EVAL_S_PER_TARGET = {"tiny-random": 0.1, "smollm2-135m": 1.0}
UNKNOWN_TRAIN_TOKENS_PER_S, UNKNOWN_EVAL_S_PER_TARGET = 100.0, 3.0
# On CPU without measurements, speeds follow this machine's calibrated matmul speed (engine.models.precision):
# training tokens/s per fp32 GFLOP/s, and evaluation seconds per target times fp32 GFLOP/s, both measured
# with smollm2-135m in fp32 on a 2-core AMD EPYC (AVX2, 125 GFLOP/s: 250 tokens/s). Where bf16 runs natively
# it adds at most the end-to-end gain measured on an AMX CPU (699 vs 491 tokens/s), not the matmul's.
TOKENS_PER_S_PER_GFLOPS = {"smollm2-135m": 2.0}
EVAL_S_X_GFLOPS_PER_TARGET = {"smollm2-135m": 125.0}
BF16_END_TO_END_GAIN = 1.4
LOAD_SECONDS = 10.0
CHARS_PER_TOKEN = 3.5


def _resolved_precision(config_json) -> str | None:
    import json
    try:
        return (json.loads(config_json or "{}").get("precision_resolved") or {}).get("precision")
    except (ValueError, AttributeError):
        return None


def measured_speeds(model: str, path=None, precision: str | None = None) -> dict:
    """Median training tokens/s and eval seconds per test target of past runs of this model in the store
    (only runs that computed in `precision`, when given and recorded)."""
    df = store.query(
        "SELECT m.tokens_per_second, m.eval_seconds, m.method, m.run_id, r.config_json, "
        "(SELECT count(*) FROM predictions p WHERE p.run_id = m.run_id AND p.method = m.method) AS n_targets "
        "FROM method_results m JOIN runs r USING (run_id) WHERE r.model = ?", [model], path)
    if precision is not None and len(df):
        ran = df.config_json.map(_resolved_precision)
        df = df[ran.isna() | (ran == precision)]
    tps = df.tokens_per_second[df.tokens_per_second > 0]
    ev = (df.eval_seconds / df.n_targets.where(df.n_targets > 0)).dropna()
    return {"train_tokens_per_s": float(tps.median()) if len(tps) else None,
            "eval_s_per_target": float(ev.median()) if len(ev) else None, "n_measurements": int(len(df))}


def calibrated_speeds(model: str, precision: str = "auto") -> dict | None:
    """This CPU's expected speeds for a model from its matmul calibration, or None when the model has no
    reference measurement. Returns the precision it would compute in and why."""
    import torch

    from engine.models.precision import cpu_calibration, resolve_precision
    if model not in TOKENS_PER_S_PER_GFLOPS:
        return None
    choice = resolve_precision(precision, torch.device("cpu"), model)
    cal = cpu_calibration()
    gain = min(BF16_END_TO_END_GAIN, cal.bf16_gflops / cal.fp32_gflops) if choice.precision == "bf16" else 1.0
    return {"train_tokens_per_s": TOKENS_PER_S_PER_GFLOPS[model] * cal.fp32_gflops * gain,
            "eval_s_per_target": EVAL_S_X_GFLOPS_PER_TARGET[model] / cal.fp32_gflops / gain,
            "precision": choice.precision, "reason": choice.reason}


def train_passes(methods) -> float:
    """How many passes over all train data the methods need (shared adapters are trained once)."""
    methods = set(methods)
    passes = sum(1.0 for m in methods if m in ("unified", "per_persona", "hybrid", "cluster", "unified+profile"))
    if methods & {"hybrid", "unified+rag"} and "unified" not in methods:
        passes += 1.0  # hybrid and unified+rag build on the unified adapter
    if any(m.startswith("merge") for m in methods) and "per_persona" not in methods:
        passes += 1.0  # merges need the per-persona adapters
    return passes


def estimate_seconds(dataset, model: str, methods, cfg, device: str | None = None, path=None,
                     precision: str = "auto") -> dict:
    """Run time ≈ load + train tokens × passes / tokens-per-s + test targets × methods × s-per-target: at most,
    since adapters stop early when their validation loss stops improving.

    train tokens = Σ over train targets of min(max_length, characters of prompt + reply / 3.5) × the epochs cap,
    plus a third of that over the validation targets for the validation pass after each epoch.
    Speeds, in order: the medians measured for this model (and precision) in the store; on CPU, this
    machine's calibrated speed for the model (`calibrated_speeds`); the defaults above.
    """
    sys_len = len(cfg.system_prompt or "")

    def tokens(split):
        return sum(min(cfg.max_length, (sys_len + sum(len(t) for _, t in e.context) + len(e.target or "")
                                        + len(e.prompt or "") + 40) / CHARS_PER_TOKEN) for e in dataset.split(split))
    # an epoch: a training pass, then a forward-only validation pass (about a third of a training token's cost)
    tokens_one_epoch = tokens("train") + tokens("val") / 3
    n_test = len(dataset.split("test"))
    n_val_scored = len(dataset.split("val")) if any(m.startswith("merge") for m in methods) else 0
    n_answering = len([m for m in methods if m != "routed"])  # routed answers nothing itself...
    if "routed" in methods:  # ...but every other method also answers val for it
        n_val_scored = len(dataset.split("val")) * n_answering
    gpu = str(device or "").startswith("cuda")
    calibrated = None if gpu else calibrated_speeds(model, precision)
    speeds = {"train_tokens_per_s": None, "eval_s_per_target": None}
    if path is not None:
        speeds = measured_speeds(model, path, calibrated["precision"] if calibrated else None)
    source = "measured" if speeds["train_tokens_per_s"] else "calibrated" if calibrated else "default"
    fallback = calibrated or {
        "train_tokens_per_s": DEFAULT_TRAIN_TOKENS_PER_S.get(model, UNKNOWN_TRAIN_TOKENS_PER_S) * (10.0 if gpu else 1.0),
        "eval_s_per_target": DEFAULT_EVAL_S_PER_TARGET.get(model, UNKNOWN_EVAL_S_PER_TARGET) / (10.0 if gpu else 1.0)}
    tps = speeds["train_tokens_per_s"] or fallback["train_tokens_per_s"]
    spt = speeds["eval_s_per_target"] or fallback["eval_s_per_target"]
    passes = train_passes(methods)
    train_s = tokens_one_epoch * cfg.epochs * passes / tps
    eval_s = (n_test * n_answering + n_val_scored) * spt  # merges score the per-persona adapters on val once
    return {"seconds": LOAD_SECONDS + train_s + eval_s, "train_seconds": train_s, "eval_seconds": eval_s,
            "train_tokens": tokens_one_epoch * cfg.epochs * passes, "tokens_per_second": tps,
            "eval_s_per_target": spt, "measured": source == "measured", "source": source,
            "precision": calibrated["precision"] if calibrated else None}


def fmt_seconds(s: float) -> str:
    if s is None or not np.isfinite(s):
        return "–"
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


# ----------------------------------------------------------------------------- demos (the empty store's buttons)

TINY_DEMO_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def demo_spec(which: str = "tiny"):
    """The two one-click demos: 'tiny' (tiny-random, every known method, seconds) and 'smollm2' (minutes)."""
    from engine.methods.common import known_methods
    from engine.lab.runner import RunSpec
    from engine.data.simulator import format_sim_spec
    if which == "tiny":
        # a 2-layer random model learns the reply format ("Done: ac temperature 2...") in seconds when every
        # projection has a LoRA and the learning rate is high: the scores are a toy's, but not all zero
        data = format_sim_spec({"personas": 6, "train_per_persona": 8, "val_per_persona": 2, "test_per_persona": 2})
        return RunSpec(data=data, model="tiny-random", methods=known_methods(), seed=0, name="demo · tiny-random",
                       train={"epochs": 5, "lr": 1e-2, "max_new_tokens": 16, "targets": list(TINY_DEMO_TARGETS)})
    if which == "smollm2":
        data = format_sim_spec({"personas": 8, "train_per_persona": 20, "val_per_persona": 5, "test_per_persona": 5})
        return RunSpec(data=data, model="smollm2-135m", methods=["base", "unified", "per_persona"], seed=0,
                       name="demo · smollm2-135m", train={"epochs": 2, "max_new_tokens": 24})
    raise ValueError(f"unknown demo {which!r}")


def quick_study_spec():
    """The welcome page's quick study: tiny-random over personal_fraction x 2 seeds, four methods (a toy's
    scores, but every chart of the Studies page fills in)."""
    from engine.lab.study import StudySpec
    from engine.data.simulator import format_sim_spec
    data = format_sim_spec({"personas": 6, "train_per_persona": 6, "val_per_persona": 2, "test_per_persona": 2})
    return StudySpec(data=data, vary={"personal_fraction": [0.0, 0.5]}, seeds=[0, 1],
                     methods=["base", "unified", "per_persona", "hybrid"], model="tiny-random",
                     name="quick study · tiny-random",
                     train={"epochs": 3, "lr": 1e-2, "max_new_tokens": 16, "targets": list(TINY_DEMO_TARGETS)})


# ----------------------------------------------------------------------------- studies

def studies(path=None) -> pd.DataFrame:
    """Every study with its runs landed so far."""
    out = store.query("SELECT s.*, (SELECT count(*) FROM runs r WHERE r.study_id = s.study_id) AS n_landed, "
                      "(SELECT count(*) FROM runs r WHERE r.study_id = s.study_id AND r.status = 'done') AS n_done "
                      "FROM studies s ORDER BY created_at DESC", path=path)
    out.loc[out.n_done >= out.n_runs, "status"] = "done"  # a dashboard study's jobs finish without telling it
    return out


def study_view(study_id, reference: str = "unified", metric: str = "score", kind: str = "all", path=None) -> dict:
    """A study's statistics per grid point (runs that differ only in seed pooled by stats.over_seeds) and method.

    table: one row per (point, method) with the axis values as columns, mean and 95% CI over personas of
    seed-averaged scores, Δ vs `reference` with its paired CI, the seed spread, train + eval seconds (mean
    over seeds) and run ids. cells: per point the winning method, its margin over the runner-up (paired,
    seed-averaged per persona) and whether that margin is significant. axes: the varied axes.
    """
    import json
    runs = store.query("SELECT run_id, coords_json FROM runs WHERE study_id = ? ORDER BY run_id", [study_id], path)
    spec = store.query("SELECT spec_json FROM studies WHERE study_id = ?", [study_id], path)
    axes = list(json.loads(spec.spec_json[0])["vary"]) if len(spec) else []
    empty = {"table": pd.DataFrame(), "cells": pd.DataFrame(), "axes": axes, "ceiling": pd.DataFrame()}
    if runs.empty:
        return empty
    coords = {r.run_id: json.loads(r.coords_json or "{}") for r in runs.itertuples()}
    point = {rid: json.dumps({a: c.get(a) for a in axes}, sort_keys=True) for rid, c in coords.items()}
    scores = persona_scores(list(coords), metric, path, kind)
    if scores.empty:
        return empty
    table = stats.over_seeds(scores, point, reference=reference).rename(columns={"group": "point"})
    times = store.query("SELECT run_id, method, train_seconds + eval_seconds AS seconds FROM method_results "
                        "WHERE run_id IN (SELECT unnest(?))", [list(coords)], path)
    times["point"] = times.run_id.map(point)
    table = table.merge(times.groupby(["point", "method"], as_index=False)["seconds"].mean(), on=["point", "method"],
                        how="left")
    members = pd.Series(point).rename_axis("run_id").reset_index(name="point")
    table = table.merge(members.groupby("point")["run_id"].agg(list).rename("run_ids").reset_index(), on="point")
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
            "axes": axes, "ceiling": ceiling}


def _winners(seed_avg: pd.DataFrame, axes: list[str]) -> pd.DataFrame:
    """Per point: the best method by mean, its paired margin over the runner-up and whether the margin's 95%
    t-interval excludes 0 (else "no significant winner")."""
    import json
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
    """Where `method` beats `reference` along one axis, in words, from the paired 95% CIs of Δ."""
    rows = table[(table.method == method)].sort_values(axis)
    if rows.empty or rows.delta.isna().all():
        return f"{method} has no paired comparison with {reference} in this study."
    wins = rows[rows.delta_ci_low > 0]
    losses = rows[rows.delta_ci_high < 0]
    fmt = lambda r: f"Δ {r.delta:+.3f} [{r.delta_ci_low:+.3f}, {r.delta_ci_high:+.3f}]"
    if len(wins) == 0:
        worse = f"; significantly worse at {axis} ∈ {{{', '.join(str(v) for v in losses[axis])}}}" if len(losses) else ""
        return f"{method} never beats {reference} significantly at these {axis} values{worse}."
    values = list(rows[axis])
    first = wins.iloc[0]
    tail = rows[rows[axis] >= first[axis]]
    if (tail.delta_ci_low > 0).all():
        return (f"{method} beats {reference} from {axis} ≥ {first[axis]} on; at {axis} = {first[axis]}: {fmt(first)}"
                + ("" if first[axis] != values[0] else " (everywhere in this study)") + ".")
    return (f"{method} beats {reference} significantly at {axis} ∈ {{{', '.join(str(v) for v in wins[axis])}}} "
            f"but not at every larger value; at {axis} = {first[axis]}: {fmt(first)}.")


# ----------------------------------------------------------------------------- seeds

SEED_FREE = ("seed", "name", "methods", "precision_resolved", "device", "study")  # what may differ between seeds of one setup


def seed_groups(run_ids, path=None) -> dict:
    """run_id -> a label shared by the runs that differ only in seed (same data, model, hyperparameters,
    options, metric); a run alone keeps a group of its own."""
    import hashlib
    import json
    runs = store.query("SELECT run_id, name, model, dataset, config_json FROM runs WHERE run_id IN (SELECT unnest(?)) "
                       "ORDER BY run_id", [_ids(run_ids)], path)
    keys, labels = {}, {}
    for r in runs.itertuples():
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
                       kind: str = "all") -> pd.DataFrame:
    """Compare's table with runs that differ only in seed taken together (stats.over_seeds)."""
    scores = persona_scores(run_ids, metric, path, kind)
    if methods:
        scores = scores[scores.method.isin(list(methods) + [reference])]
    out = stats.over_seeds(scores, seed_groups(run_ids, path), reference=reference)
    return out[out.method.isin(list(methods))] if methods else out
