"""The real packaged model: it loads offline, answers, and a few LoRA steps lower its loss."""
import pytest
import torch

from engine.data.dataset import Example
from engine.training.evaluate import generate_replies
from engine.training.lora import inject_lora, remove_lora
from engine.models.loading import load_model
from engine.training.config import TrainConfig
from engine.training.encode import encode_example
from engine.training.trainer import train_adapters_batched


@pytest.fixture(scope="module")
def lm():
    return load_model("smollm2-135m", device="cpu")


def _example(i, target):
    return Example(example_id=f"e{i}", persona_id="p0", split="train", kind="general",
                   context=(("user", f"Set the lights to {10 * i} percent."),), target=target)


def test_smollm2_generates_a_reply(lm):
    assert lm.model.config.num_hidden_layers == 30 and lm.model.config.hidden_size == 576
    cfg = TrainConfig(max_new_tokens=12)
    replies = generate_replies(lm, [_example(1, "x"), _example(2, "x")], None, cfg)
    assert len(replies) == 2 and all(r.strip() for r in replies)


def test_a_few_lora_steps_lower_the_loss(lm):
    cfg = TrainConfig(epochs=6, batch_size=4, lr=2e-3, dropout=0.0)
    data = [encode_example(lm.tokenizer, _example(i, f"Done: lights brightness {10 * i}."), cfg) for i in range(1, 5)]
    inject_lora(lm.model, 1, cfg.r, cfg.alpha, cfg.dropout, cfg.targets, seed=0)
    try:
        stats = train_adapters_batched(lm, [data], cfg)
    finally:
        remove_lora(lm.model)
    assert stats.steps == 6
    assert stats.losses[-1] < 0.5 * stats.losses[0], stats.losses
    assert all(not isinstance(m, torch.nn.Parameter) or not m.requires_grad for m in lm.model.parameters())
