"""Who runs a run or a study, and whether that process still lives.

A run records its owner when it starts: the host, the process id and the process's start (the kernel's boot id
and the start time in clock ticks from /proc/<pid>/stat, which tell a process apart from a later one that reuses
its pid; and its pid namespace). While it works it refreshes a heartbeat in its run.json. Any lab command that
finds a `running` run asks `state()`: on this host (and pid namespace) the process either lives (same pid, same
start) or is gone; elsewhere only a heartbeat older than STALE_S says it is gone. A process's start is known from the moment it is forked, before
it execs anything, so a worker that is still starting is never taken for a dead one.
"""
from __future__ import annotations

import os
import socket
from datetime import datetime, timezone

STALE_S = 3600.0          # another host's run without a heartbeat for this long is taken as gone
HEARTBEAT_EVERY_S = 10.0  # how often a working run refreshes its heartbeat (engine.lab.runner)


def host() -> str:
    return socket.gethostname()


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first), or None when it cannot be read."""
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError, ValueError):
        return None


def process_start(pid: int | None) -> str | None:
    """"<boot id>:<start time in clock ticks>" of a live (not zombie) process, None when it is gone or unknown."""
    if not pid:
        return None
    fields = _stat(pid)
    if fields is None or len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return f"{_boot_id()}:{fields[19]}"


def _pid_namespace() -> str:
    """This process's pid namespace (two containers with one host name see different processes under one pid)."""
    try:
        return os.readlink("/proc/self/ns/pid").strip("pid:[]")
    except OSError:
        return ""


def me() -> dict:
    """This process as an owner: host, pid, pid_start (with its pid namespace after an '@')."""
    start = process_start(os.getpid())
    return {"host": host(), "pid": os.getpid(), "pid_start": f"{start}@{_pid_namespace()}" if start else None}


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def _seconds_since(when) -> float | None:
    if when is None:
        return None
    try:
        t = when if isinstance(when, datetime) else datetime.fromisoformat(str(when))
    except (TypeError, ValueError):
        return None
    if t.tzinfo is None:  # the store's TIMESTAMP columns hold UTC without a zone
        t = t.replace(tzinfo=timezone.utc)
    return (datetime.now(timezone.utc) - t).total_seconds()


def _has_proc() -> bool:
    return os.path.isdir("/proc/self")


def pid_state(pid: int | None, pid_start: str | None = None) -> str:
    """'alive' or 'gone' for a process of this host; with pid_start, a process with another start is gone (the pid
    was reused). 'unknown' without a pid."""
    if not pid or (isinstance(pid, float) and pid != pid):
        return "unknown"
    pid = int(pid)
    if pid_start and "@" in pid_start:
        pid_start, namespace = pid_start.rsplit("@", 1)
        if namespace != _pid_namespace():  # another container's process: its pid means nothing here
            return "unknown"
    if _has_proc():
        start = process_start(pid)
        if start is None:
            return "gone"
        return "gone" if pid_start and start != pid_start else "alive"
    try:  # no /proc (macOS): signal 0 says whether the pid exists
        os.kill(pid, 0)
        return "alive"
    except ProcessLookupError:
        return "gone"
    except PermissionError:
        return "alive"


def state(owner_host, pid, pid_start, heartbeat_at=None) -> tuple[str, str]:
    """('alive' | 'gone' | 'unknown', why) of a run's owner. On this host the process decides; on another host a
    heartbeat older than STALE_S says gone; a run that recorded no owner (made by an earlier version of the lab) is
    unknown."""
    if not owner_host or not isinstance(owner_host, str):
        return "unknown", "the run recorded no owner process"
    beat = f"; last heartbeat {heartbeat_at}" if heartbeat_at is not None and heartbeat_at == heartbeat_at else ""
    if owner_host == host():
        s = pid_state(pid, pid_start if isinstance(pid_start, str) else None)
        if s == "gone":
            return "gone", f"its process (pid {int(pid)} on {owner_host}) ended without recording an outcome{beat}"
        if s == "alive":
            return s, ""
        # unknown: no pid, or another pid namespace (a container with this host name): as for another host
    age = _seconds_since(heartbeat_at)
    if age is not None and age > STALE_S:
        return "gone", (f"no heartbeat from its process (pid {pid} on {owner_host}) for {age / 60:.0f} min"
                        f"{beat}")
    return "unknown", f"it runs elsewhere ({owner_host}); no heartbeat for {STALE_S / 60:.0f} min would say it is gone"


INTERRUPTED = "interrupted"
