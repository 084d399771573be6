"""Background jobs of the dashboard: a folder per job, a detached worker process per job.

    jobs/<job_id>/spec.json       what to run (a RunSpec) and the run id it will write
    jobs/<job_id>/status.json     queued | running | done | failed | cancelled, pid, times, error
    jobs/<job_id>/progress.json   phase, method, done, total, fraction, eta_seconds, updated_at
    jobs/<job_id>/log.txt         the worker's stdout and stderr
    jobs/<job_id>/results/        the run's result files (engine.lab.runner.execute_run)

`submit` checks the spec and the dataset first (errors go to the caller, nothing is written), writes
the folder and starts `python -m engine worker <job_id>` in a new process session. The worker waits
in "queued" until it holds its device (an flock on jobs/.locks/<device>.lock, taken in submission
order; the kernel drops it when the holder dies, so a dead worker never blocks the queue), then runs.
Everything a job is lives in files, so jobs survive dashboard restarts. Workers never open the store:
`poll` (called by the dashboard) ingests finished methods with short connections, mirrors the jobs
into the store's `jobs` table, turns a worker that died into a failed job (its run interrupted, finished
methods kept) with the end of its log, and stores any other run of the store whose process is gone as
interrupted. A worker is known by its pid and its process's start (worker.pid, then status.json), never by
its command line, so a worker that is still starting is not taken for a dead one.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from engine import store
from engine import settings
from engine.store import owner

ACTIVE = ("queued", "running")
FINISHED = ("done", "failed", "cancelled")
STARTUP_GRACE_S = 30.0     # a job without a live pid yet is "starting" for this long after submit


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _ts(iso: str | None) -> float | None:
    """Seconds since the epoch of an ISO time, None when absent or not a time (a hand-edited status.json)."""
    try:
        return datetime.fromisoformat(iso).timestamp() if iso else None
    except (TypeError, ValueError):
        return None


def group_progress(group: list[dict]) -> dict:
    """A group of jobs (a study's) as a whole: counts per status, and the time left estimated from the
    finished ones' run time (None until one has finished or when none is active)."""
    counts = {s: sum(j["status"] == s for j in group) for s in ACTIVE + FINISHED}
    took = [t1 - t0 for j in group if j["status"] == "done"
            and (t0 := _ts(j.get("started_at"))) is not None and (t1 := _ts(j.get("finished_at"))) is not None]
    active = sum(counts[s] for s in ACTIVE)
    return {"total": len(group), "counts": counts, "active": active,
            "eta_seconds": sum(took) / len(took) * active if took and active else None}


def _iso(value) -> str | None:
    """An ISO time as written by this module, or None: what the store's TIMESTAMP columns accept."""
    return value if isinstance(value, str) and _ts(value) is not None else None


def _text(value) -> str | None:
    return value if isinstance(value, str) else None


def _read_json(path: Path, default=None):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def job_device(spec) -> str:
    """The lock a run's job waits for: its device, or its Ray cluster (one run at a time spreads over it)."""
    return f"ray:{spec.ray}" if getattr(spec, "ray", None) else device_key(spec.device)


def device_key(device: str | None) -> str:
    """The lock name of a device: cpu, cuda:0, cuda:1, ... (auto resolves like the engine does)."""
    if not device or device == "auto":
        try:
            import torch
            device = "cuda" if torch.cuda.is_available() else "cpu"
        except ImportError:
            device = "cpu"
    return "cuda:0" if device == "cuda" else device


# ----------------------------------------------------------------------------- submit

def check_spec(spec) -> None:
    """Everything that can be checked without loading a model (RunSpec.validate); raises ConfigError, DataError,
    ModelError."""
    spec.validate()


def submit(spec, kind: str = "run", jobs_dir=None, store_file=None, spawn: bool = True, run_id: str | None = None,
           checked: bool = False) -> str:
    """Check the spec (unless `checked`), write the job folder, start its worker; returns the job id."""
    if not checked:
        check_spec(spec)
    root = settings.jobs_root(jobs_dir, store_file)
    job_id, run_id = settings.new_id(), run_id or settings.new_id()
    study_id = (spec.study or {}).get("study_id")
    d = root / job_id
    d.mkdir(parents=True)
    store.write_json_atomic(d / "spec.json", {"kind": kind, "run_id": run_id, "spec": asdict(spec),
                                              "jobs_dir": str(root.resolve())})
    store.write_json_atomic(d / "status.json", {
        "job_id": job_id, "kind": kind, "status": "queued", "run_id": run_id, "device": job_device(spec),
        "study_id": study_id,
        "created_at": _now(), "started_at": None, "finished_at": None, "error": None, "pid": None})
    if spawn:
        start_worker(job_id, root)
    return job_id


def start_worker(job_id: str, root: Path) -> int:
    """Start the job's worker; worker.pid says which process it is: its pid and the process's start (known from
    the fork on, so the worker is recognised while it is still starting, whatever its command line says yet)."""
    root = Path(root).resolve()  # the worker runs in the project folder: a relative jobs folder would be another
    d = root / job_id
    with open(d / "log.txt", "ab") as log:
        p = subprocess.Popen([sys.executable, "-m", "engine", "worker", job_id, "--jobs-dir", str(root)],
                             start_new_session=True, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             cwd=str(settings.PROJECT),
                             env={**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false",
                                  **({} if settings.downloads_allowed() else {"HF_HUB_OFFLINE": "1"})})
    _CHILDREN[p.pid] = p
    store.write_json_atomic(d / "worker.pid", {"pid": p.pid, "pid_start": owner.process_start(p.pid)})
    return p.pid


_CHILDREN: dict[int, subprocess.Popen] = {}  # workers this process started, reaped so they leave no zombies


def retry(job_id: str, jobs_dir=None, store_file=None) -> str:
    """Submit the same spec again as a new job; returns the new job id."""
    from engine.lab.spec import RunSpec
    saved = _read_json(settings.jobs_root(jobs_dir, store_file) / job_id / "spec.json")
    if saved is None:
        raise FileNotFoundError(f"job {job_id}: no spec.json")
    return submit(RunSpec.from_dict(saved["spec"]), saved.get("kind", "run"), jobs_dir, store_file)


# ----------------------------------------------------------------------------- liveness

def _reap():
    for pid, p in list(_CHILDREN.items()):
        if p.poll() is not None:
            _CHILDREN.pop(pid, None)


def pid_alive(pid: int | None, pid_start: str | None = None) -> bool:
    """A live (not zombie) process; with pid_start (engine.store.owner.process_start), the same process that had
    that pid then (not a later one that reuses the pid)."""
    if not pid:
        return False
    _reap()
    return owner.pid_state(pid, pid_start) == "alive"


def log_tail(job_id: str, jobs_dir=None, lines: int = 40, store_file=None) -> str:
    path = settings.jobs_root(jobs_dir, store_file) / job_id / "log.txt"
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64_000))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.replace("\r", "\n").splitlines()[-lines:])


def _worker_pid(d: Path, status: dict) -> tuple[int | None, str | None]:
    """(pid, process start) of the job's worker: from status.json once the worker wrote it, else worker.pid (written
    by whoever started it; an older lab wrote the pid alone)."""
    pid, start = status.get("pid"), status.get("pid_start")
    if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0:
        return pid, start if isinstance(start, str) else None
    try:
        text = (d / "worker.pid").read_text()
    except OSError:
        return None, None
    try:
        saved = json.loads(text)
    except ValueError:
        return None, None
    if isinstance(saved, int) and not isinstance(saved, bool) and saved > 0:
        return saved, None
    if isinstance(saved, dict) and isinstance(saved.get("pid"), int) and saved["pid"] > 0:
        return saved["pid"], saved.get("pid_start") if isinstance(saved.get("pid_start"), str) else None
    return None, None


def _broken(job_id: str, d: Path, what: str) -> dict:
    """A job whose status.json cannot be read: running while its worker lives (the worker rewrites the file),
    else failed with what is wrong (poll persists that)."""
    saved = _read_json(d / "spec.json")
    saved = saved if isinstance(saved, dict) else {}
    pid, start = _worker_pid(d, {})
    alive = pid_alive(pid, start)
    return {"job_id": job_id, "kind": _text(saved.get("kind")), "status": "running" if alive else "failed",
            "run_id": _text(saved.get("run_id")), "device": None, "created_at": None, "started_at": None,
            "finished_at": None if alive else _now(), "pid": pid, "progress": {}, "broken": True, "dead": not alive,
            "error": f"job folder {d}: {what}"}


_PROGRESS_TYPES = {"phase": str, "method": str, "updated_at": str, "done": int, "total": int, "methods_done": int,
                   "methods_total": int, "fraction": float, "eta_seconds": float, "elapsed_seconds": float}


def _clean_progress(progress) -> dict:
    """progress.json's known fields with the types the pages expect; anything else (a hand-edited or
    half-written file) is dropped rather than shown."""
    if not isinstance(progress, dict):
        return {}
    out = {}
    for k, kind in _PROGRESS_TYPES.items():
        v = progress.get(k)
        if kind is str and isinstance(v, str):
            out[k] = v
        elif kind in (int, float) and isinstance(v, (int, float)) and not isinstance(v, bool) and v == v \
                and abs(v) != float("inf") and (kind is float or float(v).is_integer()):
            out[k] = kind(v)
    out.update({k: v for k, v in progress.items() if k not in _PROGRESS_TYPES and isinstance(v, (str, int, float))
                and not isinstance(v, bool)})  # e.g. the training loss
    return out


def job_info(job_id: str, jobs_dir=None, store_file=None) -> dict | None:
    """status.json + progress.json of a job, with a dead worker shown as failed (not yet persisted).

    None while the folder is being created (no status.json yet); a folder whose status.json is unreadable or
    malformed is listed as failed with what is wrong, so one bad folder never hides the others.
    """
    d = settings.jobs_root(jobs_dir, store_file) / job_id
    if not (d / "status.json").exists():
        return None
    status = _read_json(d / "status.json")
    if not isinstance(status, dict):
        return _broken(job_id, d, "status.json is unreadable or not a JSON object")
    if status.get("status") not in ACTIVE + FINISHED:
        return _broken(job_id, d, f"status.json has no valid 'status' (got {status.get('status')!r})")
    info = {**status, "job_id": job_id, "progress": _clean_progress(_read_json(d / "progress.json", {}))}
    for k in ("created_at", "started_at", "finished_at"):
        info[k] = _iso(info.get(k))
    for k in ("kind", "run_id", "device", "error", "study_id"):
        info[k] = _text(info.get(k))
    if not isinstance(info.get("pid"), int) or isinstance(info.get("pid"), bool):
        info["pid"] = None
    if status["status"] in ACTIVE:
        pid, start = _worker_pid(d, status)
        alive = pid_alive(pid, start)
        young = time.time() - (_ts(status.get("created_at")) or 0) < STARTUP_GRACE_S
        if not alive and not (pid is None and young):
            info.update(status="failed", dead=True, finished_at=_now(),
                        error=f"worker died (pid {pid}); end of log:\n{log_tail(job_id, jobs_dir, 15, store_file)}")
    return info


def list_jobs(jobs_dir=None, store_file=None) -> list[dict]:
    """Every job, newest first."""
    root = settings.jobs_root(jobs_dir, store_file)
    if not root.exists():
        return []
    try:
        folders = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and d.name != "uploads"]
    except OSError:  # the jobs folder went away while listing it
        return []
    out = [job_info(d.name, root) for d in folders]
    return sorted((j for j in out if j), key=lambda j: j.get("created_at") or "", reverse=True)


# ----------------------------------------------------------------------------- cancel

def cancel(job_id: str, jobs_dir=None, store_file=None, grace: float = 5.0) -> bool:
    """SIGTERM the worker's process group, SIGKILL after `grace` s; status cancelled. False if already finished."""
    root = settings.jobs_root(jobs_dir, store_file)
    d = root / job_id
    status = _read_json(d / "status.json")
    if not isinstance(status, dict) or status.get("status") in FINISHED:
        return False
    pid, start = _worker_pid(d, status)
    if pid and pid_alive(pid, start):
        try:
            pgid = os.getpgid(pid)
            os.killpg(pgid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and pid_alive(pid, start):
                time.sleep(0.1)
            if pid_alive(pid, start):
                os.killpg(pgid, signal.SIGKILL)
                for _ in range(50):
                    if not pid_alive(pid, start):
                        break
                    time.sleep(0.1)
        except ProcessLookupError:
            pass
    status = _read_json(d / "status.json") or status
    status = status if isinstance(status, dict) else {}
    if status.get("status") != "cancelled":
        status.update(status="cancelled", finished_at=status.get("finished_at") or _now(),
                      error=status.get("error") or "cancelled by the user")
        store.write_json_atomic(d / "status.json", status)
    _mark_run_file(d, "cancelled", "cancelled by the user")
    return True


def _mark_run_file(d: Path, status: str, error: str | None) -> None:
    """A dead worker cannot finish its run.json: set its final status (nobody else writes it now)."""
    run_file = d / "results" / "run.json"
    run = _read_json(run_file)
    if isinstance(run, dict) and run.get("status") == "running":
        run.update(status=status, error=run.get("error") or error, finished_at=run.get("finished_at") or _now())
        store.write_json_atomic(run_file, run)


# ----------------------------------------------------------------------------- poll (dashboard side)

POLL_STORE_TIMEOUT_S = 1.0  # a poll waits at most this long for a locked store, then tries again next time
_reconciled: dict[tuple, frozenset] = {}  # (jobs root, store) -> job folders seen at the last reconcile


def poll(store_file=None, jobs_dir=None, timeout: float = POLL_STORE_TIMEOUT_S) -> dict:
    """Ingest new results of every job, persist dead workers as failed, mirror jobs into the store.

    Never raises for the store or for a job folder: a locked store is tried again on the next call (at
    most `timeout` s of waiting per call, then the store is left alone until the next call); a store that
    cannot be used at all is reported in "store_error"; a job whose files cannot be ingested keeps its
    "poll_error" and the other jobs go on. Returns {"jobs": [job dicts], "ingested": {job_id: [methods]},
    "busy": bool, "store_error": str | None}.
    """
    root = settings.jobs_root(jobs_dir, store_file)
    path = settings.store_path(store_file)
    out = {"jobs": [], "ingested": {}, "busy": False, "store_error": None}
    for job in list_jobs(root):
        d = root / job["job_id"]
        if job.get("dead"):  # persist: the worker is gone, nothing else will write these files
            _persist_failed(d, job)
        if not (out["busy"] or out["store_error"]):
            try:
                problems = []
                added = _ingest_if_changed(d, path, problems, timeout)
                if added:
                    out["ingested"][job["job_id"]] = added
                if problems:
                    job["poll_error"] = "; ".join(problems)
                _mirror(job, d, path, timeout)
            except store.StoreBusy:
                out["busy"] = True
            except store.StoreError as e:
                out["store_error"] = str(e)
            except (OSError, ValueError, store.DatabaseError) as e:  # this job's files: report, keep going
                job["poll_error"] = f"{type(e).__name__}: {e}"
        out["jobs"].append(job)
    if not (out["busy"] or out["store_error"]):
        try:
            _reconcile(root, path, {j["job_id"] for j in out["jobs"]}, timeout)
            _settle(path, timeout)
        except store.StoreBusy:
            out["busy"] = True
        except store.StoreError as e:
            out["store_error"] = str(e)
    return out


SETTLE_EVERY_S = 10.0
_settled: dict[str, float] = {}  # store -> when a poll last looked for runs whose process is gone


def _settle(path: str, timeout: float) -> None:
    """Runs of the store (CLI runs, studies, other jobs folders' workers) that show `running` while their process
    is gone become `interrupted` (engine.store.queries.settle): at most every SETTLE_EVERY_S per store."""
    key = str(Path(path).resolve())
    if key in _settled and time.monotonic() - _settled[key] < SETTLE_EVERY_S:
        return
    store.queries.settle(path, timeout)
    _settled[key] = time.monotonic()


def _persist_failed(d: Path, job: dict) -> None:
    """A job whose worker is gone: failed in status.json and run.json (nobody else will write them)."""
    status = _read_json(d / "status.json")
    status = status if isinstance(status, dict) else {}
    status.update(job_id=job["job_id"], status="failed", error=job["error"], finished_at=job["finished_at"])
    for k in ("kind", "run_id", "created_at"):
        status.setdefault(k, job.get(k))
    try:
        store.write_json_atomic(d / "status.json", status)
        _mark_run_file(d, owner.INTERRUPTED, f"interrupted: {job['error'].splitlines()[0]}; finished methods are kept")
    except OSError as e:  # a read-only or vanished folder: shown as failed all the same
        job["poll_error"] = f"could not record the failure in {d}: {e}"
    job.pop("dead", None)


def _jobs_dir_of(spec_json, artifacts_dir) -> str | None:
    """The jobs folder a mirrored job lived in: recorded in its spec.json, or its run's results folder's grandparent."""
    try:
        saved = json.loads(spec_json) if spec_json else {}
    except ValueError:
        saved = {}
    if isinstance(saved, dict) and isinstance(saved.get("jobs_dir"), str):
        return saved["jobs_dir"]
    return str(Path(artifacts_dir).parent.parent) if isinstance(artifacts_dir, str) and artifacts_dir else None


def _reconcile(root: Path, path: str, present: set, timeout: float) -> None:
    """Jobs the store shows as active whose folder is gone (deleted by hand) end as failed, with their runs.

    Runs only when the set of job folders changed since the last call, so polling stays cheap.
    """
    key = (str(root.resolve()), str(Path(path).resolve()))
    if _reconciled.get(key) == frozenset(present):
        return
    if os.path.exists(path):
        active = store.queries.active_jobs(path, timeout)
        here = str(root.resolve())
        gone = [(j, r) for j, r, spec, art in zip(active.job_id, active.run_id, active.spec_json, active.artifacts_dir)
                if j not in present and _jobs_dir_of(spec, art) == here]  # another jobs folder's jobs are not ours
        if gone:
            why = f"its job folder under {root} was deleted"
            store.queries.fail_jobs(gone, why, path, timeout)
    _reconciled[key] = frozenset(present)


def _signature(d: Path) -> dict | None:
    res = d / "results"
    if not (res / "run.json").exists():
        return None
    methods = sorted(m.name for m in (res / "methods").glob("*") if m.is_dir() and not m.name.startswith(".")) \
        if (res / "methods").exists() else []
    files = [res / "run.json"] + [res / f"{t}.parquet" for t in store.RUN_TABLES]
    return {"methods": methods, "mtimes": [f.stat().st_mtime_ns if f.exists() else 0 for f in files]}


def _ingest_if_changed(d: Path, path: str, problems: list, timeout: float) -> list[str]:
    sig = _signature(d)
    if sig is None:
        return []
    marker = d / ".ingested.json"
    done = _read_json(marker)
    if isinstance(done, dict) and {k: v for k, v in done.items() if k != "problems"} == \
            {**sig, "store": str(Path(path).resolve())}:
        problems.extend(done.get("problems") or [])  # still shown: the files have not changed since
        return []
    added = store.ingest(d / "results", path, problems=problems, timeout=timeout)
    store.write_json_atomic(marker, {**sig, "store": str(Path(path).resolve()), "problems": problems})
    return added


def _mirror(job: dict, d: Path, path: str, timeout: float) -> None:
    """Upsert the job's row in the store's jobs table when its status or phase changed (or progress by 10%)."""
    p = job.get("progress") or {}
    fraction = 1.0 if job["status"] == "done" else p.get("fraction")
    row = {"job_id": job["job_id"], "kind": job.get("kind"), "status": job["status"],
           "progress": None if fraction is None else round(float(fraction), 1), "phase": _text(p.get("phase")),
           "created_at": job.get("created_at"), "started_at": job.get("started_at"),
           "finished_at": job.get("finished_at"), "error": job.get("error"), "run_id": job.get("run_id")}
    marker = d / ".mirrored.json"
    mirrored = _read_json(marker)
    if mirrored == {**row, "store": str(Path(path).resolve())}:
        return
    try:
        spec = (d / "spec.json").read_text()
    except OSError:  # the folder was deleted and recreated by its worker: the row keeps what is known
        spec = None
    store.queries.upsert_job({**row, "spec_json": spec}, path, timeout)
    store.write_json_atomic(marker, {**row, "store": str(Path(path).resolve())})
