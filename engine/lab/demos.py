"""The empty store's one-click starts: a toy demo, a SmolLM2 demo and a quick study."""
from __future__ import annotations

from engine.data.simulator import format_sim_spec
from engine.lab.spec import RunSpec
from engine.lab.study import StudySpec
from engine.methods.registry import known_methods

TINY_DEMO_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def demo_spec(which: str = "tiny"):
    """The two one-click demos: 'tiny' (tiny-random, every known method, seconds) and 'smollm2' (minutes)."""
    if which == "tiny":
        # a 2-layer random model learns the reply format ("Done: ac temperature 2...") in seconds when every
        # projection has a LoRA and the learning rate is high: the scores are a toy's, but not all zero
        data = format_sim_spec({"personas": 6, "train_per_persona": 8, "val_per_persona": 2, "test_per_persona": 2})
        return RunSpec(data=data, model="tiny-random", methods=known_methods(), seed=0, name="demo · tiny-random",
                       train={"epochs": 5, "lr": 1e-2, "max_new_tokens": 16, "targets": list(TINY_DEMO_TARGETS)})
    if which == "smollm2":
        data = format_sim_spec({"personas": 8, "train_per_persona": 20, "val_per_persona": 5, "test_per_persona": 5})
        return RunSpec(data=data, model="smollm2-135m", methods=["base", "unified", "per_persona"], seed=0,
                       name="demo · smollm2-135m", train={"epochs": 2, "max_new_tokens": 24})
    raise ValueError(f"unknown demo {which!r}")


def quick_study_spec():
    """The welcome page's quick study: tiny-random over personal_fraction x 2 seeds, four methods (a toy's
    scores, but every chart of the Studies page fills in)."""
    data = format_sim_spec({"personas": 6, "train_per_persona": 6, "val_per_persona": 2, "test_per_persona": 2})
    return StudySpec(data=data, vary={"personal_fraction": [0.0, 0.5]}, seeds=[0, 1],
                     methods=["base", "unified", "per_persona", "hybrid"], model="tiny-random",
                     name="quick study · tiny-random",
                     train={"epochs": 3, "lr": 1e-2, "max_new_tokens": 16, "targets": list(TINY_DEMO_TARGETS)})
