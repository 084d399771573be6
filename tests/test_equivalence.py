"""Batched multi-adapter training == each persona trained alone.

Reference: plain PEFT, torch's AdamW, HF's mean cross-entropy over target tokens, early stopping written
out by hand. Setting: tiny-random in fp32, dropout 0, no gradient clipping (clipping every step would
hide a wrong loss scale), three personas with 6 / 3 / 1 training examples (two run out of data before
the longest: per-adapter step counts), validation rows per persona with early stopping (patience 1, cap 4
epochs: adapters stop at different epochs), and a token budget under which a persona's two rows of a
step are packed behind their shared prompt prefix while micro-batches mix packs of several personas.
Two wrong loss normalisations must fail this comparison, and dropout must not couple personas.
"""
import copy
import math

import pytest
import torch

from engine.training import trainer as T
from engine.data.dataset import load_dataset
from engine.training.lora import adapter_state, inject_lora, remove_lora
from engine.models.loading import load_model
from engine.training.config import TrainConfig
from engine.training.encode import encode_example, pad_batch
from engine.training.trainer import epoch_order, train_adapters_batched

SIZES = (6, 3, 1)
VAL_SIZES = (2, 2, 1)
CFG = TrainConfig(r=4, alpha=8.0, dropout=0.0, lr=2e-2, epochs=6, patience=1, batch_size=2, max_grad_norm=0.0,
                  weight_decay=0.01, micro_batch_tokens=400)
SEEDS = [11, 22, 33]
TOLERANCE = 1e-3  # float summation order, amplified by Adam where a gradient is near 0: ~4e-4 seen here


@pytest.fixture(scope="module")
def setup():
    lm = load_model("tiny-random", precision="fp32")
    ds = load_dataset(f"sim:personas=3,train_per_persona={max(SIZES)},val_per_persona=2,test_per_persona=1")
    train, val = ds.by_persona("train"), ds.by_persona("val")
    data = [[encode_example(lm.tokenizer, e, CFG) for e in train[p][:n]] for p, n in zip(ds.personas, SIZES)]
    vals = [[encode_example(lm.tokenizer, e, CFG) for e in val[p][:n]] for p, n in zip(ds.personas, VAL_SIZES)]
    assert [len(d) for d in data] == list(SIZES)
    base = copy.deepcopy(lm.model)
    inject_lora(lm.model, 3, CFG.r, CFG.alpha, CFG.dropout, CFG.targets, seed=0, init="independent",
                adapter_seeds=SEEDS)
    init = [adapter_state(lm.model, i) for i in range(3)]
    remove_lora(lm.model)
    return lm, base, data, vals, init


def train_batched(lm, data, vals, cfg=CFG, seeds=SEEDS):
    inject_lora(lm.model, len(data), cfg.r, cfg.alpha, cfg.dropout, cfg.targets, seed=0, init="independent",
                adapter_seeds=seeds)
    stats = train_adapters_batched(lm, data, cfg, seeds=seeds, val=vals)
    trained = [adapter_state(lm.model, i) for i in range(len(data))]
    remove_lora(lm.model)
    return trained, stats


def peft_reference(lm, base, data, val, init, seed):
    """One persona alone: PEFT LoRA, torch AdamW, HF's mean CE, best-validation early stopping by hand."""
    from peft import LoraConfig, get_peft_model
    model = get_peft_model(copy.deepcopy(base), LoraConfig(r=CFG.r, lora_alpha=CFG.alpha, lora_dropout=0.0,
                                                           target_modules=list(CFG.targets)))
    layers = {name: model.base_model.model.get_submodule(name) for name in init}
    with torch.no_grad():
        for name, (A, B) in init.items():
            layers[name].lora_A["default"].weight.copy_(A)
            layers[name].lora_B["default"].weight.copy_(B)
    # eager: the exact attention that the trainer's block attention reproduces for packed rows (test_train.py)
    model.base_model.model.set_attn_implementation("eager")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=CFG.lr, weight_decay=CFG.weight_decay, eps=1e-8)

    def loss_of(rows):
        ids, attn, pred = pad_batch(rows, lm.tokenizer.pad_token_id, "cpu")
        labels = torch.full_like(ids, -100)
        labels[:, 1:][pred[:, :-1]] = ids[:, 1:][pred[:, :-1]]
        return model(input_ids=ids, attention_mask=attn, labels=labels, use_cache=False).loss

    snapshot = lambda: {n: (l.lora_A["default"].weight.detach().clone(), l.lora_B["default"].weight.detach().clone())
                        for n, l in layers.items()}
    best, best_state, bad, epochs = math.inf, None, 0, 0
    for epoch in range(CFG.epochs):
        model.train()
        order = epoch_order(len(data), seed, epoch)
        for t in range(math.ceil(len(data) / CFG.batch_size)):
            loss_of([data[i] for i in order[t * CFG.batch_size:(t + 1) * CFG.batch_size]]).backward()
            opt.step()
            opt.zero_grad()
        epochs += 1
        model.eval()
        with torch.no_grad():
            v = float(loss_of(val))
        if v < best:
            best, best_state, bad = v, snapshot(), 0
        else:
            bad += 1
            if bad >= CFG.patience:
                break
    return best_state, epochs


def max_relative_difference(ours: dict, ref: dict) -> float:
    """max over tensors of ||ours - ref|| / ||ref|| (Frobenius). Not the largest single element: Adam turns float
    summation noise in a coordinate whose gradient is ~0 into a step of up to lr there (one element of 256 was
    off by 0.4% of its tensor's largest entry after 3 epochs, every other element agreeing to 1e-5), while a
    wrong loss or a coupling between personas moves whole tensors (the mutants below: > 10x the tolerance)."""
    worst = 0.0
    for name, pair in ref.items():
        for a, b in zip(ours[name], pair):
            worst = max(worst, float((a - b).norm() / b.norm().clamp(min=1e-12)))
    return worst


def diffs_against_peft(lm, base, data, vals, init, trained):
    return [max_relative_difference(trained[p], peft_reference(lm, base, data[p], vals[p], init[p], SEEDS[p])[0])
            for p in range(3)]


def test_batched_training_equals_independent_peft_training(setup, monkeypatch):
    lm, base, data, vals, init = setup
    routed = []
    real = T._route_packs

    def spy(lm_, packs, group, P, row_seeds=None):
        routed.append({packs[i][0] for i in group})
        return real(lm_, packs, group, P, row_seeds)
    monkeypatch.setattr(T, "_route_packs", spy)
    trained, stats = train_batched(lm, data, vals)
    assert any(len(adapters) > 1 for adapters in routed), "no micro-batch mixed adapters"
    refs = [peft_reference(lm, base, data[p], vals[p], init[p], SEEDS[p]) for p in range(3)]
    assert stats.epochs == [epochs for _, epochs in refs]
    assert len(set(stats.epochs)) > 1 and min(stats.epochs) < CFG.epochs, stats.epochs  # early stopping acted
    diffs = []
    for p in range(3):
        assert max(float(B.abs().max()) for _, B in trained[p].values()) > 1e-3, "the adapter did not train"
        diffs.append(max_relative_difference(trained[p], refs[p][0]))
    print(f"epochs per persona {stats.epochs}, best epochs {stats.best_epoch}; max relative difference {diffs}")
    assert max(diffs) <= TOLERANCE, diffs


@pytest.mark.parametrize("mutant", [
    # the loss averaged over every adapter's target tokens of the step (one mean for the whole batch)
    lambda n_tok, tok_adapter: torch.full_like(tok_adapter, 1.0, dtype=torch.float32) / n_tok.sum(),
    # the loss summed over an adapter's tokens, not averaged
    lambda n_tok, tok_adapter: torch.ones_like(tok_adapter, dtype=torch.float32),
], ids=["mean over all adapters' tokens", "sum, no per-adapter mean"])
def test_a_wrong_loss_normalisation_fails_the_comparison(setup, monkeypatch, mutant):
    lm, base, data, vals, init = setup
    monkeypatch.setattr(T, "loss_weights", mutant)
    trained, _ = train_batched(lm, data, vals)
    diffs = diffs_against_peft(lm, base, data, vals, init, trained)
    assert max(diffs) > 10 * TOLERANCE, diffs


def test_dropout_does_not_couple_personas(setup):
    """With dropout, a persona's adapter is the same trained beside the others or alone: its masks come from
    its own stream. (Against row-by-row training it is equal in distribution only: a pack's rows share the
    mask of their common prompt prefix.)"""
    lm, _, data, vals, _ = setup
    cfg = TrainConfig(**{**CFG.to_dict(), "dropout": 0.2})
    together, _ = train_batched(lm, data, vals, cfg)
    for p in range(3):
        alone, _ = train_batched(lm, [data[p]], [vals[p]], cfg, seeds=[SEEDS[p]])
        assert max_relative_difference(together[p], alone[0]) <= TOLERANCE
    no_dropout, _ = train_batched(lm, data, vals)
    assert min(max_relative_difference(together[p], no_dropout[p]) for p in range(3)) > 10 * TOLERANCE  # it acted
