"""Examples as token ids, padded and packed batches, and log-probabilities at target positions.

Shared by the trainer and by evaluation, so a reply is scored under exactly the prompt it was trained on.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engine.training.config import TrainConfig

# ----------------------------------------------------------------------------- encoding

@dataclass
class Encoded:
    """Token ids of prompt + target; the loss covers ids[n_prompt:]."""
    ids: list[int]
    n_prompt: int


def prompt_messages(context, system_prompt: str | None) -> list[dict]:
    msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return msgs + [{"role": role, "content": text} for role, text in context]


def _render(tok, messages: list[dict], reply: str | None) -> tuple[str, str]:
    """(prompt text, target text) with the tokenizer's chat template when it has one."""
    if getattr(tok, "chat_template", None):
        prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        if reply is None:
            return prompt, ""
        full = tok.apply_chat_template(messages + [{"role": "assistant", "content": reply}], tokenize=False)
        if full.startswith(prompt):
            return prompt, full[len(prompt):]
        return prompt, reply + (tok.eos_token or "")
    prompt = "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in messages) + "Assistant: "
    return prompt, "" if reply is None else reply + (tok.eos_token or "\n")


def encode(tok, context, reply: str | None, system_prompt: str | None, max_length: int) -> Encoded:
    """Prompt and target tokenized separately so the loss boundary is exact; long prompts lose their start."""
    prompt, target = _render(tok, prompt_messages(context, system_prompt), reply)
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    t = tok(target, add_special_tokens=False)["input_ids"] if target else []
    t = t[:max_length - 1]
    p = p[-(max_length - len(t)):]
    return Encoded(p + t, len(p))


def system_prompt_of(tok, ex, cfg: TrainConfig) -> tuple[str | None, int]:
    """The system prompt an example is answered with, and its token budget: `max_length` is the dialogue's
    budget, so a method's longer system prompt (a profile, retrieved dialogues) gets its extra tokens on top
    instead of pushing the dialogue out."""
    if ex.system is None:
        return cfg.system_prompt, cfg.max_length
    extra = len(tok(ex.system, add_special_tokens=False)["input_ids"])
    extra -= len(tok(cfg.system_prompt, add_special_tokens=False)["input_ids"]) if cfg.system_prompt else 0
    return ex.system, cfg.max_length + max(0, extra)


def encode_example(tok, ex, cfg: TrainConfig) -> Encoded:
    """A training item: dialogue target, or the right choice of a choice task as the reply."""
    system, budget = system_prompt_of(tok, ex, cfg)
    if ex.target is not None:
        return encode(tok, ex.context, ex.target, system, budget)
    return encode(tok, [("user", ex.prompt)], ex.choices[ex.answer], system, budget)


# ----------------------------------------------------------------------------- forward

def pad_batch(seqs: list[Encoded], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, attention mask, and a bool mask of positions whose NEXT token is a target."""
    T = max(len(s.ids) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), T), dtype=torch.long)
    pred = torch.zeros((len(seqs), T), dtype=torch.bool)
    for i, s in enumerate(seqs):
        ids[i, :len(s.ids)] = torch.tensor(s.ids)
        attn[i, :len(s.ids)] = 1
        pred[i, s.n_prompt - 1:len(s.ids) - 1] = True
    return ids.to(device), attn.to(device), pred.to(device)


def logprobs_at(model, ids, attention_mask, labels, position_ids=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of every label >= 0 (labels[b, t]: the token position t must predict; flattened,
    row-major) and the row of each.

    The LM head runs only at those positions: on a 49k vocabulary it is most of the compute otherwise.
    """
    decoder = getattr(model, model.base_model_prefix)
    hidden = decoder(input_ids=ids, attention_mask=attention_mask, position_ids=position_ids,
                     use_cache=False).last_hidden_state
    at = labels >= 0
    logits = model.get_output_embeddings()(hidden[at]).float()
    return -F.cross_entropy(logits, labels[at], reduction="none"), at.nonzero()[:, 0]


def target_logprobs(model, ids, attn, pred) -> tuple[torch.Tensor, torch.Tensor]:
    """logprobs_at for pad_batch rows: a pred position predicts the next token of its row."""
    labels = torch.full_like(ids, -1)
    labels[:, :-1][pred[:, :-1]] = ids[:, 1:][pred[:, :-1]]
    return logprobs_at(model, ids, attn, labels)


# ----------------------------------------------------------------------------- packing

@dataclass
class Packed:
    """Rows of ONE adapter in one sequence: their common prompt prefix once, then each row's remainder.

    A remainder attends to the prefix and, causally, to itself (never to another remainder) and keeps the
    positions it has in its own row: the same computation as the rows one by one, without padding, and with
    the prefix (chat template + system prompt: a third of a smart-home row) computed once, not per row.
    """
    ids: list[int]
    segment: list[int]    # 0: the shared prefix, k: row k (1-based)
    position: list[int]   # the position each token has in its own row
    labels: list[int]     # the token a position predicts when that token is a target, else -1
    n_tokens: int         # tokens of the rows themselves (what "trained tokens" counts)


def shared_prefix(rows: list[Encoded]) -> int:
    """Length of the common prefix of the rows, short of every row's last prompt token.

    Each row keeps its last prompt token: the position that predicts its first target stays its own.
    """
    limit = min(r.n_prompt for r in rows) - 1
    first = rows[0].ids
    n = 0
    while n < limit and all(r.ids[n] == first[n] for r in rows):
        n += 1
    return n


def pack_rows(rows: list[Encoded], budget_tokens: int) -> list[Packed]:
    """One adapter's rows of a step packed behind their shared prefix, split so a pack stays under the
    token budget (a single row longer than the budget is a pack of its own)."""
    L = shared_prefix(rows)
    packs, cur, size = [], [], L
    for r in rows:
        if cur and size + len(r.ids) - L > budget_tokens:
            packs.append(cur)
            cur, size = [], L
        cur.append(r)
        size += len(r.ids) - L
    packs.append(cur)
    out = []
    for group in packs:
        ids, segment, position, labels = list(group[0].ids[:L]), [0] * L, list(range(L)), [-1] * L
        for k, r in enumerate(group, start=1):
            ids += r.ids[L:]
            segment += [k] * (len(r.ids) - L)
            position += range(L, len(r.ids))
            labels += [r.ids[i + 1] if r.n_prompt <= i + 1 < len(r.ids) else -1 for i in range(L, len(r.ids))]
        out.append(Packed(ids, segment, position, labels, sum(len(r.ids) for r in group)))
    return out


def packed_batch(packs: list[Packed], pad_id: int, device, segments: bool = False):
    """ids, an additive attention mask [B, 1, T, T], labels and position ids of packed sequences
    (logprobs_at's arguments). segments=True: the segment ids [B, 1, 1, T] in place of the mask, for a model
    that attends by blocks (engine.training.attention)."""
    T = max(len(p.ids) for p in packs)
    ids = torch.full((len(packs), T), pad_id, dtype=torch.long)
    position = torch.zeros((len(packs), T), dtype=torch.long)
    segment = torch.full((len(packs), T), -1, dtype=torch.long)
    labels = torch.full((len(packs), T), -1, dtype=torch.long)
    for b, p in enumerate(packs):
        n = len(p.ids)
        ids[b, :n], position[b, :n] = torch.tensor(p.ids), torch.tensor(p.position)
        segment[b, :n], labels[b, :n] = torch.tensor(p.segment), torch.tensor(p.labels)
    if segments:
        return ids.to(device), segment[:, None, None, :].to(device), labels.to(device), position.to(device)
    q, k = segment[:, :, None], segment[:, None, :]
    allowed = torch.ones(T, T, dtype=torch.bool).tril() & ((k == q) | (k == 0)) & (q >= 0)
    allowed |= torch.eye(T, dtype=torch.bool)  # padding attends to itself only: no empty softmax row
    mask = torch.zeros((len(packs), 1, T, T)).masked_fill_(~allowed[:, None], torch.finfo(torch.float32).min)
    return ids.to(device), mask.to(device), labels.to(device), position.to(device)


def micro_batches(seqs: list, budget_tokens: int) -> list[list[int]]:
    """Indices (of rows or packs) grouped by length so that rows × longest row ≤ budget (at least one each)."""
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i].ids))
    groups, cur = [], []
    for i in order:
        if cur and (len(cur) + 1) * len(seqs[i].ids) > budget_tokens:
            groups.append(cur)
            cur = []
        cur.append(i)
    if cur:
        groups.append(cur)
    return groups


