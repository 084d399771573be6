"""Multi-adapter LoRA: P adapters stacked in one layer, each batch row routed to its own adapter.

y = W x + (alpha / r) * B[a] A[a] dropout(x),   a = adapter index of the row.

With P = 1 this is plain LoRA (the `unified` method); with P = personas it trains every persona's
adapter in one pass over the frozen base layer. The model wrapper only swaps layers.
"""
from __future__ import annotations

import contextlib
import hashlib
import math

import torch
from torch import nn

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
INITS = ("shared", "independent")


def stream_seed(*parts) -> int:
    """A 63-bit seed from any tuple of ints and strings, the same in every process (str hash() is salted).

    Every random stream of an adapter (its A at init, its data order, its dropout masks) is seeded from its
    own key, never drawn from a stream it shares with other adapters: so training an adapter beside others,
    alone, or on another machine draws the same numbers.
    """
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class AdapterRouter:
    """Shared by every LoRA layer of a model: which adapter each row of the current batch uses, and the
    seed of each row's dropout stream while training."""

    def __init__(self):
        self.index: torch.Tensor | None = None  # [N] long, or None = all rows use adapter 0
        self.row_seeds: list[int] | None = None  # [N] dropout seeds, or None = torch's global RNG

    @contextlib.contextmanager
    def route(self, index: torch.Tensor | None, row_seeds: list[int] | None = None):
        old = self.index, self.row_seeds
        self.index, self.row_seeds = index, row_seeds
        try:
            yield
        finally:
            self.index, self.row_seeds = old


def dropout_mask(x: torch.Tensor, p: float) -> tuple[torch.Tensor, float]:
    """x with each element zeroed with probability p (p rounded to a multiple of 1/65536), and the
    1/(1 - p) that inverted dropout multiplies by: the caller folds it into the (small) LoRA B.

    The mask comes from 16 random bits per element. torch's CPU bernoulli_ draws one Mersenne-twister
    number per element (~1.3 ms for a 512 x 576 activation, ~20% of a LoRA training step); four
    elements per random int64 cost a fifth of that.
    """
    dropped = min(65535, round(p * 65536))
    return x * _keep(x.numel(), dropped, x.device).view(x.shape), 65536 / (65536 - dropped)


def _keep(n: int, dropped: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
    bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-2**63, 2**63 - 1, generator=generator)
    return bits.view(torch.int16)[:n] >= dropped - 32768


def dropout_mask_rows(x: torch.Tensor, p: float, row_seeds: list[int], salt: int) -> tuple[torch.Tensor, float]:
    """dropout_mask with each row's mask drawn from its own stream (seed row_seeds[i], salted per layer),
    so a row's mask does not depend on which other rows share its batch."""
    dropped = min(65535, round(p * 65536))
    n = x[0].numel()
    bits = torch.empty((len(row_seeds), (n + 3) // 4), dtype=torch.int64, device=x.device)
    g = torch.Generator(device=x.device)
    for row, seed in zip(bits, row_seeds):  # the only per-row work: the (serial) draws; one compare below
        row.random_(-2**63, 2**63 - 1, generator=g.manual_seed(stream_seed(seed, salt)))
    keep = bits.view(torch.int16)[:, :n] >= dropped - 32768
    return x * keep.reshape(x.shape), 65536 / (65536 - dropped)


class _Rows(torch.autograd.Function):
    """stacked[idx], with a backward that adds each row's gradient straight into stacked.grad.

    Autograd's own index_select backward builds a zero gradient of the whole stack [P, ...] for every
    micro-batch and adds it to .grad: O(P) memory traffic per micro-batch, which with 200 adapters costs
    more than the micro-batch's compute. Here it is O(rows in the micro-batch).
    """

    @staticmethod
    def forward(ctx, stacked, idx):
        ctx.stacked = stacked
        ctx.save_for_backward(idx)
        return stacked.index_select(0, idx)

    @staticmethod
    def backward(ctx, grad):
        idx, = ctx.saved_tensors
        stacked = ctx.stacked
        if stacked.grad is None:
            stacked.grad = torch.zeros_like(stacked)
        stacked.grad.index_add_(0, idx, grad.to(stacked.dtype))
        return None, None


def rows(stacked: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return _Rows.apply(stacked, idx) if stacked.requires_grad and torch.is_grad_enabled() else stacked[idx]


class MultiLoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, router: AdapterRouter, n_adapters: int, r: int, alpha: float,
                 dropout: float = 0.0, layer_id: int = 0, init_seeds: list[int] | None = None):
        """init_seeds[p]: the seed adapter p's A is drawn from (equal seeds: equal A); default all 0."""
        super().__init__()
        self.base, self.router, self.r = base, router, r
        self.scaling = alpha / r
        self.dropout = dropout
        self.layer_id = layer_id  # salts the dropout streams: each layer masks differently
        dev = base.weight.device
        self.lora_A = nn.Parameter(torch.empty(n_adapters, r, base.in_features, device=dev))
        self.lora_B = nn.Parameter(torch.zeros(n_adapters, base.out_features, r, device=dev))
        drawn = {}
        for a, seed in zip(self.lora_A, init_seeds or [0] * n_adapters):
            if seed not in drawn:  # PEFT's init: kaiming-uniform A, zero B, so training starts at the base
                g = torch.Generator().manual_seed(stream_seed(seed, layer_id))
                drawn[seed] = nn.init.kaiming_uniform_(torch.empty(a.shape), a=math.sqrt(5), generator=g)
            with torch.no_grad():
                a.copy_(drawn[seed])

    @property
    def n_adapters(self) -> int:
        return self.lora_A.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        h, scaling = x, self.scaling
        if self.training and self.dropout > 0:
            seeds = self.router.row_seeds
            h, keep_scale = (dropout_mask(x, self.dropout) if seeds is None
                             else dropout_mask_rows(x, self.dropout, seeds, self.layer_id))
            scaling *= keep_scale
        # scalings go into B (r columns), not onto the [rows, tokens, d_out] activation
        idx = self.router.index
        if idx is None:  # one adapter for the whole batch
            A, B = self.lora_A[0], self.lora_B[0] * scaling
            return y + (h @ A.to(h.dtype).t()) @ B.to(h.dtype).t()
        if idx.numel() != x.shape[0]:
            raise RuntimeError(f"adapter index has {idx.numel()} rows, batch has {x.shape[0]}")
        if h.dim() == 3 and h.shape[1] == 1:  # a generation step: one token per row
            return y + self._delta_by_adapter(h, idx, scaling)
        A = rows(self.lora_A, idx).to(h.dtype)  # [N, r, d_in]
        B = (rows(self.lora_B, idx) * scaling).to(h.dtype)  # [N, d_out, r]
        shape = h.shape
        h = h.reshape(shape[0], -1, shape[-1])
        delta = torch.bmm(torch.bmm(h, A.transpose(1, 2)), B.transpose(1, 2))
        return y + delta.reshape(*shape[:-1], -1)

    def _delta_by_adapter(self, h: torch.Tensor, idx: torch.Tensor, scaling: float) -> torch.Tensor:
        """The rows' updates through the distinct adapters, each read once: h @ [A_1; ...; A_U]^T with all but
        each row's own block zeroed, then @ [B_1 ... B_U]^T. Per-row copies of A and B would move
        rows x r x (d_in + d_out) numbers per layer and token: 64 generated rows of a few personas made
        per-persona generation 1.5x (r = 16) to 3x (r = 80, exact merges) slower than a shared adapter."""
        used, own = idx.unique(return_inverse=True)
        U, R = len(used), self.lora_A.shape[1]
        A = rows(self.lora_A, used).to(h.dtype).reshape(U * R, -1)                                 # [U·R, d_in]
        B = (rows(self.lora_B, used) * scaling).to(h.dtype).transpose(0, 1).reshape(-1, U * R)   # [d_out, U·R]
        block = torch.arange(U, device=h.device).repeat_interleave(R)
        keep = (own[:, None] == block[None, :]).to(h.dtype)                                        # [N, U·R]
        return ((h @ A.t()) * keep[:, None, :]) @ B.t()

    def delta_weight(self, adapter: int) -> torch.Tensor:
        return (self.lora_B[adapter] @ self.lora_A[adapter]) * self.scaling


def lora_layers(model: nn.Module) -> dict[str, MultiLoRALinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, MultiLoRALinear)}


def inject_lora(model: nn.Module, n_adapters: int, r: int = 16, alpha: float = 32, dropout: float = 0.0,
                targets=DEFAULT_TARGETS, seed: int = 0, init: str = "shared",
                adapter_seeds: list[int] | None = None) -> AdapterRouter:
    """Swap every target nn.Linear for a MultiLoRALinear; returns the router that routes rows.

    init "shared": every adapter starts from the same A (drawn from `seed`), as P runs of one training
    script with one seed would; "independent": adapter p's A is drawn from adapter_seeds[p] (its own
    stream; default stream_seed(seed, p)).
    """
    if lora_layers(model):
        raise RuntimeError("model already has LoRA layers: call remove_lora first")
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")
    if init == "shared":
        init_seeds = [stream_seed(seed, "shared")] * n_adapters
    else:
        init_seeds = list(adapter_seeds) if adapter_seeds is not None else [stream_seed(seed, p) for p in range(n_adapters)]
        if len(init_seeds) != n_adapters:
            raise ValueError(f"{len(init_seeds)} adapter seeds for {n_adapters} adapters")
    router = AdapterRouter()
    names = [n for n, m in model.named_modules()
             if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in set(targets)]
    if not names:
        raise ValueError(f"no Linear layer named any of {list(targets)} in the model")
    for layer_id, name in enumerate(names):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, MultiLoRALinear(getattr(parent, child), router, n_adapters, r, alpha, dropout,
                                               layer_id, init_seeds))
    model.lora_router = router
    return router


def remove_lora(model: nn.Module) -> None:
    """Put the original base layers back (adapters are discarded)."""
    for name, layer in lora_layers(model).items():
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, layer.base)
    model.__dict__.pop("lora_router", None)


@contextlib.contextmanager
def merged_adapter(model: nn.Module, state: dict, scaling: float):
    """The base weights with one adapter merged in (W += scaling * B A); the exact originals come back after.

    `state` is an adapter_state() of a model whose LoRA layers have been removed (hybrid: unified
    becomes the base the per-persona adapters train on).
    """
    saved = {}
    with torch.no_grad():
        for name, (A, B) in state.items():
            linear = model.get_submodule(name)
            saved[name] = linear.weight.detach().clone()
            linear.weight += (scaling * (B @ A)).to(linear.weight)
    try:
        yield
    finally:
        with torch.no_grad():
            for name, w in saved.items():
                model.get_submodule(name).weight.copy_(w)


def adapter_state(model: nn.Module, adapter: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """One adapter's (A [r, d_in], B [d_out, r]) per layer name, detached copies on CPU."""
    return {name: (l.lora_A[adapter].detach().float().cpu().clone(), l.lora_B[adapter].detach().float().cpu().clone())
            for name, l in lora_layers(model).items()}


@torch.no_grad()
def load_adapter_states(model: nn.Module, states: list[dict]) -> None:
    """Fill adapters 0..len(states)-1 from adapter_state() dicts."""
    for name, layer in lora_layers(model).items():
        for i, state in enumerate(states):
            A, B = state[name]
            layer.lora_A[i].copy_(A)
            layer.lora_B[i].copy_(B)


def trainable_parameters_per_adapter(model: nn.Module) -> int:
    return sum(l.lora_A[0].numel() + l.lora_B[0].numel() for l in lora_layers(model).values())
