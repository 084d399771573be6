"""What every method works with: the run's context, a method's output, and the steps methods share.

A method is a function (ctx) -> MethodOutput. It trains what it needs through ctx.backend (this process, or a
Ray cluster: the same interface, engine.backends) and answers every persona's test examples with the adapter
that persona is routed to. It never branches on where the work runs.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from engine.backends.local import LocalBackend
from engine.models.loading import provenance
from engine.store import method_dirname
from engine.training import merge as merging
from engine.training.adapter_files import save_adapters
from engine.training.config import TrainConfig
from engine.training.lora import (inject_lora, load_adapter_states, lora_layers, merged_adapter, remove_lora,
                                  stream_seed, trainable_parameters_per_adapter)


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
    backend: object = None                        # where the work runs (engine.backends); None: this process
    merged_base: tuple | None = None              # (state, scaling) merged into the base weights now (hybrid)
    between_epochs: object = None                 # called with each epoch's seconds (the run re-fits its threads)

    def __post_init__(self):
        if self.backend is None:
            self.backend = LocalBackend()

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
    stopping on its own validation group (every method trains under the same rule). The backend trains them
    (here, or in shards on a cluster); they come back into this model's LoRA layers."""
    empty = [keys[i] for i, g in enumerate(groups) if not g]
    if empty:
        raise ValueError(f"{phase}: {', '.join(empty[:5])} {'has' if len(empty) == 1 else 'have'} no training examples")
    seeds = adapter_seeds(ctx, keys)
    states, stats = ctx.backend.train(ctx, groups, val_groups, seeds, phase)
    inject_lora(ctx.lm.model, len(groups), ctx.cfg.r, ctx.cfg.alpha, 0.0, ctx.cfg.targets, seed=ctx.seed,
                init=ctx.cfg.init, adapter_seeds=seeds)
    load_adapter_states(ctx.lm.model, states)
    return stats


def _evaluate_split(ctx, split: str, adapter_of: dict[str, int] | None, phase: str, prepare=None):
    """Answer one split's examples (as `prepare` prompts them, when given) with the model as it is now;
    (predictions, seconds): preparing the prompts (e.g. retrieval) is part of the time."""
    t0 = time.time()
    examples = ctx.dataset.split(split)
    if prepare is not None:
        examples = prepare(examples)
    adapters = None if adapter_of is None else [adapter_of[e.persona_id] for e in examples]
    return ctx.backend.evaluate(ctx, examples, adapters, phase), time.time() - t0


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
