"""Connections to the DuckDB store, its schema and the lab's marker.

DuckDB allows one read-write process or many read-only ones and fails at once on a conflicting lock.
So nothing keeps a connection open: every read or write opens one, does its work and closes it,
retrying for a bounded time when the file is locked (then StoreBusy).

The store is the lab's or it is left untouched: a store carries the lab's marker (`lab_meta`: store_format,
schema_version). Every write first asks whose file it is (classify): a new or table-less file becomes a store,
an earlier version's store (no marker, the lab's first tables) gets the marker, and any other DuckDB database is
refused before anything is written. Reads never create a store. What goes wrong is one StoreError each: busy
(locked by another process), full (the disk), damaged (truncated or overwritten), or not a usable store.
"""
from __future__ import annotations

import errno
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

# The lab's own marker, beside SCHEMA (whose ALTER list grows on its own): a store file says it is the lab's and
# which version of the lab's schema it holds. Version 1: stores made before the marker existed, recognised by the
# tables they were made with (EARLIER_STORE); version 2: the marker, and the owner of each run and study.
STORE_FORMAT = "persona-lora-lab"
SCHEMA_VERSION = 2
LAB_SCHEMA = """
CREATE TABLE IF NOT EXISTS lab_meta (key VARCHAR PRIMARY KEY, value VARCHAR);
ALTER TABLE runs ADD COLUMN IF NOT EXISTS host VARCHAR;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS pid BIGINT;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS pid_start VARCHAR;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS heartbeat_at TIMESTAMP;
ALTER TABLE studies ADD COLUMN IF NOT EXISTS host VARCHAR;
ALTER TABLE studies ADD COLUMN IF NOT EXISTS pid BIGINT;
ALTER TABLE studies ADD COLUMN IF NOT EXISTS pid_start VARCHAR;
"""
# What every store the lab ever made holds (the first version's tables and columns): a DuckDB file with these but
# without the marker is an earlier version's store, migrated (given the marker) on its first write.
EARLIER_STORE = {
    "runs": {"run_id", "created_at", "finished_at", "name", "status", "dataset", "dataset_hash", "task", "n_personas",
             "model", "device", "seed", "methods", "config_json", "error", "job_id", "artifacts_dir"},
    "method_results": {"run_id", "method", "train_seconds", "eval_seconds", "peak_mem_mb", "trainable_params",
                       "n_adapters", "device", "n_personas", "mean_score", "train_tokens", "tokens_per_second",
                       "final_loss", "details_json"},
    "persona_results": {"run_id", "method", "persona_id", "n_test", "score"},
}


DatabaseError = duckdb.Error  # what a statement can raise about the rows it was given (beside StoreError)


class StoreError(RuntimeError):
    """The store path cannot be used: not a DuckDB file, a folder, no such folder, another program's database,
    a damaged file. The message names the path and what is wrong; retrying does not help."""


class StoreBusy(StoreError):
    """The store stayed locked by another process for longer than the retry budget; retrying later helps."""


class StoreFull(StoreError):
    """The disk holding the store (or a run's folder) is full; nothing was changed. Freeing space helps."""


class StoreDamaged(StoreError):
    """The store file is damaged (truncated, overwritten): DuckDB cannot read all of it."""


class ResultFileError(ValueError):
    """A run's result files cannot be ingested (unreadable, truncated, or not what the store holds); names the file."""


# DuckDB refuses a second connection with another configuration (read-only vs read-write) to the same file
# inside one process, so this process's connections take turns (the dashboard's sessions are threads).
PROCESS_LOCK = threading.RLock()


def _is_lock_conflict(e: Exception) -> bool:
    return "conflicting lock" in str(e).lower() or "could not set lock" in str(e).lower()


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _is_full(e: BaseException) -> bool:
    return getattr(e, "errno", None) == errno.ENOSPC or "no space left on device" in str(e).lower() \
        or "disk is full" in str(e).lower() or "disk full" in str(e).lower()


def _is_damage(e: Exception) -> bool:
    """What DuckDB says of a file it cannot read back (not of a statement: 'Malformed JSON' is about a value)."""
    msg = str(e).lower()
    return any(s in msg for s in ("corrupt database file", "could not read enough bytes", "does not match stored checksum",
                                  "database file is corrupted"))


def failure(path, e: Exception, doing: str = "could not write") -> StoreError:
    """The StoreError for a failed statement or connection: the disk is full, the file is damaged, or else what
    DuckDB said (one line each, naming the store)."""
    if _is_full(e):
        return StoreFull(f"store {path}: the disk is full ({_first_line(e)}); nothing was changed")
    if _is_damage(e):
        return StoreDamaged(f"store {path}: the file is damaged ({_first_line(e)}); restore it from a backup or "
                            "choose another store path")
    return StoreError(f"store {path}: {doing} ({_first_line(e)}); nothing was changed")


def check_location(path) -> None:
    """StoreError unless `path` can hold the store: an existing DuckDB file or a new file in an existing folder."""
    p = Path(settings.store_path(path))
    if p.is_dir():
        raise StoreError(f"store {p}: is a folder, not a DuckDB file")
    if not p.exists() and not p.parent.is_dir():
        raise StoreError(f"store {p}: folder {p.parent} does not exist")


def _explain(path: str, e: Exception) -> StoreError:
    """What is wrong with a store path, in one line, from DuckDB's error on opening it."""
    msg = str(e)
    if "not a valid DuckDB database" in msg:
        return StoreError(f"store {path}: not a DuckDB database (another kind of file, or a store whose first bytes "
                          "were overwritten); choose another store path")
    if "Is a directory" in msg:
        return StoreError(f"store {path}: is a folder, not a DuckDB file")
    if "No such file or directory" in msg:
        return StoreError(f"store {path}: folder {Path(path).parent} does not exist")
    return failure(path, e, "cannot be opened")


# ----------------------------------------------------------------------------- whose file it is

def _tables(con) -> tuple[dict[str, set[str]], list[str]]:
    """({table or view of the main schema: its columns}, every table name of the database, as schema.name outside
    main)."""
    rows = con.execute("SELECT table_schema, table_name, column_name FROM information_schema.columns "
                       "WHERE table_catalog = current_database()").fetchall()
    main, names = {}, []
    for schema, table, column in rows:
        if schema == "main":
            main.setdefault(table, set()).add(column)
        name = table if schema == "main" else f"{schema}.{table}"
        if name not in names:
            names.append(name)
    return main, names


def classify(con) -> tuple[str, str]:
    """(kind, detail) of the database a connection opened:
    'empty'   no tables at all (a new file, or one made by `duckdb x.duckdb`): becomes a store on the first write
    'lab'     the lab's marker, schema version <= SCHEMA_VERSION
    'newer'   the lab's marker from a newer version of the lab (read, never written)
    'earlier' no marker but every table and column of the lab's first store (EARLIER_STORE): migrated on write
    'foreign' anything else: refused before any write"""
    main, names = _tables(con)
    if not names:
        return "empty", ""
    if "lab_meta" in main:
        try:
            meta = dict(con.execute("SELECT key, value FROM lab_meta").fetchall())
        except duckdb.Error:
            meta = {}
        if meta.get("store_format") == STORE_FORMAT:
            try:
                version = int(meta.get("schema_version") or 0)
            except ValueError:
                version = 0
            if version > SCHEMA_VERSION:
                return "newer", (f"made by a newer version of Persona LoRA Lab (schema version {version}; this one "
                                 f"writes {SCHEMA_VERSION}): upgrade the lab to write to it")
            return "lab", ""
    elif all(cols <= main.get(table, set()) for table, cols in EARLIER_STORE.items()):
        return "earlier", ""
    shown = ", ".join(sorted(names)[:5]) + (", ..." if len(names) > 5 else "")
    why = "its 'lab_meta' is not the lab's" if "lab_meta" in main else (
        f"'{next(t for t in EARLIER_STORE if t in main)}' without the lab's columns"
        if any(t in main for t in EARLIER_STORE) else "no 'runs' table")
    return "foreign", (f"a DuckDB database of another program (tables {shown}; {why}); it is left as it is: "
                       "choose another store path")


_KINDS: dict[tuple, tuple[str, str]] = {}  # (path, version) -> classify(): a read needs it once per store version


def _kind(con, path: str) -> tuple[str, str]:
    key = (str(Path(path).resolve()), version(path))
    if key not in _KINDS:
        if len(_KINDS) > 64:
            _KINDS.clear()
        _KINDS[key] = classify(con)
    return _KINDS[key]


def _ensure_schema(con, path: str) -> None:
    """Our tables and the marker, in one transaction; refuses (StoreError, before any write) a DuckDB file that
    is another program's or a newer lab's. An earlier version's store gains the marker and what it lacks."""
    kind, detail = classify(con)
    if kind in ("foreign", "newer"):
        raise StoreError(f"store {path}: {detail}")
    con.execute("BEGIN")
    try:
        con.execute(SCHEMA)
        con.execute(LAB_SCHEMA)
        if kind != "lab" or con.execute("SELECT value FROM lab_meta WHERE key = 'schema_version'").fetchone() != \
                (str(SCHEMA_VERSION),):
            marker = {"store_format": STORE_FORMAT, "schema_version": str(SCHEMA_VERSION)}
            if kind == "earlier":
                marker["migrated_from"] = "a store made before the marker (schema version 1)"
            for key, value in marker.items():
                con.execute("INSERT INTO lab_meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                            [key, value])
            con.execute("INSERT INTO lab_meta VALUES ('marked_at', CAST(now() AS VARCHAR)) ON CONFLICT DO NOTHING")
        con.execute("COMMIT")
    except duckdb.Error as e:
        try:
            con.execute("ROLLBACK")
        except duckdb.Error:
            pass
        raise failure(path, e, "could not be prepared") from None


@contextmanager
def connect(path=None, read_only: bool = False, timeout: float = 15.0):
    """A short-lived connection, retried with jitter while another process holds the lock (then StoreBusy).

    Any other reason the file cannot be opened (not a DuckDB file, a folder, no such folder, another program's
    database, a damaged file, a full disk) raises StoreError at once, before anything is written. Holds
    PROCESS_LOCK while open, not while waiting.
    """
    path = settings.store_path(path)
    deadline = time.monotonic() + timeout
    while True:
        PROCESS_LOCK.acquire()
        try:
            con = duckdb.connect(path, read_only=read_only)
            break
        except duckdb.Error as e:
            PROCESS_LOCK.release()
            if not _is_lock_conflict(e):
                raise _explain(path, e) from None
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


def _in_memory(sql: str, params) -> pd.DataFrame:
    """The query's answer on an empty store (its tables, no rows), without creating a file."""
    con = duckdb.connect(":memory:")
    try:
        con.execute(SCHEMA)
        con.execute(LAB_SCHEMA)
        return con.execute(sql, params or []).df()
    finally:
        con.close()


def query(sql: str, params=None, path=None, timeout: float = 15.0) -> pd.DataFrame:
    """Read-only query. Reading never creates a store: an absent store, or a DuckDB file without tables, reads as
    empty tables (a new user has none yet). A store of an earlier version that lacks a table or column gets it
    (migrated) and is read again; another program's database raises StoreError."""
    path = settings.store_path(path)
    check_location(path)
    if not os.path.exists(path):
        return _in_memory(sql, params)
    df = _read(path, sql, params, timeout, missing_ok=True)
    if df is None:  # a store of an older version lacks some of our tables or columns: add them
        with connect(path, timeout=timeout):
            pass
        df = _read(path, sql, params, timeout)
    return df


def _read(path: str, sql: str, params, timeout: float, missing_ok: bool = False):
    """The query's frame, or None for a missing table or column when missing_ok (another program's database:
    StoreError; a damaged file: StoreDamaged)."""
    with connect(path, read_only=True, timeout=timeout) as con:
        try:
            kind, detail = _kind(con, path)
            if kind == "foreign":
                raise StoreError(f"store {path}: {detail}")
            if kind == "empty":
                return _in_memory(sql, params)
            return con.execute(sql, params or []).df()
        except (duckdb.CatalogException, duckdb.BinderException) as e:
            missing_column = isinstance(e, duckdb.BinderException) and "not found" in str(e)
            if not missing_ok or not (missing_column or isinstance(e, duckdb.CatalogException)):
                raise
            return None
        except duckdb.Error as e:
            if _is_damage(e) or isinstance(e, duckdb.IOException):
                raise failure(path, e, "cannot be read") from None
            raise


def verify(path=None, timeout: float = 15.0) -> None:
    """StoreDamaged when any block of the store cannot be read back (truncated, overwritten): every column of every
    table is read once (milliseconds for a store of thousands of runs). Before a run trains, not after."""
    path = settings.store_path(path)
    if not os.path.exists(path):
        return
    with connect(path, read_only=True, timeout=timeout) as con:
        try:
            main, _ = _tables(con)
            for table in sorted(main):
                con.execute(f'SELECT bit_xor(hash(COLUMNS(*))) FROM "{table}"').fetchall()
        except duckdb.Error as e:
            raise failure(path, e, "cannot be read") from None


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
