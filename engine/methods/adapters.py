"""Methods that answer with trained adapters: unified, per persona, hybrid, per cluster (and the base model)."""
from __future__ import annotations

import time

import numpy as np

from engine.methods.cluster import DEFAULT_K, add_map, cluster_personas, profile_embeddings
from engine.methods.context import (MethodOutput, _output, evaluate_routed, evaluate_states, merged_into_base, save,
                                    train_groups)
from engine.training.lora import adapter_state, inject_lora, load_adapter_states, remove_lora


def base(ctx) -> MethodOutput:
    """The base model, no adapter."""
    preds, ev = evaluate_routed(ctx, None, "base: evaluate")
    return _output(ctx, None, preds, ev, 0)


def unified_adapter(ctx, phase: str) -> tuple[dict, object]:
    """The unified adapter's state and its training stats: trained once per run, then reused (hybrid)."""
    if "unified" not in ctx.cache:
        stats = train_groups(ctx, [ctx.dataset.split("train")], [ctx.dataset.split("val")], ["unified"], phase)
        ctx.cache["unified"] = adapter_state(ctx.lm.model, 0)
        ctx.cache["unified_stats"] = stats
        remove_lora(ctx.lm.model)
    return ctx.cache["unified"], ctx.cache["unified_stats"]


def unified(ctx) -> MethodOutput:
    """One adapter on every persona's train examples (profile text not in the prompt)."""
    state, stats = unified_adapter(ctx, "unified: train")
    inject_lora(ctx.lm.model, 1, ctx.cfg.r, ctx.cfg.alpha, 0.0, ctx.cfg.targets)
    try:
        load_adapter_states(ctx.lm.model, [state])
        save(ctx, "unified", [state], ["unified"], {p: 0 for p in ctx.persona_ids})
        preds, ev = evaluate_routed(ctx, None, "unified: evaluate")
        return _output(ctx, stats, preds, ev, 1)
    finally:
        remove_lora(ctx.lm.model)


def _persona_groups(ctx):
    train, val = ctx.dataset.by_persona("train"), ctx.dataset.by_persona("val")
    pids = ctx.persona_ids
    return [train[p] for p in pids], [val[p] for p in pids], pids


def per_persona_adapters(ctx, phase: str) -> tuple[list[dict], object]:
    """Per-persona adapter states from the base and their training stats: trained once per run, then reused
    (merges)."""
    if "per_persona" not in ctx.cache:
        stats = train_groups(ctx, *_persona_groups(ctx), phase)
        try:
            ctx.cache["per_persona"] = [adapter_state(ctx.lm.model, i) for i in range(len(ctx.persona_ids))]
            ctx.cache["per_persona_stats"] = stats
        finally:
            remove_lora(ctx.lm.model)
    return ctx.cache["per_persona"], ctx.cache["per_persona_stats"]


def per_persona(ctx) -> MethodOutput:
    """One adapter per persona from the base, all personas trained in one batched pass."""
    states, stats = per_persona_adapters(ctx, "per_persona: train")
    routing = {p: i for i, p in enumerate(ctx.persona_ids)}
    ctx.cache["per_persona_file"] = save(ctx, "per_persona", states, ctx.persona_ids, routing)
    preds, ev = evaluate_states(ctx, states, routing, "per_persona: evaluate")
    return _output(ctx, stats, preds, ev, len(states), state=states[0])


def hybrid(ctx) -> MethodOutput:
    """Unified adapter merged into the base, then one adapter per persona trained on top. Charged for both
    stages, whether or not the unified one was already trained for `unified`."""
    unified_state, unified_stats = unified_adapter(ctx, "hybrid: train unified")
    with merged_into_base(ctx, unified_state, ctx.cfg.alpha / ctx.cfg.r):
        stats = train_groups(ctx, *_persona_groups(ctx), "hybrid: train per persona")
        try:
            save(ctx, "hybrid", [adapter_state(ctx.lm.model, i) for i in range(len(ctx.persona_ids))], ctx.persona_ids,
                 {p: i for i, p in enumerate(ctx.persona_ids)}, base_state=unified_state)
            preds, ev = evaluate_routed(ctx, {p: i for i, p in enumerate(ctx.persona_ids)}, "hybrid: evaluate")
            out = _output(ctx, stats, preds, ev, len(ctx.persona_ids),
                          stages={"unified": unified_stats.seconds, "per_persona on unified": stats.seconds})
        finally:
            remove_lora(ctx.lm.model)
    out.details["unified_epochs"] = unified_stats.epochs_summary()
    return out


def cluster(ctx) -> MethodOutput:
    """KMeans on profile embeddings (K = options["cluster_k"], default 5, or "auto"), one adapter per cluster."""
    X = profile_embeddings(ctx)
    t0 = time.time()
    info = cluster_personas(X, ctx.persona_ids, ctx.options.get("cluster_k", DEFAULT_K), ctx.seed, with_map=False)
    cluster_seconds = time.time() - t0  # the map below is for people, not part of the method's cost
    ctx.cache["cluster"] = add_map(info, X, ctx.seed)
    of = {p: int(c) for p, c in zip(info["personas"].persona_id, info["personas"].cluster)}
    train, val = ctx.dataset.by_persona("train"), ctx.dataset.by_persona("val")
    members = [[p for p in ctx.persona_ids if of[p] == c] for c in range(info["k"])]
    stats = train_groups(ctx, [[e for p in m for e in train[p]] for m in members],
                         [[e for p in m for e in val[p]] for m in members],
                         [f"cluster{c}" for c in range(info["k"])], "cluster: train")
    try:
        save(ctx, "cluster", [adapter_state(ctx.lm.model, c) for c in range(info["k"])],
             [f"cluster{c}" for c in range(info["k"])], of)
        preds, ev = evaluate_routed(ctx, of, "cluster: evaluate")
        out = _output(ctx, stats, preds, ev, info["k"], stages={"clustering": cluster_seconds, "train": stats.seconds})
    finally:
        remove_lora(ctx.lm.model)
    out.details.update(k=info["k"], silhouette=info["silhouette"], cluster_sizes=np.bincount(
        info["personas"].cluster, minlength=info["k"]).tolist())
    return out
