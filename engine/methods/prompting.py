"""Personalization through the prompt (the field's first baselines): the persona's profile, or the
persona's own most similar past dialogues, put in the system prompt of an example.

Both only rewrite examples (their `system` field); training and evaluation stay the batched trainer's and
engine.training.evaluate's. Retrieval reads nothing but the persona's own TRAIN examples: never another persona's,
never a val or test dialogue.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from engine.models import embed

PROFILE_HEADER = "About the user:"
RETRIEVED_HEADER = "Earlier conversations with this user:"
DEFAULT_RAG_K = 4


def _join(system_prompt: str | None, text: str) -> str:
    return f"{system_prompt}\n\n{text}" if system_prompt else text


def with_profiles(examples, personas: dict[str, str | None], system_prompt: str | None) -> list:
    """Each example with its persona's profile text appended to the system prompt."""
    return [dataclasses.replace(e, system=_join(system_prompt, f"{PROFILE_HEADER} {personas[e.persona_id]}"))
            for e in examples]


def dialogue_text(e) -> str:
    """A train example as the prompt shows it: its messages, then the reply."""
    if e.target is None:  # a choice task: its prompt and the right choice
        return f"User: {e.prompt}\nAssistant: {e.choices[e.answer]}"
    turns = [f"{role.capitalize()}: {text}" for role, text in e.context]
    return "\n".join(turns + [f"Assistant: {e.target}"])


def _query_text(e) -> str:
    return "\n".join(text for _, text in e.context) if e.context else (e.prompt or "")


def retrieve(queries, pools: dict[str, list], k: int) -> dict[str, list[str]]:
    """example_id -> ids of its persona's k train examples whose contexts are most similar to its own
    (MiniLM cosine, most similar first; ties keep the pool's order). pools: persona -> its train examples."""
    if k < 1:
        raise ValueError(f"rag_k must be an integer >= 1, got {k!r}")
    out: dict[str, list[str]] = {}
    by_persona: dict[str, list] = {}
    for q in queries:
        by_persona.setdefault(q.persona_id, []).append(q)
    for pid, qs in by_persona.items():
        own = {e.example_id: e for e in pools.get(pid, []) if e.split == "train" and e.persona_id == pid}
        pool = list(own.values())
        if not pool:
            out.update({q.example_id: [] for q in qs})
            continue
        sims = embed.embed([_query_text(q) for q in qs]) @ embed.embed([_query_text(e) for e in pool]).T
        for q, row in zip(qs, sims):
            order = np.argsort(-row, kind="stable")[:k]
            out[q.example_id] = [pool[i].example_id for i in order]
    return out


def with_retrieved(examples, pools: dict[str, list], k: int, system_prompt: str | None) -> tuple[list, dict]:
    """Each example with its k retrieved dialogues in the system prompt; also returns what was retrieved."""
    got = retrieve(examples, pools, k)
    by_id = {e.example_id: e for pool in pools.values() for e in pool}
    out = []
    for e in examples:
        shown = "\n\n".join(dialogue_text(by_id[i]) for i in got[e.example_id])
        out.append(dataclasses.replace(e, system=_join(system_prompt, f"{RETRIEVED_HEADER}\n{shown}") if shown
                                       else system_prompt))
    return out, got
