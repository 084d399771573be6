"""Background jobs of the dashboard (DESIGN §9): a folder per job, a detached worker process per job.

    jobs/<job_id>/spec.json       what to run (a RunSpec) and the run id it will write
    jobs/<job_id>/status.json     queued | running | done | failed | cancelled, pid, times, error
    jobs/<job_id>/progress.json   phase, method, done, total, fraction, eta_seconds, updated_at
    jobs/<job_id>/log.txt         the worker's stdout and stderr
    jobs/<job_id>/results/        the run's result files (engine.runner.execute_run)

`submit` checks the spec and the dataset first (errors go to the caller, nothing is written), writes
the folder and starts `python -m engine worker <job_id>` in a new process session. The worker waits
in "queued" until it holds its device (an flock on jobs/.locks/<device>.lock, taken in submission
order; the kernel drops it when the holder dies, so a dead worker never blocks the queue), then runs.
Everything a job is lives in files, so jobs survive dashboard restarts. Workers never open the store:
`poll` (called by the dashboard) ingests finished methods with short connections, mirrors the jobs
into the store's `jobs` table, and turns a worker that died into "failed" with the end of its log.
"""
from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
import traceback
import uuid
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from engine import store

ACTIVE = ("queued", "running")
FINISHED = ("done", "failed", "cancelled")
STARTUP_GRACE_S = 30.0     # a job without a live pid yet is "starting" for this long after submit
LOCK_POLL_S = 0.5
PROGRESS_EVERY_S = 0.5


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _ts(iso: str | None) -> float | None:
    return datetime.fromisoformat(iso).timestamp() if iso else None


def jobs_root(jobs_dir=None, store_file=None) -> Path:
    """$PLL_JOBS, or `jobs/` beside the store file."""
    root = jobs_dir or os.environ.get("PLL_JOBS")
    return Path(root) if root else Path(store.store_path(store_file)).resolve().parent / "jobs"


def new_job_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def _read_json(path: Path, default=None):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


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
    """Everything that can be checked without loading a model; raises ConfigError, DataError, ModelError."""
    from engine.data import load_dataset
    from engine.models import REGISTRY, ModelError
    from engine.train import ConfigError

    cfg = spec.check()
    if not spec.model or (spec.model not in REGISTRY and not os.path.isdir(spec.model) and "/" not in spec.model):
        raise ModelError(f"unknown model '{spec.model}': use one of {', '.join(REGISTRY)}, "
                         "a local model folder or a Hugging Face id such as Qwen/Qwen2.5-0.5B-Instruct")
    if spec.device not in (None, "", "auto"):
        import torch
        try:
            dev = torch.device(spec.device)
        except (RuntimeError, ValueError) as e:
            raise ConfigError(f"device: {e}") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device: {spec.device} asked for but no CUDA device is available")
    dataset = load_dataset(spec.data, context_window=cfg.context_window)  # DataError with FILE:LINE problems
    from engine.evaluate import primary_metric
    try:
        primary_metric(dataset, spec.metric)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def submit(spec, kind: str = "run", jobs_dir=None, store_file=None, spawn: bool = True) -> str:
    """Check the spec, write the job folder, start its worker; returns the job id."""
    check_spec(spec)
    root = jobs_root(jobs_dir, store_file)
    from engine.runner import new_run_id
    job_id, run_id = new_job_id(), new_run_id()
    d = root / job_id
    d.mkdir(parents=True)
    store.write_json_atomic(d / "spec.json", {"kind": kind, "run_id": run_id, "spec": asdict(spec)})
    store.write_json_atomic(d / "status.json", {
        "job_id": job_id, "kind": kind, "status": "queued", "run_id": run_id, "device": device_key(spec.device),
        "created_at": _now(), "started_at": None, "finished_at": None, "error": None, "pid": None})
    if spawn:
        start_worker(job_id, root)
    return job_id


def start_worker(job_id: str, root: Path) -> int:
    d = Path(root) / job_id
    with open(d / "log.txt", "ab") as log:
        p = subprocess.Popen([sys.executable, "-m", "engine", "worker", job_id, "--jobs-dir", str(root)],
                             start_new_session=True, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             cwd=str(Path(__file__).resolve().parent.parent),
                             env={**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"})
    _CHILDREN[p.pid] = p
    (d / "worker.pid").write_text(str(p.pid))
    return p.pid


_CHILDREN: dict[int, subprocess.Popen] = {}  # workers this process started, reaped so they leave no zombies


def retry(job_id: str, jobs_dir=None, store_file=None) -> str:
    """Submit the same spec again as a new job; returns the new job id."""
    from engine.runner import RunSpec
    saved = _read_json(jobs_root(jobs_dir, store_file) / job_id / "spec.json")
    if saved is None:
        raise FileNotFoundError(f"job {job_id}: no spec.json")
    return submit(RunSpec.from_dict(saved["spec"]), saved.get("kind", "run"), jobs_dir, store_file)


# ----------------------------------------------------------------------------- liveness

def _reap():
    for pid, p in list(_CHILDREN.items()):
        if p.poll() is not None:
            _CHILDREN.pop(pid, None)


def pid_alive(pid: int | None, job_id: str | None = None) -> bool:
    """A live (not zombie) process; with job_id, also one that is that job's worker (pid reuse)."""
    if not pid:
        return False
    _reap()
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        if state in ("Z", "X"):
            return False
        if job_id:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return job_id.encode() in f.read()
        return True
    except (OSError, IndexError):
        pass
    try:  # no /proc (macOS): signal 0
        os.kill(pid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def log_tail(job_id: str, jobs_dir=None, lines: int = 40, store_file=None) -> str:
    path = jobs_root(jobs_dir, store_file) / job_id / "log.txt"
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64_000))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.replace("\r", "\n").splitlines()[-lines:])


def _worker_pid(d: Path, status: dict) -> int | None:
    if status.get("pid"):
        return int(status["pid"])
    try:
        return int((d / "worker.pid").read_text())
    except (OSError, ValueError):
        return None


def job_info(job_id: str, jobs_dir=None, store_file=None) -> dict | None:
    """status.json + progress.json of a job, with a dead worker shown as failed (not yet persisted)."""
    d = jobs_root(jobs_dir, store_file) / job_id
    status = _read_json(d / "status.json")
    if status is None:
        return None
    progress = _read_json(d / "progress.json", {}) or {}
    info = {**status, "progress": progress}
    if status["status"] in ACTIVE:
        pid = _worker_pid(d, status)
        alive = pid_alive(pid, job_id)
        young = time.time() - (_ts(status.get("created_at")) or 0) < STARTUP_GRACE_S
        if not alive and not (pid is None and young):
            info.update(status="failed", dead=True, finished_at=_now(),
                        error=f"worker died (pid {pid}); end of log:\n{log_tail(job_id, jobs_dir, 15, store_file)}")
    return info


def list_jobs(jobs_dir=None, store_file=None) -> list[dict]:
    """Every job, newest first."""
    root = jobs_root(jobs_dir, store_file)
    if not root.exists():
        return []
    out = [job_info(d.name, root) for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
    return sorted((j for j in out if j), key=lambda j: j.get("created_at") or "", reverse=True)


# ----------------------------------------------------------------------------- cancel

def cancel(job_id: str, jobs_dir=None, store_file=None, grace: float = 5.0) -> bool:
    """SIGTERM the worker's process group, SIGKILL after `grace` s; status cancelled. False if already finished."""
    root = jobs_root(jobs_dir, store_file)
    d = root / job_id
    status = _read_json(d / "status.json")
    if status is None or status["status"] in FINISHED:
        return False
    pid = _worker_pid(d, status)
    if pid and pid_alive(pid, job_id):
        try:
            pgid = os.getpgid(pid)
            os.killpg(pgid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and pid_alive(pid):
                time.sleep(0.1)
            if pid_alive(pid):
                os.killpg(pgid, signal.SIGKILL)
                for _ in range(50):
                    if not pid_alive(pid):
                        break
                    time.sleep(0.1)
        except ProcessLookupError:
            pass
    status = _read_json(d / "status.json") or status
    if status["status"] != "cancelled":
        status.update(status="cancelled", finished_at=status.get("finished_at") or _now(),
                      error=status.get("error") or "cancelled by the user")
        store.write_json_atomic(d / "status.json", status)
    _mark_run_file(d, "cancelled", "cancelled by the user")
    return True


def _mark_run_file(d: Path, status: str, error: str | None) -> None:
    """A dead worker cannot finish its run.json: set its final status (nobody else writes it now)."""
    run_file = d / "results" / "run.json"
    run = _read_json(run_file)
    if run and run.get("status") == "running":
        run.update(status=status, error=run.get("error") or error, finished_at=run.get("finished_at") or _now())
        store.write_json_atomic(run_file, run)


# ----------------------------------------------------------------------------- poll (dashboard side)

def poll(store_file=None, jobs_dir=None) -> dict:
    """Ingest new results of every job, persist dead workers as failed, mirror jobs into the store.

    Never raises for a busy store: what could not be written is tried again on the next call.
    Returns {"jobs": [job dicts], "ingested": {job_id: [methods]}, "busy": bool}.
    """
    root = jobs_root(jobs_dir, store_file)
    path = store.store_path(store_file)
    out = {"jobs": [], "ingested": {}, "busy": False}
    for job in list_jobs(root):
        d = root / job["job_id"]
        if job.get("dead"):  # persist: the worker is gone, nothing else will write these files
            status = _read_json(d / "status.json")
            status.update(status="failed", error=job["error"], finished_at=job["finished_at"])
            store.write_json_atomic(d / "status.json", status)
            _mark_run_file(d, "failed", job["error"].splitlines()[0])
            job.pop("dead")
        try:
            added = _ingest_if_changed(d, path)
            if added:
                out["ingested"][job["job_id"]] = added
            _mirror(job, d, path)
        except store.StoreBusy:
            out["busy"] = True
        except (OSError, ValueError, KeyError) as e:  # a half-written or broken folder: report, keep going
            job.setdefault("poll_error", f"{type(e).__name__}: {e}")
        out["jobs"].append(job)
    return out


def _signature(d: Path) -> dict | None:
    res = d / "results"
    if not (res / "run.json").exists():
        return None
    methods = sorted(m.name for m in (res / "methods").glob("*") if m.is_dir() and not m.name.startswith(".")) \
        if (res / "methods").exists() else []
    files = [res / "run.json"] + [res / f"{t}.parquet" for t in store.RUN_TABLES]
    return {"methods": methods, "mtimes": [f.stat().st_mtime_ns if f.exists() else 0 for f in files]}


def _ingest_if_changed(d: Path, path: str) -> list[str]:
    sig = _signature(d)
    if sig is None:
        return []
    marker = d / ".ingested.json"
    if _read_json(marker) == {**sig, "store": str(Path(path).resolve())}:
        return []
    added = store.ingest(d / "results", path)
    store.write_json_atomic(marker, {**sig, "store": str(Path(path).resolve())})
    return added


def _mirror(job: dict, d: Path, path: str) -> None:
    """Upsert the job's row in the store's jobs table when something visible changed."""
    p = job.get("progress") or {}
    fraction = 1.0 if job["status"] == "done" else p.get("fraction")
    row = {"job_id": job["job_id"], "kind": job.get("kind"), "status": job["status"],
           "progress": None if fraction is None else round(float(fraction), 2), "phase": p.get("phase"),
           "created_at": job.get("created_at"), "started_at": job.get("started_at"),
           "finished_at": job.get("finished_at"), "error": job.get("error"), "run_id": job.get("run_id")}
    marker = d / ".mirrored.json"
    mirrored = _read_json(marker)
    if mirrored == {**row, "store": str(Path(path).resolve())}:
        return
    spec = (d / "spec.json").read_text()
    with store.connect(path) as con:
        con.execute("DELETE FROM jobs WHERE job_id = ?", [row["job_id"]])
        con.execute("INSERT INTO jobs (job_id, kind, status, progress, phase, created_at, started_at, finished_at, "
                    "error, run_id, spec_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [row[k] for k in ("job_id", "kind", "status", "progress", "phase", "created_at", "started_at",
                                      "finished_at", "error", "run_id")] + [spec])
        if job["status"] in ("failed", "cancelled") and job.get("run_id"):
            con.execute("UPDATE runs SET status = ?, error = coalesce(error, ?), "
                        "finished_at = coalesce(finished_at, now()) WHERE run_id = ? AND status = 'running'",
                        [job["status"], (job.get("error") or "").splitlines()[0] if job.get("error") else None,
                         job["run_id"]])
    store.write_json_atomic(marker, {**row, "store": str(Path(path).resolve())})


# ----------------------------------------------------------------------------- worker (detached process)

class _Progress:
    """execute_run's progress callback -> progress.json (atomic, throttled) and a line in the log per phase."""

    def __init__(self, d: Path, methods: list[str]):
        self.d, self.methods, self.done_methods = d, methods, 0
        self.t0, self.last_write, self.phase = time.time(), 0.0, None

    def method_done(self, method):
        self.done_methods += 1
        print(f"[{_now()}] method {method} done ({self.done_methods}/{len(self.methods)})", flush=True)
        self(f"{method}: done", 1, 1, force=True)

    def __call__(self, phase, done, total, force=False, **info):
        head = phase.split(":")[0].strip()
        method = head if head in self.methods else None
        phase_fraction = min(1.0, done / total) if total else 0.0
        if phase == "load model":
            fraction = 0.0
        else:
            if phase.endswith(": done"):
                within = 0.0
            elif "evaluate" in phase:  # a method trains (~70% of its time), then evaluates
                within = phase_fraction if method == "base" else 0.7 + 0.3 * phase_fraction
            else:
                within = 0.7 * phase_fraction
            fraction = min(1.0, (self.done_methods + within) / max(1, len(self.methods)))
        now = time.time()
        if phase != self.phase:
            print(f"[{_now()}] {phase} ({done}/{total})", flush=True)
            self.phase = phase
            force = True
        if not force and now - self.last_write < PROGRESS_EVERY_S:
            return
        self.last_write = now
        elapsed = now - self.t0
        eta = elapsed * (1 - fraction) / fraction if fraction > 0.01 else None
        store.write_json_atomic(self.d / "progress.json", {
            "phase": phase, "method": method, "done": done, "total": total, "fraction": round(fraction, 4),
            "methods_done": self.done_methods, "methods_total": len(self.methods),
            "eta_seconds": None if eta is None else round(eta, 1), "elapsed_seconds": round(elapsed, 1),
            "updated_at": _now(), **{k: v for k, v in info.items() if isinstance(v, (int, float, str))}})


def _update_status(d: Path, **fields) -> dict:
    status = _read_json(d / "status.json") or {}
    status.update(fields)
    store.write_json_atomic(d / "status.json", status)
    return status


def _my_turn(root: Path, job_id: str, device: str) -> bool:
    """No older live job waits for the same device (submission order is kept)."""
    me = _read_json(root / job_id / "status.json") or {}
    for j in list_jobs(root):
        if j["job_id"] != job_id and j["status"] == "queued" and j.get("device") == device \
                and (j.get("created_at") or "", j["job_id"]) < (me.get("created_at") or "", job_id):
            return False
    return True


def acquire_device(root: Path, job_id: str, device: str):
    """Block until this job holds the device; returns the open lock file (keep it open while running)."""
    locks = root / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    f = open(locks / f"{device.replace(':', '_')}.lock", "a+")
    said = False
    while True:
        if (_read_json(root / job_id / "status.json") or {}).get("status") == "cancelled":
            raise KeyboardInterrupt("cancelled while queued")
        if _my_turn(root, job_id, device):
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                f.seek(0)
                f.truncate()
                f.write(f"{os.getpid()} {job_id}\n")
                f.flush()
                return f
            except BlockingIOError:
                pass
        if not said:
            print(f"[{_now()}] waiting for {device}", flush=True)
            said = True
        time.sleep(LOCK_POLL_S)


def worker_main(job_id: str, jobs_dir=None) -> int:
    """`python -m engine worker <job_id>`: wait for the device, run, record the outcome. Never opens the store."""
    from engine.runner import RunSpec, execute_run

    root = jobs_root(jobs_dir)
    d = root / job_id
    saved = _read_json(d / "spec.json")
    if saved is None:
        print(f"job {job_id}: no spec.json under {root}", file=sys.stderr)
        return 2

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)

    if (_read_json(d / "status.json") or {}).get("status") in FINISHED:  # cancelled before it started
        print(f"job {job_id} is already finished; nothing to do", flush=True)
        return 0
    spec = RunSpec.from_dict(saved["spec"])
    device = device_key(spec.device)
    print(f"[{_now()}] worker pid {os.getpid()} for job {job_id} (run {saved['run_id']}) on {device}", flush=True)
    try:
        _update_status(d, pid=os.getpid(), pgid=os.getpgid(0), device=device)
        lock = acquire_device(root, job_id, device)
        _update_status(d, status="running", started_at=_now())
        progress = _Progress(d, list(spec.methods))
        progress("load model", 0, 1)
        execute_run(spec, d / "results", progress=progress, run_id=saved["run_id"], job_id=job_id,
                    on_method_done=progress.method_done)
        progress("done", 1, 1, force=True)
        _update_status(d, status="done", finished_at=_now())
        print(f"[{_now()}] done", flush=True)
        lock.close()
        return 0
    except KeyboardInterrupt as e:
        print(f"[{_now()}] cancelled ({e})", flush=True)
        _update_status(d, status="cancelled", finished_at=_now(), error="cancelled by the user")
        return 130
    except BaseException as e:
        traceback.print_exc()
        sys.stdout.flush()
        _update_status(d, status="failed", finished_at=_now(), error=f"{type(e).__name__}: {e}")
        return 1
