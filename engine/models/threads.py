"""Compute threads that fit the machine as it is, not as it was built.

torch's CPU kernels split every matmul over their threads and wait at the end of each for the slowest. When
another process holds one of two cores, the thread that lost its core makes every parallel region wait:
training on a 2-core machine ran 20x slower beside one busy process, where one thread would have kept 68% of
the idle speed. So a run counts the cores that are free now (its CPU affinity, minus what other processes keep
busy, measured over a fraction of a second from /proc/stat) and uses that many threads; the trainer re-checks
between epochs. `--threads N` or $PLL_THREADS fixes the number instead.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

SAMPLE_S = 0.2          # how long the other processes' load is measured
RECHECK_AFTER_S = 2.0   # epochs shorter than this are not worth a measurement


@dataclass
class ThreadChoice:
    threads: int
    reason: str
    cores: int                   # cores this process may run on (its affinity)
    busy_elsewhere: float | None  # cores other processes kept busy while measured; None when not measured

    def to_dict(self) -> dict:
        return asdict(self)


def allowed_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _machine_jiffies() -> tuple[int, int] | None:
    """(busy, total) CPU time of the whole machine in clock ticks, from /proc/stat; None elsewhere."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def _own_jiffies() -> int | None:
    """CPU time of this process (all its threads) in clock ticks."""
    try:
        with open("/proc/self/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return int(parts[11]) + int(parts[12])  # utime, stime
    except (OSError, ValueError, IndexError):
        return None


def busy_elsewhere(sample_s: float = SAMPLE_S) -> float | None:
    """How many cores other processes keep busy, measured over sample_s (this process's own use subtracted)."""
    m0, o0 = _machine_jiffies(), _own_jiffies()
    if m0 is None or o0 is None:
        return None
    time.sleep(sample_s)
    m1, o1 = _machine_jiffies(), _own_jiffies()
    if m1 is None or o1 is None or m1[1] <= m0[1]:
        return None
    n_cpu = os.cpu_count() or 1
    busy_all = (m1[0] - m0[0]) / (m1[1] - m0[1]) * n_cpu
    mine = (o1 - o0) / (m1[1] - m0[1]) * n_cpu
    return max(0.0, busy_all - mine)


def choose_threads(explicit: int | None = None) -> ThreadChoice:
    """The threads to compute with now: `explicit` or $PLL_THREADS when given, else the cores free right now."""
    cores = allowed_cores()
    fixed = explicit or os.environ.get("PLL_THREADS")
    if fixed:
        n = int(fixed)
        return ThreadChoice(n, f"set to {n} ({'--threads' if explicit else 'PLL_THREADS'})", cores, None)
    busy = busy_elsewhere()
    if busy is None:
        return ThreadChoice(cores, f"all {cores} allowed cores (the machine's load cannot be read here)", cores, None)
    free = min(cores, (os.cpu_count() or cores) - busy)
    n = max(1, int(free + 0.5))
    why = (f"all {cores} cores are free" if n == cores else
           f"{n} of {cores} cores free: other processes keep {busy:.1f} busy")
    return ThreadChoice(n, why, cores, round(busy, 2))


def apply(choice: ThreadChoice) -> ThreadChoice:
    import torch
    torch.set_num_threads(choice.threads)
    return choice


class Refit:
    """Re-checks the free cores between epochs (when an epoch is long enough to be worth it) and changes the
    threads when they changed; every change is kept, with its reason, for the run's record."""

    def __init__(self, explicit: int | None = None, log=None):
        self.explicit = explicit or os.environ.get("PLL_THREADS")
        self.log = log
        self.changes: list[dict] = []

    def __call__(self, epoch_seconds: float) -> None:
        import torch
        if self.explicit or epoch_seconds < RECHECK_AFTER_S:
            return
        choice = choose_threads()
        if choice.threads != torch.get_num_threads():
            self.changes.append({"from": torch.get_num_threads(), **choice.to_dict()})
            if self.log:
                self.log(f"threads: {torch.get_num_threads()} -> {choice.threads} ({choice.reason})")
            apply(choice)
