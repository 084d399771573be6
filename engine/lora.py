"""Multi-adapter LoRA: P adapters stacked in one layer, each batch row routed to its own adapter.

y = W x + (alpha / r) * B[a] A[a] dropout(x),   a = adapter index of the row.

With P = 1 this is plain LoRA (the `unified` method); with P = personas it trains every persona's
adapter in one pass over the frozen base layer (DESIGN §6). The model wrapper only swaps layers.
"""
from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


class AdapterRouter:
    """Shared by every LoRA layer of a model: which adapter each row of the current batch uses."""

    def __init__(self):
        self.index: torch.Tensor | None = None  # [N] long, or None = all rows use adapter 0

    @contextlib.contextmanager
    def route(self, index: torch.Tensor | None):
        old, self.index = self.index, index
        try:
            yield
        finally:
            self.index = old


class MultiLoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, router: AdapterRouter, n_adapters: int, r: int, alpha: float,
                 dropout: float = 0.0):
        super().__init__()
        self.base, self.router, self.r = base, router, r
        self.scaling = alpha / r
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        dev = base.weight.device
        self.lora_A = nn.Parameter(torch.empty(n_adapters, r, base.in_features, device=dev))
        self.lora_B = nn.Parameter(torch.zeros(n_adapters, base.out_features, r, device=dev))
        for a in self.lora_A:  # PEFT's init: kaiming-uniform A, zero B, so training starts at the base
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))

    @property
    def n_adapters(self) -> int:
        return self.lora_A.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        idx = self.router.index
        h = self.dropout(x)
        if idx is None:  # one adapter for the whole batch
            A, B = self.lora_A[0], self.lora_B[0]
            return y + (h @ A.to(h.dtype).t() @ B.to(h.dtype).t()) * self.scaling
        if idx.numel() != x.shape[0]:
            raise RuntimeError(f"adapter index has {idx.numel()} rows, batch has {x.shape[0]}")
        A = self.lora_A.index_select(0, idx).to(h.dtype)  # [N, r, d_in]
        B = self.lora_B.index_select(0, idx).to(h.dtype)  # [N, d_out, r]
        shape = h.shape
        h = h.reshape(shape[0], -1, shape[-1])
        delta = torch.bmm(torch.bmm(h, A.transpose(1, 2)), B.transpose(1, 2))
        return y + delta.reshape(*shape[:-1], -1) * self.scaling

    def delta_weight(self, adapter: int) -> torch.Tensor:
        return (self.lora_B[adapter] @ self.lora_A[adapter]) * self.scaling


def lora_layers(model: nn.Module) -> dict[str, MultiLoRALinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, MultiLoRALinear)}


def inject_lora(model: nn.Module, n_adapters: int, r: int = 16, alpha: float = 32, dropout: float = 0.0,
                targets=DEFAULT_TARGETS, seed: int = 0) -> AdapterRouter:
    """Swap every target nn.Linear for a MultiLoRALinear; returns the router that routes rows."""
    if lora_layers(model):
        raise RuntimeError("model already has LoRA layers: call remove_lora first")
    router = AdapterRouter()
    names = [n for n, m in model.named_modules()
             if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in set(targets)]
    if not names:
        raise ValueError(f"no Linear layer named any of {list(targets)} in the model")
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, MultiLoRALinear(getattr(parent, child), router, n_adapters, r, alpha, dropout))
    torch.random.set_rng_state(gen_state)
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
