"""Job lifecycle with real detached workers (tiny-random model, a tiny simulator dataset).

start -> progress -> done -> ingested; a second job on the same device waits; the store is read in a loop
by another process while poll() ingests; cancel ends the process group; kill -9 -> failed with the log's
end, finished methods kept; a bad spec raises and writes nothing.
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from engine import store
from engine.lab import jobs
from engine.data.dataset import DataError
from engine.models.loading import ModelError
from engine.lab.spec import RunSpec
from engine.training.config import ConfigError
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parent.parent
TINY = "sim:personas=3,train_per_persona=3,val_per_persona=1,test_per_persona=1"
LONGER = "sim:personas=4,train_per_persona=12,val_per_persona=1,test_per_persona=2"


def spec(data=TINY, methods=("base", "unified"), epochs=1, **kw):
    return RunSpec(data=data, model="tiny-random", methods=list(methods), device="cpu",
                   train={"epochs": epochs, "patience": 0, "max_new_tokens": 4, "batch_size": 2}, **kw)  # patience 0: long jobs last


@pytest.fixture
def env(tmp_path, monkeypatch):
    s, j = tmp_path / "store.duckdb", tmp_path / "jobs"
    monkeypatch.setenv("PLL_STORE", str(s))
    monkeypatch.setenv("PLL_JOBS", str(j))
    yield {"store": str(s), "jobs": j}
    for job in jobs.list_jobs(j):  # never leave a worker behind
        if job["status"] in jobs.ACTIVE:
            jobs.cancel(job["job_id"], j, grace=1)


def info(env, job_id):
    return jobs.job_info(job_id, env["jobs"])


def group_gone(pgid):
    try:
        jobs._reap()
        os.killpg(pgid, 0)
        return False
    except ProcessLookupError:
        return True


READER = textwrap.dedent("""
    import sys, time
    from engine import store
    path, stop = sys.argv[1], sys.argv[2]
    import os
    n = errors = 0
    best = 0
    while not os.path.exists(stop):
        try:
            df = store.query("SELECT count(*) AS n FROM persona_results", path=path)
            rows = int(df.n.iloc[0])
            assert rows >= best, f"rows went back from {best} to {rows}"
            best = rows
            n += 1
        except Exception as e:
            errors += 1
            print(f"ERROR {type(e).__name__}: {e}", flush=True)
        time.sleep(0.01)
    print(f"READS {n} ERRORS {errors} MAXROWS {best}", flush=True)
""")


@pytest.mark.slow
def test_lifecycle_queue_and_concurrent_reads(env, tmp_path):
    stop = tmp_path / "stop"
    store.query("SELECT 1", path=env["store"])  # create the store
    reader = subprocess.Popen([sys.executable, "-c", READER, env["store"], str(stop)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        a = jobs.submit(spec(name="first"), jobs_dir=env["jobs"])
        b = jobs.submit(spec(name="second", seed=1), jobs_dir=env["jobs"])
        d = env["jobs"] / a
        assert json.loads((d / "status.json").read_text())["status"] == "queued"
        assert (d / "spec.json").exists()

        wait_for(lambda: info(env, a)["status"] == "running", what="first job running")
        # the second job waits for the cpu while the first holds it
        seen_waiting = False
        while info(env, a)["status"] == "running":
            jb = info(env, b)
            assert jb["status"] == "queued", jb
            seen_waiting = seen_waiting or "waiting for cpu" in jobs.log_tail(b, env["jobs"])
            jobs.poll(env["store"], env["jobs"])
            time.sleep(0.2)
        assert seen_waiting
        progress = json.loads((d / "progress.json").read_text())
        assert progress["fraction"] == 1.0 and "updated_at" in progress and "eta_seconds" in progress

        assert info(env, a)["status"] == "done"
        wait_for(lambda: info(env, b)["status"] in jobs.FINISHED, what="second job done")
        assert info(env, b)["status"] == "done"
        out = jobs.poll(env["store"], env["jobs"])
        assert not out["busy"]
    finally:
        stop.touch()
        log, _ = reader.communicate(timeout=30)

    assert "ERRORS 0 " in log and "ERROR " not in log, log
    reads = int(log.split("READS ")[1].split()[0])
    assert reads > 50, log
    runs = store.queries.runs(env["store"]).set_index("job_id")
    assert set(runs.index) == {a, b}
    assert (runs.status == "done").all()
    m = store.queries.method_results(path=env["store"])
    assert len(m) == 4 and set(m.method) == {"base", "unified"}
    assert len(store.queries.persona_results(path=env["store"])) == 4 * 3
    jt = store.query("SELECT * FROM jobs ORDER BY created_at", path=env["store"])
    assert list(jt.job_id) == [a, b] and (jt.status == "done").all() and (jt.progress == 1.0).all()
    # the first job started before the second one
    sa, sb = (json.loads((env["jobs"] / x / "status.json").read_text()) for x in (a, b))
    assert sa["finished_at"] <= sb["started_at"]
    # ingest is idempotent: polling again adds nothing
    assert jobs.poll(env["store"], env["jobs"])["ingested"] == {}


@pytest.mark.slow
def test_cancel_ends_process_group(env):
    j = jobs.submit(spec(LONGER, methods=("unified", "per_persona"), epochs=20), jobs_dir=env["jobs"])
    wait_for(lambda: (info(env, j)["progress"] or {}).get("phase", "").startswith("unified"),
             what="training started")
    st = info(env, j)
    pgid = st["pgid"]
    assert jobs.cancel(j, env["jobs"], grace=5)
    assert info(env, j)["status"] == "cancelled"
    wait_for(lambda: group_gone(pgid), timeout=10, what="process group gone")
    jobs.poll(env["store"], env["jobs"])
    runs = store.queries.runs(env["store"])
    assert list(runs.status) == ["cancelled"]
    jt = store.query("SELECT status FROM jobs", path=env["store"])
    assert list(jt.status) == ["cancelled"]
    assert not jobs.cancel(j, env["jobs"])  # already finished

    # retry: the same spec as a new job
    k = jobs.retry(j, env["jobs"])
    assert k != j
    saved = [json.loads((env["jobs"] / x / "spec.json").read_text())["spec"] for x in (j, k)]
    assert saved[0] == saved[1]
    jobs.cancel(k, env["jobs"], grace=1)


@pytest.mark.slow
def test_crash_is_failed_with_log_tail_and_keeps_finished_methods(env):
    j = jobs.submit(spec(LONGER, methods=("base", "unified"), epochs=20), jobs_dir=env["jobs"])
    d = env["jobs"] / j
    wait_for(lambda: (d / "results" / "methods" / "base").exists(), what="base finished")
    pid = info(env, j)["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: info(env, j)["status"] == "failed", timeout=10, what="failed status")
    out = jobs.poll(env["store"], env["jobs"])
    job = next(x for x in out["jobs"] if x["job_id"] == j)
    assert job["status"] == "failed"
    assert "worker died" in job["error"] and "end of log" in job["error"] and "base" in job["error"]
    persisted = json.loads((d / "status.json").read_text())
    assert persisted["status"] == "failed"
    runs = store.queries.runs(env["store"])
    assert list(runs.status) == ["interrupted"]  # the job failed; its run was cut short, not failed by its own work
    assert "worker died" in runs.error[0] and "finished methods are kept" in runs.error[0]
    m = store.queries.method_results(path=env["store"])
    assert list(m.method) == ["base"]  # the finished method kept its results
    jt = store.query("SELECT status, error FROM jobs", path=env["store"])
    assert jt.status[0] == "failed" and "worker died" in jt.error[0]


def test_bad_spec_raises_and_writes_nothing(env, tmp_path):
    with pytest.raises(ConfigError, match="unknown method"):
        jobs.submit(spec(methods=("base", "nonsense")), jobs_dir=env["jobs"])
    with pytest.raises(ConfigError, match="lr"):
        jobs.submit(RunSpec(data=TINY, model="tiny-random", methods=["base"], train={"lr": 5}), jobs_dir=env["jobs"])
    with pytest.raises(ModelError, match="unknown model"):
        jobs.submit(RunSpec(data=TINY, model="no-such-model", methods=["base"]), jobs_dir=env["jobs"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"persona_id": "p1", "persona": "x", "messages": []}\nnot json\n')
    with pytest.raises(DataError) as e:
        jobs.submit(RunSpec(data=str(bad), model="tiny-random", methods=["base"]), jobs_dir=env["jobs"])
    assert any(p.startswith(f"{bad}:2:") for p in e.value.problems)
    with pytest.raises(ValueError, match="personas"):
        jobs.submit(RunSpec(data="sim:personas=0", model="tiny-random", methods=["base"]), jobs_dir=env["jobs"])
    assert not env["jobs"].exists() or not any(env["jobs"].iterdir())
    assert jobs.list_jobs(env["jobs"]) == []
    assert jobs.poll(env["store"], env["jobs"])["jobs"] == []


def test_cancelled_before_the_worker_starts_never_runs(env):
    j = jobs.submit(spec(), jobs_dir=env["jobs"], spawn=False)
    assert jobs.cancel(j, env["jobs"])
    assert info(env, j)["status"] == "cancelled"
    r = subprocess.run([sys.executable, "-m", "engine", "worker", j, "--jobs-dir", str(env["jobs"])], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert info(env, j)["status"] == "cancelled"
    assert not (env["jobs"] / j / "results").exists()
