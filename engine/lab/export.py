"""PEFT export of a run's trained adapters (`python -m engine export`).

A run keeps its adapters in its own format (engine.training.adapter_files: stacked per method; merges as
their recipe, recomputed here with the same deterministic code that was evaluated).

`export_adapter` writes a standard PEFT LoRA folder (adapter_config.json + adapter_model.safetensors)
that `peft.PeftModel.from_pretrained(base, folder)` loads. For `hybrid` the per-persona adapter belongs
on the base model WITH the unified adapter merged in: export the unified one too (no --persona), load
it and call merge_and_unload(), then load the per-persona adapter (the folder's README says so).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from engine import settings, store
from engine.methods.registry import METHODS
from engine.store import method_dirname
from engine.training.adapter_files import ExportError, persona_adapter


# ----------------------------------------------------------------------------- PEFT export

def peft_state_dict(state: dict) -> dict[str, torch.Tensor]:
    """Our layer names (model.layers.0.self_attn.q_proj) -> PEFT's saved keys."""
    out = {}
    for name, (A, B) in state.items():
        out[f"base_model.model.{name}.lora_A.weight"] = A.float().contiguous()
        out[f"base_model.model.{name}.lora_B.weight"] = B.float().contiguous()
    return out


PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors", "README.md")


BASE_FILES = ("config.json", "generation_config.json", "model.safetensors", "README.md", "tokenizer.json",
              "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt", "chat_template.jinja")


def check_out(out, force: bool = False, files=PEFT_FILES, flag: str = "--out") -> Path:
    """ExportError unless `out` is a new or empty folder (with force: a folder whose files we may replace) in a
    folder this process can create folders in (tried: /proc, /sys and read-only places are refused here, before
    any work)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"{flag} {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ExportError(f"{flag} {out} exists and is not empty; choose a new folder (or --force to replace "
                          f"{', '.join(files)} in it)")
    if not out.exists() and not out.parent.is_dir():
        raise ExportError(f"{flag}: folder {out.parent} does not exist")
    probe = out.with_name(f".{out.name}.probe{os.getpid()}")
    try:
        probe.mkdir()
        (probe / "x").write_bytes(b"")
    except OSError as e:
        raise ExportError(f"{flag} {out}: cannot write there ({e.strerror or e})") from None
    finally:
        shutil.rmtree(probe, ignore_errors=True)
    return out


def check_outs(out, base_out, force: bool = False) -> None:
    """Both export folders, before any work: each new or empty (or --force), and never the same folder (the adapter
    and the base weights each write a README.md and config files)."""
    check_out(out, force)
    if base_out is None:
        return
    if Path(base_out).resolve() == Path(out).resolve():
        raise ExportError(f"--base-out {base_out} is the --out folder; the base weights and the adapter each need "
                          "their own folder (both write README.md and a config)")
    check_out(base_out, force, BASE_FILES, "--base-out")


def write_peft_folder(out, state: dict, scaling: float, targets, base_model: str, note: str = "",
                      force: bool = False, base_path: str | None = None) -> Path:
    """The PEFT folder, written beside `out` and moved in at the end: a failure leaves `out` as it was.
    base_model_name_or_path is `base_path` (the lab's own base weights, written by export_base) when given, else
    the lab's model name: never a hub checkpoint the lab did not run."""
    from peft import LoraConfig
    out = check_out(out, force)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        rank = next(iter(state.values()))[0].shape[0]
        config = LoraConfig(r=rank, lora_alpha=scaling * rank, target_modules=list(targets), lora_dropout=0.0,
                            bias="none", task_type="CAUSAL_LM",
                            base_model_name_or_path=base_path or base_model)
        config.save_pretrained(str(tmp))
        save_file(peft_state_dict(state), str(tmp / "adapter_model.safetensors"))
        (tmp / "README.md").write_text(f"# LoRA adapter exported by Persona LoRA Lab\n\nbase model: {base_model}\n"
                                       f"rank {rank}, lora_alpha {scaling * rank:g} (scaling {scaling:g})\n\n{note}\n")
        if not out.exists():
            os.replace(tmp, out)
        else:  # an empty folder, or --force: only our files are replaced
            for f in tmp.iterdir():
                os.replace(f, out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def export_base(model_name: str, precision: str, out) -> Path:
    """The base weights exactly as the lab computed with them (e.g. SmolLM2's Q4_1 GGUF dequantized, in the
    run's precision) as a local transformers folder: PeftModel.from_pretrained on it answers as the lab did."""
    from safetensors.torch import save_model

    from engine.models.loading import load_model, provenance
    lm = load_model(model_name, device="cpu", precision=precision)
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")  # written beside and moved in: a failure leaves out as it was
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        lm.model.config.torch_dtype = next(lm.model.parameters()).dtype
        lm.model.config.save_pretrained(str(tmp))
        lm.model.generation_config.save_pretrained(str(tmp))
        lm.tokenizer.save_pretrained(str(tmp))
        save_model(lm.model, str(tmp / "model.safetensors"))  # gguf-loaded models refuse save_pretrained
        (tmp / "README.md").write_text(f"# Base model weights used by Persona LoRA Lab\n\n"
                                       f"{provenance(model_name, precision)}\n")
        if not out.exists():
            os.replace(tmp, out)
        else:  # an empty folder, or --force: only the files written here are replaced
            for f in tmp.iterdir():
                os.replace(f, out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def export_adapter(artifacts_dir, method: str, persona: str | None, out, force: bool = False,
                   base_path: str | None = None) -> Path:
    """Write the adapter `persona` is answered with under `method` as a PEFT LoRA folder at `out`
    (a new or empty folder; with force, our files in an existing one are replaced)."""
    check_out(out, force)
    folder = Path(artifacts_dir) / method_dirname(method)
    if not (folder / "adapters.json").exists():
        why = METHODS[method].no_adapter if method in METHODS else ""
        raise ExportError(f"no saved adapters for method '{method}' in {artifacts_dir}" + (f" ({why})" if why else ""))
    state, meta, label = persona_adapter(folder, persona)
    note = (f"method {method}, adapter: {label}.\n\nTrained and evaluated on: "
            f"{meta.get('base_provenance') or meta['base_model']}.")
    if meta.get("prompt"):
        note += f"\n\nPROMPT: this method answers with {meta['prompt']}; without it the adapter is not what was measured."
    if meta.get("base_adapter"):
        note += ("\n\nHYBRID: the per-persona adapters belong on the base model with the unified adapter merged "
                 "in. Export it (same method, no persona), load it with PeftModel.from_pretrained(base, dir), "
                 "call merge_and_unload(), then load this adapter on the result."
                 if persona else "\n\nThis is hybrid's unified adapter; it goes on the plain base model.")
    return write_peft_folder(out, state, meta["scaling"], meta["targets"], meta["base_model"], note, force,
                             base_path)


def cmd_export(args) -> int:
    """`python -m engine export --run ID --method M [--persona P] --out DIR [--base-out DIR] [--store S]`; exit 2 on
    bad input (both folders are checked before anything is written), 1 when writing fails midway."""
    path = settings.store_path(args.store)
    if not os.path.exists(path):
        print(f"export: no store at {path}", file=sys.stderr)
        return 2
    run = store.queries.run_row(args.run, path)
    if run is None:
        print(f"export: no run '{args.run}' in the store", file=sys.stderr)
        return 2
    artifacts = run["artifacts_dir"]
    if not artifacts or not (Path(artifacts) / "adapters").exists():
        print(f"export: run '{args.run}' has no saved adapters (looked in {artifacts}/adapters)", file=sys.stderr)
        return 2
    base_path = str(Path(args.base_out).resolve()) if args.base_out else None
    force = getattr(args, "force", False)
    try:
        check_outs(args.out, args.base_out, force)
        out = export_adapter(Path(artifacts) / "adapters", args.method, args.persona, args.out, force, base_path)
    except ExportError as e:
        print(f"export: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the disk filled up, a folder vanished: the folder is as it was
        print(f"export: cannot write {args.out} ({e.strerror or e})", file=sys.stderr)
        return 1
    if args.base_out:
        resolved = (json.loads(run["config_json"] or "{}").get("precision_resolved") or {}).get("precision", "fp32")
        try:
            print(export_base(run["model"], resolved, args.base_out))
        except OSError as e:
            print(f"export: the adapter is in {out}, but the base weights cannot be written to {args.base_out} "
                  f"({e.strerror or e})", file=sys.stderr)
            return 1
    print(out)
    return 0
