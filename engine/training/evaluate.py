"""Evaluation: batched greedy generation or choice log-likelihood, metrics per target,
means per persona (overall and per kind of target). Each row of a batch is answered by its own persona's
adapter.

The primary metric (`score`) of smart-home dialogue data is `action_f1`: a reply naming the right devices
with the wrong values scores 0, so the score moves with personalization, not with reply format
(embedding similarity gave such a reply 0.86 and a perfect persona-blind one 0.98). Data whose references
do not mention actions is scored by `embedding_similarity`; choice data by `accuracy`.

The action metrics exist only for targets whose reference names a setting (NaN elsewhere; such targets
have `refrained` instead), and every per-persona mean skips NaN and says how many targets are behind it
(`n_with_settings`, `n_without_settings`): a persona none of whose targets names a setting has no score.
Beside personal / general, two more kinds split each reference's settings into `stated` (the dialogue named
them before the target: copying) and `supplied` (the assistant's own values: where personalization shows).
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import torch

from engine.models import embed
from engine.data import smarthome
from engine.training.encode import encode, pad_batch, system_prompt_of, target_logprobs

DIALOGUE_METRICS = ("action_f1", "param_f1", "device_precision", "numerical_precision", "embedding_similarity")
CHOICE_METRICS = ("accuracy",)
ALL_METRICS = DIALOGUE_METRICS + CHOICE_METRICS
ACTION_REFERENCES = 0.5  # action_f1 is primary when at least this share of test references mention an action
SETTING_FIGURES = ("refrained",)  # per-target figures beside the metrics, averaged per persona like them
PARTS = ("stated", "supplied")     # the kinds that split a reference's settings (smarthome.stated_supplied_metrics)
# per persona: the targets and reference settings behind its means
COUNTS = ("n_test", "n_with_settings", "n_without_settings", "n_settings")


def primary_metric(dataset, override: str | None = None) -> str:
    """The metric a run's `score` is: `override` when given (checked against the task), else action_f1 for
    dialogue data whose test references mostly parse to smart-home actions, embedding_similarity for other
    dialogue data, accuracy for choice data."""
    metrics = DIALOGUE_METRICS if dataset.task == "dialogue" else CHOICE_METRICS
    if override:
        if override not in metrics:
            raise ValueError(f"metric must be one of {', '.join(metrics)} for {dataset.task} data, got {override!r}")
        return override
    if dataset.task == "choice":
        return "accuracy"
    refs = [e.target for e in dataset.split("test")]
    parsed = sum(bool(smarthome.parse_actions(r)) for r in refs)
    return "action_f1" if refs and parsed >= ACTION_REFERENCES * len(refs) else "embedding_similarity"


def _route(lm, adapters: list[int] | None):
    router = getattr(lm.model, "lora_router", None)
    if router is None:
        from contextlib import nullcontext
        return nullcontext()
    return router.route(None if adapters is None else torch.tensor(adapters, device=lm.device))


def _stop_ids(tok) -> list[int]:
    ids = {tok.eos_token_id}
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tok.unk_token_id:
        ids.add(im_end)
    return [i for i in ids if i is not None]


@torch.no_grad()
def generate_replies(lm, examples, adapters: list[int] | None, cfg, progress=None, phase="generate") -> list[str]:
    """Greedy replies for dialogue examples, in input order; adapters[i] answers examples[i]."""
    tok = lm.tokenizer
    prompts = [encode(tok, ex.context, None, *system_prompt_of(tok, ex, cfg)).ids for ex in examples]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths share a batch
    replies: list[str] = [""] * len(prompts)
    stop = _stop_ids(tok)
    bs = cfg.eval_batch_size
    for b in range(0, len(order), bs):
        chunk = order[b:b + bs]
        T = max(len(prompts[i]) for i in chunk)
        ids = torch.full((len(chunk), T), tok.pad_token_id, dtype=torch.long)
        attn = torch.zeros((len(chunk), T), dtype=torch.long)
        for r, i in enumerate(chunk):  # left padding: every row's next token is at the end
            ids[r, T - len(prompts[i]):] = torch.tensor(prompts[i])
            attn[r, T - len(prompts[i]):] = 1
        with _route(lm, None if adapters is None else [adapters[i] for i in chunk]), lm.autocast():
            out = lm.model.generate(input_ids=ids.to(lm.device), attention_mask=attn.to(lm.device),
                                    max_new_tokens=cfg.max_new_tokens, do_sample=False, eos_token_id=stop,
                                    pad_token_id=tok.pad_token_id)
        for r, i in enumerate(chunk):
            replies[i] = tok.decode(out[r, T:], skip_special_tokens=True).strip()
        if progress:
            progress(phase, min(b + bs, len(order)), len(order))
    return replies


@torch.no_grad()
def choose(lm, examples, adapters: list[int] | None, cfg, progress=None, phase="score") -> list[int]:
    """Index of the choice with the highest length-normalised log-likelihood, per example."""
    seqs, owner = [], []
    for n, ex in enumerate(examples):
        for c in ex.choices:
            seqs.append(encode(lm.tokenizer, [("user", ex.prompt)], c, *system_prompt_of(lm.tokenizer, ex, cfg)))
            owner.append(n)
    scores = np.zeros(len(seqs))
    bs = cfg.eval_batch_size
    for b in range(0, len(seqs), bs):
        chunk = list(range(b, min(b + bs, len(seqs))))
        ids, attn, pred = pad_batch([seqs[i] for i in chunk], lm.tokenizer.pad_token_id, lm.device)
        rows_adapters = None if adapters is None else [adapters[owner[i]] for i in chunk]
        with _route(lm, rows_adapters), lm.autocast():
            logp, rows = target_logprobs(lm.model, ids, attn, pred)
        sums = torch.zeros(len(chunk)).index_add_(0, rows.cpu(), logp.float().cpu())
        counts = torch.zeros(len(chunk)).index_add_(0, rows.cpu(), torch.ones(len(rows)))
        scores[chunk] = (sums / counts.clamp(min=1)).numpy()
        if progress:
            progress(phase, chunk[-1] + 1, len(seqs))
    picks, start = [], 0
    for ex in examples:
        k = len(ex.choices)
        picks.append(int(np.argmax(scores[start:start + k])))
        start += k
    return picks


def score_dialogue(predictions: list[str], references: list[str], contexts) -> pd.DataFrame:
    """One row of metrics per target (contexts: each target's earlier (role, text) turns), with the reference's
    settings counted (n_settings) and split into stated / supplied (smarthome.stated_supplied_metrics)."""
    rows = [smarthome.action_metrics(p, r) for p, r in zip(predictions, references)]
    action = [m for m in DIALOGUE_METRICS if m != "embedding_similarity"] + list(SETTING_FIGURES)
    df = pd.DataFrame(rows, columns=action)
    df["embedding_similarity"] = embed.embedding_similarity(predictions, references).astype(float)
    split = [smarthome.stated_supplied_metrics(p, r, c) for p, r, c in zip(predictions, references, contexts)]
    parts = pd.DataFrame(split, columns=["stated_f1", "supplied_f1", "n_stated", "n_supplied"])
    df["n_settings"] = parts.n_stated + parts.n_supplied
    return pd.concat([df[list(DIALOGUE_METRICS) + list(SETTING_FIGURES) + ["n_settings"]], parts], axis=1)


def _targets_frame(examples) -> pd.DataFrame:
    """The targets' ids, kinds and situation (`meta_json`: the dialogue's meta, e.g. EdgeWisePersona's time of day
    and weather, shown on the Persona page beside the context; None without)."""
    return pd.DataFrame({
        "persona_id": [e.persona_id for e in examples],
        "example_id": [e.example_id for e in examples],
        "kind": [e.kind for e in examples],
        "meta_json": [json.dumps(e.meta, sort_keys=True) if e.meta else None for e in examples],
    })


def evaluate(lm, dataset, examples, adapters: list[int] | None, cfg, progress=None,
             metric: str | None = None) -> pd.DataFrame:
    """Predictions with their metrics and `score` (the primary metric, or `metric`), one row per example."""
    if dataset.task == "dialogue":
        return score_replies(dataset, examples, generate_replies(lm, examples, adapters, cfg, progress), metric)
    picks = choose(lm, examples, adapters, cfg, progress)
    out = _targets_frame(examples)
    out["context"] = [e.prompt for e in examples]
    out["reference"] = [e.choices[e.answer] for e in examples]
    out["prediction"] = [e.choices[p] for e, p in zip(examples, picks)]
    out["accuracy"] = [float(p == e.answer) for e, p in zip(examples, picks)]
    out["score"] = out[metric or primary_metric(dataset)]
    return out


def score_replies(dataset, examples, replies: list[str], metric: str | None = None) -> pd.DataFrame:
    """Dialogue predictions, however they were made (generated, retrieved, copied), scored alike: one row per
    example with its metrics and `score`."""
    out = _targets_frame(examples)
    out["context"] = ["\n".join(f"{r}: {t}" for r, t in e.context) for e in examples]
    out["reference"] = [e.target for e in examples]
    out["prediction"] = list(replies)
    out["persona_blind"] = [e.blind for e in examples]
    out = pd.concat([out, score_dialogue(list(replies), [e.target for e in examples], [e.context for e in examples])],
                    axis=1)
    out["score"] = out[metric or primary_metric(dataset)]
    return out


def persona_blind_scores(dataset, metric: str) -> pd.DataFrame | None:
    """The persona-blind ceiling: the data's persona-blind replies (`persona_blind`) scored against the
    references of the test targets, like predictions; None when some test target has none."""
    tests = dataset.split("test")
    if dataset.task != "dialogue" or not tests or any(e.blind is None for e in tests):
        return None
    return score_replies(dataset, tests, [e.blind for e in tests], metric)


def persona_means(predictions: pd.DataFrame) -> pd.DataFrame:
    """Mean of every metric over each persona's test targets (the unit of every statistic), skipping targets
    where a metric is NaN; with the counts behind the action metrics (n_with_settings) and `refrained`
    (n_without_settings), and the reference settings in all (n_settings)."""
    metrics = [m for m in ALL_METRICS + SETTING_FIGURES if m in predictions] + ["score"]
    g = predictions.groupby("persona_id", sort=False)
    out = g[metrics].mean().reset_index()
    out.insert(1, "n_test", g.size().values)
    if "n_settings" in predictions:
        named = predictions.n_settings.gt(0).groupby(predictions.persona_id, sort=False)
        out["n_with_settings"] = named.sum().values.astype(int)
        out["n_without_settings"] = (g.size() - named.sum()).values.astype(int)
        out["n_settings"] = g["n_settings"].sum().values.astype(int)
    return out


def persona_means_by_part(predictions: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per persona and part (stated / supplied): the mean part F1 over the targets whose reference has settings
    of that part (n_test = n_with_settings of them, n_settings = the settings), as `action_f1`, and as `score`
    when the run's primary metric is action_f1 (the part has no other figure: NaN then). A persona with no
    such target has no row."""
    parts = []
    for part in PARTS:
        if f"{part}_f1" not in predictions:
            continue
        rows = predictions[predictions[f"n_{part}"] > 0]
        g = rows.groupby("persona_id", sort=False)
        out = pd.DataFrame({"n_test": g.size(), "n_with_settings": g.size(), "n_settings": g[f"n_{part}"].sum(),
                            "action_f1": g[f"{part}_f1"].mean()}).reset_index()
        out["score"] = out.action_f1 if metric == "action_f1" else float("nan")
        parts.append(out.assign(kind=part))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def persona_means_by_kind(predictions: pd.DataFrame, metric: str = "action_f1") -> pd.DataFrame:
    """persona_means per kind of target (personal / general), for the targets that have a kind, then the
    stated / supplied parts of every target's settings (persona_means_by_part; `metric`: the run's primary)."""
    parts = [persona_means(g).assign(kind=kind) for kind, g in predictions.dropna(subset=["kind"]).groupby("kind")]
    by_part = persona_means_by_part(predictions, metric)
    parts += [by_part] if len(by_part) else []
    if not parts:
        return pd.DataFrame(columns=["persona_id", "kind", "n_test", "score"])
    out = pd.concat(parts, ignore_index=True)
    for c in COUNTS:  # a part has no n_without_settings: kept missing, not made a float
        if c in out:
            out[c] = out[c].astype("Int64")
    return out[["persona_id", "kind"] + [c for c in out.columns if c not in ("persona_id", "kind")]]
