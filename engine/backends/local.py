"""The run's own process as a backend: the same interface as engine.backends.ray.RayBackend.

    train(ctx, groups, val_groups, seeds, phase) -> (adapter states in the groups' order, TrainStats)
    evaluate(ctx, examples, adapters, phase)     -> predictions frame, one row per example, in order
    shard_seconds                                 every shard's timing (none here: one shard, this process)
    close()

Methods call these and never ask where the work runs.
"""
from __future__ import annotations

from engine.training.encode import encode_example
from engine.training.evaluate import evaluate
from engine.training.lora import adapter_state, inject_lora, remove_lora
from engine.training.trainer import train_adapters_batched


def train_adapters(lm, groups: list[list], val_groups: list[list], seeds: list[int], cfg, seed: int, progress,
                   phase: str, between_epochs=None):
    """Inject one adapter per group into `lm`, encode, train in one batched pass (each adapter stopping on its own
    validation group); the trained adapters stay in the model's LoRA layers (removed on failure). What a local
    run and every Ray actor do with their share."""
    inject_lora(lm.model, len(groups), cfg.r, cfg.alpha, cfg.dropout, cfg.targets, seed=seed, init=cfg.init,
                adapter_seeds=seeds)
    try:
        data = [[encode_example(lm.tokenizer, e, cfg) for e in g] for g in groups]
        val = [[encode_example(lm.tokenizer, e, cfg) for e in g] for g in val_groups]
        return train_adapters_batched(lm, data, cfg, seeds=seeds, val=val, progress=progress, phase=phase,
                                      between_epochs=between_epochs)
    except BaseException:
        remove_lora(lm.model)  # the caller removes them after reading the adapters; on failure, nobody would
        raise


class LocalBackend:
    """Trains and answers on the run's own model, in this process."""

    def __init__(self):
        self.shard_seconds: list[dict] = []

    def train(self, ctx, groups, val_groups, seeds, phase):
        stats = train_adapters(ctx.lm, groups, val_groups, seeds, ctx.cfg, ctx.seed, ctx.progress, phase,
                               ctx.between_epochs)
        try:
            states = [adapter_state(ctx.lm.model, i) for i in range(len(groups))]
        finally:
            remove_lora(ctx.lm.model)
        return states, stats

    def evaluate(self, ctx, examples, adapters, phase):
        progress = (lambda _p, d, t, **kw: ctx.report(phase, d, t, **kw)) if ctx.progress else None
        return evaluate(ctx.lm, ctx.dataset, examples, adapters, ctx.cfg, progress, ctx.metric)

    def describe(self) -> None:
        return None

    def close(self) -> None:
        pass
