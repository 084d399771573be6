"""Trained tokens/s of LoRA on smollm2-135m: a naive fp32 PEFT loop against the lab's trainer.

    python bench/bench_train.py                      # simulator data, 96 examples, batch 8, CPU
    python bench/bench_train.py --device cuda --examples 512

Tokens/s counts every non-pad token that goes through the model in training (prompt + target), the
same count for both loops. The naive loop is what a first script does: PEFT, fp32, full-vocabulary
logits at every position, batches in data order padded to their longest row.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from engine.data.dataset import load_dataset  # noqa: E402
from engine.training.lora import inject_lora, remove_lora  # noqa: E402
from engine.models.loading import load_model  # noqa: E402
from engine.training.config import TrainConfig  # noqa: E402
from engine.training.encode import encode_example, pad_batch  # noqa: E402
from engine.training.trainer import train_adapters_batched  # noqa: E402


def naive_peft(lm, data, cfg, steps):
    from peft import LoraConfig, get_peft_model
    model = get_peft_model(lm.model, LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                                                target_modules=list(cfg.targets)))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    tokens, t0 = 0, time.time()
    for step in range(steps):
        batch = data[(step * cfg.batch_size) % len(data):][:cfg.batch_size]
        ids, attn, pred = pad_batch(batch, lm.tokenizer.pad_token_id, lm.device)
        labels = ids.masked_fill(~torch.cat([pred[:, -1:] & False, pred[:, :-1]], 1), -100)
        loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.max_grad_norm)
        opt.step()
        opt.zero_grad()
        tokens += int(attn.sum())
    seconds = time.time() - t0
    model.unload()
    return tokens / seconds, seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--examples", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--dropout", type=float, default=0.05)
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: the cores free now, as a run chooses)")
    ap.add_argument("--json", action="store_true", help="end with one JSON object of the figures, for scripts")
    args = ap.parse_args()
    from engine.models import threads
    choice = threads.apply(threads.choose_threads(args.threads))
    out = {"model": args.model, "device": args.device, "threads": choice.threads, "threads_reason": choice.reason}

    ds = load_dataset("sim:personas=8,train_per_persona=12")
    fp32 = load_model(args.model, device=args.device, precision="fp32")
    cfg = TrainConfig(batch_size=args.batch_size, epochs=1, dropout=args.dropout)
    data = [encode_example(fp32.tokenizer, e, cfg) for e in ds.split("train")][:args.examples]
    steps = len(data) // cfg.batch_size
    print(f"{args.model} on {args.device}: {len(data)} examples, {sum(len(d.ids) for d in data) / len(data):.0f} "
          f"tokens each on average, batch {cfg.batch_size}, {steps} steps, {torch.get_num_threads()} threads")

    if not args.skip_naive:
        naive_peft(fp32, data[:cfg.batch_size], cfg, 1)  # warm-up
        tps, secs = naive_peft(fp32, data, cfg, steps)
        print(f"naive fp32 PEFT loop:  {tps:7.0f} tokens/s  ({secs:.1f} s)")
        out["naive_fp32_tokens_per_s"] = round(tps, 1)
    del fp32

    for precision in ("fp32", "auto"):
        lm = load_model(args.model, device=args.device, precision=precision)
        inject_lora(lm.model, 1, cfg.r, cfg.alpha, cfg.dropout, cfg.targets)
        train_adapters_batched(lm, [data[:cfg.batch_size]], cfg)  # warm-up
        stats = train_adapters_batched(lm, [data], cfg)
        remove_lora(lm.model)
        label = f"{precision} -> {lm.precision}"
        print(f"lab trainer, {label:13s} {stats.tokens_per_second:7.0f} tokens/s  ({stats.seconds:.1f} s, "
              f"loss {stats.losses[0]:.3f} -> {stats.losses[-1]:.3f})" + (f"  [{lm.precision_reason}]"
                                                                         if precision == "auto" else ""))
        out[f"lab_{precision}_tokens_per_s"] = round(stats.tokens_per_second, 1)
        if precision == "auto":
            out["auto_precision"] = lm.precision
    if "naive_fp32_tokens_per_s" in out:
        out["speedup_fp32"] = round(out["lab_fp32_tokens_per_s"] / out["naive_fp32_tokens_per_s"], 3)
        out["speedup_auto"] = round(out["lab_auto_tokens_per_s"] / out["naive_fp32_tokens_per_s"], 3)
    if args.json:
        import json
        print(json.dumps(out))


if __name__ == "__main__":
    main()
