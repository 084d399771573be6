"""Every method, declared once: what it needs from the data, what it trains, what it leaves to export.

Checks, the Launch page, the time estimate, export, routing and the run order read these entries; nothing
guesses a method's needs from its name. Adding a method = one entry here + its function (ctx) -> MethodOutput
in engine/methods/. The functions are named as "module:function" and imported when a method runs, so
reading the registry (the dashboard does, on every page) loads no model code.
"""
from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass

from engine.training.config import ConfigError
from engine.training.merge import COMBINATIONS as MERGE_COMBINATIONS

PROFILE_PROMPT = "it puts the profile text in the prompt"


@dataclass(frozen=True)
class Method:
    name: str
    function: str                      # "module:function" under engine.methods
    summary: str                       # what answers persona p
    reads_profile: str | None = None   # why it reads the personas' profile texts; None: it never does
    reads_train: bool = True           # reads train examples (to train, or to retrieve from)
    own_train: bool = False            # every persona needs its own train examples (one adapter each, retrieval)
    chooses: bool = False              # picks among the run's other methods on their validation answers
    stages: tuple[str, ...] = ()       # passes over the train data it needs; a stage two methods share (its
                                       # name) is trained once per run and charged to each of them
    scores_val: bool = False           # answers val examples itself (merges weigh adapters by val score)
    options: tuple[str, ...] = ()      # method options it reads (engine.lab.checks.OPTIONS)
    adapter: str | None = None         # what export writes: "one", "per persona", "per cluster"; None: nothing
    no_adapter: str = ""               # why there is nothing to export, when adapter is None
    tasks: tuple[str, ...] = ("dialogue", "choice")  # the data tasks it can answer


_ENTRIES = [
    Method("base", "adapters:base", "the base model, no adapter", reads_train=False,
           no_adapter="base changes no weights: it has no adapter"),
    Method("nearest_reply", "baselines:nearest_reply", "p's own most similar train reply (TF-IDF over the "
           "dialogue so far), copied: no model", own_train=True, tasks=("dialogue",),
           no_adapter="nearest_reply copies a train reply: it has no adapter"),
    Method("nearest_reply_blind", "baselines:nearest_reply_blind", "the most similar train reply of any persona, "
           "copied: nearest_reply's persona-blind control", tasks=("dialogue",),
           no_adapter="nearest_reply_blind copies a train reply: it has no adapter"),
    Method("unified", "adapters:unified", "one LoRA trained on every persona's train examples",
           stages=("unified",), adapter="one"),
    Method("per_persona", "adapters:per_persona", "p's own LoRA, trained from the base on p's train examples",
           own_train=True, stages=("per_persona",), adapter="per persona"),
    Method("hybrid", "adapters:hybrid", "`unified` merged into the base, then p's own LoRA on top",
           own_train=True, stages=("unified", "hybrid"), adapter="per persona, on the unified one"),
    Method("cluster", "adapters:cluster", "the LoRA of p's cluster (KMeans on profile embeddings)",
           reads_profile="it clusters the personas by their profile texts", stages=("cluster",),
           options=("cluster_k",), adapter="per cluster"),
    Method("prompted", "prompts:prompted", "the base model with p's profile text in the system prompt",
           reads_profile=PROFILE_PROMPT, reads_train=False,
           no_adapter="prompted only puts the profile in the prompt: it has no adapter"),
    Method("unified+profile", "prompts:unified_profile",
           "one LoRA trained with each persona's profile in the system prompt, answering with p's",
           reads_profile=PROFILE_PROMPT, stages=("unified+profile",), adapter="one"),
    Method("rag", "prompts:rag", "the base model with p's k most similar own train dialogues in the prompt",
           own_train=True, options=("rag_k",),
           no_adapter="rag only puts retrieved dialogues in the prompt: it has no adapter"),
    Method("unified+rag", "prompts:unified_rag", "the `unified` LoRA answering with those retrieved dialogues",
           own_train=True, stages=("unified",), options=("rag_k",), adapter="one"),
] + [
    Method(f"merge:{c}", "merging:merge", f"a merge ({c}) of the per-persona LoRAs of p's nearest personas",
           reads_profile="it merges the adapters of personas with similar profile texts", own_train=True,
           stages=("per_persona",), scores_val=True, options=("merge_k", "merge_density"), adapter="per persona")
    for c in MERGE_COMBINATIONS
] + [
    Method("routed", "routing:routed", "per persona, the run's method with the best validation score",
           reads_train=False, chooses=True,
           no_adapter="routed answers each persona with another method of the run: export that method's adapter; "
                      "the Persona page and details_json.routing say which"),
]
METHODS: dict[str, Method] = {m.name: m for m in _ENTRIES}


def known_methods() -> list[str]:
    """Every method name, in the order a run executes them (those that choose among the others last)."""
    return run_order(list(METHODS))


def method(name: str) -> Method:
    """The entry of a method name; ConfigError naming the known ones otherwise."""
    if name not in METHODS:
        raise ConfigError(f"unknown method '{name}'; known: {', '.join(known_methods())}")
    return METHODS[name]


def run_order(methods: list[str]) -> list[str]:
    """The methods in the order given, those that choose among the others' results last."""
    return [m for m in methods if not METHODS[m].chooses] + [m for m in methods if METHODS[m].chooses]


def function(name: str):
    """The method's function (ctx) -> MethodOutput; a merge gets its combination bound."""
    entry = method(name)
    module, _, attr = entry.function.partition(":")
    fn = getattr(importlib.import_module(f"engine.methods.{module}"), attr)
    if name.startswith("merge:"):
        return functools.partial(fn, combination=name.partition(":")[2])
    return fn


def training_stages(methods) -> set[str]:
    """The passes over the train data a set of methods needs, each shared stage once."""
    return {s for m in methods for s in method(m).stages}


def needs_profile(name: str) -> str | None:
    """Why a method reads the personas' profile texts, or None when it never does (or is no method of the lab's:
    an imported run's)."""
    return METHODS[name].reads_profile if name in METHODS else None
