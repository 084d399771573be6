"""Per-persona LoRA for N personas: the lab's batched trainer against one PEFT adapter per persona, in turn.

    python bench/bench_batched.py                                   # smollm2-135m, 8 personas, CPU
    python bench/bench_batched.py --personas 32
    python bench/bench_batched.py --model qwen0.5b-random --personas 200 --device cuda

Every side trains every persona's adapter on the same examples, in the same order (engine.training.trainer.epoch_order),
with the same batch size, number of steps, LoRA config, precision and dropout rate. Two baselines, each
one PEFT adapter per persona trained alone (base loaded once; per persona a reset adapter and a fresh AdamW):
  plain  what a first PEFT script does: HF's `labels=` loss (full-vocabulary logits at every position),
         the model's default attention (sdpa)
  tuned  PEFT given the trainer's own loss (logits only at target positions) and eager attention on CPU (the
         faster kernel for its padded rows; the trainer's block attention needs packed rows): what remains is
         the trainer's batching of all personas into one pass, its packing of a persona's rows behind their
         shared prompt prefix with block attention over them, and its cheaper dropout mask
         (engine.training.lora.dropout_mask vs nn.Dropout; `--dropout 0` takes that out)
Time is wall time of the training loops only (model load and warm-up excluded). Tokens/s counts non-pad
tokens through the model.
`qwen0.5b-random` is a randomly initialised model of Qwen2.5-0.5B's shape, built locally (no download).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from engine.data.dataset import load_dataset  # noqa: E402
from engine.training.lora import inject_lora, remove_lora  # noqa: E402
from engine.models.loading import LoadedModel, load_model, pick_device  # noqa: E402
from engine.training.config import TrainConfig  # noqa: E402
from engine.training.encode import encode_example, pad_batch, target_logprobs  # noqa: E402
from engine.training.trainer import epoch_order, train_adapters_batched  # noqa: E402


def qwen_random(device: str | None, precision: str) -> LoadedModel:
    """Qwen2.5-0.5B's shape with random weights and SmolLM2's tokenizer (its ids fit Qwen's vocabulary)."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM
    from engine.models.loading import _smollm2_dir
    tok = AutoTokenizer.from_pretrained(_smollm2_dir())
    config = Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                         tie_word_embeddings=True, pad_token_id=tok.pad_token_id)
    dev = pick_device(device)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(config)
    model.requires_grad_(False).eval().to(dev)
    dtype = None if precision == "fp32" else torch.bfloat16
    if dtype is not None:  # as engine.models.loading.load_model: bf16 weights under bf16 autocast
        model.to(dtype)
    return LoadedModel("qwen0.5b-random", model, tok, dev, dtype)


def persona_data(lm, cfg, personas: int, per_persona: int):
    ds = load_dataset(f"sim:personas={personas},train_per_persona={per_persona},val_per_persona=0,test_per_persona=1")
    train = ds.by_persona("train")
    return [[encode_example(lm.tokenizer, e, cfg) for e in train[p][:per_persona]] for p in ds.personas]


def sync(lm):
    if lm.device.type == "cuda":
        torch.cuda.synchronize(lm.device)


def batched(lm, data, cfg):
    inject_lora(lm.model, len(data), cfg.r, cfg.alpha, cfg.dropout, cfg.targets)
    try:
        sync(lm)
        stats = train_adapters_batched(lm, data, cfg, seeds=list(range(len(data))))
        sync(lm)
        return stats.seconds, stats.tokens
    finally:
        remove_lora(lm.model)


def sequential_peft(lm, data, cfg, plain: bool):
    """One PEFT adapter per persona, trained alone (base loaded once, adapter reset between personas)."""
    from peft import LoraConfig, get_peft_model
    model = get_peft_model(lm.model, LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                                                target_modules=list(cfg.targets)))
    inner = model.base_model.model
    attention = inner.config._attn_implementation
    if not plain and lm.device.type == "cpu":
        # eager trains padded rows faster than sdpa on CPU; the trainer's own block attention needs packed rows
        inner.set_attn_implementation("eager")
    params = [p for p in model.parameters() if p.requires_grad]
    tokens = 0
    sync(lm)
    t0 = time.time()
    for p, d in enumerate(data):
        for m in inner.modules():  # a fresh adapter: kaiming A, zero B (PEFT's init)
            if hasattr(m, "reset_lora_parameters"):
                m.reset_lora_parameters("default", True)
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        model.train()
        for epoch in range(cfg.epochs):
            order = epoch_order(len(d), p, epoch)
            for t in range(math.ceil(len(d) / cfg.batch_size)):
                batch = [d[i] for i in order[t * cfg.batch_size:(t + 1) * cfg.batch_size]]
                ids, attn, pred = pad_batch(batch, lm.tokenizer.pad_token_id, lm.device)
                with lm.autocast():
                    if plain:
                        labels = torch.full_like(ids, -100)
                        labels[:, 1:][pred[:, :-1]] = ids[:, 1:][pred[:, :-1]]
                        loss = model(input_ids=ids, attention_mask=attn, labels=labels, use_cache=False).loss
                    else:
                        logp, _ = target_logprobs(inner, ids, attn, pred)
                        loss = -logp.mean()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                opt.step()
                opt.zero_grad(set_to_none=True)
                tokens += int(attn.sum())
    sync(lm)
    seconds = time.time() - t0
    model.eval()
    inner.set_attn_implementation(attention)
    model.unload()
    return seconds, tokens


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="smollm2-135m, tiny-random or qwen0.5b-random")
    ap.add_argument("--personas", type=int, default=8)
    ap.add_argument("--steps", type=int, default=2, help="optimizer steps per persona (1 epoch of steps x batch-size examples)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--r", type=int, default=16)
    ap.add_argument("--dropout", type=float, default=0.05)
    ap.add_argument("--micro-batch-tokens", type=int, default=None, help="default: TrainConfig's")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--baseline", default="both", choices=["plain", "tuned", "both"])
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--json", action="store_true", help="end with one JSON object of the figures, for scripts")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    lm = (qwen_random(args.device, args.precision) if args.model == "qwen0.5b-random"
          else load_model(args.model, device=args.device, precision=args.precision))
    extra = {"micro_batch_tokens": args.micro_batch_tokens} if args.micro_batch_tokens else {}
    cfg = TrainConfig(r=args.r, dropout=args.dropout, epochs=1, batch_size=args.batch_size, **extra)
    data = persona_data(lm, cfg, args.personas, args.steps * args.batch_size)
    n_tok = sum(len(s.ids) for d in data for s in d)
    print(f"{lm.name} on {lm.device} ({'bf16' if lm.autocast_dtype else 'fp32'}, "
          f"{torch.get_num_threads()} threads): {args.personas} personas x {args.steps} steps x batch "
          f"{args.batch_size} = {sum(map(len, data))} examples, {n_tok / sum(map(len, data)):.0f} tokens each, "
          f"r={cfg.r}, dropout={cfg.dropout}, micro_batch_tokens={cfg.micro_batch_tokens or 'auto'}", flush=True)

    batched(lm, [d[:1] for d in data[:2]], cfg)  # warm-up (allocator, kernels)
    b_secs, b_tok = batched(lm, data, cfg)
    print(f"batched trainer:                 {b_secs:8.1f} s {b_tok / b_secs:8.0f} tokens/s", flush=True)
    out = {"model": lm.name, "device": str(lm.device), "precision": lm.precision, "threads": torch.get_num_threads(),
           "personas": args.personas, "batched_tokens_per_s": round(b_tok / b_secs, 1)}
    if args.skip_baseline:
        _print_json(args, out)
        return
    for plain in {"plain": [True], "tuned": [False], "both": [True, False]}[args.baseline]:
        sequential_peft(lm, [data[0][:1]], cfg, plain)  # warm-up
        s_secs, s_tok = sequential_peft(lm, data, cfg, plain)
        assert s_tok == b_tok, (s_tok, b_tok)
        label = "plain" if plain else "tuned"
        print(f"sequential PEFT, {label}:          {s_secs:8.1f} s {s_tok / s_secs:8.0f} tokens/s   "
              f"speed-up of the batched trainer: {s_secs / b_secs:.2f}x", flush=True)
        out[f"sequential_{label}_tokens_per_s"] = round(s_tok / s_secs, 1)
        out[f"speedup_vs_{label}"] = round(s_secs / b_secs, 3)
    _print_json(args, out)


def _print_json(args, out: dict) -> None:
    if args.json:
        import json
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
