"""A run's result files and their ingestion into the store.

Runs never write the store while they compute: they write result files (temp name, then rename), one
folder per finished method, and `ingest` copies them in, one transaction per call. A method's rows
therefore appear all together or not at all.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import duckdb
import pandas as pd

from engine import settings
import engine.store.owner as owner
from engine.store.db import METHOD_TABLES, RUN_TABLES, ResultFileError, _first_line, _insert, connect, failure


def method_dirname(method: str) -> str:
    return method.replace(":", "__")


def _discard(tmp: Path) -> None:
    try:
        tmp.unlink(missing_ok=True)
    except OSError:
        pass


def write_json_atomic(path: Path, obj) -> None:
    """The file written under a temp name and renamed: readers see the old or the new one; a failed write (a full
    disk) leaves the old file and no temp file behind."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps(obj, indent=1, default=str))
        os.replace(tmp, path)
    except BaseException:
        _discard(tmp)
        raise


def write_run_file(results_dir: Path, run: dict) -> None:
    results_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(results_dir / "run.json", run)


def write_run_table(results_dir: Path, table: str, df: pd.DataFrame) -> None:
    tmp = results_dir / f".{table}.parquet.tmp{os.getpid()}"
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, results_dir / f"{table}.parquet")
    except BaseException:
        _discard(tmp)
        raise


def method_summary(method: str, per_persona: pd.DataFrame, **measured) -> dict:
    """A method's method_results row: `n_personas` and `mean_score` from its per-persona results (the rows every
    statistic reads), so a trained and an imported method are summarised alike; `measured` adds times, sizes,
    details. Both count only personas that have a score (a persona none of whose targets names a setting has
    no action_f1), as every statistic over personas does."""
    scored = per_persona["score"].dropna()
    return {"method": method, **measured, "n_personas": int(len(scored)),
            "mean_score": float(scored.mean()) if len(scored) else float("nan")}


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


def settle(run: dict) -> dict:
    """A run file that says `running` while its process is gone (killed, crashed, the machine restarted): the same
    run, `interrupted`, with what is known of why (engine.store.owner); any other run file as it is."""
    if run.get("status") != "running":
        return run
    state, why = owner.state(run.get("host"), run.get("pid"), run.get("pid_start"), run.get("heartbeat_at"))
    if state != "gone":
        return run
    return {**run, "status": owner.INTERRUPTED, "error": run.get("error") or f"interrupted: {why}; finished methods "
            "are kept", "finished_at": run.get("finished_at") or run.get("heartbeat_at") or owner.now_iso()}


def heartbeat(results_dir) -> str | None:
    """The last heartbeat a run's file holds (refreshed while the run works), None when it cannot be read."""
    if not isinstance(results_dir, str) or not results_dir:
        return None
    try:
        run = json.loads((Path(results_dir) / "run.json").read_text())
    except (OSError, ValueError):
        return None
    return run.get("heartbeat_at") if isinstance(run, dict) and isinstance(run.get("heartbeat_at"), str) else None


def _utc(value):
    """A stored or written time as a naive UTC datetime (None when absent or unreadable)."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    try:
        t = pd.Timestamp(value)
    except (TypeError, ValueError):
        return None
    return (t.tz_convert("UTC").tz_localize(None) if t.tzinfo else t).to_pydatetime()


def _check_same_run(stored, run: dict, results_dir: Path, path) -> None:
    """ResultFileError unless the store's row of this run id came from this folder: a run id belongs to one
    folder, and a copy elsewhere (another run reusing the id) never replaces it. An imported run gains methods
    from the importer's temporary folders; a store moved with its runs/ keeps its runs (same id, same start)."""
    if stored is None:
        return
    status, artifacts, created_at, task = stored
    here = str(results_dir.resolve())
    if artifacts == here:
        return
    if artifacts is None and run.get("artifacts_dir") is None and task == run.get("task") == "imported":
        return
    if artifacts and not os.path.exists(artifacts) and _utc(created_at) == _utc(run.get("created_at")) is not None:
        return
    raise ResultFileError(
        f"{results_dir / 'run.json'}: run {run['run_id']} is already in the store {settings.store_path(path)} "
        f"({status}, from {artifacts or 'another folder'}); a copy from another folder never replaces it (give "
        "the copy its own run_id to ingest it as another run)")


def ingest(results_dir, path=None, problems: list | None = None, timeout: float = 15.0) -> list[str]:
    """Copy a run's result files into the store in one transaction; returns the methods newly added.

    Idempotent: ingesting the same folder twice changes nothing. Every file is read before the store is
    opened. A method folder that cannot be read or does not fit the store is left out (its rows land all
    together or not at all) and the good ones still land; what was left out is appended to `problems`
    (when not given, ResultFileError is raised after the good methods are committed). A broken run file
    raises ResultFileError and changes nothing; so does a run id the store holds from another folder. A run
    file that says `running` while its process is gone lands as `interrupted` (and the file says so too); a
    `done` run is never set back to another status.
    """
    results_dir = Path(results_dir)
    run, tables, methods, bad = _read_results(results_dir)
    run_id = run["run_id"]
    settled = settle(run)
    changed, run = settled is not run, settled
    with connect(path, timeout=timeout) as con:
        stored = con.execute("SELECT status, artifacts_dir, created_at, task FROM runs WHERE run_id = ?",
                             [run_id]).fetchone()
        _check_same_run(stored, run, results_dir, path)
        keep_row = stored is not None and stored[0] == "done" and run.get("status") != "done"
        have = {r[0] for r in con.execute("SELECT method FROM method_results WHERE run_id = ?", [run_id]).fetchall()}
        todo = [m for m in methods if m[1] not in have]
        while True:
            where, added = results_dir / "run.json", []
            con.execute("BEGIN")
            try:
                if not keep_row:
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
            except duckdb.Error as e:  # the store itself failed (disk full, damaged, IO): nothing landed
                _rollback(con)
                raise failure(settings.store_path(path), e) from None
            except BaseException:
                _rollback(con)
                raise
    if changed:  # landed interrupted: nobody else writes the run file now, so the folder tells the truth too
        try:
            write_json_atomic(results_dir / "run.json", run)
        except OSError:
            pass
    if bad:
        if problems is None:
            raise ResultFileError("; ".join(bad))
        problems.extend(bad)
    return added
