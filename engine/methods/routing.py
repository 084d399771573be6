"""`routed`: per persona, the run's method with the best validation score (never chosen on test)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from engine.methods.context import MethodOutput
from engine.training.config import ConfigError
from engine.training.evaluate import persona_means


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
    chosen = np.array([test.loc[p, on_test[p]] for p in ctx.persona_ids], dtype=float)  # NaN: no score at all
    optimistic = float(np.nanmean(chosen)) if np.isfinite(chosen).any() else float("nan")
    details = {"stages": {k: round(v, 3) for k, v in stages.items()}, "candidates": candidates,
               "routing": choice, "routing_on_test": on_test,
               "val_scores": {p: {m: (None if pd.isna(v) else round(float(v), 4)) for m, v in val.loc[p].items()}
                              for p in ctx.persona_ids},
               "test_routed_score": round(optimistic, 4)}
    return MethodOutput(predictions=preds, train_seconds=float(sum(stages.values())), eval_seconds=eval_s,
                        trainable_params=int(sum(ctx.finished[m].trainable_params for m in set(choice.values()))),
                        n_adapters=int(sum(ctx.finished[m].n_adapters for m in set(choice.values()))),
                        details=details)
