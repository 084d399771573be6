"""Attention over packed rows by blocks: only the pairs a packed row may attend to are computed.

A pack (encode.Packed) is one prompt prefix followed by the remainders of several rows; a remainder attends
to the prefix and, causally, to itself. Eager attention under a full T x T mask computes every pair and masks
most of them (8 rows of ~60 tokens behind a 30-token prefix: a fifth of the pairs count), and its fp32 mask
add and softmax over T x T were the largest cost of a CPU training step after the matmuls. Here each pack is
cut into blocks — its prefix (causal), then each row (the prefix, then itself causally) — gathered into one
padded batch [blocks, block tokens, keys]: the same scores, softmax and weighted sum as eager attention for
every pair that counts, and nothing for the others.

The model gets the packs' segment ids [B, 1, 1, T] as its "attention mask" (encode.packed_batch with
segments=True; transformers passes a 4-D mask through untouched) when `model.set_attn_implementation(NAME)`
selected this function: the trainer does on CPU, for the duration of a training run.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

NAME = "lab_packed_blocks"
_cache: tuple = (None, None)  # (segment-id tensor, its layout): one forward's 30 layers share one layout


def uses_block_attention(model) -> bool:
    return getattr(model.config, "_attn_implementation", None) == NAME


class Layout:
    """Where each block's queries and keys sit among the B*T flattened positions, and which pairs count."""

    def __init__(self, segment: torch.Tensor, device):
        B, T = segment.shape
        blocks = []  # (context positions, own positions), flattened indices
        for b, seg in enumerate(segment.tolist()):
            prefix, rows = [], {}  # rows: segment id -> its positions; -1 is padding, in no block
            for t, s in enumerate(seg):
                if s == 0:
                    prefix.append(b * T + t)
                elif s > 0:
                    rows.setdefault(s, []).append(b * T + t)
            if prefix:
                blocks.append(([], prefix))
            blocks.extend((prefix, own) for own in rows.values())
        C = max(len(c) for c, _ in blocks)
        S = max(len(o) for _, o in blocks)
        keys = torch.zeros(len(blocks), C + S, dtype=torch.long)
        own_pos = torch.zeros(len(blocks), S, dtype=torch.long)
        allowed = torch.zeros(len(blocks), S, C + S, dtype=torch.bool)
        causal = torch.ones(S, S, dtype=torch.bool).tril()
        where = torch.zeros(B * T, dtype=torch.long)  # each position's row in the [blocks * S] outputs
        for i, (context, own) in enumerate(blocks):
            c, s = len(context), len(own)
            keys[i, :c] = torch.tensor(context, dtype=torch.long)
            keys[i, C:C + s] = own_pos[i, :s] = torch.tensor(own, dtype=torch.long)
            allowed[i, :s, :c] = True
            allowed[i, :s, C:C + s] = causal[:s, :s]
            allowed[i, s:] = True  # padding queries attend anywhere (finite softmax); their outputs are unused
            where[own_pos[i, :s]] = i * S + torch.arange(s)
        self.n_blocks, self.block_len = len(blocks), S
        self.keys = keys.flatten().to(device)
        self.queries = own_pos.flatten().to(device)
        self.where = where.to(device)
        self.allowed = allowed.to(device)
        self._bias = {}

    def bias(self, kv_heads: int, groups: int, dtype) -> torch.Tensor:
        """0 where a pair counts, the dtype's lowest value where it does not, laid out as block_attention's scores."""
        key = (kv_heads, groups, dtype)
        if key not in self._bias:
            nb, S, K = self.allowed.shape
            bias = torch.zeros(self.allowed.shape, dtype=dtype, device=self.allowed.device)
            bias.masked_fill_(~self.allowed, torch.finfo(dtype).min)
            self._bias[key] = bias[None, :, None].expand(kv_heads, nb, groups, S, K).reshape(kv_heads * nb, groups * S, K)
        return self._bias[key]


def layout_of(segment_mask: torch.Tensor) -> Layout:
    global _cache
    tensor, layout = _cache
    if tensor is not segment_mask:
        layout = Layout(segment_mask[:, 0, 0, :].cpu(), segment_mask.device)
        _cache = (segment_mask, layout)
    return layout


def block_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """transformers' attention signature: query [B, H, T, d], key / value [B, KV, T, d] -> ([B, T, H, d], None)."""
    if attention_mask is None or attention_mask.shape[2] != 1:
        raise ValueError("block attention needs the packs' segment ids [B, 1, 1, T] (packed_batch(..., segments=True))")
    lay = layout_of(attention_mask)
    B, H, T, d = query.shape
    KV = key.shape[1]
    G, nb, S = H // KV, lay.n_blocks, lay.block_len  # query head h reads key head h // G, as repeat_kv
    # a key head's G query heads become rows of one matmul: [KV * blocks, G * S, d] against [KV * blocks, keys, d]
    q = query.transpose(0, 1).reshape(H, B * T, d).index_select(1, lay.queries)
    q = q.view(KV, G, nb, S, d).transpose(1, 2).reshape(KV * nb, G * S, d)
    k = key.transpose(0, 1).reshape(KV, B * T, d).index_select(1, lay.keys).view(KV * nb, -1, d)
    v = value.transpose(0, 1).reshape(KV, B * T, d).index_select(1, lay.keys).view(KV * nb, -1, d)
    w = torch.baddbmm(lay.bias(KV, G, query.dtype), q, k.transpose(1, 2), alpha=scaling)  # masked pairs: -max
    w = F.softmax(w, dim=-1)  # in bf16 on CPU too: it computes in fp32 inside, 2x faster than via an fp32 copy
    w = F.dropout(w, p=dropout, training=module.training)
    out = torch.bmm(w, v).view(KV, nb, G, S, d).permute(1, 3, 0, 2, 4).reshape(nb * S, H * d)
    return out.index_select(0, lay.where).view(B, T, H, d), None


AttentionInterface.register(NAME, block_attention)
