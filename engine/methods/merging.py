"""`merge:<combination>`: per persona, a weighted merge of its nearest personas' own adapters."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

from engine.methods.adapters import per_persona_adapters
from engine.methods.cluster import profile_embeddings
from engine.methods.context import MethodOutput, _evaluate_split, evaluate_states, loaded_states, save
from engine.training import merge as merging
from engine.training.evaluate import persona_means
from engine.training.lora import stream_seed


def validation_scores(ctx, states: list[dict], phase: str) -> tuple[np.ndarray, float]:
    """Primary metric of each persona's own adapter on its own val split (never test); cached per run.

    A persona without val examples gets the mean of the others (1.0 if nobody has any), i.e. no preference.
    """
    if "per_persona_val" in ctx.cache:
        return ctx.cache["per_persona_val"], ctx.cache["per_persona_val_seconds"]
    scores, preds, seconds = np.full(len(ctx.persona_ids), np.nan), None, 0.0
    if "per_persona" in ctx.validation:  # answered already, for routed
        preds, seconds = ctx.validation["per_persona"]
    elif ctx.dataset.split("val"):
        with loaded_states(ctx, states):
            preds, seconds = _evaluate_split(ctx, "val", {p: i for i, p in enumerate(ctx.persona_ids)}, phase)
    if preds is not None:
        means = persona_means(preds).set_index("persona_id")["score"]
        scores = np.array([means.get(p, np.nan) for p in ctx.persona_ids], dtype=float)
    fill = np.nanmean(scores) if np.isfinite(scores).any() else 1.0
    ctx.cache["per_persona_val"] = np.where(np.isfinite(scores), scores, fill)
    ctx.cache["per_persona_val_seconds"] = seconds
    return ctx.cache["per_persona_val"], seconds


def merge_weights(emb: np.ndarray, val: np.ndarray, k: int) -> list[tuple[list[int], np.ndarray, np.ndarray, np.ndarray]]:
    """Per persona: (neighbours, weights, centralities, similarities) — its k nearest personas by cosine
    similarity of profile embeddings, itself first.

    centrality of neighbour q = mean cosine similarity of q to the other members of this neighbourhood
    (how typical q is of the group; 1.0 when the group is the persona alone), clipped at 0.
    weight ∝ val score of q's own adapter × centrality, normalised to sum 1 (uniform if all are 0).
    """
    S = emb @ emb.T
    k = max(1, min(k, len(emb)))
    out = []
    for p in range(len(emb)):
        others = [q for q in np.argsort(-S[p], kind="stable") if q != p]
        nb = [p] + others[:k - 1]
        sub = S[np.ix_(nb, nb)]
        cent = np.ones(len(nb)) if len(nb) == 1 else (sub.sum(1) - np.diag(sub)) / (len(nb) - 1)
        cent = np.clip(cent, 0.0, None)
        raw = np.clip(val[nb], 0.0, None) * cent
        w = raw / raw.sum() if raw.sum() > 0 else np.full(len(nb), 1.0 / len(nb))
        out.append((nb, w, cent, S[p, nb]))
    return out


def merge(ctx, combination: str) -> MethodOutput:
    """Per persona, a weighted merge of its K nearest personas' adapters (K = options["merge_k"], default 5)."""
    label = f"merge:{combination}"
    states, pp_stats = per_persona_adapters(ctx, f"{label}: train per persona")
    train_s = pp_stats.seconds
    val, val_s = validation_scores(ctx, states, f"{label}: validation scores")
    pids = ctx.persona_ids
    t0 = time.time()
    neighbourhoods = merge_weights(profile_embeddings(ctx), val, int(ctx.options.get("merge_k", 5)))
    density = float(ctx.options.get("merge_density", merging.DEFAULT_DENSITY))
    merged, kept, recipe, rows = [], [], {}, []
    for p, (nb, w, cent, sim) in enumerate(neighbourhoods):
        seed = stream_seed(ctx.seed, pids[p], "merge")
        m, k = merging.merge_adapters([states[q] for q in nb], w.tolist(), combination, ctx.cfg.r, density, seed)
        merged.append(m)
        kept.append(k)
        recipe[pids[p]] = {"neighbours": [pids[q] for q in nb], "weights": w.tolist(), "seed": seed}
        rows += [(pids[p], pids[q], float(w[j]), float(val[q]), float(cent[j]), float(sim[j]))
                 for j, q in enumerate(nb)]
    merge_s = time.time() - t0
    file = save(ctx, label, states, pids, {p: i for i, p in enumerate(pids)},
                link_from=ctx.cache.get("per_persona_file"),
                merge={"combination": combination, "density": density, "personas": recipe})
    ctx.cache.setdefault("per_persona_file", file)
    preds, ev = evaluate_states(ctx, merged, {p: i for i, p in enumerate(pids)}, f"{label}: evaluate")
    per = sum(A.numel() + B.numel() for A, B in states[0].values())
    table = pd.DataFrame(rows, columns=["persona_id", "neighbour_id", "weight", "val_score", "centrality", "similarity"])
    stages = {"per_persona": train_s, "validation scores": val_s, "merge": merge_s}
    return MethodOutput(predictions=preds, train_seconds=float(sum(stages.values())), eval_seconds=ev,
                        trainable_params=per * len(pids), n_adapters=len(pids), tables={"merge_weights": table},
                        train_tokens=pp_stats.tokens, tokens_per_second=pp_stats.tokens_per_second,
                        details={"stages": {k: round(v, 3) for k, v in stages.items()},
                                 "epochs": {**pp_stats.epochs_summary(), "cap": ctx.cfg.epochs,
                                            "patience": ctx.cfg.patience},
                                 "merged_rank": max(merging.state_rank(m) for m in merged),
                                 "energy_kept": float(np.mean(kept)), "density": density})
