"""Batched multi-adapter LoRA training: P adapters in one pass, as if each were trained alone.

Each optimizer step holds the t-th mini-batch of every adapter's own data. The loss of each adapter is
the mean over its own target tokens, gradients are clipped per adapter, and AdamW keeps per-adapter
state and step counts (an adapter whose data ran out this epoch does not move). An adapter's rows of a
step are packed into one sequence behind their shared prompt prefix (computed once, no padding inside);
the packs are sorted by length and cut into micro-batches under a token budget (gradient accumulation),
so 200 personas fit in memory. Logits are computed only at target positions.

Every adapter trains under the same budget rule: after each epoch its loss on its own validation
examples is measured; it keeps its best-validation state and stops (frozen, no more compute) after
`patience` epochs without improvement, or at `epochs`, the cap. Its data order and dropout masks come
from its own seed, so an adapter's training does not depend on which adapters share its batches:
at dropout 0 the result equals P separate trainings within float tolerance (tests/test_equivalence.py).
With dropout > 0 the rows of a pack share the mask of their common prompt prefix, computed once, where
separate row-by-row training would draw one per row: equal in distribution, not mask for mask.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch
import torch.nn.functional as F

from engine.lora import DEFAULT_TARGETS, INITS, lora_layers, stream_seed

DEFAULT_SYSTEM_PROMPT = "You are a smart-home assistant. Reply with the actions you take."


# Padded tokens per forward pass when TrainConfig.micro_batch_tokens is 0. On CPU passes whose activations
# stay in cache are fastest (smollm2-135m, bf16, 2-core CPU, 8 and 32 personas: 1024 trains 10-25% faster
# than 512 or 2048); on CUDA bigger passes fill the GPU (not yet measured). Lower it if memory is short.
AUTO_MICRO_BATCH_TOKENS = {"cpu": 1024, "cuda": 4096}


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
        if bad:
            raise ConfigError("; ".join(bad))
        self.targets = tuple(self.targets)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown hyperparameter(s) {unknown}; known: {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["targets"] = list(self.targets)
        return d


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


def packed_batch(packs: list[Packed], pad_id: int, device):
    """ids, an additive attention mask [B, 1, T, T], labels and position ids of packed sequences
    (logprobs_at's arguments)."""
    T = max(len(p.ids) for p in packs)
    ids = torch.full((len(packs), T), pad_id, dtype=torch.long)
    position = torch.zeros((len(packs), T), dtype=torch.long)
    segment = torch.full((len(packs), T), -1, dtype=torch.long)
    labels = torch.full((len(packs), T), -1, dtype=torch.long)
    for b, p in enumerate(packs):
        n = len(p.ids)
        ids[b, :n], position[b, :n] = torch.tensor(p.ids), torch.tensor(p.position)
        segment[b, :n], labels[b, :n] = torch.tensor(p.segment), torch.tensor(p.labels)
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


# ----------------------------------------------------------------------------- optimizer

class StackedAdamW:
    """AdamW over stacked adapter tensors [P, ...] with per-adapter step counts.

    Elementwise identical to torch.optim.AdamW run on each adapter separately; adapters not in
    `active` are left untouched (no decay, no moment update), as if their training had ended.
    """

    def __init__(self, params: list[torch.Tensor], n_adapters: int, lr: float, weight_decay: float,
                 betas=(0.9, 0.999), eps=1e-8):
        self.params, self.lr, self.wd, self.betas, self.eps = params, lr, weight_decay, betas, eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.steps = torch.zeros(n_adapters, dtype=torch.float64)

    @torch.no_grad()
    def step(self, active: torch.Tensor):
        self.steps[active] += 1
        b1, b2 = self.betas
        act = active.nonzero()[:, 0]
        t = self.steps[act]
        bc1 = (1 - b1 ** t).float()
        bc2_sqrt = (1 - b2 ** t).sqrt().float()
        for p, m, v in zip(self.params, self.m, self.v):
            act_d = act.to(p.device)
            shape = (-1,) + (1,) * (p.dim() - 1)
            g = p.grad.index_select(0, act_d)
            pa, ma, va = p.data.index_select(0, act_d), m.index_select(0, act_d), v.index_select(0, act_d)
            pa.mul_(1 - self.lr * self.wd)
            ma.lerp_(g, 1 - b1)
            va.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (va.sqrt() / bc2_sqrt.to(p.device).view(shape)).add_(self.eps)
            pa.sub_((self.lr / bc1).to(p.device).view(shape) * ma / denom)
            p.data.index_copy_(0, act_d, pa)
            m.index_copy_(0, act_d, ma)
            v.index_copy_(0, act_d, va)


def clip_per_adapter(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale each adapter's gradient to norm ≤ max_norm (torch.nn.utils.clip_grad_norm_ per adapter)."""
    sq = sum(p.grad.float().pow(2).flatten(1).sum(1) for p in params)
    norms = sq.sqrt()
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for p in params:
        p.grad.mul_(coef.view((-1,) + (1,) * (p.dim() - 1)).to(p.grad.dtype))
    return norms


# ----------------------------------------------------------------------------- training loop

@dataclass
class TrainStats:
    steps: int = 0
    tokens: int = 0            # all non-pad tokens through the model
    target_tokens: int = 0     # tokens with a loss
    seconds: float = 0.0
    losses: list = field(default_factory=list)      # mean per-adapter loss at each step
    epochs: list = field(default_factory=list)      # epochs each adapter trained
    best_epoch: list = field(default_factory=list)  # the epoch whose state each adapter keeps (0: no validation)
    val_losses: list = field(default_factory=list)  # per epoch: {adapter: validation loss}
    validation_seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    def epochs_summary(self) -> dict:
        e = self.epochs or [0]
        return {"mean": float(np.mean(e)), "min": int(min(e)), "max": int(max(e)),
                "stopped_early": int(sum(b and b < n for b, n in zip(self.best_epoch, e)) if self.best_epoch else 0)}


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """Data order of one adapter in one epoch: depends only on its own seed, so batching changes nothing."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def loss_weights(n_tok: torch.Tensor, tok_adapter: torch.Tensor) -> torch.Tensor:
    """Per target token: 1 / (its adapter's target tokens in this step), so each adapter's loss is the mean
    over its own tokens, whatever else shares the step (the loss a separate training would have)."""
    return 1.0 / n_tok[tok_adapter]


def _route_packs(lm, packs, group, P, row_seeds=None):
    idx = torch.tensor([packs[i][0] for i in group], device=lm.device)
    return idx, lm.model.lora_router.route(idx if P > 1 else None, row_seeds)


@torch.no_grad()
def validation_losses(lm, val: list[list[Encoded]], adapters: list[int], budget: int) -> dict[int, float]:
    """Mean per-token loss of each listed adapter on its own validation rows (eval mode: no dropout)."""
    P = len(val)
    packs = [(p, pk) for p in adapters for pk in pack_rows(val[p], budget)]
    nll, count = torch.zeros(P, dtype=torch.float64), torch.zeros(P, dtype=torch.float64)
    lm.model.eval()
    try:
        for group in micro_batches([pk for _, pk in packs], budget):
            idx, routing = _route_packs(lm, packs, group, P)
            batch = packed_batch([packs[i][1] for i in group], lm.tokenizer.pad_token_id, lm.device)
            with routing, lm.autocast():
                logp, row = logprobs_at(lm.model, *batch)
            owner = idx[row].cpu()
            nll.index_add_(0, owner, -logp.double().cpu())
            count.index_add_(0, owner, torch.ones(len(owner), dtype=torch.float64))
    finally:
        lm.model.train()
    return {p: float(nll[p] / count[p]) for p in adapters if count[p] > 0}


def train_adapters_batched(lm, data: list[list[Encoded]], cfg: TrainConfig, seeds: list[int] | None = None,
                           val: list[list[Encoded]] | None = None, progress=None,
                           phase: str = "train") -> TrainStats:
    """Train adapter p of the model's LoRA layers on data[p], all adapters in one batched pass.

    With val (val[p]: adapter p's validation rows) and cfg.patience > 0, each adapter stops on its own
    and ends in its best-validation state; adapters without validation rows train cfg.epochs epochs.
    """
    model, router = lm.model, lm.model.lora_router
    layers = list(lora_layers(model).values())
    params = [p for l in layers for p in (l.lora_A, l.lora_B)]
    P = len(data)
    if layers[0].n_adapters != P:
        raise ValueError(f"model has {layers[0].n_adapters} adapters, data for {P}")
    if val is not None and len(val) != P:
        raise ValueError(f"validation data for {len(val)} adapters, training data for {P}")
    seeds = list(range(P)) if seeds is None else seeds
    for p in params:
        p.requires_grad_(True)
    opt = StackedAdamW(params, P, cfg.lr, cfg.weight_decay)
    bs = cfg.batch_size
    budget = cfg.micro_batch_tokens or AUTO_MICRO_BATCH_TOKENS.get(lm.device.type, 4096)
    early = val is not None and cfg.patience > 0
    watched = [early and bool(val[p]) for p in range(P)]
    training = [bool(d) for d in data]
    best_loss, bad = [math.inf] * P, [0] * P
    best = [torch.empty_like(t) if any(watched) else None for t in params]  # best-validation states
    stats = TrainStats(epochs=[0] * P, best_epoch=[0] * P)
    total = max(math.ceil(len(d) / bs) for d in data) * cfg.epochs  # an upper bound: adapters may stop early
    model.train()
    attention = model.config._attn_implementation
    if lm.device.type == "cpu" and attention == "sdpa":
        # on CPU eager attention trains packed rows ~12% faster than sdpa in bf16 (AMX; 32 personas,
        # smollm2-135m) and as fast in fp32 (AVX2), for ~25% more activation memory; generation keeps sdpa
        model.set_attn_implementation("eager")
    t0 = time.time()
    try:
        for epoch in range(cfg.epochs):
            now = [p for p in range(P) if training[p]]
            if not now:
                break
            orders = {p: epoch_order(len(data[p]), seeds[p], epoch) for p in now}
            for t in range(max(math.ceil(len(data[p]) / bs) for p in now)):
                n_tok = torch.zeros(P)
                packs, pack_seeds = [], []  # (adapter, Packed), and the seed of each pack's dropout stream
                for p in now:
                    rows = [data[p][i] for i in orders[p][t * bs:(t + 1) * bs]]
                    n_tok[p] = sum(len(s.ids) - s.n_prompt for s in rows)
                    for k, pk in enumerate(pack_rows(rows, budget) if rows else []):
                        packs.append((p, pk))
                        pack_seeds.append(stream_seed(seeds[p], "dropout", epoch, t, k))
                active = n_tok > 0
                loss_sum = torch.zeros(P)
                for p in params:
                    p.grad = None
                for group in micro_batches([pk for _, pk in packs], budget):
                    idx, routing = _route_packs(lm, packs, group, P, [pack_seeds[i] for i in group])
                    batch = packed_batch([packs[i][1] for i in group], lm.tokenizer.pad_token_id, lm.device)
                    with routing, lm.autocast():
                        logp, row = logprobs_at(model, *batch)
                    tok_adapter = idx[row]
                    loss = -(logp * loss_weights(n_tok.to(lm.device), tok_adapter)).sum()
                    loss.backward()
                    loss_sum.index_add_(0, tok_adapter.cpu(), -logp.detach().float().cpu())
                    stats.tokens += sum(packs[i][1].n_tokens for i in group)
                    stats.target_tokens += len(logp)
                if cfg.max_grad_norm > 0:
                    clip_per_adapter(params, cfg.max_grad_norm)
                opt.step(active)
                stats.steps += 1
                step_loss = float((loss_sum[active] / n_tok[active]).mean())
                stats.losses.append(step_loss)
                if progress:
                    progress(phase, min(stats.steps, total), total, loss=step_loss)
            for p in now:
                stats.epochs[p] += 1
            check = [p for p in now if watched[p]]
            if check:
                v0 = time.time()
                losses = validation_losses(lm, val, check, budget)
                stats.validation_seconds += time.time() - v0
                stats.val_losses.append(losses)
                improved = [p for p in check if losses[p] < best_loss[p]]
                for p in check:
                    if p in improved:
                        best_loss[p], bad[p], stats.best_epoch[p] = losses[p], 0, epoch + 1
                    else:
                        bad[p] += 1
                        training[p] = bad[p] < cfg.patience
                if improved:
                    keep = torch.tensor(improved)
                    with torch.no_grad():
                        for b, t_ in zip(best, params):
                            b.index_copy_(0, keep.to(t_.device), t_.index_select(0, keep.to(t_.device)))
        if any(watched):  # every watched adapter ends in its best state
            keep = torch.tensor([p for p in range(P) if watched[p] and stats.best_epoch[p] > 0])
            with torch.no_grad():
                for b, t_ in zip(best, params):
                    t_.index_copy_(0, keep.to(t_.device), b.index_select(0, keep.to(t_.device)))
        if progress:
            progress(phase, total, total)
    finally:
        model.set_attn_implementation(attention)
        model.eval()
        for p in params:
            p.requires_grad_(False)
            p.grad = None
        stats.seconds = time.time() - t0
    return stats
