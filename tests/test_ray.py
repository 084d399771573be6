"""The Ray backend (engine.backends.ray) on a real 2-node cluster made inside the test (ray.cluster_utils.Cluster,
2 nodes x 1 CPU): sharded runs equal the one-process run, a killed actor is survived, a cluster that is not
there is a clear error and the local backend keeps working.

Tolerance: sharding changes which adapters share a batched pass, i.e. float summation order only. Greedy
replies must be identical and adapter weights equal within 1e-5 (fp32).
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from engine.backends import ray as ray_backend
from engine.backends.ray import RayUnavailable, combine_stats, shards
from engine.lab.runner import execute_run
from engine.lab.spec import RunSpec
from engine.training.trainer import TrainStats
from engine import settings

REPO = Path(__file__).resolve().parent.parent
DATA = "sim:personas=6,train_per_persona=4,val_per_persona=2,test_per_persona=2"
TRAIN = {"epochs": 2, "patience": 0, "dropout": 0.0, "r": 4}


@pytest.mark.parametrize("sizes,n,expected", [
    ([5, 5, 5, 5], 2, [[0, 1], [2, 3]]),
    ([1, 1, 1], 5, [[0], [1], [2]]),          # never more shards than items, none empty
    ([10, 1, 1, 1], 2, [[0], [1, 2, 3]]),     # sizes, not counts, balance the shards
    ([1, 1, 1, 10], 2, [[0, 1, 2], [3]]),
    ([3, 3, 3], 1, [[0, 1, 2]]),
    ([2] * 7, 3, [[0, 1], [2, 3, 4], [5, 6]]),
    ([653, 755, 1158, 661], 2, [[0, 1], [2, 3]]),  # smollm2's 4 personas: not [[0, 1, 2], [3]] (2566 vs 661)
])
def test_shards_are_contiguous_balanced_and_cover_everything(sizes, n, expected):
    out = shards(sizes, n)
    assert out == expected
    assert [i for s in out for i in s] == list(range(len(sizes)))


def test_combined_stats_charge_device_time_and_keep_adapter_order():
    a = TrainStats(steps=3, tokens=100, target_tokens=10, seconds=2.0, losses=[4.0, 3.0, 2.0], epochs=[2, 1],
                   best_epoch=[2, 1], val_losses=[{0: 1.0, 1: 2.0}, {0: 0.5}], validation_seconds=0.5)
    b = TrainStats(steps=2, tokens=50, target_tokens=5, seconds=1.0, losses=[1.0, 1.0], epochs=[2],
                   best_epoch=[1], val_losses=[{0: 3.0}], validation_seconds=0.25)
    c = combine_stats([a, b], offsets=[0, 2])
    assert (c.steps, c.tokens, c.target_tokens, c.seconds, c.validation_seconds) == (3, 150, 15, 3.0, 0.75)
    assert c.epochs == [2, 1, 2] and c.best_epoch == [2, 1, 1]
    assert c.val_losses == [{0: 1.0, 1: 2.0, 2: 3.0}, {0: 0.5}]
    assert c.losses == pytest.approx([(4 * 2 + 1) / 3, (3 * 2 + 1) / 3, 2.0])  # weighted by adapters per shard


# ----------------------------------------------------------------------------- a real 2-node cluster

@pytest.fixture(scope="module")
def cluster():
    import ray  # requirements.txt pins it
    from ray.cluster_utils import Cluster
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([old] if old else []))  # the nodes' workers import engine
    # the nodes bind to this machine's own address: a driver's ray.init cannot reach a cluster bound to 127.0.0.1
    # (Ray 2.60 rewrites a loopback address to the node's IP); no traffic leaves this machine either way
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    yield c
    if ray.is_initialized():
        ray.shutdown()
    c.shutdown()
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    execute_run(RunSpec(data=DATA, model="tiny-random", methods=["per_persona", "hybrid"], train=TRAIN), out)
    return out


def _method(out: Path, method: str):
    d = out / "methods" / method
    return (json.loads((d / "method.json").read_text()), pd.read_parquet(d / "predictions.parquet"),
            load_file(str(out / "adapters" / method / "adapters.safetensors")))


def _assert_same(local: Path, sharded: Path, method: str):
    (_, p1, w1), (m2, p2, w2) = _method(local, method), _method(sharded, method)
    assert p1.example_id.tolist() == p2.example_id.tolist()
    assert p1.prediction.tolist() == p2.prediction.tolist()  # greedy replies identical
    pd.testing.assert_series_equal(p1.score, p2.score)
    assert w1.keys() == w2.keys()
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], atol=1e-5, rtol=1e-4)
    return m2


def test_sharded_per_persona_and_hybrid_equal_the_local_run(cluster, local_run, tmp_path):
    out = tmp_path / "ray"
    execute_run(RunSpec(data=DATA, model="tiny-random", methods=["per_persona", "hybrid"], train=TRAIN,
                        ray=cluster.address), out)
    run = json.loads((out / "run.json").read_text())
    backend = json.loads(run["config_json"])["backend"]
    assert (backend["actors"], backend["nodes"]) == (2, 2)
    for method in ("per_persona", "hybrid"):
        summary = _assert_same(local_run, out, method)
        shards_ = json.loads(summary["details_json"])["ray_shards"]
        trained = [s for s in shards_ if s["phase"].endswith("train per persona") or s["phase"] == "per_persona: train"]
        assert len({s["node"] for s in trained}) == 2  # the personas really were split over both nodes
        assert summary["train_seconds"] > 0
    assert run["status"] == "done"


def test_a_killed_actor_is_restarted_and_its_shard_redone(cluster, tmp_path):
    """SIGKILL an actor halfway through its training shard: Ray restarts it (a new process), the shard is trained
    again from its seeds, and the run ends exactly as in one process."""
    import ray
    train = {**TRAIN, "epochs": 12}  # a shard long enough to be killed halfway
    local = tmp_path / "local"
    execute_run(RunSpec(data=DATA, model="tiny-random", methods=["per_persona"], train=train), local)
    killed, later = [], []

    def progress(phase, done, total, **info):
        if not ray.is_initialized() or "shards" not in info:
            return
        actor = ray.get_actor(f"pll-{run_id}-1", namespace=ray_backend.NAMESPACE)
        if phase == "per_persona: train" and not killed:
            state = ray.get(actor.progress.remote())
            if 0 < state["done"] < state["total"]:
                killed.append((ray.get(actor.where.remote())["pid"], state))
                os.kill(killed[0][0], signal.SIGKILL)
        elif phase == "per_persona: evaluate" and killed and not later:
            later.append(ray.get(actor.where.remote())["pid"])

    run_id = "ray-fault"
    out = tmp_path / "ray"
    execute_run(RunSpec(data=DATA, model="tiny-random", methods=["per_persona"], train=train, ray=cluster.address),
                out, progress=progress, run_id=run_id)
    assert killed, "the test never saw the shard halfway"
    assert later and later[0] != killed[0][0]  # a new actor process answered after the kill
    _assert_same(local, out, "per_persona")
    assert json.loads((out / "run.json").read_text())["status"] == "done"

def test_cancelling_the_job_ends_its_actors_and_frees_the_cluster(cluster, tmp_path):
    """A dashboard job on the cluster: its worker is the run's driver; cancel ends it, Ray ends the actors it
    owned, and every CPU of the cluster is free again."""
    import ray

    from engine.lab import jobs
    from tests.conftest import wait_for
    spec = RunSpec(data=DATA, model="tiny-random", methods=["per_persona"], ray=cluster.address,
                   train={**TRAIN, "epochs": 500})  # would train for many minutes
    job = jobs.submit(spec, jobs_dir=tmp_path / "jobs", store_file=tmp_path / "store.duckdb")
    wait_for(lambda: (jobs.job_info(job, tmp_path / "jobs")["progress"].get("shards")), timeout=240,
             what="the job's shards training on the cluster")
    ray.init(address=cluster.address, logging_level="ERROR")
    try:
        assert ray.available_resources().get("CPU", 0) == 0  # both actors busy
        assert jobs.cancel(job, tmp_path / "jobs", grace=3.0)
        assert jobs.job_info(job, tmp_path / "jobs")["status"] == "cancelled"
        wait_for(lambda: ray.available_resources().get("CPU", 0) == 2, timeout=60, what="the cluster's CPUs freed")
    finally:
        ray.shutdown()

def test_a_study_places_whole_runs_on_the_clusters_actors(cluster, tmp_path):
    """`study --ray`: each grid point runs whole on a free actor (both nodes busy at once), lands in the store with
    its coordinates, and equals the same point run in one process."""
    from engine import store
    from engine.lab.study import StudySpec, run_study
    path = tmp_path / "store.duckdb"
    nodes = []
    spec = StudySpec(data=DATA, vary={"personal_fraction": [0.25, 0.75]}, seeds=[0], methods=["per_persona"],
                     model="tiny-random", train=TRAIN, ray=cluster.address)
    study = run_study(spec, path, progress=lambda phase, done, total, **kw: nodes.append(kw.get("node")))
    runs = store.query("SELECT run_id, status, coords_json FROM runs WHERE study_id = ? ORDER BY run_id", [study],
                       path=path)
    assert runs.status.tolist() == ["done", "done"]
    assert [json.loads(c)["personal_fraction"] for c in runs.coords_json] == [0.25, 0.75]
    assert len(set(nodes)) == 2  # the two points ran on the two nodes
    local = tmp_path / "local"
    execute_run(dataclasses.replace(spec.points()[1][1], ray=None), local)  # the 0.75 point, in one process
    _, p_local, _ = _method(local, "per_persona")
    p_ray = pd.read_parquet(settings.runs_dir(path) / runs.run_id.iloc[1] / "methods" / "per_persona" / "predictions.parquet")
    assert p_local.prediction.tolist() == p_ray.prediction.tolist()

def test_no_cluster_at_the_address_is_a_clear_error_before_any_write(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RayUnavailable, match=r"no Ray cluster answers at '127\.0\.0\.1:9'"):
        execute_run(RunSpec(data=DATA, model="tiny-random", methods=["base"], ray="127.0.0.1:9"), out)
    assert not (out / "run.json").exists()


def test_ray_not_installed_is_a_clear_error_and_the_local_backend_still_runs(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if it were not installed
    with pytest.raises(RayUnavailable, match=r"Ray is not installed here: pip install 'ray=="):
        execute_run(RunSpec(data=DATA, model="tiny-random", methods=["base"], ray="auto"), tmp_path / "a")
    assert not (tmp_path / "a" / "run.json").exists()
    execute_run(RunSpec(data=DATA, model="tiny-random", methods=["base"]), tmp_path / "b")
    assert json.loads((tmp_path / "b" / "run.json").read_text())["status"] == "done"


def test_the_dashboard_launches_a_run_on_the_cluster(cluster, tmp_path, monkeypatch):
    """PLL_RAY_ADDRESS set: Launch offers the cluster, a click starts the run there, Jobs follows it to done and
    the stored run says where it ran."""
    from screenshots import browser_page, chromium_path, settle, start_server, stop_server
    if chromium_path() is None:
        pytest.fail("no chromium on PATH (.ci/run installs Debian's chromium)")
    import re

    from engine import store
    monkeypatch.setenv("PLL_RAY_ADDRESS", cluster.address)
    p, info = start_server(tmp_path)
    try:
        with browser_page() as pg:
            pg.goto(info["url"] + "/launch")
            pg.get_by_text("Dataset OK").wait_for()
            for label, value in (("personas", 4), ("train_per_persona", 2), ("val_per_persona", 1),
                                 ("test_per_persona", 1)):
                box = pg.get_by_label(label, exact=True)
                box.fill(str(value))
                box.press("Enter")
                settle(pg, 200)
            pg.get_by_text("Dataset OK: dialogue task, 4 personas").wait_for()
            pg.get_by_role("combobox", name=re.compile("Base model")).click()
            pg.get_by_role("option", name=re.compile("^tiny-random")).click()
            settle(pg)
            pg.get_by_text(f"Ray cluster at {cluster.address}").click()
            settle(pg)
            pg.get_by_text("Hyperparameters (LoRA and training)").click()
            for label, value in (("epochs", 1), ("max_new_tokens", 4)):
                box = pg.get_by_label(label, exact=True)
                box.fill(str(value))
                box.press("Enter")
                settle(pg, 200)
            pg.get_by_role("button", name="Start", exact=True).click()
            pg.get_by_text(re.compile(r"Started 1 job")).wait_for()
            pg.get_by_text(re.compile(r"· done ·")).first.wait_for(timeout=300_000)
            assert not pg.get_by_text(re.compile(r"· failed ·")).count()
        with store.connect(info["env"]["PLL_STORE"], read_only=True) as con:
            device, config = con.execute("SELECT device, config_json FROM runs").fetchone()
        assert device == "ray: 2 actors on 2 nodes"
        assert json.loads(config)["ray"] == cluster.address
    finally:
        stop_server(p, info)
