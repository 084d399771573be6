"""How long a run will take, before it starts: an upper bound from measured, calibrated or default speeds."""
from __future__ import annotations

import json

from engine.methods import registry
from engine.store import queries

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
    try:
        return (json.loads(config_json or "{}").get("precision_resolved") or {}).get("precision")
    except (ValueError, AttributeError):
        return None


def measured_speeds(model: str, path=None, precision: str | None = None) -> dict:
    """Median training tokens/s and eval seconds per test target of past runs of this model in the store
    (only runs that computed in `precision`, when given and recorded)."""
    df = queries.speed_measurements(model, path)
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
    """How many passes over all train data the methods need: each training stage once, shared or not
    (engine.methods.registry: hybrid and unified+rag build on the unified adapter, merges on the per-persona ones)."""
    return float(len(registry.training_stages(methods)))


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
    entries = [registry.method(m) for m in methods]
    n_val_scored = len(dataset.split("val")) if any(e.scores_val for e in entries) else 0
    n_answering = len([e for e in entries if not e.chooses])  # routed answers nothing itself...
    if any(e.chooses for e in entries):  # ...but every other method also answers val for it
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
