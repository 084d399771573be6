"""Every read and update of the store outside ingestion, by what it answers.

Reads open short read-only connections (an absent store reads as empty tables); updates open short
read-write ones. Callers never write SQL: they ask for a frame here and compute on it elsewhere.
"""
from __future__ import annotations

import json
import os

import pandas as pd

from engine import settings
import engine.store.owner as owner
import engine.store.results as results
from engine.store.db import METRIC_COLUMNS, StoreBusy, StoreError, connect, query, verify

# which test targets a per-persona figure is over; stated / supplied: the reference settings the dialogue named
# before the target, and those it did not (the assistant's own values: the personalization figure)
KINDS = ("all", "personal", "general", "stated", "supplied")


def _ids(run_ids) -> list[str]:
    return [str(r) for r in (run_ids or [])]


def check_usable(path=None, timeout: float = 15.0, busy_ok: bool = False, thorough: bool = False) -> None:
    """StoreError now for a foreign or broken store file (creates nothing that is not there); a store another
    process writes right now passes when busy_ok. thorough: also read every block back (a truncated or overwritten
    store is StoreDamaged now, not when a run's results land)."""
    try:
        query("SELECT 1 FROM runs LIMIT 0", path=path, timeout=timeout)
        if thorough:
            verify(path, timeout)
    except StoreBusy:
        if not busy_ok:
            raise


# ----------------------------------------------------------------------------- runs and methods

def runs(path=None) -> pd.DataFrame:
    """Every run with its number of finished methods, newest first."""
    return query(
        "SELECT r.*, coalesce(m.n_methods, 0) AS n_methods_done FROM runs r "
        "LEFT JOIN (SELECT run_id, count(*) AS n_methods FROM method_results GROUP BY run_id) m USING (run_id) "
        "ORDER BY r.created_at DESC", path=path)


def settle(path=None, timeout: float = 15.0) -> dict[str, str]:
    """Runs and studies the store shows as `running` whose process is gone (engine.store.owner): stored as
    `interrupted` with why (finished methods are kept). Returns {run or study id: why} of those found; when the
    store cannot be written now (locked, full, a newer lab's) they are returned all the same and stored by a
    later call. Reads first and writes only when there is something to settle; an absent store is left absent."""
    if not os.path.exists(settings.store_path(path)):
        return {}
    runs_ = query("SELECT run_id, host, pid, pid_start, heartbeat_at, artifacts_dir FROM runs WHERE status = "
                  "'running'", path=path, timeout=timeout)
    studies_ = query("SELECT study_id, host, pid, pid_start FROM studies WHERE status = 'running'", path=path,
                     timeout=timeout)
    gone_runs, gone_studies = {}, {}
    for r in runs_.itertuples():
        beat = results.heartbeat(r.artifacts_dir) or r.heartbeat_at  # the run file's is newer than the last ingest's
        state, why = owner.state(r.host, r.pid, r.pid_start, beat)
        if state == "gone":
            gone_runs[r.run_id] = f"interrupted: {why}; finished methods are kept"
    for r in studies_.itertuples():
        state, why = owner.state(r.host, r.pid, r.pid_start)
        if state == "gone":
            gone_studies[r.study_id] = f"interrupted: {why}"
    if gone_runs or gone_studies:
        try:
            with connect(path, timeout=timeout) as con:
                for run_id, why in gone_runs.items():
                    con.execute("UPDATE runs SET status = 'interrupted', error = coalesce(error, ?), finished_at = "
                                "coalesce(finished_at, now()) WHERE run_id = ? AND status = 'running'", [why, run_id])
                for study_id in gone_studies:
                    con.execute("UPDATE studies SET status = 'interrupted' WHERE study_id = ? AND status = 'running'",
                                [study_id])
        except StoreError:  # locked, full, or a newer lab's store (read, never written): shown, stored later
            pass
    return {**gone_runs, **gone_studies}


def mark_interrupted(run_id: str, path=None) -> str:
    """A `running` run stored as `interrupted` by hand (for what settle cannot tell: no owner recorded, another
    host); ValueError when there is no such run, it is not running, or its process is alive here. Returns why."""
    row = run_row(run_id, path)
    if row is None:
        raise ValueError(f"no run '{run_id}' in the store {settings.store_path(path)}")
    if row["status"] != "running":
        raise ValueError(f"run {run_id} is {row['status']}, not running")
    state, _ = owner.state(row.get("host"), row.get("pid"), row.get("pid_start"))
    if state == "alive":
        raise ValueError(f"run {run_id} is running: its process (pid {int(row['pid'])}) is alive on this host; stop it "
                         "first (it then ends cancelled)")
    why = "interrupted: marked by hand (engine runs --interrupt); finished methods are kept"
    with connect(path) as con:
        con.execute("UPDATE runs SET status = 'interrupted', error = coalesce(error, ?), finished_at = "
                    "coalesce(finished_at, now()) WHERE run_id = ? AND status = 'running'", [why, run_id])
    return why


def run_row(run_id: str, path=None) -> dict | None:
    """One run's row, or None."""
    rows = query("SELECT * FROM runs WHERE run_id = ?", [run_id], path)
    return rows.iloc[0].to_dict() if len(rows) else None


def _of_runs(table: str, run_ids, order: str, path) -> pd.DataFrame:
    """Every row of `table` for the runs (None: all runs)."""
    if run_ids is None:
        return query(f"SELECT * FROM {table} ORDER BY {order}", path=path)
    return query(f"SELECT * FROM {table} WHERE run_id IN (SELECT unnest(?)) ORDER BY {order}", [_ids(run_ids)], path)


def method_results(run_ids=None, path=None) -> pd.DataFrame:
    """method_results rows of the runs (None: all), by run and method."""
    return _of_runs("method_results", run_ids, "run_id, method", path)


def persona_results(run_ids=None, path=None) -> pd.DataFrame:
    """persona_results rows of the runs (None: all): every metric per persona, the input of every statistic."""
    return _of_runs("persona_results", run_ids, "run_id, method, persona_id", path)


def finished_methods(run_id: str, path=None) -> set[str]:
    return set(query("SELECT method FROM method_results WHERE run_id = ?", [run_id], path).method)


def method_info(run_ids, path=None) -> pd.DataFrame:
    """Per (run, method): time, size, epochs, stages and the run's name, model, seed, metric."""
    return query(
        "SELECT m.run_id, m.method, m.train_seconds, m.eval_seconds, m.trainable_params, m.peak_mem_mb, "
        "m.n_adapters, m.device, m.epochs_trained, m.details_json, r.name AS run_name, r.model, r.seed, r.metric "
        "FROM method_results m JOIN runs r USING (run_id) WHERE m.run_id IN (SELECT unnest(?))", [_ids(run_ids)], path)


def routed_details(run_ids, path=None) -> pd.DataFrame:
    """`routed`'s mean score and details (its choices) per run."""
    return query("SELECT run_id, mean_score, details_json FROM method_results WHERE method = 'routed' "
                 "AND run_id IN (SELECT unnest(?))", [_ids(run_ids)], path)


def run_configs(run_ids, path=None) -> pd.DataFrame:
    """run_id, name, model, dataset, config_json of the runs (what tells seeds of one setup apart)."""
    return query("SELECT run_id, name, model, dataset, config_json FROM runs WHERE run_id IN (SELECT unnest(?)) "
                 "ORDER BY run_id", [_ids(run_ids)], path)


def speed_measurements(model: str, path=None) -> pd.DataFrame:
    """Every finished method of this model: tokens/s, eval seconds, targets answered, the run's config."""
    return query(
        "SELECT m.tokens_per_second, m.eval_seconds, m.method, m.run_id, r.config_json, "
        "(SELECT count(*) FROM predictions p WHERE p.run_id = m.run_id AND p.method = m.method) AS n_targets "
        "FROM method_results m JOIN runs r USING (run_id) WHERE r.model = ?", [model], path)


# ----------------------------------------------------------------------------- per-persona figures

def metric_counts(run_ids, path=None) -> dict[str, int]:
    """How many per-persona values each metric column holds in these runs."""
    cols = ", ".join(f"count({m}) AS {m}" for m in METRIC_COLUMNS)
    df = query(f"SELECT {cols} FROM persona_results WHERE run_id IN (SELECT unnest(?))", [_ids(run_ids)], path)
    return {m: int(df[m].iloc[0]) if len(df) else 0 for m in METRIC_COLUMNS}


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")


def _check_metric(metric: str, kind: str) -> None:
    if metric not in METRIC_COLUMNS:
        raise ValueError(f"metric must be one of {METRIC_COLUMNS}")
    _check_kind(kind)


def persona_scores(run_ids, metric: str = "score", path=None, kind: str = "all") -> pd.DataFrame:
    """Long frame run_id, method, persona_id, score (= the chosen metric over the test targets of `kind`)."""
    _check_metric(metric, kind)
    if kind == "all":
        return query(f"SELECT run_id, method, persona_id, {metric} AS score FROM persona_results "
                     "WHERE run_id IN (SELECT unnest(?)) ORDER BY run_id, method, persona_id", [_ids(run_ids)], path)
    return query(f"SELECT run_id, method, persona_id, {metric} AS score FROM persona_kind_results "
                 "WHERE run_id IN (SELECT unnest(?)) AND kind = ? ORDER BY run_id, method, persona_id",
                 [_ids(run_ids), kind], path)


def kind_results(run_ids, path=None) -> pd.DataFrame:
    """persona_kind_results rows of the runs (every metric, per persona and kind)."""
    return query("SELECT * FROM persona_kind_results WHERE run_id IN (SELECT unnest(?))", [_ids(run_ids)], path)


def persona_blind(run_ids, path=None) -> pd.DataFrame:
    """persona_blind rows of the runs: the data's persona-blind replies scored like a method."""
    return query("SELECT * FROM persona_blind WHERE run_id IN (SELECT unnest(?))", [_ids(run_ids)], path)


def target_counts(run_ids, path=None, kind: str = "all") -> pd.DataFrame:
    """Per (run, method): the test targets whose reference names a setting (of the part, for stated / supplied)
    and those settings, summed over personas: what the action metrics of `kind` rest on (NULL in older stores)."""
    _check_kind(kind)
    table, where = ("persona_results", "") if kind == "all" else ("persona_kind_results", " AND kind = ?")
    return query(f"SELECT run_id, method, sum(n_with_settings) AS n_targets, sum(n_settings) AS n_settings FROM "
                 f"{table} WHERE run_id IN (SELECT unnest(?)){where} GROUP BY run_id, method",
                 [_ids(run_ids)] + ([kind] if where else []), path)


def blind_ceiling(run_ids, metric: str = "score", path=None, kind: str = "all") -> pd.DataFrame:
    """Per run: mean over the personas that have the figure (n_personas) of the persona-blind replies' metric;
    no row for runs without them (or where no persona has the figure)."""
    _check_metric(metric, kind)
    return query(f"SELECT run_id, avg({metric}) AS ceiling, count({metric}) AS n_personas FROM persona_blind "
                 f"WHERE run_id IN (SELECT unnest(?)) AND kind = ? GROUP BY run_id HAVING count({metric}) > 0 "
                 "ORDER BY run_id",
                 [_ids(run_ids), kind], path)


# ----------------------------------------------------------------------------- personas

def persona_list(run_id, path=None) -> pd.DataFrame:
    return query("SELECT persona_id, profile, cluster, n_train, n_val, n_test, silhouette FROM personas "
                 "WHERE run_id = ? ORDER BY persona_id", [run_id], path)


def persona_attributes(run_ids, path=None) -> pd.DataFrame:
    """run_id, persona_id and the numeric facts a run knows of each persona: train / val / test examples,
    silhouette in the profile clustering."""
    return query("SELECT run_id, persona_id, n_train, n_val, n_test, silhouette FROM personas "
                 "WHERE run_id IN (SELECT unnest(?)) ORDER BY run_id, persona_id", [_ids(run_ids)], path)


def persona_ids(run_id, path=None) -> set[str]:
    """The personas a run has results for."""
    return set(query("SELECT DISTINCT persona_id FROM persona_results WHERE run_id = ?", [run_id], path).persona_id)


def first_persona(run_id, path=None) -> str | None:
    df = query("SELECT min(persona_id) AS p FROM personas WHERE run_id = ?", [run_id], path)
    return df.p.iloc[0] if len(df) and isinstance(df.p.iloc[0], str) else None


def persona_profile(run_id, persona_id, path=None) -> dict | None:
    prof = query("SELECT * FROM personas WHERE run_id = ? AND persona_id = ?", [run_id, persona_id], path)
    return prof.iloc[0].to_dict() if len(prof) else None


def persona_method_scores(run_id, persona_id, path=None) -> pd.DataFrame:
    """One persona's per-method figures, with the run's mean score per method beside them."""
    return query(
        "SELECT p.method, p.score, p.n_test, a.mean_score AS run_mean, p.* EXCLUDE (run_id, method, persona_id, "
        "score, n_test) FROM persona_results p JOIN (SELECT method, avg(score) AS mean_score FROM persona_results "
        "WHERE run_id = ? GROUP BY method) a USING (method) WHERE p.run_id = ? AND p.persona_id = ? ORDER BY method",
        [run_id, run_id, persona_id], path)


def persona_predictions(run_id, persona_id, path=None) -> pd.DataFrame:
    return query("SELECT method, example_id, kind, context, meta_json, reference, persona_blind, prediction, score "
                 "FROM predictions WHERE run_id = ? AND persona_id = ? ORDER BY example_id, method",
                 [run_id, persona_id], path)


def merge_neighbours(run_id, persona_id, path=None) -> pd.DataFrame:
    return query("SELECT method, neighbour_id, weight, val_score, centrality, similarity FROM merge_weights "
                 "WHERE run_id = ? AND persona_id = ? ORDER BY method, weight DESC", [run_id, persona_id], path)


def persona_map(run_id, path=None) -> pd.DataFrame:
    """Personas with cluster, UMAP coordinates and silhouette."""
    return query("SELECT persona_id, profile, cluster, umap_x, umap_y, silhouette FROM personas "
                 "WHERE run_id = ? ORDER BY persona_id", [run_id], path)


def method_scores(run_id, methods, path=None) -> pd.DataFrame:
    """persona_id, method, score of the given methods in one run."""
    return query("SELECT persona_id, method, score FROM persona_results WHERE run_id = ? AND method IN "
                 "(SELECT unnest(?))", [run_id, list(methods)], path)


def cluster_k(run_id, path=None) -> pd.DataFrame:
    return query("SELECT k, silhouette, chosen FROM cluster_k WHERE run_id = ? ORDER BY k", [run_id], path)


def runs_with_clusters(path=None) -> list[str]:
    df = query("SELECT DISTINCT run_id FROM personas WHERE cluster IS NOT NULL OR umap_x IS NOT NULL", path=path)
    return list(df.run_id)


# ----------------------------------------------------------------------------- studies

def studies(path=None) -> pd.DataFrame:
    """Every study with its runs landed so far and those done."""
    return query("SELECT s.*, (SELECT count(*) FROM runs r WHERE r.study_id = s.study_id) AS n_landed, "
                 "(SELECT count(*) FROM runs r WHERE r.study_id = s.study_id AND r.status = 'done') AS n_done "
                 "FROM studies s ORDER BY created_at DESC", path=path)


def study_spec(study_id: str, path=None) -> dict | None:
    rows = query("SELECT spec_json FROM studies WHERE study_id = ?", [study_id], path)
    return json.loads(rows.spec_json[0]) if len(rows) else None


def study_runs(study_id: str, path=None) -> pd.DataFrame:
    return query("SELECT * FROM runs WHERE study_id = ? ORDER BY run_id", [study_id], path)


def run_seconds(run_ids, path=None) -> pd.DataFrame:
    """run_id, method, train + eval seconds."""
    return query("SELECT run_id, method, train_seconds + eval_seconds AS seconds FROM method_results "
                 "WHERE run_id IN (SELECT unnest(?))", [_ids(run_ids)], path)


def save_study(study_id: str, name: str, spec: dict, status: str, n_runs: int, path=None,
               runner: dict | None = None) -> None:
    """The study's row; `runner` (engine.store.owner.me()) is the process that runs it now (a CLI study; a
    dashboard study's runs are jobs, each with its own worker)."""
    runner = runner or {}
    with connect(path) as con:
        con.execute("INSERT INTO studies (study_id, name, created_at, spec_json, status, n_runs, host, pid, pid_start) "
                    "VALUES (?, ?, now(), ?, ?, ?, ?, ?, ?) ON CONFLICT (study_id) DO UPDATE SET "
                    "status = excluded.status, n_runs = excluded.n_runs, host = excluded.host, pid = excluded.pid, "
                    "pid_start = excluded.pid_start",
                    [study_id, name, json.dumps(spec), status, n_runs, runner.get("host"), runner.get("pid"),
                     runner.get("pid_start")])


def set_study_status(study_id: str, status: str, path=None) -> None:
    with connect(path) as con:
        con.execute("UPDATE studies SET status = ? WHERE study_id = ?", [status, study_id])


# ----------------------------------------------------------------------------- jobs

def active_jobs(path=None, timeout: float = 15.0) -> pd.DataFrame:
    """Jobs the store shows as queued or running, with their run's results folder."""
    return query("SELECT j.job_id, j.run_id, j.spec_json, r.artifacts_dir FROM jobs j "
                 "LEFT JOIN runs r USING (run_id) WHERE j.status IN ('queued', 'running')", path=path, timeout=timeout)


def fail_jobs(pairs: list[tuple[str, str]], why: str, path=None, timeout: float = 15.0) -> None:
    """Jobs (job_id, run_id) that can never finish: failed, with their runs still running."""
    with connect(path, timeout=timeout) as con:
        for job_id, run_id in pairs:
            con.execute("UPDATE jobs SET status = 'failed', error = ?, finished_at = now() WHERE job_id = ?",
                        [why, job_id])
            con.execute("UPDATE runs SET status = 'failed', error = coalesce(error, ?), finished_at = "
                        "coalesce(finished_at, now()) WHERE run_id = ? AND status = 'running'", [why, run_id])


JOB_COLUMNS = ("job_id", "kind", "status", "progress", "phase", "created_at", "started_at", "finished_at", "error",
               "run_id", "spec_json")


def upsert_job(row: dict, path=None, timeout: float = 15.0) -> None:
    """The job's row as given; a failed or cancelled job's run that still shows running takes its status."""
    with connect(path, timeout=timeout) as con:
        con.execute("DELETE FROM jobs WHERE job_id = ?", [row["job_id"]])
        con.execute(f"INSERT INTO jobs ({', '.join(JOB_COLUMNS)}) VALUES ({', '.join('?' * len(JOB_COLUMNS))})",
                    [row.get(k) for k in JOB_COLUMNS])
        if row["status"] in ("failed", "cancelled") and row.get("run_id"):
            # a job that failed while its run still shows running: its worker ended without recording the run's
            # outcome (the run is interrupted, finished methods kept); a cancelled job's run is cancelled
            error = row.get("error")
            con.execute("UPDATE runs SET status = ?, error = coalesce(error, ?), "
                        "finished_at = coalesce(finished_at, now()) WHERE run_id = ? AND status = 'running'",
                        ["cancelled" if row["status"] == "cancelled" else owner.INTERRUPTED,
                         error.splitlines()[0] if error else None, row["run_id"]])
