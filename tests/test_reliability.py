"""Issue 20's findings that are more than a one-line bad input (those are cases of tests/test_bad_inputs.py; the
process faults are in tests/test_faults.py): whose file a store is and what may write it, what reads and ingests
may change, who runs a run and whether that process lives, files import refuses at once, uploads validated without
copies in memory, and what a run says when the disk fills up or the store is found damaged.

Where an item is a judgment call, the test's docstring says what was chosen and why.
"""
import errno
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
import tracemalloc
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pytest

from engine import store
from engine.lab import cli, jobs, paths
from engine.lab.runner import execute_run
from engine.lab.spec import RunSpec
from tests.conftest import open_page

ROOT = Path(__file__).resolve().parent.parent
SIM = "sim:personas=3,train_per_persona=3,val_per_persona=1,test_per_persona=1"
QUICK = ["--model", "tiny-random", "--epochs", "1", "--max-new-tokens", "2"]
# the first version of the lab's schema (commit 5b95193): a store made then has these tables and no marker
FIRST_SCHEMA = """
CREATE TABLE runs (run_id VARCHAR PRIMARY KEY, created_at TIMESTAMP, finished_at TIMESTAMP, name VARCHAR,
    status VARCHAR, dataset VARCHAR, dataset_hash VARCHAR, task VARCHAR, n_personas INTEGER, model VARCHAR,
    device VARCHAR, seed INTEGER, methods VARCHAR, config_json VARCHAR, error VARCHAR, job_id VARCHAR,
    artifacts_dir VARCHAR);
CREATE TABLE method_results (run_id VARCHAR, method VARCHAR, train_seconds DOUBLE, eval_seconds DOUBLE,
    peak_mem_mb DOUBLE, trainable_params BIGINT, n_adapters INTEGER, device VARCHAR, n_personas INTEGER,
    mean_score DOUBLE, train_tokens BIGINT, tokens_per_second DOUBLE, final_loss DOUBLE, details_json VARCHAR,
    PRIMARY KEY (run_id, method));
CREATE TABLE persona_results (run_id VARCHAR, method VARCHAR, persona_id VARCHAR, n_test INTEGER, score DOUBLE,
    embedding_similarity DOUBLE, device_precision DOUBLE, numerical_precision DOUBLE, param_f1 DOUBLE,
    accuracy DOUBLE, PRIMARY KEY (run_id, method, persona_id));
CREATE TABLE predictions (run_id VARCHAR, method VARCHAR, persona_id VARCHAR, example_id VARCHAR, kind VARCHAR,
    context VARCHAR, reference VARCHAR, prediction VARCHAR, score DOUBLE, embedding_similarity DOUBLE,
    device_precision DOUBLE, numerical_precision DOUBLE, param_f1 DOUBLE, accuracy DOUBLE);
CREATE TABLE personas (run_id VARCHAR, persona_id VARCHAR, profile VARCHAR, n_train INTEGER, n_val INTEGER,
    n_test INTEGER, cluster INTEGER, umap_x DOUBLE, umap_y DOUBLE, silhouette DOUBLE, PRIMARY KEY (run_id, persona_id));
"""
RESULTS_CSV = "persona_id,score\np1,0.5\np2,0.7\n"


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def quick_run(tmp_path, db, capsys=None) -> str:
    assert cli.main(["run", "--data", SIM, "--methods", "base", "--store", str(db), *QUICK]) == 0
    if capsys:
        capsys.readouterr()
    return store.queries.runs(db).run_id[0]


# ----------------------------------------------------------------------------- the store is ours or untouched

def test_another_programs_store_with_a_runs_table_is_refused_untouched_by_every_writer(tmp_path, capsys):
    """issue: `engine run --store other.duckdb` (a DuckDB file with a `runs` table) trained, then failed, and the
    database gained 10 tables and 3 columns. Rule: a DuckDB file with tables is the lab's when it carries the lab's
    marker (lab_meta), or, made before the marker, every table and column of the lab's first store (runs,
    method_results, persona_results); a `runs` table alone is not enough. Every writer refuses anything else
    before writing: the file stays byte for byte (and no WAL appears)."""
    other = tmp_path / "other.duckdb"
    con = duckdb.connect(str(other))
    con.execute("CREATE TABLE runs (run_id VARCHAR, status VARCHAR, note VARCHAR)")  # even with two of our columns
    con.execute("INSERT INTO runs VALUES ('r1', 'done', 'mine')")
    con.close()
    before = sha(other)
    (tmp_path / "r.csv").write_text(RESULTS_CSV)
    assert cli.main(["import", str(tmp_path / "r.csv"), "--store", str(other)]) == 2
    assert cli.main(["run", "--data", SIM, "--methods", "base", "--store", str(other), *QUICK]) == 2
    assert "another program" in capsys.readouterr().err
    with pytest.raises(store.StoreError, match="another program"):
        with store.connect(other):
            pass
    polled = jobs.poll(str(other), tmp_path / "jobs")
    assert "another program" in polled["store_error"] or polled["jobs"] == []
    assert sha(other) == before and not Path(str(other) + ".wal").exists()
    assert not (tmp_path / "runs").exists()


def test_an_earlier_versions_store_is_migrated_never_refused(tmp_path, capsys):
    """A store made before the marker (the first version's tables, a run in it): `runs` lists its run, the first
    write gives it the marker, the current schema version and the tables it lacks; its rows are kept."""
    db = tmp_path / "old.duckdb"
    con = duckdb.connect(str(db))
    con.execute(FIRST_SCHEMA)
    con.execute("INSERT INTO runs (run_id, created_at, name, status, task, n_personas, model, seed, methods) VALUES "
                "('old-run', now(), 'from 2026', 'done', 'dialogue', 2, 'tiny-random', 0, 'base')")
    con.execute("INSERT INTO method_results (run_id, method, n_personas, mean_score) VALUES ('old-run', 'base', 2, 0.5)")
    con.execute("INSERT INTO persona_results (run_id, method, persona_id, score) VALUES ('old-run', 'base', 'p1', 0.4), "
                "('old-run', 'base', 'p2', 0.6)")
    con.close()
    assert cli.main(["runs", "--store", str(db)]) == 0
    assert "old-run" in capsys.readouterr().out
    (tmp_path / "r.csv").write_text(RESULTS_CSV)
    assert cli.main(["import", str(tmp_path / "r.csv"), "--name", "new", "--store", str(db)]) == 0
    con = duckdb.connect(str(db), read_only=True)
    meta = dict(con.execute("SELECT key, value FROM lab_meta").fetchall())
    assert store.classify(con)[0] == "lab"
    con.close()
    assert meta["store_format"] == store.STORE_FORMAT and meta["schema_version"] == str(store.SCHEMA_VERSION)
    assert "migrated_from" in meta
    runs = store.queries.runs(db)
    assert set(runs.run_id) >= {"old-run"} and len(runs) == 2
    assert store.queries.persona_results(["old-run"], db).score.tolist() == [0.4, 0.6]


def test_a_newer_labs_store_is_read_but_never_written(tmp_path, capsys):
    """Judgment call: a store whose marker names a newer schema version than this lab writes is read (runs,
    compare), never written: this version cannot know what the newer one expects of its rows."""
    db = tmp_path / "newer.duckdb"
    quick_run(tmp_path, db, capsys)
    with store.connect(db) as con:
        con.execute("UPDATE lab_meta SET value = '99' WHERE key = 'schema_version'")
    before = sha(db)
    assert cli.main(["runs", "--store", str(db)]) == 0
    (tmp_path / "r.csv").write_text(RESULTS_CSV)
    assert cli.main(["import", str(tmp_path / "r.csv"), "--store", str(db)]) == 2
    assert "newer version of Persona LoRA Lab" in capsys.readouterr().err
    assert sha(db) == before


def test_reads_never_create_a_store(tmp_path, monkeypatch, capsys):
    """issue: `engine runs --store typo.duckdb` (or --store '') created an empty store. Read commands say there is
    none; the store's reads answer empty tables; the dashboard's poll and its Compare page (the empty-store
    welcome) read without creating the file."""
    typo = tmp_path / "typo.duckdb"
    assert cli.main(["runs", "--store", str(typo)]) == 2
    assert f"no store at {typo}" in capsys.readouterr().err
    assert cli.main(["runs", "--store", ""]) == 2
    assert "--store: an empty path" in capsys.readouterr().err
    assert store.queries.runs(typo).empty and store.queries.studies(typo).empty
    assert not jobs.poll(str(typo), tmp_path / "jobs")["store_error"]
    at = open_page(monkeypatch, typo, tmp_path / "jobs", "compare")
    assert "Welcome to Persona LoRA Lab" in "\n".join(str(m.value) for m in at.markdown)
    assert not typo.exists() and not Path(str(typo) + ".wal").exists()


def test_an_empty_duckdb_file_is_read_without_being_written(tmp_path):
    """Judgment call: a DuckDB file without any table (made by `duckdb x.duckdb`) is a store with no runs; reading
    it writes nothing, and the first write gives it the lab's tables and marker."""
    db = tmp_path / "made_by_hand.duckdb"
    duckdb.connect(str(db)).close()
    before = sha(db)
    assert store.queries.runs(db).empty
    assert sha(db) == before
    with store.connect(db) as con:
        assert con.execute("SELECT value FROM lab_meta WHERE key = 'store_format'").fetchone() == (store.STORE_FORMAT,)


# ----------------------------------------------------------------------------- ingest never replaces

def test_ingest_never_replaces_a_run_with_a_copy_from_another_folder(tmp_path, capsys):
    """issue: `engine ingest DIR` whose run.json reused a finished run's id (status running, another name) exited 0
    and replaced that run's row. Rule: a run id belongs to the folder it was ingested from; a copy elsewhere is
    refused (exit 2) and changes nothing. The run's own folder re-ingests as before (idempotent), and a `done` run
    is never set back by a stale run file."""
    db = tmp_path / "store.duckdb"
    run_id = quick_run(tmp_path, db, capsys)
    folder = tmp_path / "runs" / run_id
    copy = tmp_path / "elsewhere" / run_id
    shutil.copytree(folder, copy)
    run = json.loads((copy / "run.json").read_text())
    (copy / "run.json").write_text(json.dumps({**run, "name": "not mine", "status": "running"}))
    before = sha(db)
    assert cli.main(["ingest", str(copy), "--store", str(db)]) == 2
    assert "is already in the store" in capsys.readouterr().err
    assert sha(db) == before
    assert cli.main(["ingest", str(folder), "--store", str(db)]) == 0
    (folder / "run.json").write_text(json.dumps({**run, "status": "running"}))  # a stale file
    assert cli.main(["ingest", str(folder), "--store", str(db)]) == 0
    row = store.queries.run_row(run_id, db)
    assert row["status"] == "done" and row["name"] == run["name"]


# ----------------------------------------------------------------------------- who runs a run

def test_a_run_records_its_owner_and_a_heartbeat(tmp_path, monkeypatch):
    from engine.store import owner
    monkeypatch.setattr(owner, "HEARTBEAT_EVERY_S", 0.0)
    results = tmp_path / "r"
    execute_run(RunSpec(data=SIM, model="tiny-random", methods=["base"], train={"epochs": 1, "max_new_tokens": 2}),
                results)
    run = json.loads((results / "run.json").read_text())
    assert run["host"] == owner.host() and run["pid"] == os.getpid()
    assert run["pid_start"].split("@")[0] == owner.process_start(os.getpid())
    assert owner.pid_state(os.getpid(), run["pid_start"]) == "alive"
    assert owner.pid_state(os.getpid(), run["pid_start"].split("@")[0] + "@another-namespace") == "unknown"
    assert run["heartbeat_at"] >= run["created_at"] and run["status"] == "done"


def test_a_running_run_whose_process_is_gone_becomes_interrupted(tmp_path, capsys):
    """The store and the run file say `running` but the process that ran it has exited: `ingest` of its folder
    lands it `interrupted` (finished methods kept, why in `error`, the run file says so too) and `runs` shows
    why; a run whose process lives stays `running`."""
    from engine.store import owner
    db = tmp_path / "store.duckdb"
    run_id = quick_run(tmp_path, db, capsys)
    folder = tmp_path / "runs" / run_id
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    start = owner.process_start(gone.pid)
    gone.wait()
    run = json.loads((folder / "run.json").read_text())
    (folder / "run.json").write_text(json.dumps({**run, "status": "running", "finished_at": None, "pid": gone.pid,
                                                 "pid_start": start}))
    with store.connect(db) as con:
        con.execute("UPDATE runs SET status = 'running', finished_at = NULL, pid = ?, pid_start = ?",
                    [gone.pid, start])
    assert cli.main(["runs", "--store", str(db)]) == 0
    out = capsys.readouterr().out
    assert f"{run_id}  interrupted" in out and "ended without recording an outcome" in out
    assert cli.main(["ingest", str(folder), "--store", str(db)]) == 0
    row = store.queries.run_row(run_id, db)
    assert row["status"] == "interrupted" and f"pid {gone.pid}" in row["error"]
    assert json.loads((folder / "run.json").read_text())["status"] == "interrupted"
    assert set(store.queries.method_results([run_id], db).method) == {"base"}
    with store.connect(db) as con:  # a live process's run is left running
        con.execute("UPDATE runs SET status = 'running', error = NULL, pid = ?, pid_start = ?",
                    [os.getpid(), owner.process_start(os.getpid())])
    assert store.queries.settle(db) == {}
    assert store.queries.run_row(run_id, db)["status"] == "running"


def test_a_run_the_lab_cannot_judge_can_be_marked_interrupted(tmp_path, capsys):
    """issue: a run stuck `running` could not be marked by any command. Runs made before owners were recorded (and
    runs on another host within an hour of their last heartbeat) cannot be judged by the lab: `engine runs
    --interrupt RUN_ID` marks one by hand; it refuses a run whose process lives here, and one that is not running."""
    from engine.store import owner
    db = tmp_path / "store.duckdb"
    run_id = quick_run(tmp_path, db, capsys)
    with store.connect(db) as con:  # as an earlier lab left it: running, no owner
        con.execute("UPDATE runs SET status = 'running', finished_at = NULL, host = NULL, pid = NULL, pid_start = NULL")
    assert cli.main(["runs", "--store", str(db)]) == 0 and store.queries.run_row(run_id, db)["status"] == "running"
    with store.connect(db) as con:
        con.execute("UPDATE runs SET host = ?, pid = ?, pid_start = ?", [owner.host(), os.getpid(),
                                                                          owner.process_start(os.getpid())])
    assert cli.main(["runs", "--interrupt", run_id, "--store", str(db)]) == 2
    assert "is alive on this host" in capsys.readouterr().err
    with store.connect(db) as con:
        con.execute("UPDATE runs SET host = NULL, pid = NULL, pid_start = NULL")
    assert cli.main(["runs", "--interrupt", run_id, "--store", str(db)]) == 0
    assert f"{run_id}  interrupted" in capsys.readouterr().out
    assert store.queries.run_row(run_id, db)["status"] == "interrupted"
    assert cli.main(["runs", "--interrupt", run_id, "--store", str(db)]) == 2
    assert "is interrupted, not running" in capsys.readouterr().err


def test_a_starting_worker_is_not_taken_for_dead(tmp_path):
    """issue: under CPU load a just-submitted job was declared dead at once (failed, empty log): liveness looked for
    the job id in the worker's command line, which a worker between fork and exec does not carry yet. A worker is
    now known by its pid and its process's start time, so any live process with the recorded pid and start is the
    worker; the same pid with another start (reused) is not."""
    jd = tmp_path / "jobs"
    j = jobs.submit(RunSpec(data=SIM, model="tiny-random", methods=["base"]), jobs_dir=jd, spawn=False)
    status = json.loads((jd / j / "status.json").read_text())
    old = time.time() - 10 * jobs.STARTUP_GRACE_S
    status["created_at"] = datetime.fromtimestamp(old, timezone.utc).isoformat()  # long past the start-up grace
    (jd / j / "status.json").write_text(json.dumps(status))
    starting = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # a command line without j
    try:
        (jd / j / "worker.pid").write_text(str(starting.pid))  # as an earlier lab wrote it: the pid alone
        assert jobs.job_info(j, jd)["status"] == "queued"
        from engine.store import owner
        (jd / j / "worker.pid").write_text(json.dumps({"pid": starting.pid,
                                                       "pid_start": owner.process_start(starting.pid)}))
        assert jobs.job_info(j, jd)["status"] == "queued"
        from engine.store import owner
        (jd / j / "worker.pid").write_text(json.dumps({"pid": starting.pid, "pid_start": "another-boot:1"}))
        assert jobs.job_info(j, jd)["status"] == "failed"  # the pid now belongs to another process
    finally:
        starting.kill()
        starting.wait()
    (jd / j / "worker.pid").write_text(json.dumps({"pid": starting.pid, "pid_start": None}))
    assert jobs.job_info(j, jd)["status"] == "failed"


# ----------------------------------------------------------------------------- import reads regular files only

def _import(path, db, timeout=60):
    """`python -m engine import PATH` in a process of at most 2 GB (the old /dev/zero read was unbounded)."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))
    return subprocess.run([sys.executable, "-m", "engine", "import", str(path), "--store", str(db)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, preexec_fn=limit)


@pytest.mark.parametrize("kind, needle", [("fifo", "a FIFO (named pipe); import reads regular files only"),
                                          ("/dev/zero", "a device; import reads regular files only"),
                                          ("too big", "larger than 64 MB")])
def test_import_refuses_what_is_not_a_regular_file_at_once(tmp_path, kind, needle):
    """issue: `engine import /dev/zero` read until MemoryError; `engine import FIFO.csv` blocked forever. Import
    reads regular files of at most 64 MB (importer.MAX_FILE_BYTES: 100,000 personas x 30 columns is ~30 MB) and
    says so at once for anything else: a FIFO is never opened."""
    if kind == "fifo":
        path = tmp_path / "results.csv"
        os.mkfifo(path)
    elif kind == "/dev/zero":
        path = Path("/dev/zero")
    else:
        path = tmp_path / "huge.csv"
        with open(path, "wb") as f:
            f.truncate(65 * 2**20)  # sparse: no disk used
    db = tmp_path / "store.duckdb"
    t0 = time.monotonic()
    done = _import(path, db)
    assert done.returncode == 2, done.stderr
    lines = [x for x in done.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in done.stderr
    assert time.monotonic() - t0 < 30 and not db.exists()


# ----------------------------------------------------------------------------- uploads without copies

def test_an_upload_is_saved_and_validated_without_copies_in_memory(tmp_path):
    """issue: a 50 MB JSONL upload raised the server's memory from 54 MB to 820 MB. An upload is streamed to disk
    in 1 MB chunks while it is hashed (at most two chunks held, whatever its size), and the JSONL loader reads the
    saved file line by line: besides the dataset it returns, a load holds its parsed records for a while but never
    the file's bytes whole (before: the bytes, their lines and the records at once)."""
    from engine.data.dataset import load_dataset
    from engine.data.simulator import simulate
    raw = ("\n".join(json.dumps(r) for r in simulate(personas=160, train_per_persona=60)) + "\n").encode()
    assert len(raw) > 6 * 2**20
    tracemalloc.start()
    try:
        saved = paths.save_upload(tmp_path / "uploads", [("big.jsonl", io.BytesIO(raw))])
        save_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        ds = load_dataset(saved)
        kept, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert saved.read_bytes() == raw and len(ds.personas) == 160
    assert save_peak < 2.5 * 2**20, save_peak / 2**20
    transient = peak - kept  # what the load held on the way and let go
    assert transient < 3.5 * len(raw), (transient / len(raw), (kept - base) / len(raw))
    assert paths.save_upload(tmp_path / "uploads", [("big.jsonl", raw)]) == saved  # the same bytes: saved once


# ----------------------------------------------------------------------------- a full disk, a damaged store

def test_a_disk_too_full_to_start_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    """Judgment call: a run or study does not start with less than 16 MB free beside the store (a 2 MB tmpfs store
    filled up mid-run in the issue); it is refused up front, exit 2, nothing written."""
    class Full:
        f_bavail, f_frsize = 512, 4096  # 2 MB

    monkeypatch.setattr(os, "statvfs", lambda p: Full)
    db = tmp_path / "store.duckdb"
    assert cli.main(["run", "--data", SIM, "--methods", "base", "--store", str(db), *QUICK]) == 2
    err = capsys.readouterr().err
    assert "the disk is full: 2.0 MB free" in err and len(err.strip().splitlines()) == 1
    assert not db.exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("kind, then", [("StoreDamaged", "--store NEW.duckdb"),
                                        ("StoreFull", "free some space, then: python -m engine")])
def test_a_store_that_fails_when_the_results_land_is_not_busy(tmp_path, monkeypatch, capsys, kind, then):
    """issue: a truncated store (and a full disk) made `engine run` train everything, then exit 3 with "when the
    store is free", which can never work. Exit 3 is only for a lock held by another process; a store that cannot
    be written for another reason is exit 1, said as what it is, with the command that lands the kept results."""
    db = tmp_path / "store.duckdb"
    real = store.ingest
    why = getattr(store, kind)(f"store {db}: " + ("the file is damaged (Corrupt database file)" if kind == "StoreDamaged"
                                                  else "the disk is full (No space left on device)"))

    def ingest(results, path=None, **kw):
        raise why
    monkeypatch.setattr(store, "ingest", ingest)
    code = cli.main(["run", "--data", SIM, "--methods", "base", "--store", str(db), *QUICK])
    err = capsys.readouterr().err
    assert code == 1, err
    assert str(why) in err and then in err and "when the store is free" not in err and "Traceback" not in err
    results = next((tmp_path / "runs").iterdir())
    assert real(results, tmp_path / "new.duckdb") == ["base"]
    assert store.queries.runs(tmp_path / "new.duckdb").status[0] == "done"


def test_a_full_disk_is_recognised_behind_what_surfaced():
    from engine.lab import landing
    assert landing.STORE_NOT_WRITTEN == cli.STORE_NOT_WRITTEN == 3
    assert not landing.is_disk_full(RuntimeError("x"))
    e = ValueError("wrapped")
    e.__context__ = OSError(errno.ENOSPC, "No space left on device")
    assert landing.is_disk_full(e)


# ----------------------------------------------------------------------------- said, not silently accepted

def test_test_dialogues_that_repeat_train_dialogues_are_said(tmp_path, capsys):
    """issue: test dialogues identical to train dialogues ran without a word from the CLI (Launch and `synth` say
    it). Judgment call: a warning, not a refusal (a persona may well ask the same thing twice), on the run's stderr
    and in a job's log, with the count; the count is also kept in the run's config."""
    msgs = [{"role": "user", "text": "Dim the lights."}, {"role": "assistant", "text": "Done: lights brightness 30."}]
    lines = [{"persona_id": p, "messages": msgs, "split": s} for p in ("p1", "p2") for s in ("train", "test")]
    data = tmp_path / "same.jsonl"
    data.write_text("".join(json.dumps(x) + "\n" for x in lines))
    db = tmp_path / "store.duckdb"
    assert cli.main(["run", "--data", str(data), "--methods", "base", "--store", str(db), *QUICK]) == 0
    assert "warning: 2 of 2 test targets repeat a train target of their persona" in capsys.readouterr().err
    config = json.loads(store.queries.runs(db).config_json[0])
    assert config["test_targets_repeating_train"] == [2, 2]
