"""Trainer pieces on tiny-random: encoding boundaries, micro-batching, config checks, LoRA dropout."""
import pytest
import torch

from engine.data.dataset import Example
from engine.training.lora import dropout_mask, inject_lora, lora_layers, remove_lora
from engine.models.loading import load_model
from engine.training.config import ConfigError, TrainConfig
from engine.training.encode import (Encoded, encode_example, logprobs_at, micro_batches, pack_rows, packed_batch, pad_batch, shared_prefix, target_logprobs)
from engine.training.trainer import train_adapters_batched


@pytest.fixture(scope="module")
def lm():
    return load_model("tiny-random", precision="fp32")


def test_target_tokens_are_exactly_the_reply(lm):
    ex = Example("e", "p", "train", None, context=(("user", "Set the TV to hdmi1."),), target="Done: tv input hdmi1.")
    enc = encode_example(lm.tokenizer, ex, TrainConfig())
    target = lm.tokenizer.decode(enc.ids[enc.n_prompt:])
    assert target.startswith("Done: tv input hdmi1.") and "<|im_end|>" in target
    assert "Set the TV to hdmi1." in lm.tokenizer.decode(enc.ids[:enc.n_prompt])


def test_long_prompts_lose_their_start_not_the_target(lm):
    ex = Example("e", "p", "train", None, context=(("user", "word " * 400),), target="Done: ac temperature 21.")
    enc = encode_example(lm.tokenizer, ex, TrainConfig(max_length=64))
    assert len(enc.ids) == 64
    assert lm.tokenizer.decode(enc.ids[enc.n_prompt:]).startswith("Done: ac temperature 21.")


def test_pad_batch_marks_positions_before_targets():
    ids, attn, pred = pad_batch([Encoded([1, 2, 3, 4], 2), Encoded([5, 6, 7], 1)], 0, "cpu")
    assert ids.tolist() == [[1, 2, 3, 4], [5, 6, 7, 0]]
    assert pred.tolist() == [[False, True, True, False], [True, True, False, False]]


def test_micro_batches_respect_the_token_budget():
    seqs = [Encoded([0] * n, 1) for n in (10, 50, 20, 40, 30)]
    groups = micro_batches(seqs, 60)
    assert sorted(i for g in groups for i in g) == list(range(5))
    for g in groups:
        assert len(g) == 1 or len(g) * max(len(seqs[i].ids) for i in g) <= 60


@pytest.mark.parametrize("field, value", [("r", 0), ("lr", -1.0), ("dropout", 1.0), ("batch_size", 0),
                                          ("targets", ()), ("max_length", 4)])
def test_bad_hyperparameters_are_named(field, value):
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**{field: value})


def test_unknown_hyperparameter_is_named():
    with pytest.raises(ConfigError, match="learning_rate"):
        TrainConfig.from_dict({"learning_rate": 0.1})


def test_micro_batching_does_not_change_the_result(lm):
    """Gradient accumulation over micro-batches is exact up to float summation order (which Adam's
    normalisation amplifies where a gradient is near zero, hence a norm-relative tolerance)."""
    exs = [Example(f"e{i}", "p", "train", None, context=(("user", "hello " * (i + 1)),), target=f"Done: tv volume {i}.")
           for i in range(6)]
    results = []
    for budget in (4096, 64):
        cfg = TrainConfig(epochs=2, batch_size=3, dropout=0.0, micro_batch_tokens=budget)
        data = [encode_example(lm.tokenizer, e, cfg) for e in exs]
        inject_lora(lm.model, 2, cfg.r, cfg.alpha, 0.0, cfg.targets, seed=0)
        train_adapters_batched(lm, [data[:4], data[4:]], cfg)
        results.append([l.lora_B.detach().clone() for l in lora_layers(lm.model).values()])
        remove_lora(lm.model)
    for a, b in zip(*results):
        assert a.abs().sum() > 0
        assert float((a - b).norm() / a.norm()) < 1e-3


def test_dropout_mask_drops_p_and_keeps_the_expectation():
    torch.manual_seed(0)
    x = torch.ones(400, 1000)
    masked, keep_scale = dropout_mask(x, 0.1)
    assert abs(float((masked == 0).float().mean()) - 0.1) < 0.003  # 400k draws: 3 sigma is ~0.0014
    assert float((masked * keep_scale).mean()) == pytest.approx(1.0, abs=0.005)
    assert set(masked.unique().tolist()) == {0.0, 1.0}
    torch.manual_seed(0)
    assert torch.equal(dropout_mask(x, 0.1)[0], masked)  # seeded: the same mask again
    # each of the four 16-bit lanes of a random int64 is used: no position pattern in the mask
    lanes = (masked == 0).float().flatten()[:399_996].view(-1, 4).mean(0)
    assert (lanes - 0.1).abs().max() < 0.005


def test_packed_rows_score_exactly_like_rows_one_by_one(lm):
    """Rows packed behind their shared prompt prefix (one sequence, block mask, own positions) give every
    target token the log-probability it gets in its own unpadded row."""
    exs = [Example(f"e{i}", "p", "train", None, context=(("user", "dim the lights " * (i + 1)),),
                   target=f"Done: lights brightness {10 * i}.") for i in range(4)]
    cfg = TrainConfig()
    rows = [encode_example(lm.tokenizer, e, cfg) for e in exs]
    L = shared_prefix(rows)
    assert 10 < L < min(r.n_prompt for r in rows)  # chat template + system prompt are shared
    (pack,) = pack_rows(rows, 4096)
    assert len(pack.ids) == L + sum(len(r.ids) - L for r in rows) and pack.n_tokens == sum(len(r.ids) for r in rows)
    with torch.no_grad():
        packed, _ = logprobs_at(lm.model, *packed_batch([pack], lm.tokenizer.pad_token_id, "cpu"))
        one_by_one = torch.cat([target_logprobs(lm.model, *pad_batch([r], lm.tokenizer.pad_token_id, "cpu"))[0]
                                for r in rows])
    assert len(packed) == sum(len(r.ids) - r.n_prompt for r in rows)
    assert torch.allclose(packed, one_by_one, atol=1e-5), (packed - one_by_one).abs().max()
    # and a budget below two rows gives one pack per row, each still behind the shared prefix
    small = pack_rows(rows, len(rows[0].ids) + 5)
    assert len(small) == 4 and all(p.ids[:L] == rows[0].ids[:L] for p in small)



def test_generation_step_through_distinct_adapters_equals_per_row():
    """One token per row (a generation step) takes the by-adapter path; it must give each row its own update."""
    from engine.training.lora import AdapterRouter, MultiLoRALinear
    torch.manual_seed(0)
    router = AdapterRouter()
    layer = MultiLoRALinear(torch.nn.Linear(12, 10), router, n_adapters=4, r=3, alpha=6.0)
    with torch.no_grad():
        layer.lora_B.normal_()
    idx = torch.tensor([2, 0, 2, 2, 3, 0])
    expected = torch.stack([layer.base.weight + layer.delta_weight(int(a)) for a in idx])  # [N, d_out, d_in]
    for T in (1, 5):  # generation step, and a whole sequence (per-row path)
        x = torch.randn(len(idx), T, 12)
        with torch.no_grad(), router.route(idx):
            y = layer(x)
        want = torch.einsum("noi,nti->nto", expected, x) + layer.base.bias
        assert torch.allclose(y, want, atol=1e-5), (T, (y - want).abs().max())


def test_init_shared_starts_every_adapter_from_one_A_and_independent_from_its_own(lm):
    inject_lora(lm.model, 3, 4, 8.0, 0.0, ("q_proj",), seed=7, init="shared")
    layer = next(iter(lora_layers(lm.model).values()))
    A = layer.lora_A.detach().clone()
    remove_lora(lm.model)
    assert torch.equal(A[0], A[1]) and torch.equal(A[1], A[2]) and A.abs().sum() > 0
    inject_lora(lm.model, 3, 4, 8.0, 0.0, ("q_proj",), seed=7, init="independent", adapter_seeds=[5, 6, 7])
    B = next(iter(lora_layers(lm.model).values())).lora_A.detach().clone()
    remove_lora(lm.model)
    assert not torch.equal(B[0], B[1])
    inject_lora(lm.model, 1, 4, 8.0, 0.0, ("q_proj",), seed=99, init="independent", adapter_seeds=[6])
    alone = next(iter(lora_layers(lm.model).values())).lora_A.detach().clone()
    remove_lora(lm.model)
    assert torch.equal(alone[0], B[1])  # an adapter's A depends on its own seed only
    with pytest.raises(ConfigError, match="init"):
        TrainConfig(init="random")


def test_early_stopping_stops_each_adapter_and_keeps_its_best_state(lm):
    """Per adapter: training stops after `patience` epochs without a better validation loss, and the adapter
    ends in the state of its best epoch (its validation loss then is the best one recorded)."""
    from engine.training.trainer import validation_losses
    # validation replies unlike the training ones: after the shared format is learnt, validation loss rises
    exs = [Example(f"e{i}", "p", "train", None, context=(("user", f"colour {i}"),), target="Red red red red.")
           for i in range(8)]
    val_exs = [Example(f"v{i}", "p", "val", None, context=(("user", f"colour {i}?"),), target="Blue, blue.")
               for i in range(2)]
    cfg = TrainConfig(epochs=8, patience=1, batch_size=2, lr=5e-2, dropout=0.0, r=4)
    enc = lambda xs: [encode_example(lm.tokenizer, e, cfg) for e in xs]
    data, val = [enc(exs[:6]), enc(exs[6:])], [enc(val_exs), enc(val_exs[:1])]
    inject_lora(lm.model, 2, cfg.r, cfg.alpha, 0.0, cfg.targets, seed=0)
    try:
        stats = train_adapters_batched(lm, data, cfg, val=val)
        final = validation_losses(lm, val, [0, 1], 4096)
    finally:
        remove_lora(lm.model)
    for p in range(2):
        history = [v[p] for v in stats.val_losses if p in v]
        assert len(history) == stats.epochs[p] and stats.epochs[p] < cfg.epochs  # it stopped early
        best = min(range(len(history)), key=history.__getitem__)
        assert stats.best_epoch[p] == best + 1 and stats.epochs[p] - stats.best_epoch[p] == cfg.patience
        assert final[p] == pytest.approx(history[best], rel=1e-5)  # the best state, not the last


def test_rows_with_their_own_system_prompts_pack_exactly(lm):
    """unified+profile's rows differ right after the system prompt (each persona's profile): the shared
    prefix ends there, and packed rows still score exactly like rows one by one."""
    from engine.methods.prompting import with_profiles
    cfg = TrainConfig()
    exs = [Example(f"e{i}", f"p{i % 2}", "train", None, context=(("user", "dim the lights " * (i + 1)),),
                   target=f"Done: lights brightness {10 * i}.") for i in range(4)]
    exs = with_profiles(exs, {"p0": "Ana likes it dark.", "p1": "Bo, 70, reads a lot and likes bright rooms."},
                        cfg.system_prompt)
    rows = [encode_example(lm.tokenizer, e, cfg) for e in exs]
    L = shared_prefix(rows)
    assert cfg.system_prompt in lm.tokenizer.decode(rows[0].ids[:L])
    assert "Ana" not in lm.tokenizer.decode(rows[0].ids[:L])
    (pack,) = pack_rows(rows, 4096)
    with torch.no_grad():
        packed, _ = logprobs_at(lm.model, *packed_batch([pack], lm.tokenizer.pad_token_id, "cpu"))
        one_by_one = torch.cat([target_logprobs(lm.model, *pad_batch([r], lm.tokenizer.pad_token_id, "cpu"))[0]
                                for r in rows])
    assert torch.allclose(packed, one_by_one, atol=1e-5), (packed - one_by_one).abs().max()


def _rows(spec, seed=0):
    """Encoded rows from (shared prefix, prompt length, length) triples: ids past the prefix are random."""
    g = torch.Generator().manual_seed(seed)
    return [Encoded(list(range(5, 5 + pre)) + torch.randint(100, 1000, (n - pre,), generator=g).tolist(), prompt)
            for pre, prompt, n in spec]


@pytest.mark.parametrize("packs", [
    [[(10, 14, 30), (10, 13, 22), (10, 16, 40)]],                 # one pack, rows of unequal length
    [[(10, 14, 30), (10, 13, 22)], [(7, 9, 12)], [(3, 5, 25), (3, 6, 9)]],  # packs of unequal length: padding
    [[(0, 1, 18)], [(12, 20, 21)]],                               # a single row; a one-token target
])
def test_block_attention_equals_the_full_mask(lm, packs):
    """Block attention (the trainer's on CPU) gives every target the log-probability, and every LoRA weight the
    gradient, that eager attention under the full packed mask gives (tiny-random: 4 query heads over 2 key heads)."""
    from engine.training import attention
    from engine.training.lora import inject_lora, lora_layers, remove_lora
    assert lm.model.config.num_key_value_heads < lm.model.config.num_attention_heads  # grouped heads covered
    packed = [pack_rows(_rows(spec, seed=i), 4096)[0] for i, spec in enumerate(packs)]
    pad = lm.tokenizer.pad_token_id
    inject_lora(lm.model, 1, r=4, alpha=8)
    layers = list(lora_layers(lm.model).values())
    with torch.no_grad():
        for layer in layers:  # a non-zero B, so A gets a gradient too
            layer.lora_B.normal_(0, 0.1, generator=torch.Generator().manual_seed(layer.layer_id))
    before = lm.model.config._attn_implementation
    results = []
    try:
        for impl, segments in (("eager", False), (attention.NAME, True)):
            lm.model.set_attn_implementation(impl)
            for layer in layers:
                layer.lora_A.requires_grad_(True).grad = None
                layer.lora_B.requires_grad_(True).grad = None
            logp, row = logprobs_at(lm.model, *packed_batch(packed, pad, "cpu", segments=segments))
            logp.sum().backward()
            results.append((logp.detach(), row, [p.grad.clone() for l in layers for p in (l.lora_A, l.lora_B)]))
    finally:
        lm.model.set_attn_implementation(before)
        remove_lora(lm.model)
    (full, row_full, grads_full), (blocks, row_blocks, grads_blocks) = results
    assert len(full) == sum(n - prompt for spec in packs for _, prompt, n in spec)
    assert torch.equal(row_full, row_blocks)
    assert torch.allclose(full, blocks, atol=1e-5), (full - blocks).abs().max()
    for a, b in zip(grads_full, grads_blocks):
        assert a.abs().max() > 0 and torch.allclose(a, b, atol=1e-5, rtol=1e-4), (a - b).abs().max()


def test_block_attention_refuses_a_full_mask(lm):
    from engine.training import attention
    pack = pack_rows(_rows([(5, 8, 12)]), 4096)[0]
    before = lm.model.config._attn_implementation
    lm.model.set_attn_implementation(attention.NAME)
    try:
        with pytest.raises(ValueError, match="segment ids"):
            logprobs_at(lm.model, *packed_batch([pack], lm.tokenizer.pad_token_id, "cpu"))
    finally:
        lm.model.set_attn_implementation(before)
