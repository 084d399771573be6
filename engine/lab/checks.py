"""The checks behind RunSpec.check and RunSpec.validate (engine.lab.spec), the one path the CLI, the jobs and the
Launch page take before anything is written.

Each raises ConfigError with one line naming what is wrong and where, so a run never fails half-way for
something that could have been seen at the start: a method option of the wrong type, a hyperparameter
that is not a finite number, a length beyond the model's context, LoRA targets the model lacks, a
persona without the training data or the profile text its methods need.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from engine.data.contract import AUTO_SPLIT, is_int
from engine.methods import registry
from engine.training.config import ConfigError, TrainConfig

# Known models' context lengths (max_position_embeddings) and module names; other models are checked once loaded.
CONTEXT_LENGTH = {"tiny-random": 2048, "smollm2-135m": 8192}
LLAMA_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LINEAR_NAMES = {"tiny-random": LLAMA_LINEAR, "smollm2-135m": LLAMA_LINEAR}
# Known models' layers as (in_features, out_features) (engine.models.loading: tiny-random is 64 wide with 2 of 4 heads
# for keys and values, SmolLM2-135M 576 wide with 3 of 9): a rank beyond a layer's narrower side adds parameters
# and no capacity.
LAYER_SHAPES = {
    "tiny-random": {"q_proj": (64, 64), "k_proj": (64, 32), "v_proj": (64, 32), "o_proj": (64, 64),
                    "gate_proj": (64, 128), "up_proj": (64, 128), "down_proj": (128, 64)},
    "smollm2-135m": {"q_proj": (576, 576), "k_proj": (576, 192), "v_proj": (576, 192), "o_proj": (576, 576),
                     "gate_proj": (576, 1536), "up_proj": (576, 1536), "down_proj": (1536, 576)},
}
FALLBACK_CONTEXT = 131072

OPTIONS = {"cluster_k": "an integer >= 1 or 'auto'", "merge_k": "an integer >= 1",
           "merge_density": "a number in (0, 1]", "rag_k": "an integer >= 1"}


def check_options(options: dict) -> None:
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ConfigError(f"unknown method option(s) {unknown}; known: {', '.join(OPTIONS)}")
    k = options.get("cluster_k")
    if "cluster_k" in options and not (k == "auto" or (is_int(k) and k >= 1)):
        raise ConfigError(f"cluster_k must be {OPTIONS['cluster_k']}, got {k!r}")
    k = options.get("merge_k")
    if "merge_k" in options and not (is_int(k) and k >= 1):
        raise ConfigError(f"merge_k must be {OPTIONS['merge_k']}, got {k!r}")
    d = options.get("merge_density")
    if "merge_density" in options and not (isinstance(d, (int, float)) and not isinstance(d, bool)
                                           and math.isfinite(d) and 0 < d <= 1):
        raise ConfigError(f"merge_density must be {OPTIONS['merge_density']}, got {d!r}")
    k = options.get("rag_k")
    if "rag_k" in options and not (is_int(k) and k >= 1):
        raise ConfigError(f"rag_k must be {OPTIONS['rag_k']}, got {k!r}")


def context_length(model: str) -> int:
    """The model's context length when it can be known without loading it (registry, local config.json)."""
    if model in CONTEXT_LENGTH:
        return CONTEXT_LENGTH[model]
    config = Path(model) / "config.json"
    if os.path.isdir(model) and config.is_file():
        try:
            n = json.loads(config.read_text()).get("max_position_embeddings")
            if is_int(n) and n > 0:
                return n
        except (OSError, ValueError, AttributeError):
            pass
    return FALLBACK_CONTEXT


def check_config(cfg: TrainConfig, model: str) -> None:
    """Lengths within the model's context; LoRA targets among the model's layers (known models)."""
    n = context_length(model)
    for name in ("max_length", "max_new_tokens"):
        if getattr(cfg, name) > n:
            raise ConfigError(f"{name} must be at most {n} (the context length of {model}), got {getattr(cfg, name)}")
    if model in LINEAR_NAMES:
        unknown = [t for t in cfg.targets if t not in LINEAR_NAMES[model]]
        if unknown:
            raise ConfigError(f"targets: {model} has no layer named {', '.join(map(repr, unknown))}; "
                              f"its layers: {', '.join(LINEAR_NAMES[model])}")
    if model in LAYER_SHAPES:
        check_rank(cfg, model, {t: LAYER_SHAPES[model][t] for t in cfg.targets})


def check_rank(cfg: TrainConfig, model: str, shapes: dict) -> None:
    """The LoRA rank r is at most the narrower side of every targeted layer (shapes: name -> (in, out))."""
    name, (d_in, d_out) = min(shapes.items(), key=lambda kv: min(kv[1]))
    if cfg.r > min(d_in, d_out):
        raise ConfigError(f"r must be at most {min(d_in, d_out)} for these targets of {model} ({name} maps "
                          f"{d_in} to {d_out} features; a higher rank adds parameters, not capacity), got {cfg.r}")


def check_loaded_model(model, cfg: TrainConfig, name: str) -> None:
    """After loading, before any write: the targets exist in this model and r fits them (models outside the
    registry)."""
    import torch
    present = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    unknown = [t for t in cfg.targets if t not in present]
    if unknown:
        raise ConfigError(f"targets: {name} has no layer named {', '.join(map(repr, unknown))}; "
                          f"its layers: {', '.join(sorted(present))}")
    shapes = {}
    for n, m in model.named_modules():
        short = n.rsplit(".", 1)[-1]
        if isinstance(m, torch.nn.Linear) and short in cfg.targets:
            old = shapes.get(short, (m.in_features, m.out_features))
            shapes[short] = min(old, (m.in_features, m.out_features), key=min)
    if shapes:
        check_rank(cfg, name, shapes)


def check_device(device: str | None) -> None:
    if device in (None, "", "auto"):
        return
    import torch
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"device: {device!r} is not a device (use cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {device} asked for but no CUDA device is available")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device: {device} is not supported (use cpu, cuda or cuda:N)")


def _first(ids: list[str], n: int = 5) -> str:
    return ", ".join(ids[:n]) + (f" ... ({len(ids)} in all)" if len(ids) > n else "")


def check_data(methods, dataset) -> None:
    """Every persona has what the chosen methods need (engine.methods.registry): train examples, its own train
    examples, validation examples, a profile text. One ConfigError naming the data once and every need it does not
    meet (and why, when the split rule is the cause), so a user fixes the data once."""
    entries = [registry.method(m) for m in methods]
    problems = []
    cannot = [e.name for e in entries if dataset.task not in e.tasks]
    if cannot:
        problems.append(f"{', '.join(cannot)} answer{'s' if len(cannot) == 1 else ''} dialogue data only (copying a "
                        f"train reply); this is {dataset.task} data")
    trainers = [e.name for e in entries if e.reads_train]
    no_train = not dataset.split("train")
    if no_train and trainers:
        problems.append(f"no train examples at all{_why_no_train(dataset)}; {', '.join(trainers)} "
                        f"need{'s' if len(trainers) == 1 else ''} them (to train on, or to retrieve from)")
    per = [e.name for e in entries if e.own_train]
    empty = [p for p, ex in dataset.by_persona("train").items() if not ex]
    if per and empty and not no_train:
        problems.append(f"persona(s) {_first(empty)} have no train examples; {', '.join(per)} "
                        f"need{'s' if len(per) == 1 else ''} each persona's own train examples (one adapter per "
                        "persona, or retrieval from them)")
    for e in entries:
        if e.chooses and not dataset.split("val"):
            problems.append(f"{e.name} chooses each persona's method on val examples; the data has none")
    missing = [p for p, text in dataset.personas.items() if not text]
    for e in entries:
        if e.reads_profile and missing:
            problems.append(f"method {e.name} needs a profile text ('persona' or 'character') for every persona, "
                            f"{e.reads_profile}; none for {_first(missing)}")
    if problems:
        raise ConfigError(f"{dataset.source}: " + "; ".join(problems))


def _why_no_train(dataset) -> str:
    """Why every example went to val or test when the 60/20/20 rule did it: with 2 dialogues a persona already has
    one to train on, so no train at all means every persona has exactly one, which is kept for test."""
    if dataset.split_rule != AUTO_SPLIT:
        return ""
    return (" (each persona has one dialogue, and the 60/20/20 split per persona keeps a persona's only dialogue for "
            "test: a persona needs 2 dialogues for one to be train)")
