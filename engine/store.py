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
import time
from contextlib import contextmanager
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
CREATE TABLE IF NOT EXISTS jobs (
    job_id VARCHAR PRIMARY KEY, kind VARCHAR, status VARCHAR, progress DOUBLE, phase VARCHAR,
    created_at TIMESTAMP, started_at TIMESTAMP, finished_at TIMESTAMP, error VARCHAR, run_id VARCHAR,
    spec_json VARCHAR);
"""
METHOD_TABLES = ("persona_results", "persona_kind_results", "predictions", "merge_weights")  # per method folder
RUN_TABLES = ("personas", "cluster_k", "persona_blind")                                   # per run folder


class StoreBusy(RuntimeError):
    """The store stayed locked by another process for longer than the retry budget."""


def store_path(path: str | os.PathLike | None = None) -> str:
    return str(path or os.environ.get("PLL_STORE") or DEFAULT_STORE)


def runs_dir(path=None) -> Path:
    """Result folders (and trained adapters) of CLI runs: `runs/` beside the store file."""
    return Path(store_path(path)).resolve().parent / "runs"


@contextmanager
def connect(path=None, read_only: bool = False, timeout: float = 15.0):
    """A short-lived connection, retried with jitter while another process holds the lock."""
    path = store_path(path)
    deadline = time.monotonic() + timeout
    while True:
        try:
            con = duckdb.connect(path, read_only=read_only)
            break
        except duckdb.IOException as e:
            if "lock" not in str(e).lower() or time.monotonic() > deadline:
                raise StoreBusy(f"{path}: {e}") from e
            time.sleep(0.05 + random.random() * 0.2)
    try:
        if not read_only:
            con.execute(SCHEMA)
        yield con
    finally:
        con.close()


def query(sql: str, params=None, path=None) -> pd.DataFrame:
    """Read-only query; an absent store reads as empty tables (a new user has none yet)."""
    path = store_path(path)
    if not os.path.exists(path):
        with connect(path):  # creates the schema, so the query below has its tables
            pass
    with connect(path, read_only=True) as con:
        return con.execute(sql, params or []).df()


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


def write_method_files(results_dir: Path, method: str, summary: dict, tables: dict[str, pd.DataFrame]) -> None:
    """One finished method: a folder built under a temp name and renamed, so readers see all or nothing."""
    methods = results_dir / "methods"
    methods.mkdir(parents=True, exist_ok=True)
    final = methods / method_dirname(method)
    tmp = methods / f".{method_dirname(method)}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    (tmp / "method.json").write_text(json.dumps(summary, default=str))
    for name, df in tables.items():
        if df is not None and not df.empty:
            df.to_parquet(tmp / f"{name}.parquet", index=False)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


def ingest(results_dir, path=None) -> list[str]:
    """Copy a run's result files into the store in one transaction; returns the methods newly added.

    Idempotent: ingesting the same folder twice changes nothing.
    """
    results_dir = Path(results_dir)
    run = json.loads((results_dir / "run.json").read_text())
    run_id = run["run_id"]
    method_dirs = sorted(d for d in (results_dir / "methods").glob("*")
                         if d.is_dir() and not d.name.startswith(".")) if (results_dir / "methods").exists() else []
    with connect(path) as con:
        con.execute("BEGIN")
        try:
            con.execute("DELETE FROM runs WHERE run_id = ?", [run_id])
            _insert(con, "runs", pd.DataFrame([run]))
            for table in RUN_TABLES:
                f = results_dir / f"{table}.parquet"
                if f.exists():
                    con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
                    _insert(con, table, pd.read_parquet(f).assign(run_id=run_id))
            have = {r[0] for r in con.execute("SELECT method FROM method_results WHERE run_id = ?", [run_id]).fetchall()}
            added = []
            for d in method_dirs:
                summary = json.loads((d / "method.json").read_text())
                method = summary["method"]
                if method in have:
                    continue
                _insert(con, "method_results", pd.DataFrame([summary]).assign(run_id=run_id))
                for table in METHOD_TABLES:
                    f = d / f"{table}.parquet"
                    if f.exists():
                        _insert(con, table, pd.read_parquet(f).assign(run_id=run_id, method=method))
                added.append(method)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
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
