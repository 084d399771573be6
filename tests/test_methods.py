"""Every method end to end on tiny-random through `python -m engine run`, into a temp store."""
import json
import os
import subprocess
import sys

import duckdb
import numpy as np
import pytest

from engine.methods.registry import known_methods
from tests.conftest import ROOT

METHODS = ["base", "unified", "per_persona", "hybrid", "cluster", "merge:ab_mean", "merge:exact", "merge:svd",
           "merge:ties", "merge:dare_ties", "prompted", "unified+profile", "rag", "unified+rag", "routed"]
NO_WEIGHTS = ["base", "prompted", "rag"]  # change no weights: no training, no adapter
SIM = "sim:personas=4,train_per_persona=2,val_per_persona=1,test_per_persona=1,personal_fraction=0.5"  # a personal test target each: supplied settings


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    store = tmp_path_factory.mktemp("methods") / "store.duckdb"
    # one thread: tiny matrices only lose to OpenMP hand-offs, badly so on a shared machine
    p = subprocess.run([sys.executable, "-m", "engine", "run", "--data", SIM, "--model", "tiny-random", "--methods",
                        ",".join(reversed(METHODS)), "--store", str(store), "--epochs", "1", "--max-new-tokens", "4", "--r", "4",
                        "--cluster-k", "2", "--merge-k", "3"], cwd=ROOT, capture_output=True, text=True,
                       timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-3000:]
    con = duckdb.connect(str(store), read_only=True)
    yield con, con.execute("SELECT run_id FROM runs").fetchone()[0]
    con.close()


def test_every_method_is_known():
    assert set(METHODS) <= set(known_methods())


def test_every_method_scores_every_persona(run):
    con, run_id = run
    rows = con.execute("SELECT method, count(*), count(score) FROM persona_results WHERE run_id = ? GROUP BY method",
                       [run_id]).fetchall()
    assert sorted(rows) == sorted((m, 4, 4) for m in METHODS)
    res = con.execute("SELECT method, train_seconds, eval_seconds, trainable_params, n_adapters, details_json "
                      "FROM method_results WHERE run_id = ?", [run_id]).df().set_index("method")
    assert set(res.index) == set(METHODS)
    assert (res.drop("routed").eval_seconds > 0).all() and (res.drop(NO_WEIGHTS).train_seconds > 0).all()
    assert (res.loc[NO_WEIGHTS, "trainable_params"] == 0).all()
    assert (res.drop(NO_WEIGHTS + ["routed"]).trainable_params > 0).all()
    assert res.loc["cluster", "n_adapters"] == 2 and res.loc["per_persona", "n_adapters"] == 4
    details = {m: json.loads(res.loc[m, "details_json"]) for m in res.index}
    assert details["merge:svd"]["merged_rank"] == 4


def test_every_method_is_charged_for_every_stage_it_reuses(run):
    """hybrid reuses unified's adapter and merges reuse per_persona's: their time still includes those stages."""
    con, run_id = run
    res = con.execute("SELECT method, train_seconds, details_json FROM method_results WHERE run_id = ?",
                      [run_id]).df().set_index("method")
    stages = {m: json.loads(d)["stages"] for m, d in res.details_json.items()}
    assert stages["hybrid"]["unified"] == pytest.approx(stages["unified"]["train"], abs=1e-3)
    assert stages["unified+rag"]["unified"] == pytest.approx(stages["unified"]["train"], abs=1e-3)
    # routed is charged every candidate's stages (a shared one once) and their val answers
    routed = stages["routed"]
    assert routed["unified"] == pytest.approx(stages["unified"]["train"], abs=1e-3)
    assert routed["per_persona"] == pytest.approx(stages["per_persona"]["train"], abs=1e-3)
    assert {f"{m}: val answers" for m in METHODS if m != "routed"} <= set(routed)
    assert res.loc["routed", "train_seconds"] > max(res.drop("routed").train_seconds)
    for m in METHODS:
        assert res.loc[m, "train_seconds"] == pytest.approx(sum(stages[m].values()), abs=0.01)
        if m.startswith("merge:"):
            assert stages[m]["per_persona"] == pytest.approx(stages["per_persona"]["train"], abs=1e-3)
    epochs = json.loads(res.loc["per_persona", "details_json"])["epochs"]
    assert epochs["cap"] == 1 and epochs["max"] == 1


def test_results_split_by_kind_and_the_persona_blind_ceiling(run):
    con, run_id = run
    kinds = con.execute("SELECT method, kind, count(*) FROM persona_kind_results WHERE run_id = ? GROUP BY ALL",
                        [run_id]).fetchall()
    assert {m for m, _, _ in kinds} == set(METHODS)
    assert {k for _, k, _ in kinds} <= {"personal", "general", "stated", "supplied"} and ("base", "supplied") in \
        {(m, k) for m, k, _ in kinds}
    blind = con.execute("SELECT kind, count(*), avg(score) FROM persona_blind WHERE run_id = ? GROUP BY kind",
                        [run_id]).fetchall()
    assert {k: n for k, n, _ in blind}["all"] == 4 and "supplied" in {k for k, _, _ in blind}
    assert con.execute("SELECT metric FROM runs WHERE run_id = ?", [run_id]).fetchone()[0] == "action_f1"


def test_personas_have_clusters_and_map(run):
    con, run_id = run
    df = con.execute("SELECT * FROM personas WHERE run_id = ?", [run_id]).df()
    assert len(df) == 4 and set(df.cluster) == {0, 1}
    assert df.silhouette.notna().all() and np.isfinite(df[["umap_x", "umap_y"]].to_numpy()).all()
    k = con.execute("SELECT k, chosen FROM cluster_k WHERE run_id = ?", [run_id]).fetchall()
    assert k == [(2, True), (3, False)]  # K = 2 as asked, beside the sweep over 2..P-1


def test_merge_weights_sum_to_one(run):
    con, run_id = run
    w = con.execute("SELECT method, persona_id, sum(weight), count(*), bool_or(neighbour_id = persona_id) "
                    "FROM merge_weights WHERE run_id = ? GROUP BY ALL", [run_id]).fetchall()
    assert sorted({m for m, *_ in w}) == sorted(m for m in METHODS if m.startswith("merge:"))
    assert len(w) == 5 * 4
    for _, _, total, n, has_self in w:
        assert total == pytest.approx(1.0) and n == 3 and has_self


def test_adapters_saved_for_every_trained_method(run):
    con, run_id = run
    from pathlib import Path
    root = Path(con.execute("SELECT artifacts_dir FROM runs WHERE run_id = ?", [run_id]).fetchone()[0]) / "adapters"
    for m in [m for m in METHODS if m not in NO_WEIGHTS + ["routed"]]:
        meta = json.loads((root / m.replace(":", "__") / "adapters.json").read_text())
        assert meta["base_model"] == "tiny-random" and meta["r"] == 4 and len(meta["routing"]) == 4
    assert json.loads((root / "hybrid" / "adapters.json").read_text())["base_adapter"]
    assert "profile" in json.loads((root / "unified+profile" / "adapters.json").read_text())["prompt"]
    assert "dialogues" in json.loads((root / "unified+rag" / "adapters.json").read_text())["prompt"]


def test_routed_answers_each_persona_with_its_validation_choice(run):
    """routed's predictions for a persona are, row for row, those of the method it chose for that persona."""
    con, run_id = run
    d = json.loads(con.execute("SELECT details_json FROM method_results WHERE run_id = ? AND method = 'routed'",
                               [run_id]).fetchone()[0])
    assert set(d["candidates"]) == set(METHODS) - {"routed"} and len(d["routing"]) == 4
    preds = con.execute("SELECT method, persona_id, example_id, prediction, score FROM predictions WHERE run_id = ?",
                        [run_id]).df()
    for pid, chosen in d["routing"].items():
        mine = preds[(preds.method == "routed") & (preds.persona_id == pid)].drop(columns="method")
        theirs = preds[(preds.method == chosen) & (preds.persona_id == pid)].drop(columns="method")
        assert len(mine) and mine.sort_values("example_id").values.tolist() == theirs.sort_values("example_id").values.tolist()
        best = max(d["val_scores"][pid].values())
        assert d["val_scores"][pid][chosen] == best


@pytest.mark.slow
def test_quick_demo_learns_something(tmp_path):
    """The empty store's quick-demo button must show a working lab: every method scores every persona,
    and training moves the toy model off the base (which answers with blank lines) towards the replies'
    format (embedding similarity; a 2-layer random model does not get values right, so action_f1 stays low)."""
    from engine import store
    from engine.lab import demos
    from engine.lab.runner import execute_run
    spec = demos.demo_spec("tiny")
    execute_run(spec, tmp_path / "results")
    store.ingest(tmp_path / "results", tmp_path / "store.duckdb")
    means = store.query("SELECT method, avg(embedding_similarity) AS sim, count(*) AS n FROM persona_results "
                        "GROUP BY method", path=tmp_path / "store.duckdb").set_index("method")
    assert set(means.index) == set(spec.methods) and (means.n == 6).all()
    assert means.sim["unified"] > means.sim["base"] + 0.15


def test_peak_memory_is_per_method_window():
    """A method's peak memory starts at its own start: an earlier method's peak must not carry over."""
    import torch
    from engine.lab.runner import peak_memory_mb, reset_peak_memory
    cpu = torch.device("cpu")
    reset_peak_memory(cpu)
    big = np.ones(64 * 2**20)  # 512 MiB of float64, written so resident
    with_big = peak_memory_mb(cpu)
    assert with_big > 500
    del big
    reset_peak_memory(cpu)
    assert peak_memory_mb(cpu) < with_big - 400


def test_runs_prints_the_optimistic_test_routing_beside_routed(run):
    con, run_id = run
    path = [f for _, name, f in con.execute("PRAGMA database_list").fetchall() if f][0]
    p = subprocess.run([sys.executable, "-m", "engine", "runs", "--store", path], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    lines = [line.strip() for line in p.stdout.splitlines()]
    for m in ("routed", "prompted", "unified+profile", "rag", "unified+rag"):
        assert any(line.startswith(m + " ") and "personal" in line for line in lines), m
    (bound,) = [line for line in lines if line.startswith("routed on test")]
    assert "optimistic bound, not a method" in bound
