"""Combining K LoRA adapters into one with weights w (sum 1): pure tensor math on (A, B) per layer.

Every adapter shares one scaling s = alpha / r, so each combination works on the updates B A and
returns (A', B') with s B' A' the merged update (A' [R, d_in], B' [d_out, R]; R may differ from r):

  ab_mean    A' = Σ wᵢAᵢ, B' = Σ wᵢBᵢ                  what the study did; NOT the mean of the updates
  exact      B'A' = Σ wᵢBᵢAᵢ exactly, R = K·r          PEFT's "cat": A's stacked, w-scaled B's side by side
  svd        Σ wᵢBᵢAᵢ truncated to rank r               best rank-r approximation of `exact`
  ties       TIES-merging of the dense updates BᵢAᵢ: keep each update's top-`density` entries by
             magnitude, elect each entry's sign from Σ wᵢ·keptᵢ, take the w-weighted mean of the kept
             entries that agree with it; then SVD back to rank R = K·r (same budget as `exact`;
             the merge is full rank, so this loses a little: merge_layer reports how much)
  dare_ties  DARE: keep each entry with probability `density` (seeded), then the TIES sign election and
             disjoint mean as above

Two choices keep every combination idempotent (merging K copies of one adapter returns that adapter,
tests/test_cluster_merge.py): an entry that no adapter kept takes the sign-elected mean of the untrimmed
updates (there is no interference to resolve there, and zeroing it would shrink the update: TIES returned
0.94x of an update merged with itself), and DARE's 1/density rescale is not applied, because it makes a
SUM of dropped updates unbiased but in a MEAN over the kept entries it survives as a 1/density gain
(dare_ties returned 1.96x the update of five identical adapters).

Zero-padding an adapter to a larger rank leaves its update unchanged, so adapters of different
ranks evaluate together in one MultiLoRALinear (pad_rank).
"""
from __future__ import annotations

import torch

COMBINATIONS = ("ab_mean", "exact", "svd", "ties", "dare_ties")
DEFAULT_DENSITY = 0.5


def _w(weights, like: torch.Tensor) -> torch.Tensor:
    w = torch.as_tensor(weights, dtype=like.dtype, device=like.device)
    if w.dim() != 1 or not torch.isclose(w.sum(), torch.ones((), dtype=w.dtype), atol=1e-5):
        raise ValueError(f"merge weights must be a 1-D vector summing to 1, got {weights}")
    return w


def ab_mean(As, Bs, weights):
    w = _w(weights, As[0])
    return sum(wi * A for wi, A in zip(w, As)), sum(wi * B for wi, B in zip(w, Bs))


def exact(As, Bs, weights):
    w = _w(weights, As[0])
    return torch.cat(list(As), 0), torch.cat([wi * B for wi, B in zip(w, Bs)], 1)


def low_rank_svd(A, B, rank: int):
    """Best rank-`rank` (A, B) of the product B A without forming it (QR of both factors, SVD of the small
    core), and the share of its energy kept."""
    Qb, Rb = torch.linalg.qr(B)              # B = Qb Rb
    Qa, Ra = torch.linalg.qr(A.t())          # A = Ra^T Qa^T
    U, S, Vh = torch.linalg.svd(Rb @ Ra.t())
    k = min(rank, S.numel())
    root = S[:k].sqrt()
    return root[:, None] * (Vh[:k] @ Qa.t()), (Qb @ U[:, :k]) * root[None, :], _kept(S, k)


def _kept(S, k) -> float:
    return float((S[:k] ** 2).sum() / (S ** 2).sum().clamp(min=1e-30))


def svd(As, Bs, weights, rank: int):
    A, B = exact(As, Bs, weights)
    return low_rank_svd(A, B, rank)


def dense_svd(delta: torch.Tensor, rank: int, oversample: int = 16, power_iters: int = 4):
    """(A, B) of a rank-`rank` approximation of a dense update, and the share of its energy kept.

    Exact SVD when the rank is close to full; otherwise a randomized range finder with power iterations
    (Halko et al.) seeded with a fixed generator, so export recomputes the very same factors. The kept
    share is measured against the true norm, so it is honest either way.
    """
    m, n = delta.shape
    if 2 * (rank + oversample) >= min(m, n):
        U, S, Vh = torch.linalg.svd(delta, full_matrices=False)
    else:
        g = torch.Generator().manual_seed(0)
        Q = torch.linalg.qr(delta @ torch.randn(n, rank + oversample, generator=g, dtype=delta.dtype)).Q
        for _ in range(power_iters):
            Q = torch.linalg.qr(delta @ torch.linalg.qr(delta.t() @ Q).Q).Q
        U, S, Vh = torch.linalg.svd(Q.t() @ delta, full_matrices=False)
        U = Q @ U
    k = min(rank, S.numel())
    root = S[:k].sqrt()
    kept = float((S[:k] ** 2).sum() / delta.pow(2).sum().clamp(min=1e-30))
    return root[:, None] * Vh[:k], U[:, :k] * root[None, :], kept


def dare_keep(t: torch.Tensor, density: float, generator: torch.Generator) -> torch.Tensor:
    """DARE's random mask: each entry kept with probability `density`."""
    return torch.rand(t.shape, generator=generator, dtype=torch.float32) < density


def top_keep(t: torch.Tensor, density: float) -> torch.Tensor:
    """TIES' trim mask: the top `density` share of entries by magnitude."""
    k = max(1, int(round(density * t.numel())))
    if k >= t.numel():
        return torch.ones_like(t, dtype=torch.bool)
    threshold = t.abs().flatten().kthvalue(t.numel() - k + 1).values
    return t.abs() >= threshold


def sign_elect_mean(tasks: torch.Tensor, w: torch.Tensor, kept: torch.Tensor | None = None) -> torch.Tensor:
    """TIES' elect + disjoint merge: per entry, the w-weighted mean of the kept entries agreeing with the
    elected sign(Σ wᵢ·keptᵢ). Entries no adapter kept fall back to the same over all adapters."""
    wv = w.view(-1, *([1] * (tasks.dim() - 1)))

    def disjoint_mean(mask):
        masked = tasks * mask
        sign = torch.where((wv * masked).sum(0) >= 0, 1.0, -1.0).to(tasks.dtype)
        agree = mask & (tasks.sign() == sign)  # zeros never agree
        return (wv * agree * tasks).sum(0) / (wv * agree).sum(0).clamp(min=1e-12)

    if kept is None:
        return disjoint_mean(torch.ones_like(tasks, dtype=torch.bool))
    return torch.where(kept.any(0), disjoint_mean(kept), disjoint_mean(torch.ones_like(kept)))


def ties(As, Bs, weights, rank: int, density: float = DEFAULT_DENSITY, generator=None, dare: bool = False):
    """TIES (or DARE-TIES) merge of the dense updates, back to rank `rank`; returns (A, B, energy kept)."""
    w = _w(weights, As[0])
    tasks = torch.stack([B @ A for A, B in zip(As, Bs)])
    kept = torch.stack([dare_keep(t, density, generator) if dare else top_keep(t, density) for t in tasks])
    return dense_svd(sign_elect_mean(tasks, w, kept), rank)


def merge_layer(As, Bs, weights, combination: str, r: int, density: float = DEFAULT_DENSITY, generator=None):
    """One layer's merged (A, B) and the share of the combination's update its rank kept (1.0 when exact)."""
    if combination == "ab_mean":
        return (*ab_mean(As, Bs, weights), 1.0)
    if combination == "exact":
        return (*exact(As, Bs, weights), 1.0)
    if combination == "svd":
        return svd(As, Bs, weights, r)
    if combination in ("ties", "dare_ties"):
        if combination == "dare_ties" and generator is None:
            raise ValueError("dare_ties needs a seeded torch.Generator")
        return ties(As, Bs, weights, r * len(As), density, generator, dare=combination == "dare_ties")
    raise ValueError(f"unknown merge combination '{combination}'; known: {', '.join(COMBINATIONS)}")


def merge_adapters(states: list[dict], weights, combination: str, r: int, density: float = DEFAULT_DENSITY,
                   seed: int = 0) -> tuple[dict, float]:
    """Merge adapter_state() dicts layer by layer; returns the merged state and the mean energy kept (1 = exact)."""
    gen = torch.Generator().manual_seed(seed)
    out, kept = {}, []
    for name in states[0]:
        A, B, k = merge_layer([s[name][0] for s in states], [s[name][1] for s in states], weights,
                              combination, r, density, gen)
        out[name] = (A.contiguous(), B.contiguous())
        kept.append(k)
    return out, sum(kept) / len(kept)


def pad_rank(state: dict, rank: int) -> dict:
    """The same adapter at a larger rank: zero rows of A / columns of B change nothing."""
    out = {}
    for name, (A, B) in state.items():
        extra = rank - A.shape[0]
        out[name] = (torch.cat([A, A.new_zeros(extra, A.shape[1])]), torch.cat([B, B.new_zeros(B.shape[0], extra)], 1))
    return out


def state_rank(state: dict) -> int:
    return next(iter(state.values()))[0].shape[0]
