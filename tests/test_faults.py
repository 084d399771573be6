"""Fault injection: workers, the dashboard, the CLI and a study killed, the store locked or foreign, result and job
files corrupt, truncated or deleted, a disk that fills up (under a worker and under a CLI run).

For each fault: no traceback reaches the user (polls return, the CLI prints one line, the Jobs page renders),
no committed result is lost, no half method lands in the store, the run and the job end in a truthful state,
and the dashboard keeps listing the other jobs. A healthy finished job (`lab["healthy"]`) shares the jobs
folder with every fault and must come through each one intact.
"""
import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from engine import store
from engine.lab import cli
from engine.lab import jobs, worker
from engine.lab.spec import RunSpec
from tests.conftest import open_page, wait_for

ROOT = Path(__file__).resolve().parent.parent
TINY = "sim:personas=3,train_per_persona=3,val_per_persona=1,test_per_persona=1"
LONGER = "sim:personas=4,train_per_persona=12,val_per_persona=1,test_per_persona=2"


def spec(data=TINY, methods=("base", "unified"), epochs=1):
    return RunSpec(data=data, model="tiny-random", methods=list(methods), device="cpu",
                   train={"epochs": epochs, "patience": 0, "max_new_tokens": 2, "batch_size": 2})  # patience 0: long jobs last


def run_worker_here(job_id, jobs_dir):
    """The worker in this process (its log to the job folder); returns its exit code."""
    old = signal.getsignal(signal.SIGTERM)
    try:
        with open(Path(jobs_dir) / job_id / "log.txt", "a") as log, contextlib.redirect_stdout(log):
            return worker.worker_main(job_id, jobs_dir)
    finally:
        signal.signal(signal.SIGTERM, old)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    d = tmp_path_factory.mktemp("faults")
    path, jd = str(d / "store.duckdb"), d / "jobs"
    healthy = jobs.submit(spec(), jobs_dir=jd, spawn=False)
    assert run_worker_here(healthy, jd) == 0
    jobs.poll(path, jd)
    yield {"dir": d, "store": path, "jobs": jd, "healthy": healthy,
           "healthy_run": jobs.job_info(healthy, jd)["run_id"]}
    for j in jobs.list_jobs(jd):
        if j["status"] in jobs.ACTIVE and not j.get("broken"):
            jobs.cancel(j["job_id"], jd, grace=1)


def healthy_intact(lab, polled=None):
    """The healthy job is listed as done and its run keeps both methods with every persona."""
    listed = {j["job_id"]: j for j in (polled or jobs.poll(lab["store"], lab["jobs"]))["jobs"]}
    assert listed[lab["healthy"]]["status"] == "done"
    rows = store.query("SELECT method, count(*) AS n FROM persona_results WHERE run_id = ? GROUP BY method "
                       "ORDER BY method", [lab["healthy_run"]], path=lab["store"])
    assert list(zip(rows.method, rows.n)) == [("base", 3), ("unified", 3)]
    return listed


def whole_methods(path, run_id, n_personas):
    """Every stored method of the run has all its rows (no half method): returns the methods."""
    m = store.query("SELECT method FROM method_results WHERE run_id = ?", [run_id], path=path)
    pr = store.query("SELECT method, count(*) AS n FROM persona_results WHERE run_id = ? GROUP BY method",
                     [run_id], path=path)
    assert dict(zip(pr.method, pr.n)) == {x: n_personas for x in m.method}
    return set(m.method)


def clone_job(lab, name):
    """A copy of the healthy job's folder under a new job and run id (results not yet ingested)."""
    src = lab["jobs"] / lab["healthy"]
    job_id = f"{lab['healthy'][:16]}-{name}"
    dst = lab["jobs"] / job_id
    shutil.copytree(src, dst)
    for marker in (".ingested.json", ".mirrored.json"):
        (dst / marker).unlink(missing_ok=True)
    run_id = f"run-{name}"
    for f, key in (("spec.json", "run_id"), ("status.json", "run_id"), ("results/run.json", "run_id")):
        obj = json.loads((dst / f).read_text())
        obj[key] = run_id
        if f == "status.json":
            obj["job_id"] = job_id
        if f == "results/run.json":
            obj["job_id"] = job_id
        (dst / f).write_text(json.dumps(obj))
    return job_id, dst, run_id


# ----------------------------------------------------------------------------- processes killed

def test_worker_killed_9(lab):
    j = jobs.submit(spec(LONGER, epochs=30), jobs_dir=lab["jobs"])
    d = lab["jobs"] / j
    wait_for(lambda: (d / "results" / "methods" / "base").exists(), what="base finished")
    jobs.poll(lab["store"], lab["jobs"])
    os.kill(jobs.job_info(j, lab["jobs"])["pid"], signal.SIGKILL)
    wait_for(lambda: jobs.job_info(j, lab["jobs"])["status"] == "failed", timeout=15, what="failed")
    listed = healthy_intact(lab)
    assert listed[j]["status"] == "failed" and "worker died" in listed[j]["error"]
    run_id = listed[j]["run_id"]
    assert whole_methods(lab["store"], run_id, 4) == {"base"}  # the finished method kept, no half unified
    # the job failed; its run was cut short (interrupted), not failed by its own work
    assert store.query("SELECT status FROM runs WHERE run_id = ?", [run_id], path=lab["store"]).status[0] == \
        "interrupted"
    assert json.loads((d / "results" / "run.json").read_text())["status"] == "interrupted"


POLLER = textwrap.dedent("""
    import sys, time
    from engine.lab import jobs
    while True:
        jobs.poll(sys.argv[1], sys.argv[2])
        time.sleep(0.05)
""")


def test_dashboard_killed_9_while_it_ingests(lab):
    """The dashboard's only store writer is its poll; it is killed -9 again and again while a job's methods
    are ingested, then a new one takes over: every method lands whole, the run ends done."""
    j = jobs.submit(spec(methods=("base", "unified", "per_persona"), epochs=2), jobs_dir=lab["jobs"])
    assert jobs.job_info(j, lab["jobs"])["status"] == "queued"  # a worker still starting is alive (issue 20)
    kills = 0
    while jobs.job_info(j, lab["jobs"])["status"] in jobs.ACTIVE:
        p = subprocess.Popen([sys.executable, "-c", POLLER, lab["store"], str(lab["jobs"])], cwd=ROOT)
        time.sleep(1.5 + (kills % 3) * 0.7)
        p.kill()
        p.wait()
        kills += 1
    assert kills >= 3, (jobs.job_info(j, lab["jobs"]), jobs.log_tail(j, lab["jobs"]))
    polled = jobs.poll(lab["store"], lab["jobs"])  # the restarted dashboard
    listed = healthy_intact(lab, polled)
    assert listed[j]["status"] == "done" and "poll_error" not in listed[j]
    run_id = listed[j]["run_id"]
    assert whole_methods(lab["store"], run_id, 3) == {"base", "unified", "per_persona"}
    assert store.query("SELECT status FROM runs WHERE run_id = ?", [run_id], path=lab["store"]).status[0] == "done"


# ----------------------------------------------------------------------------- the store locked

HOLD = textwrap.dedent("""
    import sys, time, duckdb
    con = duckdb.connect(sys.argv[1])
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    con.close()
""")


@contextlib.contextmanager
def store_locked(path, seconds):
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    try:
        yield p
    finally:
        p.kill()
        p.wait()


def test_store_locked_15s_while_the_dashboard_polls(lab):
    j, d, run_id = clone_job(lab, "locked")
    with store_locked(lab["store"], 15):
        t0 = time.monotonic()
        results = []
        threads = [threading.Thread(target=lambda: results.append(jobs.poll(lab["store"], lab["jobs"])))
                   for _ in range(2)]  # two open tabs
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        took = time.monotonic() - t0
        assert all(r["busy"] and not r["store_error"] for r in results)
        assert all({lab["healthy"], j} <= {x["job_id"] for x in r["jobs"]} for r in results)  # still listed
    assert took < 6, took  # not 15 s per job
    polled = jobs.poll(lab["store"], lab["jobs"])  # lock gone: ingested now
    assert j in {k for k in polled["ingested"]} and not polled["busy"]
    assert whole_methods(lab["store"], run_id, 3) == {"base", "unified"}


def test_store_locked_15s_during_a_cli_run(lab, tmp_path, capsys, monkeypatch):
    """Another process takes the store for 16 s just as the run ingests its first method (past the 15 s the
    store waits for a lock): the run goes on training and the results land once the store is free."""
    db = tmp_path / "store.duckdb"
    store.query("SELECT 1", path=db)
    real, holders = store.ingest, []

    def ingest(*a, **kw):
        if not holders:
            holders.append(subprocess.Popen([sys.executable, "-c", HOLD, str(db), "16"], stdout=subprocess.PIPE,
                                            text=True))
            assert holders[0].stdout.readline().strip() == "locked"
        return real(*a, **kw)
    monkeypatch.setattr(store, "ingest", ingest)
    try:
        code = cli.main(["run", "--data", TINY, "--model", "tiny-random", "--methods", "base,unified",
                         "--epochs", "1", "--max-new-tokens", "2", "--store", str(db)])
    finally:
        for h in holders:
            h.kill()
            h.wait()
    err = capsys.readouterr().err
    assert code == 0, err
    assert "Traceback" not in err
    run_id = store.queries.runs(db).run_id[0]
    assert whole_methods(db, run_id, 3) == {"base", "unified"}  # unified trained although the store was locked
    assert store.queries.runs(db).status[0] == "done"


def test_store_locked_past_the_end_of_a_cli_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "FINAL_INGEST_TIMEOUT_S", 1.0)
    db = tmp_path / "store.duckdb"
    store.query("SELECT 1", path=db)
    with store_locked(db, 120):
        before = db.read_bytes()
        code = cli.main(["run", "--data", TINY, "--model", "tiny-random", "--methods", "base,unified",
                         "--epochs", "1", "--max-new-tokens", "2", "--store", str(db)])
        err = capsys.readouterr().err
        assert code == cli.STORE_NOT_WRITTEN, err
        assert "Traceback" not in err and "python -m engine ingest" in err
        assert db.read_bytes() == before
    results = next((tmp_path / "runs").iterdir())
    assert cli.main(["ingest", str(results), "--store", str(db)]) == 0  # the printed command
    assert whole_methods(db, results.name, 3) == {"base", "unified"}
    assert store.queries.runs(db).status[0] == "done"


def test_cli_run_terminated(tmp_path):
    db = tmp_path / "store.duckdb"
    p = subprocess.Popen([sys.executable, "-m", "engine", "run", "--data", LONGER, "--model", "tiny-random",
                          "--methods", "base,unified", "--epochs", "40", "--patience", "0", "--max-new-tokens", "2", "--store", str(db)],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    def base_ingested():
        try:
            con = duckdb.connect(str(db), read_only=True)
        except duckdb.Error:  # not there yet, or the run holds it
            return False
        try:
            return con.execute("SELECT count(*) FROM method_results").fetchone()[0] > 0
        except duckdb.Error:
            return False
        finally:
            con.close()
    wait_for(base_ingested, timeout=120, what="base ingested")
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "Traceback" not in err and "cancelled" in err
    run = store.queries.runs(db).iloc[0]
    assert run.status == "cancelled"
    assert whole_methods(db, run.run_id, 4) == {"base"}
    assert json.loads((tmp_path / "runs" / run.run_id / "run.json").read_text())["status"] == "cancelled"


def _ingested(db, n=1):
    """Whether the store (a file another process writes) holds at least n finished methods yet."""
    try:
        con = duckdb.connect(str(db), read_only=True)
    except duckdb.Error:  # not there yet, or the run holds it
        return False
    try:
        return con.execute("SELECT count(*) FROM method_results").fetchone()[0] >= n
    except duckdb.Error:
        return False
    finally:
        con.close()


def test_cli_run_killed_9_is_interrupted_not_running(tmp_path):
    """issue: after `kill -9` of a CLI run its finished method was kept but the run showed `running` forever;
    `ingest` did not fix it and no command could. Now `engine runs` finds its process gone (pid and process start
    recorded in the run) and stores and shows it `interrupted` with why; `ingest` of its folder keeps it so."""
    db = tmp_path / "store.duckdb"
    p = subprocess.Popen([sys.executable, "-m", "engine", "run", "--data", LONGER, "--model", "tiny-random",
                          "--methods", "base,unified", "--epochs", "40", "--patience", "0", "--max-new-tokens", "2",
                          "--store", str(db)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: _ingested(db), timeout=120, what="base ingested")
    p.kill()
    p.wait()
    listed = subprocess.run([sys.executable, "-m", "engine", "runs", "--store", str(db)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    head = listed.stdout.splitlines()[0]
    assert "interrupted" in head and "running" not in head, listed.stdout
    assert f"interrupted: its process (pid {p.pid} on" in listed.stdout
    run = store.queries.runs(db).iloc[0]
    assert run.status == "interrupted" and whole_methods(db, run.run_id, 4) == {"base"}
    folder = tmp_path / "runs" / run.run_id
    assert cli.main(["ingest", str(folder), "--store", str(db)]) == 0
    assert store.queries.runs(db).status[0] == "interrupted"
    assert json.loads((folder / "run.json").read_text())["status"] == "interrupted"


DISK_FILLS = textwrap.dedent("""
    # `python -m engine run ...` on a disk that fills up once the first method is stored: unified's result files,
    # the run file and the store's next transaction all meet ENOSPC, as on the issue's 2 MB tmpfs
    import errno, sys
    from pathlib import Path
    import duckdb, pandas as pd
    from engine.store import results
    from engine.lab import cli
    full = []
    real_parquet, real_insert, real_write = pd.DataFrame.to_parquet, results._insert, Path.write_text

    def to_parquet(self, path, *a, **kw):
        if "unified" in str(path) or full:
            full.append(path)
            real_parquet(self.head(1), path, *a, **kw)  # part of the file, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_parquet(self, path, *a, **kw)

    def insert(*a, **kw):
        if full:
            raise duckdb.IOException('Could not write file "store.duckdb.wal": No space left on device')
        return real_insert(*a, **kw)

    def write_text(self, *a, **kw):
        if full:
            real_write(self, "{", *a[1:], **kw)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, *a, **kw)
    pd.DataFrame.to_parquet, results._insert, Path.write_text = to_parquet, insert, write_text
    sys.exit(cli.main(sys.argv[1:]))
""")


def test_disk_full_during_a_cli_run(tmp_path):
    """issue: on a 2 MB tmpfs the run exited 3 ("run `engine ingest` when the store is free"), ingest then ingested
    nothing, the run stayed `running` and a `.run.json.tmp` was left. Now: exit 1 with one error line that says the
    disk is full and how to land the kept results once there is space; no temp file is left; the run, whose process
    could not record its outcome, is `interrupted` for the next command (finished methods kept)."""
    db = tmp_path / "store.duckdb"
    done = subprocess.run([sys.executable, "-c", DISK_FILLS, "run", "--data", TINY, "--model", "tiny-random",
                           "--methods", "base,unified", "--epochs", "1", "--max-new-tokens", "2", "--store", str(db)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    errors = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and "the disk is full" in errors[0] and "python -m engine ingest" in errors[0]
    assert "when the store is free" not in done.stderr and "Traceback" not in done.stderr
    assert [p.name for p in (tmp_path / "runs").rglob("*") if ".tmp" in p.name] == []
    run_id = store.queries.runs(db).run_id[0]
    assert store.queries.runs(db).status[0] == "running"  # what the store last heard; its process is gone now
    assert cli.main(["runs", "--store", str(db)]) == 0
    assert cli.main(["ingest", str(tmp_path / "runs" / run_id), "--store", str(db)]) == 0  # the space is back
    assert store.queries.runs(db).status[0] == "interrupted"
    assert whole_methods(db, run_id, 3) == {"base"}


def test_study_terminated_leaves_no_run_running(tmp_path):
    """issue: SIGTERM to a study left the study `cancelled` but its interrupted run `running` until resumed. The
    run's own outcome (cancelled, finished methods kept) lands as the study stops."""
    db = tmp_path / "store.duckdb"
    p = subprocess.Popen([sys.executable, "-m", "engine", "study", "--data", LONGER, "--vary",
                          "personal_fraction=0,0.5", "--methods", "base,unified", "--model", "tiny-random",
                          "--epochs", "40", "--patience", "0", "--max-new-tokens", "2", "--store", str(db)],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: _ingested(db), timeout=120, what="the first run's base ingested")
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "Traceback" not in err and "--resume" in err
    study = store.queries.studies(db).iloc[0]
    runs = store.queries.runs(db)
    assert study.status == "cancelled" and list(runs.status) == ["cancelled"]
    assert whole_methods(db, runs.run_id[0], 4) == {"base"}


# ----------------------------------------------------------------------------- result and job files

def test_truncated_method_file(lab):
    j, d, run_id = clone_job(lab, "truncated")
    f = d / "results" / "methods" / "unified" / "predictions.parquet"
    f.write_bytes(f.read_bytes()[:100])
    polled = jobs.poll(lab["store"], lab["jobs"])
    listed = healthy_intact(lab, polled)
    assert "methods/unified" in listed[j]["poll_error"] and "unreadable" in listed[j]["poll_error"]
    assert whole_methods(lab["store"], run_id, 3) == {"base"}  # the good method landed, the bad one not at all
    again = {x["job_id"]: x for x in jobs.poll(lab["store"], lab["jobs"])["jobs"]}
    assert "methods/unified" in again[j]["poll_error"]  # still shown on the next poll


def test_corrupt_run_file(lab):
    j, d, run_id = clone_job(lab, "corruptrun")
    (d / "results" / "run.json").write_text('{"run_id": ')
    listed = healthy_intact(lab)
    assert "run.json: unreadable" in listed[j]["poll_error"]
    assert store.query("SELECT count(*) AS n FROM runs WHERE run_id = ?", [run_id], path=lab["store"]).n[0] == 0


def test_foreign_result_files(lab):
    """A method file with a column the store does not have, another with a value of the wrong type."""
    j, d, run_id = clone_job(lab, "foreign")
    summary = d / "results" / "methods" / "unified" / "method.json"
    summary.write_text(json.dumps({**json.loads(summary.read_text()), "colour": "blue"}))
    pr = d / "results" / "methods" / "base" / "persona_results.parquet"
    pd.read_parquet(pr).assign(n_test="many").to_parquet(pr)
    listed = healthy_intact(lab)
    assert "methods/unified" in listed[j]["poll_error"] and "methods/base" in listed[j]["poll_error"]
    assert whole_methods(lab["store"], run_id, 3) == set()
    assert store.query("SELECT status FROM runs WHERE run_id = ?", [run_id], path=lab["store"]).status[0] == "done"


@pytest.mark.parametrize("name, status", [
    ("nostatus", {"job_id": "x"}),
    ("types", {"status": "running", "created_at": 5, "pid": "x", "colour": 1}),  # wrong types, extra field
    ("truncated", "[1, 2"),
])
def test_broken_status_file(lab, name, status):
    j, d, run_id = clone_job(lab, f"status-{name}")
    (d / "status.json").write_text(status if isinstance(status, str) else json.dumps(status))
    (d / "progress.json").write_text('{"fraction": "most", "phase": 7}')
    polled = jobs.poll(lab["store"], lab["jobs"])
    listed = healthy_intact(lab, polled)
    assert listed[j]["status"] == "failed"  # no live worker: it cannot finish
    assert not polled["store_error"] and not polled["busy"]
    jt = store.query("SELECT status FROM jobs WHERE job_id = ?", [j], path=lab["store"])
    assert list(jt.status) == ["failed"]
    assert jobs.job_info(j, lab["jobs"])["status"] == "failed"  # persisted: it stays failed


def test_garbage_progress_of_a_starting_job(lab, monkeypatch):
    """A job that has just started (no worker pid yet) with a progress.json of the wrong types: Jobs renders it."""
    j, d, run_id = clone_job(lab, "progress")
    (d / "status.json").write_text(json.dumps({"job_id": j, "status": "queued", "run_id": run_id, "pid": None,
                                               "created_at": jobs._now()}))
    (d / "progress.json").write_text(json.dumps({"phase": 7, "fraction": "most", "eta_seconds": "soon",
                                                 "done": [1], "total": None, "methods_total": 2}))
    at = open_page(monkeypatch, lab["store"], lab["jobs"], "jobs")
    table = at.dataframe[0].value
    assert table.set_index("job").status[j] == "queued" and lab["healthy"] in set(table.job)
    (d / "status.json").write_text(json.dumps({"job_id": j, "status": "cancelled", "run_id": run_id}))


def test_job_folder_deleted_while_it_runs(lab):
    j = jobs.submit(spec(LONGER, epochs=30), jobs_dir=lab["jobs"])
    d = lab["jobs"] / j
    wait_for(lambda: (d / "results" / "methods" / "base").exists(), what="base finished")
    jobs.poll(lab["store"], lab["jobs"])
    pid = jobs.job_info(j, lab["jobs"])["pid"]
    run_id = jobs.job_info(j, lab["jobs"])["run_id"]
    shutil.rmtree(d)
    wait_for(lambda: not jobs.pid_alive(pid), timeout=60, what="worker stopped")
    polled = jobs.poll(lab["store"], lab["jobs"])
    listed = healthy_intact(lab, polled)
    if j in listed:  # the worker wrote its final status into a new folder
        assert listed[j]["status"] == "cancelled" and "deleted" in listed[j]["error"]
    run = store.query("SELECT status FROM runs WHERE run_id = ?", [run_id], path=lab["store"]).status[0]
    job = store.query("SELECT status, error FROM jobs WHERE job_id = ?", [j], path=lab["store"]).iloc[0]
    assert run in ("cancelled", "failed") and job.status in ("cancelled", "failed") and "deleted" in job.error
    assert "base" in whole_methods(lab["store"], run_id, 4)  # committed before the deletion: kept


def test_jobs_folder_deleted_with_a_dead_job_in_it(tmp_path):
    path, jd = str(tmp_path / "store.duckdb"), tmp_path / "jobs"
    j = jobs.submit(spec(LONGER, epochs=30), jobs_dir=jd)
    wait_for(lambda: (jd / j / "results" / "methods" / "base").exists(), what="base finished")
    jobs.poll(path, jd)
    pid = jobs.job_info(j, jd)["pid"]
    os.killpg(os.getpgid(pid), signal.SIGKILL)
    wait_for(lambda: not jobs.pid_alive(pid), timeout=15, what="worker gone")
    shutil.rmtree(jd)
    polled = jobs.poll(path, jd)
    assert polled["jobs"] == [] and not polled["busy"]
    job = store.query("SELECT status, error, run_id FROM jobs", path=path).iloc[0]
    assert job.status == "failed" and "deleted" in job.error
    assert store.query("SELECT status FROM runs WHERE run_id = ?", [job.run_id], path=path).status[0] == "failed"
    assert whole_methods(path, job.run_id, 4) == {"base"}


# ----------------------------------------------------------------------------- the store itself

@pytest.mark.parametrize("kind", ["foreign DuckDB", "not DuckDB", "a folder"])
def test_store_that_cannot_be_used(lab, tmp_path, kind):
    bad = tmp_path / "bad.duckdb"
    if kind == "foreign DuckDB":
        con = duckdb.connect(str(bad))
        con.execute("CREATE TABLE orders (id INTEGER)")
        con.close()
    elif kind == "not DuckDB":
        bad.write_text("hello\n")
    else:
        bad.mkdir()
    before = bad.read_bytes() if bad.is_file() else None
    j, d, run_id = clone_job(lab, f"store{kind[:3]}")
    polled = jobs.poll(str(bad), lab["jobs"])
    assert polled["store_error"] and str(bad) in polled["store_error"] and not polled["busy"]
    assert {lab["healthy"], j} <= {x["job_id"] for x in polled["jobs"]}
    assert (bad.read_bytes() if bad.is_file() else None) == before  # nothing written into it
    assert jobs.poll(lab["store"], lab["jobs"])["ingested"].get(j) == ["base", "unified"]  # the real store: fine


def test_disk_full_while_a_worker_writes_a_method(lab, monkeypatch):
    j = jobs.submit(spec(methods=("base", "unified")), jobs_dir=lab["jobs"], spawn=False)
    real = pd.DataFrame.to_parquet

    def to_parquet(self, path, *a, **kw):
        if "unified" in str(path):
            real(self.head(1), path, *a, **kw)  # part of the file, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, path, *a, **kw)
    monkeypatch.setattr(pd.DataFrame, "to_parquet", to_parquet)
    assert run_worker_here(j, lab["jobs"]) == 1
    monkeypatch.undo()
    listed = healthy_intact(lab)
    assert listed[j]["status"] == "failed" and "No space left" in listed[j]["error"]
    run_id = listed[j]["run_id"]
    assert whole_methods(lab["store"], run_id, 3) == {"base"}  # no half unified
    assert store.query("SELECT status FROM runs WHERE run_id = ?", [run_id], path=lab["store"]).status[0] == "failed"


def test_jobs_page_after_every_fault(lab, monkeypatch):
    """Whatever the faults left in the jobs folder, the Jobs page renders and lists every job."""
    at = open_page(monkeypatch, lab["store"], lab["jobs"], "jobs")
    table = at.dataframe[0].value
    folders = {p.name for p in lab["jobs"].iterdir() if p.is_dir() and not p.name.startswith(".")}
    assert set(table.job) == folders and lab["healthy"] in set(table.job)
    warnings = "\n".join(str(w.value) for w in at.warning)
    assert "could not be stored" in warnings
