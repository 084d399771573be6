"""The `engine` CLI end to end on tiny-random: run into a temp store, and bad input that changes nothing."""
import json
import subprocess
import sys

import duckdb
import pytest

from tests.conftest import ROOT

SIM = "sim:personas=3,train_per_persona=4,val_per_persona=2,test_per_persona=2"


def engine(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=cwd or ROOT, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    store = d / "store.duckdb"
    p = engine("run", "--data", SIM, "--model", "tiny-random", "--methods", "base,unified", "--store", str(store),
               "--epochs", "1", "--seed", "7")
    assert p.returncode == 0, p.stderr
    return store, p.stdout.strip().splitlines()[-1]


def test_run_writes_every_persona_and_method(finished_run):
    store, run_id = finished_run
    con = duckdb.connect(str(store), read_only=True)
    run = con.execute("SELECT status, model, seed, n_personas, config_json FROM runs WHERE run_id = ?", [run_id]).fetchone()
    assert run[:4] == ("done", "tiny-random", 7, 3)
    config = json.loads(run[4])
    assert config["train"]["epochs"] == 1 and config["methods"] == ["base", "unified"]
    n = con.execute("SELECT method, count(*), min(n_test) FROM persona_results WHERE run_id = ? GROUP BY method "
                    "ORDER BY method", [run_id]).fetchall()
    assert [(m, c) for m, c, _ in n] == [("base", 3), ("unified", 3)]
    assert all(t >= 2 for _, _, t in n)
    scores = con.execute("SELECT min(score), max(score) FROM persona_results").fetchone()
    assert 0.0 <= scores[0] <= scores[1] <= 1.0
    preds = con.execute("SELECT count(*) FROM predictions WHERE run_id = ? AND method = 'unified'", [run_id]).fetchone()[0]
    assert preds == con.execute("SELECT sum(n_test) FROM persona_results WHERE run_id = ? AND method = 'unified'",
                                [run_id]).fetchone()[0]
    mr = con.execute("SELECT method, trainable_params, train_seconds FROM method_results WHERE run_id = ? ORDER BY method",
                     [run_id]).fetchall()
    assert mr[0][:2] == ("base", 0) and mr[1][0] == "unified" and mr[1][1] > 0 and mr[1][2] > 0
    # the profile map (minutes at 10k personas) is made only for runs whose methods read profiles: not this one
    personas = con.execute("SELECT profile, cluster, silhouette, umap_x, umap_y FROM personas WHERE run_id = ?",
                           [run_id]).df()
    assert len(personas) == 3 and personas.profile.notna().all()
    assert personas[["cluster", "silhouette", "umap_x", "umap_y"]].isna().all().all()
    assert con.execute("SELECT count(*) FROM cluster_k WHERE run_id = ?", [run_id]).fetchone()[0] == 0


def test_runs_lists_mean_and_std(finished_run):
    store, run_id = finished_run
    p = engine("runs", "--store", str(store))
    assert p.returncode == 0, p.stderr
    assert run_id in p.stdout and "unified" in p.stdout and "±" in p.stdout
    # the personalization figure beside personal / general, with the settings behind it, for methods and ceiling
    lines = [line for line in p.stdout.splitlines() if line.strip().startswith(("base", "unified", "persona-blind"))]
    assert len(lines) == 3 and all(" supplied " in line and " settings)" in line for line in lines), p.stdout


def test_runs_into_a_closed_pipe_ends_quietly(finished_run):
    """`engine runs | head`: the reader leaves early; no traceback, the exit status a SIGPIPE'd tool gives."""
    store, _ = finished_run
    p = subprocess.Popen([sys.executable, "-m", "engine", "runs", "--store", str(store)], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # before the first line is written: every write meets a closed pipe
    _, err = p.communicate(timeout=120)
    assert p.returncode == 141 and b"Traceback" not in err, err.decode()


def _assert_nothing_written(d):
    assert not (d / "store.duckdb").exists()
    assert not (d / "runs").exists()


def test_malformed_jsonl_exits_2_with_file_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"persona_id": "p1", "persona": "x", "messages": [{"role": "user", "text": "hi"}], "split": "train"}\n'
                   '{not json\n')
    p = engine("run", "--data", str(bad), "--model", "tiny-random", "--store", str(tmp_path / "store.duckdb"))
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert any(line.startswith(f"{bad}:1:") for line in lines)
    assert any(line.startswith(f"{bad}:2:") for line in lines)
    _assert_nothing_written(tmp_path)


@pytest.mark.parametrize("args, needle", [
    (["--lr", "-1"], "lr"),
    (["--epochs", "0"], "epochs"),
    (["--methods", "base,telepathy"], "telepathy"),
    (["--model", "no-such-model"], "no-such-model"),
    (["--data", "sim:personas=0"], "personas"),
    (["--data", "sim:colour=red"], "colour"),
])
def test_bad_arguments_exit_2_and_change_nothing(tmp_path, args, needle):
    base = ["run", "--data", SIM, "--model", "tiny-random", "--store", str(tmp_path / "store.duckdb")]
    p = engine(*base, *args)
    assert p.returncode == 2, p.stderr
    assert needle in p.stderr
    _assert_nothing_written(tmp_path)


def test_synth_writes_loadable_jsonl(tmp_path):
    out = tmp_path / "sim.jsonl"
    p = engine("synth", "--out", str(out), "--personas", "3", "--train-per-persona", "4", "--personal-fraction", "0.5")
    assert p.returncode == 0, p.stderr
    from engine.data.dataset import load_jsonl
    ds = load_jsonl(out)
    assert len(ds.personas) == 3 and ds.task == "dialogue"
    assert {e.kind for e in ds.examples} == {"personal", "general"}
    for kind in ("all", "personal", "general", "stated", "supplied"):
        assert f"persona-blind ceiling, {kind} test targets: action_f1 " in p.stderr, p.stderr
