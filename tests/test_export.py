"""Exported adapters load in PEFT and answer exactly like our MultiLoRALinear routed to them."""
import copy

import pytest
import torch

from engine import store
from engine.lab import cli
from engine.lab.export import export_adapter
from engine.training.adapter_files import save_adapters
from engine.training.lora import adapter_state, inject_lora, load_adapter_states, merged_adapter, remove_lora
from engine.training.merge import merge_adapters, pad_rank, state_rank
from engine.models.loading import load_model
from engine.training.config import TrainConfig
from engine import settings

CFG = TrainConfig(r=4, alpha=8.0, dropout=0.0)
TOL = 1e-4


@pytest.fixture(scope="module")
def lm():
    return load_model("tiny-random", precision="fp32")


@pytest.fixture(scope="module")
def states(lm):
    """Three random adapters (B non-zero, so they change the outputs)."""
    inject_lora(lm.model, 3, CFG.r, CFG.alpha, 0.0, CFG.targets, seed=1)
    out = []
    g = torch.Generator().manual_seed(0)
    for i in range(3):
        s = adapter_state(lm.model, i)
        out.append({k: (A, torch.randn(B.shape, generator=g) * 0.2) for k, (A, B) in s.items()})
    remove_lora(lm.model)
    return out


def _inputs(lm):
    tok = lm.tokenizer
    enc = tok(["Turn the lights down, please.", "Set the AC to 21 degrees in cool mode and the TV to hdmi1."],
              return_tensors="pt", padding=True)
    return enc["input_ids"], enc["attention_mask"]


def _ours(lm, state):
    """Logits of our batched layer with `state` as adapter 1 of 3 (rows routed to it)."""
    rank = state_rank(state)
    inject_lora(lm.model, 3, rank, CFG.alpha / CFG.r * rank, 0.0, CFG.targets, seed=5)
    try:
        load_adapter_states(lm.model, [pad_rank(adapter_state(lm.model, 0), rank), pad_rank(state, rank)])
        ids, attn = _inputs(lm)
        with torch.no_grad(), lm.model.lora_router.route(torch.ones(len(ids), dtype=torch.long)):
            return lm.model(input_ids=ids, attention_mask=attn).logits
    finally:
        remove_lora(lm.model)


def _peft(lm, folder, base=None):
    from peft import PeftModel
    model = PeftModel.from_pretrained(copy.deepcopy(base or lm.model), str(folder))
    ids, attn = _inputs(lm)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=attn).logits


def test_peft_folder_layout(lm, states, tmp_path):
    save_adapters(tmp_path / "per_persona", states, ["a", "b", "c"], {"a": 0, "b": 1, "c": 2}, CFG, lm.name)
    out = export_adapter(tmp_path, "per_persona", "b", tmp_path / "out")
    from safetensors.torch import load_file
    keys = set(load_file(str(out / "adapter_model.safetensors")))
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in keys
    assert "base_model.model.model.layers.1.self_attn.o_proj.lora_B.weight" in keys
    import json
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["r"] == CFG.r and cfg["lora_alpha"] == CFG.alpha and set(cfg["target_modules"]) == set(CFG.targets)
    assert cfg["base_model_name_or_path"] == "tiny-random" and cfg["peft_type"] == "LORA"
    from peft import PeftModel, get_peft_model_state_dict
    assert set(get_peft_model_state_dict(PeftModel.from_pretrained(copy.deepcopy(lm.model), str(out)),
                                         save_embedding_layers=False)) == keys


@pytest.mark.parametrize("persona", ["a", "c"])
def test_per_persona_export_matches(lm, states, tmp_path, persona):
    save_adapters(tmp_path / "per_persona", states, ["a", "b", "c"], {"a": 0, "b": 1, "c": 2}, CFG, lm.name)
    out = export_adapter(tmp_path, "per_persona", persona, tmp_path / "out")
    ours, peft = _ours(lm, states["abc".index(persona)]), _peft(lm, out)
    assert (ours - peft).abs().max() < TOL
    ids, attn = _inputs(lm)
    with torch.no_grad():
        assert (ours - lm.model(input_ids=ids, attention_mask=attn).logits).abs().max() > 1e-2  # not vacuous


@pytest.mark.parametrize("combination", ["ab_mean", "exact", "svd", "ties", "dare_ties"])
def test_merge_export_matches(lm, states, tmp_path, combination):
    recipe = {"a": {"neighbours": ["a", "c", "b"], "weights": [0.5, 0.3, 0.2], "seed": 7}}
    save_adapters(tmp_path / f"merge__{combination}", states, ["a", "b", "c"], {"a": 0, "b": 1, "c": 2}, CFG,
                  lm.name, merge={"combination": combination, "density": 0.5, "personas": recipe})
    out = export_adapter(tmp_path, f"merge:{combination}", "a", tmp_path / "out")
    merged, _ = merge_adapters([states[0], states[2], states[1]], [0.5, 0.3, 0.2], combination, CFG.r, 0.5, 7)
    assert (_ours(lm, merged) - _peft(lm, out)).abs().max() < TOL


def test_hybrid_export_goes_on_base_with_unified_merged(lm, states, tmp_path):
    from peft import PeftModel
    unified = states[2]
    save_adapters(tmp_path / "hybrid", states[:2], ["a", "b"], {"a": 0, "b": 1}, CFG, lm.name, base_state=unified)
    u_dir = export_adapter(tmp_path, "hybrid", None, tmp_path / "unified")
    p_dir = export_adapter(tmp_path, "hybrid", "b", tmp_path / "b")
    assert "merge_and_unload" in (p_dir / "README.md").read_text()
    base = PeftModel.from_pretrained(copy.deepcopy(lm.model), str(u_dir)).merge_and_unload()
    peft = _peft(lm, p_dir, base=base)
    with merged_adapter(lm.model, unified, CFG.alpha / CFG.r):
        ours = _ours(lm, states[1])
    assert (ours - peft).abs().max() < TOL


def test_cli_export_from_a_run(tmp_path):
    """A tiny run in a temp store, then `python -m engine export` for several methods; bad input exits 2."""
    from peft import PeftModel
    from engine.lab.runner import execute_run
    from engine.lab.spec import RunSpec
    db = str(tmp_path / "store.duckdb")
    spec = RunSpec(data="sim:personas=3,train_per_persona=2,val_per_persona=1,test_per_persona=1",
                   model="tiny-random", methods=["unified", "per_persona", "merge:svd", "unified+profile", "prompted"],
                   train={"epochs": 1, "max_new_tokens": 2, "r": 4})
    run_id = "test-export-run"
    execute_run(spec, settings.runs_dir(db) / run_id, run_id=run_id)
    store.ingest(settings.runs_dir(db) / run_id, db)
    pid = store.query("SELECT persona_id FROM personas LIMIT 1", path=db).persona_id[0]
    base = load_model("tiny-random", precision="fp32").model
    for method, persona in [("unified", None), ("per_persona", pid), ("merge:svd", pid), ("unified+profile", pid)]:
        out = tmp_path / f"out_{method.replace(':', '_')}"
        args = ["export", "--run", run_id, "--method", method, "--out", str(out), "--store", db]
        assert cli.main(args + (["--persona", persona] if persona else [])) == 0
        PeftModel.from_pretrained(copy.deepcopy(base), str(out))  # loads with no missing/unexpected keys
        # an adapter trained with the profile in the prompt says so: without it, it is not what was measured
        assert ("PROMPT: " in (out / "README.md").read_text()) == (method == "unified+profile")
    bad = [["--run", "nope", "--method", "unified"],
           ["--run", run_id, "--method", "per_persona"],                      # no persona
           ["--run", run_id, "--method", "per_persona", "--persona", "nobody"],
           ["--run", run_id, "--method", "hybrid", "--persona", pid],        # not in the run
           ["--run", run_id, "--method", "base"],
           ["--run", run_id, "--method", "prompted"]]                         # changes no weights
    for b in bad:
        assert cli.main(["export", *b, "--out", str(tmp_path / "x"), "--store", db]) == 2, b


def test_exported_base_and_adapter_answer_exactly_as_the_lab(tmp_path):
    """`export --base-out` writes the weights the run used; transformers + PEFT on that folder, with nothing
    from the lab, give the lab's logits and greedy replies; the adapter's config points at that folder and
    its README names the real base."""
    import json
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from engine.training.evaluate import generate_replies
    from engine.training.adapter_files import load_adapters
    from engine.data.dataset import load_dataset
    from engine.lab.runner import execute_run
    from engine.lab.spec import RunSpec
    db = str(tmp_path / "store.duckdb")
    spec = RunSpec(data="sim:personas=2,train_per_persona=2,val_per_persona=1,test_per_persona=1",
                   model="tiny-random", methods=["per_persona"], train={"epochs": 2, "max_new_tokens": 6, "r": 4,
                                                                        "lr": 5e-2})
    execute_run(spec, settings.runs_dir(db) / "r1", run_id="r1")
    store.ingest(settings.runs_dir(db) / "r1", db)
    pid = store.query("SELECT persona_id FROM personas ORDER BY persona_id LIMIT 1", path=db).persona_id[0]
    base_dir, out = tmp_path / "base", tmp_path / "adapter"
    assert cli.main(["export", "--run", "r1", "--method", "per_persona", "--persona", pid, "--out", str(out),
                     "--base-out", str(base_dir), "--store", db]) == 0
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(base_dir.resolve())
    assert "random-initialised" in (out / "README.md").read_text()
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base_dir)), str(out)).eval()
    lm = load_model("tiny-random", precision="fp32")
    meta, adapters, _ = load_adapters(settings.runs_dir(db) / "r1" / "adapters" / "per_persona")
    state = adapters[meta["routing"][pid]]
    tests = load_dataset(spec.data).split("test")
    cfg = TrainConfig(max_new_tokens=6)
    ids, attn = _inputs(lm)
    inject_lora(lm.model, 1, meta["r"], meta["alpha"], 0.0, meta["targets"])
    try:
        load_adapter_states(lm.model, [state])
        with torch.no_grad():
            ours = lm.model(input_ids=ids, attention_mask=attn).logits
        ours_replies = generate_replies(lm, tests, None, cfg)
    finally:
        remove_lora(lm.model)
    with torch.no_grad():
        theirs = model(input_ids=ids, attention_mask=attn).logits
        plain = lm.model(input_ids=ids, attention_mask=attn).logits
    assert (ours - theirs).abs().max() < TOL and (ours - plain).abs().max() > 1e-2  # the adapter matters
    as_lab = type(lm)(lm.name, model, lm.tokenizer, lm.device, None)
    assert generate_replies(as_lab, tests, None, cfg) == ours_replies
