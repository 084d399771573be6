"""The DuckDB store (DESIGN §8) and the result files it ingests.

DuckDB allows one read-write process or many read-only ones and fails at once on a conflicting lock.
So nothing keeps a connection open: every read or write opens one, does its work and closes it,
retrying for a bounded time when the file is locked. Runs never write the store while they compute:
they write result files (temp name, then rename), one folder per finished method, and `ingest` copies
them in, one transaction per call. A method's rows therefore appear all together or not at all.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pandas as pd

DEFAULT_STORE = "store.duckdb"

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY, created_at TIMESTAMP, finished_at TIMESTAMP, name VARCHAR,
    status VARCHAR, dataset VARCHAR, dataset_hash VARCHAR, task VARCHAR, n_personas INTEGER,
    model VARCHAR, device VARCHAR, seed INTEGER, methods VARCHAR, config_json VARCHAR,
    error VARCHAR, job_id VARCHAR, artifacts_dir VARCHAR);
CREATE TABLE IF NOT EXISTS method_results (
    run_id VARCHAR, method VARCHAR, train_seconds DOUBLE, eval_seconds DOUBLE, peak_mem_mb DOUBLE,
    trainable_params BIGINT, n_adapters INTEGER, device VARCHAR, n_personas INTEGER, mean_score DOUBLE,
    train_tokens BIGINT, tokens_per_second DOUBLE, final_loss DOUBLE, details_json VARCHAR,
    PRIMARY KEY (run_id, method));
CREATE TABLE IF NOT EXISTS persona_results (
    run_id VARCHAR, method VARCHAR, persona_id VARCHAR, n_test INTEGER, score DOUBLE,
    embedding_similarity DOUBLE, device_precision DOUBLE, numerical_precision DOUBLE, param_f1 DOUBLE,
    accuracy DOUBLE, PRIMARY KEY (run_id, method, persona_id));
CREATE TABLE IF NOT EXISTS predictions (
    run_id VARCHAR, method VARCHAR, persona_id VARCHAR, example_id VARCHAR, kind VARCHAR,
    context VARCHAR, reference VARCHAR, prediction VARCHAR, score DOUBLE,
    embedding_similarity DOUBLE, device_precision DOUBLE, numerical_precision DOUBLE, param_f1 DOUBLE,
    accuracy DOUBLE);
CREATE TABLE IF NOT EXISTS personas (
    run_id VARCHAR, persona_id VARCHAR, profile VARCHAR, n_train INTEGER, n_val INTEGER, n_test INTEGER,
    cluster INTEGER, umap_x DOUBLE, umap_y DOUBLE, silhouette DOUBLE, PRIMARY KEY (run_id, persona_id));
CREATE TABLE IF NOT EXISTS cluster_k (run_id VARCHAR, k INTEGER, silhouette DOUBLE, chosen BOOLEAN);
CREATE TABLE IF NOT EXISTS merge_weights (
    run_id VARCHAR, method VARCHAR, persona_id VARCHAR, neighbour_id VARCHAR, weight DOUBLE,
    val_score DOUBLE, centrality DOUBLE, similarity DOUBLE);
CREATE TABLE IF NOT EXISTS persona_kind_results (
    run_id VARCHAR, method VARCHAR, persona_id VARCHAR, kind VARCHAR, n_test INTEGER, score DOUBLE,
    action_f1 DOUBLE, param_f1 DOUBLE, device_precision DOUBLE, numerical_precision DOUBLE,
    embedding_similarity DOUBLE, accuracy DOUBLE, PRIMARY KEY (run_id, method, persona_id, kind));
CREATE TABLE IF NOT EXISTS persona_blind (
    run_id VARCHAR, persona_id VARCHAR, kind VARCHAR, n_test INTEGER, score DOUBLE,
    action_f1 DOUBLE, param_f1 DOUBLE, device_precision DOUBLE, numerical_precision DOUBLE,
    embedding_similarity DOUBLE, PRIMARY KEY (run_id, persona_id, kind));
ALTER TABLE runs ADD COLUMN IF NOT EXISTS metric VARCHAR;
ALTER TABLE method_results ADD COLUMN IF NOT EXISTS epochs_trained DOUBLE;
ALTER TABLE persona_results ADD COLUMN IF NOT EXISTS action_f1 DOUBLE;
ALTER TABLE predictions ADD COLUMN IF NOT EXISTS action_f1 DOUBLE;
ALTER TABLE predictions ADD COLUMN IF NOT EXISTS persona_blind VARCHAR;
CREATE TABLE IF NOT EXISTS studies (
    study_id VARCHAR PRIMARY KEY, name VARCHAR, created_at TIMESTAMP, spec_json VARCHAR, status VARCHAR,
    n_runs INTEGER);
ALTER TABLE runs ADD COLUMN IF NOT EXISTS study_id VARCHAR;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS coords_json VARCHAR;
ALTER TABLE persona_results ADD COLUMN IF NOT EXISTS metrics_json VARCHAR;
CREATE TABLE IF NOT EXISTS jobs (
    job_id VARCHAR PRIMARY KEY, kind VARCHAR, status VARCHAR, progress DOUBLE, phase VARCHAR,
    created_at TIMESTAMP, started_at TIMESTAMP, finished_at TIMESTAMP, error VARCHAR, run_id VARCHAR,
    spec_json VARCHAR);
"""
METHOD_TABLES = ("persona_results", "persona_kind_results", "predictions", "merge_weights")  # per method folder
RUN_TABLES = ("personas", "cluster_k", "persona_blind")                                   # per run folder


class StoreError(RuntimeError):
    """The store path cannot be used: not a DuckDB file, a folder, no such folder, another program's database.
    The message names the path and what is wrong; retrying does not help."""


class StoreBusy(StoreError):
    """The store stayed locked by another process for longer than the retry budget; retrying later helps."""


class ResultFileError(ValueError):
    """A run's result files cannot be ingested (unreadable, truncated, or not what the store holds); names the file."""


# DuckDB refuses a second connection with another configuration (read-only vs read-write) to the same file
# inside one process, so this process's connections take turns (the dashboard's sessions are threads).
PROCESS_LOCK = threading.RLock()
OUR_TABLE = "runs"  # a DuckDB file with tables but without this one belongs to someone else


def store_path(path: str | os.PathLike | None = None) -> str:
    return str(path or os.environ.get("PLL_STORE") or DEFAULT_STORE)


def new_run_id() -> str:
    """A run id that sorts by creation time (UTC) and does not collide between processes."""
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def runs_dir(path=None) -> Path:
    """Result folders (and trained adapters) of CLI runs: `runs/` beside the store file."""
    return Path(store_path(path)).resolve().parent / "runs"


def _is_lock_conflict(e: Exception) -> bool:
    return "conflicting lock" in str(e).lower() or "could not set lock" in str(e).lower()


def check_location(path) -> None:
    """StoreError unless `path` can hold the store: an existing DuckDB file or a new file in an existing folder."""
    p = Path(store_path(path))
    if p.is_dir():
        raise StoreError(f"store {p}: is a folder, not a DuckDB file")
    if not p.exists() and not p.parent.is_dir():
        raise StoreError(f"store {p}: folder {p.parent} does not exist")


def _explain(path: str, e: Exception) -> str:
    """One line on what is wrong with a store path, from DuckDB's IO error."""
    msg = str(e)
    if "not a valid DuckDB database" in msg:
        return f"store {path}: not a DuckDB database (another kind of file); choose another store path"
    if "Is a directory" in msg:
        return f"store {path}: is a folder, not a DuckDB file"
    if "No such file or directory" in msg:
        return f"store {path}: folder {Path(path).parent} does not exist"
    return f"store {path}: {msg.splitlines()[0]}"


def _refuse_foreign(con, path: str) -> None:
    """StoreError for a DuckDB file that holds another program's tables (ours are never added to it)."""
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables "
                                        "WHERE table_catalog = current_database()").fetchall()}
    if tables and OUR_TABLE not in tables:
        raise StoreError(f"store {path}: a DuckDB database of another program (tables {', '.join(sorted(tables)[:5])}"
                         f"{', ...' if len(tables) > 5 else ''}; no '{OUR_TABLE}' table); choose another store path")


def _ensure_schema(con, path: str) -> None:
    """Our tables (CREATE IF NOT EXISTS); refuses a DuckDB file that holds another program's tables."""
    _refuse_foreign(con, path)
    con.execute(SCHEMA)


@contextmanager
def connect(path=None, read_only: bool = False, timeout: float = 15.0):
    """A short-lived connection, retried with jitter while another process holds the lock (then StoreBusy).

    Any other reason the file cannot be opened (not a DuckDB file, a folder, no such folder, another
    program's database) raises StoreError at once. Holds PROCESS_LOCK while open, not while waiting.
    """
    path = store_path(path)
    deadline = time.monotonic() + timeout
    while True:
        PROCESS_LOCK.acquire()
        try:
            con = duckdb.connect(path, read_only=read_only)
            break
        except duckdb.IOException as e:
            PROCESS_LOCK.release()
            if not _is_lock_conflict(e):
                raise StoreError(_explain(path, e)) from None
            if time.monotonic() > deadline:
                raise StoreBusy(f"store {path}: busy (locked by another process; waited {timeout:g} s); "
                                "nothing was lost, try again") from None
            time.sleep(0.05 + random.random() * 0.2)
        except BaseException:
            PROCESS_LOCK.release()
            raise
    try:
        if not read_only:
            _ensure_schema(con, path)
        yield con
    finally:
        con.close()
        PROCESS_LOCK.release()


def query(sql: str, params=None, path=None, timeout: float = 15.0) -> pd.DataFrame:
    """Read-only query; an absent store reads as empty tables (a new user has none yet)."""
    path = store_path(path)
    check_location(path)
    if not os.path.exists(path):
        with connect(path, timeout=timeout):  # creates the schema, so the query below has its tables
            pass
    df = _read(path, sql, params, timeout, missing_ok=True)
    if df is None:  # an empty DuckDB file or a store of an older version lacks some of our tables: add them
        with connect(path, timeout=timeout):
            pass
        df = _read(path, sql, params, timeout)
    return df


def _read(path: str, sql: str, params, timeout: float, missing_ok: bool = False):
    """The query's frame, or None for a missing table when missing_ok (another program's database: StoreError)."""
    with connect(path, read_only=True, timeout=timeout) as con:
        try:
            return con.execute(sql, params or []).df()
        except duckdb.CatalogException:
            if not missing_ok:
                raise
            _refuse_foreign(con, path)
            return None


def _insert(con, table: str, df: pd.DataFrame):
    if df is None or df.empty:
        return
    con.register("_frame", df)
    con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _frame")
    con.unregister("_frame")


# ----------------------------------------------------------------------------- result files

def method_dirname(method: str) -> str:
    return method.replace(":", "__")


def write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


def write_run_file(results_dir: Path, run: dict) -> None:
    results_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(results_dir / "run.json", run)


def write_run_table(results_dir: Path, table: str, df: pd.DataFrame) -> None:
    tmp = results_dir / f".{table}.parquet.tmp{os.getpid()}"
    df.to_parquet(tmp, index=False)
    os.replace(tmp, results_dir / f"{table}.parquet")


def method_summary(method: str, per_persona: pd.DataFrame, **measured) -> dict:
    """A method's method_results row: `n_personas` and `mean_score` from its per-persona results (the rows every
    statistic reads), so a trained and an imported method are summarised alike; `measured` adds times, sizes,
    details."""
    return {"method": method, **measured, "n_personas": len(per_persona),
            "mean_score": float(per_persona["score"].mean())}


def write_method_files(results_dir: Path, method: str, summary: dict, tables: dict[str, pd.DataFrame]) -> None:
    """One finished method: a folder built under a temp name and renamed, so readers see all or nothing."""
    methods = results_dir / "methods"
    methods.mkdir(parents=True, exist_ok=True)
    final = methods / method_dirname(method)
    tmp = methods / f".{method_dirname(method)}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        (tmp / "method.json").write_text(json.dumps(summary, default=str))
        for name, df in tables.items():
            if df is not None and not df.empty:
                df.to_parquet(tmp / f"{name}.parquet", index=False)
    except BaseException:  # a full disk, a cancel: no half folder stays behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _read_results(results_dir: Path):
    """(run dict, {run table: frame}, [(folder, method, summary, {table: frame})], [problems]) — all read before
    the store is opened. A broken run file raises ResultFileError; a broken method folder becomes a problem."""
    run_file = results_dir / "run.json"
    try:
        run = json.loads(run_file.read_text())
    except (OSError, ValueError) as e:
        raise ResultFileError(f"{run_file}: unreadable ({_first_line(e)})") from None
    if not isinstance(run, dict) or not isinstance(run.get("run_id"), str) or not run["run_id"]:
        raise ResultFileError(f"{run_file}: not a run file (no 'run_id')")
    tables = {}
    for table in RUN_TABLES:
        f = results_dir / f"{table}.parquet"
        if f.exists():
            try:
                tables[table] = pd.read_parquet(f)
            except (OSError, ValueError) as e:
                raise ResultFileError(f"{f}: unreadable ({_first_line(e)})") from None
    methods_dir = results_dir / "methods"
    dirs = sorted(d for d in methods_dir.glob("*") if d.is_dir() and not d.name.startswith(".")) \
        if methods_dir.exists() else []
    methods, problems = [], []
    for d in dirs:
        try:
            summary = json.loads((d / "method.json").read_text())
            if not isinstance(summary, dict) or not isinstance(summary.get("method"), str):
                raise ValueError("method.json has no 'method'")
            frames = {t: pd.read_parquet(d / f"{t}.parquet") for t in METHOD_TABLES if (d / f"{t}.parquet").exists()}
        except (OSError, ValueError) as e:
            problems.append(f"{d}: not ingested, its result files are unreadable ({_first_line(e)})")
            continue
        methods.append((d, summary["method"], summary, frames))
    return run, tables, methods, problems


def _rollback(con) -> None:
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:  # the failed transaction may already be gone; the connection closes next
        pass


def ingest(results_dir, path=None, problems: list | None = None, timeout: float = 15.0) -> list[str]:
    """Copy a run's result files into the store in one transaction; returns the methods newly added.

    Idempotent: ingesting the same folder twice changes nothing. Every file is read before the store is
    opened. A method folder that cannot be read or does not fit the store is left out (its rows land all
    together or not at all) and the good ones still land; what was left out is appended to `problems`
    (when not given, ResultFileError is raised after the good methods are committed). A broken run file
    raises ResultFileError and changes nothing.
    """
    results_dir = Path(results_dir)
    run, tables, methods, bad = _read_results(results_dir)
    run_id = run["run_id"]
    with connect(path, timeout=timeout) as con:
        have = {r[0] for r in con.execute("SELECT method FROM method_results WHERE run_id = ?", [run_id]).fetchall()}
        todo = [m for m in methods if m[1] not in have]
        while True:
            where, added = results_dir / "run.json", []
            con.execute("BEGIN")
            try:
                con.execute("DELETE FROM runs WHERE run_id = ?", [run_id])
                _insert(con, "runs", pd.DataFrame([run]))
                for table, df in tables.items():
                    where = results_dir / f"{table}.parquet"
                    con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
                    _insert(con, table, df.assign(run_id=run_id))
                for item in todo:
                    where = item
                    d, method, summary, frames = item
                    _insert(con, "method_results", pd.DataFrame([summary]).assign(run_id=run_id))
                    for table, df in frames.items():
                        _insert(con, table, df.assign(run_id=run_id, method=method))
                    added.append(method)
                con.execute("COMMIT")
                break
            except (duckdb.DataError, duckdb.ProgrammingError, duckdb.IntegrityError) as e:  # the rows, not the store
                con.execute("ROLLBACK")
                if not isinstance(where, tuple):  # the run's own files do not fit: nothing can land
                    raise ResultFileError(f"{where}: does not fit the store ({_first_line(e)})") from None
                todo.remove(where)
                bad.append(f"{where[0]}: not ingested, does not fit the store ({_first_line(e)})")
            except duckdb.Error as e:  # the store itself failed (disk full, IO): nothing landed
                _rollback(con)
                raise StoreError(f"store {store_path(path)}: could not write ({_first_line(e)}); nothing was "
                                 "changed") from None
            except BaseException:
                _rollback(con)
                raise
    if bad:
        if problems is None:
            raise ResultFileError("; ".join(bad))
        problems.extend(bad)
    return added


def set_run_status(run_id: str, status: str, error: str | None = None, path=None) -> None:
    with connect(path) as con:
        con.execute("UPDATE runs SET status = ?, error = coalesce(?, error), finished_at = coalesce(finished_at, now()) "
                    "WHERE run_id = ?", [status, error, run_id])


def delete_run(run_id: str, path=None) -> None:
    tables = ("runs", "method_results", "persona_results", "persona_kind_results", "predictions", "personas",
              "cluster_k", "merge_weights", "persona_blind")
    with connect(path) as con:
        con.execute("BEGIN")
        for t in tables:
            con.execute(f"DELETE FROM {t} WHERE run_id = ?", [run_id])
        con.execute("COMMIT")


# ----------------------------------------------------------------------------- reads

def list_runs(path=None) -> pd.DataFrame:
    return query("SELECT * FROM runs ORDER BY created_at DESC", path=path)


def persona_scores(run_ids: list[str] | None = None, path=None) -> pd.DataFrame:
    """Long table (run_id, method, persona_id, score, metrics...) — the input of every statistic."""
    where, params = "", []
    if run_ids is not None:
        where, params = "WHERE run_id IN (SELECT unnest(?))", [list(run_ids)]
    return query(f"SELECT * FROM persona_results {where} ORDER BY run_id, method, persona_id", params, path)


def method_summaries(run_ids: list[str] | None = None, path=None) -> pd.DataFrame:
    where, params = "", []
    if run_ids is not None:
        where, params = "WHERE run_id IN (SELECT unnest(?))", [list(run_ids)]
    return query(f"SELECT * FROM method_results {where} ORDER BY run_id, method", params, path)
