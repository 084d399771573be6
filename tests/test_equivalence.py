"""Batched multi-adapter training == each persona trained alone with plain PEFT (DESIGN §6).

tiny-random in fp32, dropout 0, three personas with 6 / 3 / 1 training examples (so two of them run
out of data before the longest one: per-adapter step counts), a token budget that packs a persona's two
rows of a step behind their shared prompt prefix but holds one pack per micro-batch (so every step is
gradient accumulation over micro-batches), clipping that actually clips.
"""
import copy
import math

import pytest
import torch

from engine.data import load_dataset
from engine.lora import adapter_state, inject_lora, remove_lora
from engine.models import load_model
from engine.train import TrainConfig, encode_example, epoch_order, pack_rows, pad_batch, train_adapters_batched

SIZES = (6, 3, 1)
CFG = TrainConfig(r=4, alpha=8.0, dropout=0.0, lr=1e-2, epochs=2, batch_size=2, max_grad_norm=0.05,
                  weight_decay=0.01, micro_batch_tokens=160)
SEEDS = [11, 22, 33]


@pytest.fixture(scope="module")
def setup():
    lm = load_model("tiny-random", precision="fp32")
    ds = load_dataset(f"sim:personas=3,train_per_persona={max(SIZES)},val_per_persona=1,test_per_persona=1")
    train = ds.by_persona("train")
    data = [[encode_example(lm.tokenizer, e, CFG) for e in train[p][:n]] for p, n in zip(ds.personas, SIZES)]
    assert [len(d) for d in data] == list(SIZES)
    packs = pack_rows(data[0][:2], CFG.micro_batch_tokens)
    assert len(packs) == 1 and max(packs[0].segment) == 2 and 2 * len(packs[0].ids) > CFG.micro_batch_tokens
    base = copy.deepcopy(lm.model)
    inject_lora(lm.model, 3, CFG.r, CFG.alpha, CFG.dropout, CFG.targets, seed=0)
    init = [adapter_state(lm.model, i) for i in range(3)]
    stats = train_adapters_batched(lm, data, CFG, seeds=SEEDS)
    trained = [adapter_state(lm.model, i) for i in range(3)]
    remove_lora(lm.model)
    return lm, base, data, init, trained, stats


def peft_reference(lm, base, data, init, seed):
    """One persona alone: PEFT LoRA, torch AdamW, clip_grad_norm_, HF's mean CE over target tokens."""
    from peft import LoraConfig, get_peft_model
    model = get_peft_model(copy.deepcopy(base), LoraConfig(r=CFG.r, lora_alpha=CFG.alpha, lora_dropout=0.0,
                                                           target_modules=list(CFG.targets)))
    with torch.no_grad():
        for name, (A, B) in init.items():
            layer = model.base_model.model.get_submodule(name)
            layer.lora_A["default"].weight.copy_(A)
            layer.lora_B["default"].weight.copy_(B)
    model.base_model.model.set_attn_implementation("eager")  # the kernel our trainer uses on CPU
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=CFG.lr, weight_decay=CFG.weight_decay, eps=1e-8)
    model.train()
    for epoch in range(CFG.epochs):
        order = epoch_order(len(data), seed, epoch)
        for t in range(math.ceil(len(data) / CFG.batch_size)):
            batch = [data[i] for i in order[t * CFG.batch_size:(t + 1) * CFG.batch_size]]
            ids, attn, pred = pad_batch(batch, lm.tokenizer.pad_token_id, "cpu")
            labels = torch.full_like(ids, -100)
            labels[:, 1:][pred[:, :-1]] = ids[:, 1:][pred[:, :-1]]
            model(input_ids=ids, attention_mask=attn, labels=labels, use_cache=False).loss.backward()
            torch.nn.utils.clip_grad_norm_(params, CFG.max_grad_norm)
            opt.step()
            opt.zero_grad()
    return {name: (model.base_model.model.get_submodule(name).lora_A["default"].weight.detach().clone(),
                   model.base_model.model.get_submodule(name).lora_B["default"].weight.detach().clone())
            for name in init}


def max_relative_difference(ours: dict, ref: dict) -> float:
    """max over tensors of max|ours - ref| / max|ref|."""
    worst = 0.0
    for name, pair in ref.items():
        for a, b in zip(ours[name], pair):
            worst = max(worst, float((a - b).abs().max() / b.abs().max().clamp(min=1e-12)))
    return worst


def test_batched_training_equals_independent_peft_training(setup):
    lm, base, data, init, trained, stats = setup
    assert stats.steps == CFG.epochs * math.ceil(max(SIZES) / CFG.batch_size)
    diffs = []
    for p in range(3):
        ref = peft_reference(lm, base, data[p], init[p], SEEDS[p])
        assert max(float(B.abs().max()) for _, B in trained[p].values()) > 1e-3, "the adapter did not train"
        diffs.append(max_relative_difference(trained[p], ref))
    print(f"max relative difference per persona: {diffs}")
    assert max(diffs) <= 1e-4, diffs

