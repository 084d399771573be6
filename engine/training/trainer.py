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
from dataclasses import dataclass, field

import numpy as np
import torch

from engine.training import attention as block_attention
from engine.training.config import TrainConfig
from engine.training.encode import Encoded, logprobs_at, micro_batches, pack_rows, packed_batch
from engine.training.lora import lora_layers, stream_seed

# Padded tokens per forward pass when TrainConfig.micro_batch_tokens is 0. On CPU passes whose activations
# stay in cache are fastest (smollm2-135m, bf16, 2-core CPU, 8 and 32 personas: 1024 trains 10-25% faster
# than 512 or 2048); on CUDA bigger passes fill the GPU (not yet measured). Lower it if memory is short.
AUTO_MICRO_BATCH_TOKENS = {"cpu": 1024, "cuda": 4096}


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
            batch = packed_batch([packs[i][1] for i in group], lm.tokenizer.pad_token_id, lm.device,
                                 segments=block_attention.uses_block_attention(lm.model))
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
                           phase: str = "train", between_epochs=None) -> TrainStats:
    """Train adapter p of the model's LoRA layers on data[p], all adapters in one batched pass.

    With val (val[p]: adapter p's validation rows) and cfg.patience > 0, each adapter stops on its own
    and ends in its best-validation state; adapters without validation rows train cfg.epochs epochs.
    between_epochs(seconds of the epoch) is called after each epoch (the run re-fits its threads there).
    """
    model = lm.model
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
    if lm.device.type == "cpu":
        # packed rows attend by blocks on CPU (engine.training.attention): one adapter, packs of 8 rows, 2-core
        # EPYC: bf16 1.27x and fp32 (AVX2) 1.16x the eager attention under the full mask that it replaces
        # (eager beat sdpa there); small packs (32 adapters x 3 rows) tie. Generation keeps the model's own
        # attention; CUDA keeps sdpa under the full mask (block attention not measured there).
        model.set_attn_implementation(block_attention.NAME)
    blocks = block_attention.uses_block_attention(model)
    t0 = time.time()
    try:
        for epoch in range(cfg.epochs):
            now = [p for p in range(P) if training[p]]
            if not now:
                break
            e0 = time.time()
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
                    batch = packed_batch([packs[i][1] for i in group], lm.tokenizer.pad_token_id, lm.device,
                                         segments=blocks)
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
            if between_epochs:
                between_epochs(time.time() - e0)
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
