"""The personalization methods (DESIGN §6). Each gets, for every persona, the model that answers it.

A method is a function (ctx) -> MethodOutput. It trains what it needs with the batched trainer and
evaluates every persona's test examples with the adapter that persona is routed to.
"""
from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from engine.training import merge as merging
from engine.methods.cluster import DEFAULT_K, add_map, cluster_personas, profile_embeddings
from engine.training.evaluate import evaluate, persona_means
from engine.lab.export import save_adapters
from engine.training.lora import (adapter_state, inject_lora, load_adapter_states, lora_layers, merged_adapter,
                         remove_lora, stream_seed, trainable_parameters_per_adapter)
from engine.models.loading import provenance
from engine.methods.prompting import DEFAULT_RAG_K, PROFILE_HEADER, RETRIEVED_HEADER, with_profiles, with_retrieved
from engine.store import method_dirname
from engine.training.config import ConfigError, TrainConfig
from engine.training.encode import encode_example
from engine.training.trainer import train_adapters_batched


@dataclass
class Context:
    """What a method sees: the model, the data, the config, and adapters other methods left behind."""
    lm: object
    dataset: object
    cfg: TrainConfig
    seed: int
    options: dict = field(default_factory=dict)   # method options, e.g. cluster_k, merge_k
    progress: object = None
    cache: dict = field(default_factory=dict)     # e.g. "unified" -> adapter state, "per_persona" -> states
    artifacts_dir: object = None                  # Path where trained adapters are saved (for export)
    metric: str | None = None                     # the primary metric (`score`); None: engine.training.evaluate chooses
    current: str = ""                             # the method running now
    finished: dict = field(default_factory=dict)  # method -> MethodOutput of the run's finished methods
    validate: bool = False                        # also answer val (for `routed`), kept in `validation`
    validation: dict = field(default_factory=dict)  # method -> (val predictions, seconds)
    backend: object = None                        # engine.backends.ray.RayBackend: shards go to a cluster; None: here
    merged_base: tuple | None = None              # (state, scaling) merged into the base weights now (hybrid)

    @property
    def persona_ids(self) -> list[str]:
        return list(self.dataset.personas)

    def report(self, phase, done, total, **info):
        if self.progress:
            self.progress(phase, done, total, **info)


@dataclass
class MethodOutput:
    predictions: pd.DataFrame
    train_seconds: float
    eval_seconds: float
    trainable_params: int
    n_adapters: int
    train_tokens: int = 0
    tokens_per_second: float = 0.0
    final_loss: float | None = None
    tables: dict = field(default_factory=dict)    # extra per-method tables, e.g. merge_weights
    details: dict = field(default_factory=dict)


def adapter_seeds(ctx, keys: list[str]) -> list[int]:
    """One seed per adapter, from the run seed and the adapter's own key (a persona id, "cluster3",
    "unified"): the same adapter gets the same streams whichever others train beside it."""
    return [stream_seed(ctx.seed, key) for key in keys]


def train_groups(ctx, groups: list[list], val_groups: list[list], keys: list[str], phase: str):
    """Fresh LoRA layers with one adapter per group of train examples, trained in one batched pass, each
    stopping on its own validation group (DESIGN §6: every method trains under the same rule). With a Ray
    backend the groups train in shards on the cluster and come back into this model's LoRA layers."""
    empty = [keys[i] for i, g in enumerate(groups) if not g]
    if empty:
        raise ValueError(f"{phase}: {', '.join(empty[:5])} {'has' if len(empty) == 1 else 'have'} no training examples")
    seeds = adapter_seeds(ctx, keys)
    if ctx.backend is None:
        return train_adapters(ctx.lm, groups, val_groups, seeds, ctx.cfg, ctx.seed, ctx.progress, phase)
    states, stats = ctx.backend.train(ctx, groups, val_groups, seeds, phase)
    inject_lora(ctx.lm.model, len(groups), ctx.cfg.r, ctx.cfg.alpha, 0.0, ctx.cfg.targets, seed=ctx.seed,
                init=ctx.cfg.init, adapter_seeds=seeds)
    load_adapter_states(ctx.lm.model, states)
    return stats


def train_adapters(lm, groups: list[list], val_groups: list[list], seeds: list[int], cfg, seed: int, progress,
                   phase: str):
    """train_groups' work on one model (here, or a Ray actor's): inject, encode, train; the trained adapters
    stay in the model's LoRA layers (removed on failure)."""
    inject_lora(lm.model, len(groups), cfg.r, cfg.alpha, cfg.dropout, cfg.targets, seed=seed, init=cfg.init,
                adapter_seeds=seeds)
    try:
        data = [[encode_example(lm.tokenizer, e, cfg) for e in g] for g in groups]
        val = [[encode_example(lm.tokenizer, e, cfg) for e in g] for g in val_groups]
        return train_adapters_batched(lm, data, cfg, seeds=seeds, val=val, progress=progress, phase=phase)
    except BaseException:
        remove_lora(lm.model)  # the caller removes them after reading the adapters; on failure, nobody would
        raise


def _evaluate_split(ctx, split: str, adapter_of: dict[str, int] | None, phase: str, prepare=None):
    """Answer one split's examples (as `prepare` prompts them, when given) with the model as it is now;
    (predictions, seconds): preparing the prompts (e.g. retrieval) is part of the time."""
    t0 = time.time()
    examples = ctx.dataset.split(split)
    if prepare is not None:
        examples = prepare(examples)
    adapters = None if adapter_of is None else [adapter_of[e.persona_id] for e in examples]
    if ctx.backend is not None:
        return ctx.backend.evaluate(ctx, examples, adapters, phase), time.time() - t0
    progress = (lambda _p, d, t, **kw: ctx.report(phase, d, t, **kw)) if ctx.progress else None
    preds = evaluate(ctx.lm, ctx.dataset, examples, adapters, ctx.cfg, progress, ctx.metric)
    return preds, time.time() - t0


def evaluate_routed(ctx, adapter_of: dict[str, int] | None, phase: str, prepare=None):
    """Evaluate all test examples; adapter_of maps persona -> adapter (None: one adapter or none). In a run
    with `routed`, the val examples too, timed apart and kept in ctx.validation (routed is charged them)."""
    out = _evaluate_split(ctx, "test", adapter_of, phase, prepare)
    if ctx.validate and ctx.dataset.split("val"):
        ctx.validation[ctx.current] = _evaluate_split(ctx, "val", adapter_of, f"{phase} (val, for routed)", prepare)
    return out


def evaluate_states(ctx, states: list[dict], adapter_of: dict[str, int], phase: str):
    """evaluate_routed with given adapter states (any ranks: zero-padded to the largest, which is exact)."""
    with loaded_states(ctx, states):
        return evaluate_routed(ctx, adapter_of, phase)


@contextlib.contextmanager
def loaded_states(ctx, states: list[dict]):
    """The model with LoRA layers holding `states` (zero-padded to the largest rank) for the block."""
    rank = max(merging.state_rank(s) for s in states)
    inject_lora(ctx.lm.model, len(states), rank, ctx.cfg.alpha / ctx.cfg.r * rank, 0.0, ctx.cfg.targets)
    try:
        load_adapter_states(ctx.lm.model, [merging.pad_rank(s, rank) for s in states])
        yield
    finally:
        remove_lora(ctx.lm.model)


@contextlib.contextmanager
def merged_into_base(ctx, state: dict, scaling: float):
    """The base weights with `state` merged in for the block (hybrid); a Ray backend's actors are told too."""
    with merged_adapter(ctx.lm.model, state, scaling):
        ctx.merged_base = (state, scaling)
        try:
            yield
        finally:
            ctx.merged_base = None


def save(ctx, method: str, states: list[dict], names: list[str], routing: dict[str, int], **extra):
    """Adapters of a method to ctx.artifacts_dir/<method>/ for export (skipped when the context has no folder)."""
    if ctx.artifacts_dir is None:
        return None
    return save_adapters(Path(ctx.artifacts_dir) / method_dirname(method), states, names, routing, ctx.cfg,
                         ctx.lm.name, base_provenance=provenance(ctx.lm.name, ctx.lm.precision),
                         base_precision=ctx.lm.precision, **extra)


def _output(ctx, stats, preds, eval_seconds, n_adapters, stages: dict | None = None, state: dict | None = None,
            details_extra: dict | None = None, **extra) -> MethodOutput:
    """A method's result. `stages`: seconds of every stage it needed (reused ones included, as if the method
    had run alone: a method is charged for all it builds on); train_seconds is their sum. Trainable
    parameters per adapter come from `state` (one adapter's), else from the model's LoRA layers."""
    if state is not None:
        per = sum(A.numel() + B.numel() for A, B in state.values())
    else:
        per = trainable_parameters_per_adapter(ctx.lm.model) if lora_layers(ctx.lm.model) else 0
    stages = stages if stages is not None else ({"train": stats.seconds} if stats else {})
    details = {"stages": {k: round(v, 3) for k, v in stages.items()}}
    if stats:
        details["epochs"] = {**stats.epochs_summary(), "cap": ctx.cfg.epochs, "patience": ctx.cfg.patience}
        details["validation_seconds"] = round(stats.validation_seconds, 3)
    details.update(details_extra or {})
    return MethodOutput(predictions=preds, train_seconds=float(sum(stages.values())),
                        eval_seconds=eval_seconds, trainable_params=per * n_adapters, n_adapters=n_adapters,
                        train_tokens=stats.tokens if stats else 0,
                        tokens_per_second=stats.tokens_per_second if stats else 0.0,
                        final_loss=stats.losses[-1] if stats and stats.losses else None, details=details, **extra)


# ----------------------------------------------------------------------------- methods

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


# ----------------------------------------------------------------------------- through the prompt

def profile_prompts(ctx):
    """examples -> the same examples with their persona's profile in the system prompt."""
    return lambda examples: with_profiles(examples, ctx.dataset.personas, ctx.cfg.system_prompt)


def retrieved_prompts(ctx):
    """examples -> the same examples with k of their persona's own most similar train dialogues in the
    system prompt (k = options["rag_k"], default 4)."""
    pools = ctx.dataset.by_persona("train")
    k = int(ctx.options.get("rag_k", DEFAULT_RAG_K))
    return lambda examples: with_retrieved(examples, pools, k, ctx.cfg.system_prompt)[0]


def prompted(ctx) -> MethodOutput:
    """The base model with the persona's profile in the system prompt; no training."""
    preds, ev = evaluate_routed(ctx, None, "prompted: evaluate", prepare=profile_prompts(ctx))
    return _output(ctx, None, preds, ev, 0)


def unified_profile(ctx) -> MethodOutput:
    """One adapter on every persona's examples, each with its persona's profile in the system prompt: one
    model that personalizes from the profile."""
    prep = profile_prompts(ctx)
    stats = train_groups(ctx, [prep(ctx.dataset.split("train"))], [prep(ctx.dataset.split("val"))],
                         ["unified+profile"], "unified+profile: train")
    try:
        save(ctx, "unified+profile", [adapter_state(ctx.lm.model, 0)], ["unified+profile"],
             {p: 0 for p in ctx.persona_ids}, prompt=f"the persona's profile after the system prompt, as "
             f"'<system prompt>, a blank line, {PROFILE_HEADER} <profile>'")
        preds, ev = evaluate_routed(ctx, None, "unified+profile: evaluate", prepare=prep)
        return _output(ctx, stats, preds, ev, 1)
    finally:
        remove_lora(ctx.lm.model)


def rag(ctx) -> MethodOutput:
    """The base model with the persona's k most similar own train dialogues in the prompt; retrieval time is
    part of eval time."""
    preds, ev = evaluate_routed(ctx, None, "rag: evaluate", prepare=retrieved_prompts(ctx))
    return _output(ctx, None, preds, ev, 0, details_extra={"rag_k": int(ctx.options.get("rag_k", DEFAULT_RAG_K))})


def unified_rag(ctx) -> MethodOutput:
    """The `unified` adapter answering with retrieved dialogues in the prompt (charged for its training)."""
    state, stats = unified_adapter(ctx, "unified+rag: train unified")
    k = int(ctx.options.get("rag_k", DEFAULT_RAG_K))
    save(ctx, "unified+rag", [state], ["unified"], {p: 0 for p in ctx.persona_ids},
         prompt=f"the persona's {k} most similar own train dialogues after the system prompt, as "
                f"'<system prompt>, a blank line, {RETRIEVED_HEADER}' and the dialogues, blank-line separated")
    with loaded_states(ctx, [state]):
        preds, ev = evaluate_routed(ctx, None, "unified+rag: evaluate", prepare=retrieved_prompts(ctx))
    return _output(ctx, stats, preds, ev, 1, stages={"unified": stats.seconds}, state=state,
                   details_extra={"rag_k": k})


# ----------------------------------------------------------------------------- routing

def route(scores: pd.DataFrame, methods: list[str]) -> dict[str, str]:
    """persona -> the method with the best mean score (scores: persona_id x method; ties: the first in
    `methods`). A persona without scores goes to the method best on average over the others."""
    table = scores.reindex(columns=methods)
    fallback = table.mean().fillna(-np.inf).to_numpy().argmax()
    out = {}
    for pid, row in table.iterrows():
        v = row.to_numpy(dtype=float)
        out[pid] = methods[int(np.nanargmax(v)) if np.isfinite(v).any() else int(fallback)]
    return out


def _stage_key(method: str, stage: str) -> str:
    """One name per thing computed, so a stage two methods share (unified in hybrid, per_persona in the merges)
    is charged once."""
    if stage in ("train", "unified", "per_persona"):
        return method if stage == "train" else stage
    return f"{method}: {stage}"


def routed(ctx) -> MethodOutput:
    """Per persona, the run's other method with the best mean validation score, answering that persona's test
    targets. Charged for everything it chooses among: each candidate's stages (shared ones once) and its
    val answers; its eval time is the chosen methods' test time. Beside it (details, never a method): the
    same choice made on test, which is what selecting on the test set would overstate."""
    candidates = [m for m in ctx.finished if m != "routed"]
    if not candidates:
        raise ConfigError("routed picks among the run's other methods: none has finished")
    missing = [m for m in candidates if m not in ctx.validation]
    if missing:
        raise ConfigError(f"routed: no validation answers from {', '.join(missing)} (the run has no val examples?)")
    per = {m: persona_means(ctx.finished[m].predictions).set_index("persona_id")["score"] for m in candidates}
    val = pd.DataFrame({m: persona_means(ctx.validation[m][0]).set_index("persona_id")["score"] for m in candidates})
    val = val.reindex(ctx.persona_ids)
    test = pd.DataFrame(per).reindex(ctx.persona_ids)
    choice, on_test = route(val, candidates), route(test, candidates)
    preds = pd.concat([ctx.finished[m].predictions[ctx.finished[m].predictions.persona_id.isin(
        [p for p in ctx.persona_ids if choice[p] == m])] for m in candidates], ignore_index=True)
    preds = preds.set_index("example_id").loc[ctx.finished[candidates[0]].predictions.example_id].reset_index()
    preds = preds[ctx.finished[candidates[0]].predictions.columns]
    stages = {}
    for m in candidates:
        for stage, sec in ctx.finished[m].details.get("stages", {}).items():
            stages[_stage_key(m, stage)] = sec
        stages[f"{m}: val answers"] = ctx.validation[m][1]
    share = pd.Series(choice).value_counts(normalize=True)
    eval_s = float(sum(ctx.finished[m].eval_seconds * share.get(m, 0.0) for m in candidates))
    optimistic = float(np.mean([test.loc[p, on_test[p]] for p in ctx.persona_ids]))
    details = {"stages": {k: round(v, 3) for k, v in stages.items()}, "candidates": candidates,
               "routing": choice, "routing_on_test": on_test,
               "val_scores": {p: {m: (None if pd.isna(v) else round(float(v), 4)) for m, v in val.loc[p].items()}
                              for p in ctx.persona_ids},
               "test_routed_score": round(optimistic, 4)}
    return MethodOutput(predictions=preds, train_seconds=float(sum(stages.values())), eval_seconds=eval_s,
                        trainable_params=int(sum(ctx.finished[m].trainable_params for m in set(choice.values()))),
                        n_adapters=int(sum(ctx.finished[m].n_adapters for m in set(choice.values()))),
                        details=details)


# ----------------------------------------------------------------------------- merge

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


METHODS = {"base": base, "unified": unified, "per_persona": per_persona, "hybrid": hybrid, "cluster": cluster,
           "prompted": prompted, "unified+profile": unified_profile, "rag": rag, "unified+rag": unified_rag,
           "routed": routed}
MERGE_COMBINATIONS: tuple[str, ...] = merging.COMBINATIONS


def known_methods() -> list[str]:
    """Every method name, in the order a run executes them (routed last: it chooses among the others)."""
    return [m for m in METHODS if m != "routed"] + [f"merge:{c}" for c in MERGE_COMBINATIONS] + ["routed"]


def resolve_method(name: str):
    """Method name -> function(ctx); `merge:<combination>` binds the combination."""
    if name in METHODS:
        return METHODS[name]
    head, _, combination = name.partition(":")
    if head == "merge" and combination in MERGE_COMBINATIONS:
        return functools.partial(merge, combination=combination)
    raise ConfigError(f"unknown method '{name}'; known: {', '.join(known_methods())}")
