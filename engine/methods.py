"""The personalization methods (DESIGN §6). Each gets, for every persona, the model that answers it.

A method is a function (ctx) -> MethodOutput. It trains what it needs with the batched trainer and
evaluates every persona's test examples with the adapter that persona is routed to.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field

import pandas as pd

from engine.evaluate import evaluate
from engine.lora import (adapter_state, inject_lora, lora_layers, merged_adapter, remove_lora,
                         trainable_parameters_per_adapter)
from engine.train import ConfigError, TrainConfig, encode_example, train_adapters_batched


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


def _encoded(ctx, examples):
    return [encode_example(ctx.lm.tokenizer, e, ctx.cfg) for e in examples]


def train_groups(ctx, groups: list[list], seeds: list[int], phase: str):
    """Fresh LoRA layers with one adapter per group of train examples, trained in one batched pass."""
    inject_lora(ctx.lm.model, len(groups), ctx.cfg.r, ctx.cfg.alpha, ctx.cfg.dropout, ctx.cfg.targets, seed=ctx.seed)
    data = [_encoded(ctx, g) for g in groups]
    empty = [i for i, d in enumerate(data) if not d]
    if empty:
        raise ValueError(f"{phase}: group(s) {empty} have no training examples")
    stats = train_adapters_batched(ctx.lm, data, ctx.cfg, seeds=seeds, progress=ctx.progress, phase=phase)
    return stats


def evaluate_routed(ctx, adapter_of: dict[str, int] | None, phase: str):
    """Evaluate all test examples; adapter_of maps persona -> adapter (None: one adapter or none)."""
    tests = ctx.dataset.split("test")
    adapters = None if adapter_of is None else [adapter_of[e.persona_id] for e in tests]
    t0 = time.time()
    progress = (lambda _p, d, t, **kw: ctx.report(phase, d, t, **kw)) if ctx.progress else None
    preds = evaluate(ctx.lm, ctx.dataset, tests, adapters, ctx.cfg, progress)
    return preds, time.time() - t0


def _output(ctx, stats, preds, eval_seconds, n_adapters, **extra) -> MethodOutput:
    per = trainable_parameters_per_adapter(ctx.lm.model) if lora_layers(ctx.lm.model) else 0
    return MethodOutput(predictions=preds, train_seconds=stats.seconds if stats else 0.0,
                        eval_seconds=eval_seconds, trainable_params=per * n_adapters, n_adapters=n_adapters,
                        train_tokens=stats.tokens if stats else 0,
                        tokens_per_second=stats.tokens_per_second if stats else 0.0,
                        final_loss=stats.losses[-1] if stats and stats.losses else None, **extra)


# ----------------------------------------------------------------------------- methods

def base(ctx) -> MethodOutput:
    """The base model, no adapter."""
    preds, ev = evaluate_routed(ctx, None, "base: evaluate")
    return _output(ctx, None, preds, ev, 0)


def unified(ctx) -> MethodOutput:
    """One adapter on every persona's train examples (profile text not in the prompt)."""
    stats = train_groups(ctx, [ctx.dataset.split("train")], [ctx.seed], "unified: train")
    try:
        ctx.cache["unified"] = adapter_state(ctx.lm.model, 0)
        preds, ev = evaluate_routed(ctx, None, "unified: evaluate")
        return _output(ctx, stats, preds, ev, 1)
    finally:
        remove_lora(ctx.lm.model)


def _persona_groups(ctx):
    train = ctx.dataset.by_persona("train")
    pids = ctx.persona_ids
    return [train[p] for p in pids], [ctx.seed * 100003 + i for i in range(len(pids))]


def per_persona(ctx) -> MethodOutput:
    """One adapter per persona from the base, all personas trained in one batched pass."""
    groups, seeds = _persona_groups(ctx)
    stats = train_groups(ctx, groups, seeds, "per_persona: train")
    try:
        ctx.cache["per_persona"] = [adapter_state(ctx.lm.model, i) for i in range(len(groups))]
        preds, ev = evaluate_routed(ctx, {p: i for i, p in enumerate(ctx.persona_ids)}, "per_persona: evaluate")
        return _output(ctx, stats, preds, ev, len(groups))
    finally:
        remove_lora(ctx.lm.model)


def hybrid(ctx) -> MethodOutput:
    """Unified adapter merged into the base, then one adapter per persona trained on top."""
    extra_train = 0.0
    if "unified" not in ctx.cache:
        stats_u = train_groups(ctx, [ctx.dataset.split("train")], [ctx.seed], "hybrid: train unified")
        ctx.cache["unified"] = adapter_state(ctx.lm.model, 0)
        remove_lora(ctx.lm.model)
        extra_train = stats_u.seconds
    with merged_adapter(ctx.lm.model, ctx.cache["unified"], ctx.cfg.alpha / ctx.cfg.r):
        groups, seeds = _persona_groups(ctx)
        stats = train_groups(ctx, groups, seeds, "hybrid: train per persona")
        try:
            preds, ev = evaluate_routed(ctx, {p: i for i, p in enumerate(ctx.persona_ids)}, "hybrid: evaluate")
            out = _output(ctx, stats, preds, ev, len(groups))
        finally:
            remove_lora(ctx.lm.model)
    out.train_seconds += extra_train
    out.details["unified_reused"] = extra_train == 0.0
    return out


METHODS = {"base": base, "unified": unified, "per_persona": per_persona, "hybrid": hybrid}
MERGE_COMBINATIONS: tuple[str, ...] = ()


def known_methods() -> list[str]:
    return list(METHODS) + [f"merge:{c}" for c in MERGE_COMBINATIONS]


def resolve_method(name: str):
    """Method name -> function(ctx); `merge:<combination>` binds the combination."""
    if name in METHODS:
        return METHODS[name]
    head, _, combination = name.partition(":")
    if head == "merge" and combination in MERGE_COMBINATIONS:
        return functools.partial(merge, combination=combination)
    raise ConfigError(f"unknown method '{name}'; known: {', '.join(known_methods())}")
