"""Connections to the DuckDB store and its schema.

DuckDB allows one read-write process or many read-only ones and fails at once on a conflicting lock.
So nothing keeps a connection open: every read or write opens one, does its work and closes it,
retrying for a bounded time when the file is locked (then StoreBusy).
"""
from __future__ import annotations

import os
import random
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pandas as pd

from engine import settings


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
ALTER TABLE predictions ADD COLUMN IF NOT EXISTS refrained DOUBLE;
ALTER TABLE predictions ADD COLUMN IF NOT EXISTS n_settings INTEGER;
ALTER TABLE predictions ADD COLUMN IF NOT EXISTS stated_f1 DOUBLE;
ALTER TABLE predictions ADD COLUMN IF NOT EXISTS supplied_f1 DOUBLE;
ALTER TABLE predictions ADD COLUMN IF NOT EXISTS n_stated INTEGER;
ALTER TABLE predictions ADD COLUMN IF NOT EXISTS n_supplied INTEGER;
ALTER TABLE persona_results ADD COLUMN IF NOT EXISTS refrained DOUBLE;
ALTER TABLE persona_results ADD COLUMN IF NOT EXISTS n_with_settings INTEGER;
ALTER TABLE persona_results ADD COLUMN IF NOT EXISTS n_without_settings INTEGER;
ALTER TABLE persona_results ADD COLUMN IF NOT EXISTS n_settings INTEGER;
ALTER TABLE persona_kind_results ADD COLUMN IF NOT EXISTS refrained DOUBLE;
ALTER TABLE persona_kind_results ADD COLUMN IF NOT EXISTS n_with_settings INTEGER;
ALTER TABLE persona_kind_results ADD COLUMN IF NOT EXISTS n_without_settings INTEGER;
ALTER TABLE persona_kind_results ADD COLUMN IF NOT EXISTS n_settings INTEGER;
ALTER TABLE persona_blind ADD COLUMN IF NOT EXISTS refrained DOUBLE;
ALTER TABLE persona_blind ADD COLUMN IF NOT EXISTS n_with_settings INTEGER;
ALTER TABLE persona_blind ADD COLUMN IF NOT EXISTS n_without_settings INTEGER;
ALTER TABLE persona_blind ADD COLUMN IF NOT EXISTS n_settings INTEGER;
CREATE TABLE IF NOT EXISTS jobs (
    job_id VARCHAR PRIMARY KEY, kind VARCHAR, status VARCHAR, progress DOUBLE, phase VARCHAR,
    created_at TIMESTAMP, started_at TIMESTAMP, finished_at TIMESTAMP, error VARCHAR, run_id VARCHAR,
    spec_json VARCHAR);
ALTER TABLE predictions ADD COLUMN IF NOT EXISTS meta_json VARCHAR;
"""
METHOD_TABLES = ("persona_results", "persona_kind_results", "predictions", "merge_weights")  # per method folder
RUN_TABLES = ("personas", "cluster_k", "persona_blind")                                   # per run folder
# persona_results' per-persona figures: `score` is the run's primary metric, the others every metric the lab computes.
# The action metrics (and a score that is one) are means over the targets whose reference names a setting
# (n_with_settings); `refrained` over those whose reference names none (n_without_settings).
METRIC_COLUMNS = ("score", "action_f1", "param_f1", "device_precision", "numerical_precision", "embedding_similarity",
                  "accuracy", "refrained")


DatabaseError = duckdb.Error  # what a statement can raise about the rows it was given (beside StoreError)


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


def _is_lock_conflict(e: Exception) -> bool:
    return "conflicting lock" in str(e).lower() or "could not set lock" in str(e).lower()


def check_location(path) -> None:
    """StoreError unless `path` can hold the store: an existing DuckDB file or a new file in an existing folder."""
    p = Path(settings.store_path(path))
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
    path = settings.store_path(path)
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
    path = settings.store_path(path)
    check_location(path)
    if not os.path.exists(path):
        with connect(path, timeout=timeout):  # creates the schema, so the query below has its tables
            pass
    df = _read(path, sql, params, timeout, missing_ok=True)
    if df is None:  # an empty DuckDB file or a store of an older version lacks some of our tables or columns: add them
        with connect(path, timeout=timeout):
            pass
        df = _read(path, sql, params, timeout)
    return df


def _read(path: str, sql: str, params, timeout: float, missing_ok: bool = False):
    """The query's frame, or None for a missing table or column when missing_ok (another program's database:
    StoreError)."""
    with connect(path, read_only=True, timeout=timeout) as con:
        try:
            return con.execute(sql, params or []).df()
        except (duckdb.CatalogException, duckdb.BinderException) as e:
            missing_column = isinstance(e, duckdb.BinderException) and "not found" in str(e)
            if not missing_ok or not (missing_column or isinstance(e, duckdb.CatalogException)):
                raise
            _refuse_foreign(con, path)
            return None


def _insert(con, table: str, df: pd.DataFrame):
    if df is None or df.empty:
        return
    con.register("_frame", df)
    con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _frame")
    con.unregister("_frame")


def version(path=None) -> tuple:
    """Changes whenever the store file (or its WAL) is written: the cache key of every read."""
    path = settings.store_path(path)
    out = []
    for f in (path, path + ".wal"):
        try:
            st = os.stat(f)
            out += [st.st_mtime_ns, st.st_size]
        except OSError:
            out += [0, 0]
    return tuple(out)
