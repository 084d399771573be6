"""The one typed training config: LoRA shape, optimizer, budget rule, prompt and lengths.

Validated where it is built (types and ranges, each problem named), stored with every run.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from engine.data.contract import is_int
from engine.training.lora import DEFAULT_TARGETS, INITS

DEFAULT_SYSTEM_PROMPT = "You are a smart-home assistant. Reply with the actions you take."


# Padded tokens per forward pass when TrainConfig.micro_batch_tokens is 0. On CPU passes whose activations
# stay in cache are fastest (smollm2-135m, bf16, 2-core CPU, 8 and 32 personas: 1024 trains 10-25% faster
# than 512 or 2048); on CUDA bigger passes fill the GPU (not yet measured). Lower it if memory is short.
class ConfigError(ValueError):
    """A hyperparameter out of range; the message names it."""


@dataclass
class TrainConfig:
    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    targets: tuple[str, ...] = DEFAULT_TARGETS
    lr: float = 1e-3
    epochs: int = 3                 # the cap: an adapter stops earlier when its validation loss stops improving
    patience: int = 1               # epochs without a better validation loss before an adapter stops; 0: never
    init: str = "shared"            # every adapter starts from one A ("shared") or from its own ("independent")
    batch_size: int = 8
    max_length: int = 256
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    micro_batch_tokens: int = 0     # padded tokens per forward pass; 0 = auto (AUTO_MICRO_BATCH_TOKENS)
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    context_window: int = 4
    max_new_tokens: int = 48
    eval_batch_size: int = 64

    def __post_init__(self):
        checks = [
            ("r", isinstance(self.r, int) and self.r >= 1, "an integer >= 1"),
            ("alpha", self.alpha > 0, "> 0"),
            ("dropout", 0 <= self.dropout < 1, "in [0, 1)"),
            ("targets", len(self.targets) > 0 and all(isinstance(t, str) and t for t in self.targets),
             "a non-empty list of module names"),
            ("lr", 0 < self.lr <= 1, "in (0, 1]"),
            ("epochs", isinstance(self.epochs, int) and self.epochs >= 1, "an integer >= 1"),
            ("patience", isinstance(self.patience, int) and self.patience >= 0, "an integer >= 0 (0: off)"),
            ("init", self.init in INITS, f"one of {', '.join(INITS)}"),
            ("batch_size", isinstance(self.batch_size, int) and self.batch_size >= 1, "an integer >= 1"),
            ("max_length", isinstance(self.max_length, int) and self.max_length >= 16, "an integer >= 16"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("max_grad_norm", self.max_grad_norm >= 0, ">= 0 (0: no clipping)"),
            ("micro_batch_tokens", isinstance(self.micro_batch_tokens, int) and
             (self.micro_batch_tokens == 0 or self.micro_batch_tokens >= 64), "0 (auto) or an integer >= 64"),
            ("context_window", isinstance(self.context_window, int) and self.context_window >= 1, "an integer >= 1"),
            ("max_new_tokens", isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1, "an integer >= 1"),
            ("eval_batch_size", isinstance(self.eval_batch_size, int) and self.eval_batch_size >= 1, "an integer >= 1"),
        ]
        bad = [f"{name} must be {what}, got {getattr(self, name)!r}" for name, ok, what in checks if not ok]
        twice = sorted({t for t in self.targets if list(self.targets).count(t) > 1}) if not bad else []
        if twice:
            bad.append(f"targets: {', '.join(map(repr, twice))} given twice; name each module once")
        if bad:
            raise ConfigError("; ".join(bad))
        self.targets = tuple(self.targets)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """The config from plain values (a spec's `train`), every name and type checked before the ranges."""
        if not isinstance(d, dict):
            raise ConfigError("train must be a mapping of hyperparameter names to values")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown hyperparameter(s) {unknown}; known: {sorted(known)}")
        _check_types(d)
        return cls(**d)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["targets"] = list(self.targets)
        return d




FLOAT_FIELDS = ("alpha", "dropout", "lr", "weight_decay", "max_grad_norm")


def _check_types(train: dict) -> None:
    """Types and finiteness the range checks cannot see (inf passes `> 0`; a string fails with a TypeError)."""
    defaults = TrainConfig()
    for name, v in train.items():
        want = getattr(defaults, name)
        if name in FLOAT_FIELDS:
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)):
                raise ConfigError(f"{name} must be a finite number, got {v!r}")
        elif is_int(want) and not is_int(v):
            raise ConfigError(f"{name} must be an integer, got {v!r}")
        elif name == "targets" and (isinstance(v, str) or not isinstance(v, (list, tuple))):
            raise ConfigError(f"targets must be a list of module names, got {v!r}")
        elif name == "system_prompt" and not isinstance(v, str):
            raise ConfigError(f"system_prompt must be a string, got {v!r}")
