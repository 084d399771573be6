"""Baselines that train nothing and generate nothing: copy the most similar train reply.

If copying the persona's own most similar past reply scores as well as a trained adapter, the adapter learned
no more than retrieval would give; if the persona-blind control (the most similar reply of ANY persona) scores as
well as the persona's own, the persona's history adds nothing. Similarity is TF-IDF cosine over the dialogue so
far (no knowledge of the simulator or of the smart-home vocabulary); ties keep the pool's order. Only train
examples are ever copied.
"""
from __future__ import annotations

import time

import numpy as np

from engine.methods.context import MethodOutput, _output
from engine.methods.prompting import _query_text
from engine.training.evaluate import score_replies


def nearest_replies(queries, pool) -> list[str]:
    """Per query, the target of the pool example whose context is most similar (TF-IDF cosine)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    if not pool:
        raise ValueError("nothing to copy from: no train examples")
    texts = [_query_text(e) for e in pool]
    vectorizer = TfidfVectorizer(lowercase=True, ngram_range=(1, 2), sublinear_tf=True).fit(texts)
    sims = (vectorizer.transform([_query_text(q) for q in queries]) @ vectorizer.transform(texts).T).toarray()
    return [pool[int(np.argmax(row))].target for row in sims]


def _answer(ctx, split: str, own: bool):
    """(predictions, seconds) of a split: each example answered by copying from its persona's train pool (own)
    or from everyone's."""
    t0 = time.time()
    examples = ctx.dataset.split(split)
    replies = [None] * len(examples)
    if own:
        pools = ctx.dataset.by_persona("train")
        by_persona: dict[str, list[int]] = {}
        for i, e in enumerate(examples):
            by_persona.setdefault(e.persona_id, []).append(i)
        for pid, rows in by_persona.items():
            for i, reply in zip(rows, nearest_replies([examples[i] for i in rows], pools[pid])):
                replies[i] = reply
    else:
        replies = nearest_replies(examples, ctx.dataset.split("train"))
    return score_replies(ctx.dataset, examples, replies, ctx.metric), time.time() - t0


def _copying(ctx, own: bool) -> MethodOutput:
    preds, seconds = _answer(ctx, "test", own)
    if ctx.validate and ctx.dataset.split("val"):  # routed chooses on validation answers
        ctx.validation[ctx.current] = _answer(ctx, "val", own)
    return _output(ctx, None, preds, seconds, 0)


def nearest_reply(ctx) -> MethodOutput:
    """The persona's own most similar train reply, copied."""
    return _copying(ctx, own=True)


def nearest_reply_blind(ctx) -> MethodOutput:
    """The most similar train reply of any persona, copied: nearest_reply's persona-blind control."""
    return _copying(ctx, own=False)
