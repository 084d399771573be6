"""Trained adapters on disk, in the run's own format (one folder per method).

A method folder `<run artifacts>/adapters/<method, ':' -> '__'>/` holds
  adapters.safetensors  per LoRA layer `<layer>.lora_A` [P, R, d_in] and `<layer>.lora_B` [P, d_out, R]
                        (hybrid also `base.<layer>.lora_A/B`: the unified adapter merged into its base)
  adapters.json         r, alpha, scaling (= alpha / r; every adapter uses it), targets, base model, layer
                        order, adapter names, persona -> adapter routing, and for merge methods the recipe
Merge methods store their source per-persona adapters and, per persona, the neighbours, weights and
seed; export recomputes the merged adapter with engine.training.merge (deterministic, the same code that was
evaluated), which keeps K·r-rank merges of 200 personas off the disk.

engine.lab.export turns one of them into a standard PEFT LoRA folder.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from engine.training.merge import merge_adapters


class ExportError(ValueError):
    """What to export is missing; the message says what."""


def save_adapters(folder, states: list[dict], names: list[str], routing: dict[str, int], cfg, base_model: str,
                  base_state: dict | None = None, merge: dict | None = None, link_from=None,
                  base_provenance: str | None = None, base_precision: str = "fp32", prompt: str | None = None) -> Path:
    """Write stacked adapters + metadata (one helper for every method). Returns the safetensors path.

    link_from: an identical adapters.safetensors already written in this run (merge methods reuse
    per_persona's), hard-linked instead of written again.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    layers = list(states[0])
    path = folder / "adapters.safetensors"
    tmp = folder / f".adapters.safetensors.tmp{os.getpid()}"
    if link_from is not None and Path(link_from).exists():
        tmp.unlink(missing_ok=True)
        try:
            os.link(link_from, tmp)
        except OSError:
            shutil.copyfile(link_from, tmp)
    else:
        tensors = {}
        for name in layers:
            tensors[f"{name}.lora_A"] = torch.stack([s[name][0] for s in states]).contiguous()
            tensors[f"{name}.lora_B"] = torch.stack([s[name][1] for s in states]).contiguous()
            if base_state is not None:
                tensors[f"base.{name}.lora_A"] = base_state[name][0][None].contiguous()
                tensors[f"base.{name}.lora_B"] = base_state[name][1][None].contiguous()
        save_file(tensors, str(tmp))
    os.replace(tmp, path)
    meta = {
        "format": "persona-lora-lab adapters v1", "base_model": base_model,
        "base_provenance": base_provenance or base_model, "base_precision": base_precision,
        "r": cfg.r, "alpha": cfg.alpha,
        "scaling": cfg.alpha / cfg.r, "targets": list(cfg.targets), "layers": layers, "adapters": list(names),
        "routing": routing,
        "base_adapter": None if base_state is None else {
            "tensors": "base.<layer>.lora_A/B",
            "meaning": "the unified adapter, merged into the base weights (W += scaling * B A) before the "
                       "per-persona adapters were trained and evaluated on top"},
        "merge": merge,
        "prompt": prompt,   # how the method prompts (e.g. the profile in the system prompt); None: the run's prompt
    }
    mtmp = folder / f".adapters.json.tmp{os.getpid()}"
    mtmp.write_text(json.dumps(meta, indent=1))
    os.replace(mtmp, folder / "adapters.json")
    return path


def load_adapters(folder) -> tuple[dict, list[dict], dict | None]:
    """(metadata, per-adapter states in adapter order, base adapter state or None)."""
    folder = Path(folder)
    meta = json.loads((folder / "adapters.json").read_text())
    t = load_file(str(folder / "adapters.safetensors"))
    n = len(meta["adapters"])
    states = [{L: (t[f"{L}.lora_A"][i], t[f"{L}.lora_B"][i]) for L in meta["layers"]} for i in range(n)]
    base = None
    if meta.get("base_adapter"):
        base = {L: (t[f"base.{L}.lora_A"][0], t[f"base.{L}.lora_B"][0]) for L in meta["layers"]}
    return meta, states, base


def persona_adapter(folder, persona: str | None) -> tuple[dict, dict, str]:
    """The adapter state a persona is answered with (merged on the fly for merge methods), meta, and a label.

    persona None: the method's only adapter (unified), or hybrid's unified base adapter.
    """
    meta, states, base = load_adapters(folder)
    if persona is None:
        if base is not None:
            return base, meta, "unified (base of hybrid)"
        if len(states) == 1 and not meta.get("merge"):
            return states[0], meta, meta["adapters"][0]
        raise ExportError(f"this method has {len(states)} adapters: give --persona (one of "
                          f"{', '.join(list(meta['routing'])[:10])}{' ...' if len(meta['routing']) > 10 else ''})")
    if persona not in meta["routing"]:
        raise ExportError(f"persona '{persona}' is not in this run")
    m = meta.get("merge")
    if m:
        recipe = m["personas"][persona]
        src = [states[meta["routing"][n]] for n in recipe["neighbours"]]
        merged, _ = merge_adapters(src, recipe["weights"], m["combination"], meta["r"], m["density"], recipe["seed"])
        return merged, meta, f"{m['combination']} merge for {persona}"
    i = meta["routing"][persona]
    return states[i], meta, meta["adapters"][i]
