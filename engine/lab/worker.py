"""A dashboard job's detached worker process: `python -m engine worker <job_id>`.

It waits in "queued" until it holds its device (an flock on jobs/.locks/<device>.lock, taken in submission
order; the kernel drops it when the holder dies, so a dead worker never blocks the queue), runs the job's
RunSpec, and writes status.json, progress.json and its log. It never opens the store: the dashboard's
poll (engine.lab.jobs) ingests what it leaves.
"""
from __future__ import annotations

import fcntl
import os
import re
import signal
import sys
import time
import traceback
from pathlib import Path

from engine import settings, store
from engine.lab.jobs import FINISHED, _now, _read_json, job_device, list_jobs
from engine.lab.runner import execute_run
from engine.lab.spec import RunSpec
from engine.store import owner

PROGRESS_EVERY_S = 0.5
LOCK_POLL_S = 0.5


class _Progress:
    """execute_run's progress callback -> progress.json (atomic, throttled) and a line in the log per phase."""

    def __init__(self, d: Path, methods: list[str]):
        self.d, self.methods, self.done_methods = d, methods, 0
        self.t0, self.last_write, self.phase = time.time(), 0.0, None

    def method_done(self, method):
        _check_folder(self.d)
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
        _check_folder(self.d)
        self.last_write = now
        elapsed = now - self.t0
        eta = elapsed * (1 - fraction) / fraction if fraction > 0.01 else None
        store.write_json_atomic(self.d / "progress.json", {
            "phase": phase, "method": method, "done": done, "total": total, "fraction": round(fraction, 4),
            "methods_done": self.done_methods, "methods_total": len(self.methods),
            "eta_seconds": None if eta is None else round(eta, 1), "elapsed_seconds": round(elapsed, 1),
            "updated_at": _now(), **{k: v for k, v in info.items() if isinstance(v, (int, float, str))}})


class FolderGone(KeyboardInterrupt):
    """The job's folder was deleted while the worker ran: the worker stops (as a cancel would)."""


def _check_folder(d: Path) -> None:
    if not (d / "spec.json").exists():
        raise FolderGone(f"its job folder {d} was deleted while it ran")


_IDENTITY: dict = {}  # this worker's job_id, kind, run_id, device, created_at: every status.json it writes has them


def _update_status(d: Path, **fields) -> dict:
    status = _read_json(d / "status.json")
    status = status if isinstance(status, dict) else {}
    status.update({k: v for k, v in _IDENTITY.items() if k not in status or status[k] is None}, **fields)
    d.mkdir(parents=True, exist_ok=True)  # a deleted folder: the final status still says what happened
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
    f = open(locks / f"{re.sub(r'[^A-Za-z0-9.-]', '_', device)}.lock", "a+")
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
    root = settings.jobs_root(jobs_dir)
    d = root / job_id
    saved = _read_json(d / "spec.json")
    if saved is None:
        print(f"job {job_id}: no spec.json under {root}", file=sys.stderr)
        return 2

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)

    first = _read_json(d / "status.json")
    first = first if isinstance(first, dict) else {}
    if first.get("status") in FINISHED:  # cancelled before it started
        print(f"job {job_id} is already finished; nothing to do", flush=True)
        return 0
    spec = RunSpec.from_dict(saved["spec"])
    device = job_device(spec)
    _IDENTITY.update(job_id=job_id, kind=saved.get("kind", "run"), run_id=saved["run_id"], device=device,
                     created_at=first.get("created_at"))
    print(f"[{_now()}] worker pid {os.getpid()} for job {job_id} (run {saved['run_id']}) on {device}", flush=True)
    try:
        _update_status(d, pid=os.getpid(), pid_start=owner.process_start(os.getpid()), pgid=os.getpgid(0),
                       device=device)
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
        _update_status(d, status="cancelled", finished_at=_now(),
                       error=str(e) if isinstance(e, FolderGone) else "cancelled by the user")
        return 130
    except BaseException as e:
        traceback.print_exc()
        sys.stdout.flush()
        _update_status(d, status="failed", finished_at=_now(), error=f"{type(e).__name__}: {e}")
        return 1
