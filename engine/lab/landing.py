"""Where a CLI run's results land: the store and the disk checked before a run or study starts, each finished
method copied into the store as it lands (skipped while the store is locked), everything at the end, and one line
saying what could not land, why, and the command that lands it later.

Only a lock held by another process is "try again later" (exit 3); a full disk and a damaged store are said as
such (exit 1 once the run has worked; refused before it starts, exit 2).
"""
from __future__ import annotations

import os
import sys

from engine import settings

STORE_NOT_WRITTEN = 3  # exit code: another process held the store's lock; the results are kept in files
RUN_INGEST_TIMEOUT_S = 2.0   # after each method: a locked store is skipped, the run goes on training
MIN_FREE_MB = 16  # a run or study does not start on a disk with less free space (results, adapters, the store)


def check_run_location(path: str) -> None:
    """Before any work: the store is usable (or creatable) and whole, runs/ beside it can be written, and the disk
    has room to start."""
    from engine import store
    store.check_location(path)
    if os.path.exists(path):  # a foreign, broken or damaged file fails here; one another process writes now is fine
        store.queries.check_usable(path, timeout=0.5, busy_ok=True, thorough=True)
    folder = settings.runs_dir(path)
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise store.StoreError(f"store {path}: cannot write the run folder {folder} ({probe} is not a writable folder)")
    try:
        st = os.statvfs(probe)
        free_mb = st.f_bavail * st.f_frsize / 2**20
    except (OSError, AttributeError):  # no statvfs (Windows): the run finds out when it writes
        return
    if free_mb < MIN_FREE_MB:
        raise store.StoreFull(f"store {path}: the disk is full: {free_mb:.1f} MB free in {probe}; a run needs at least "
                              f"{MIN_FREE_MB} MB for its results, adapters and the store — free some space")


def existing_store(path) -> str:
    """The store a read command reads: StoreError when there is none (reading never creates one)."""
    from engine import store
    path = settings.store_path(path)
    store.check_location(path)
    if not os.path.exists(path):
        raise store.StoreError(f"no store at {path} (a store is made by `run`, `study`, `import` or `ingest`; check "
                               "--store or $PLL_STORE)")
    return path


def is_disk_full(e: BaseException) -> bool:
    import errno
    seen = set()
    while e is not None and id(e) not in seen:  # the full disk may be the cause of what surfaced
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno == errno.ENOSPC or "no space left on device" in str(e).lower():
            return True  # also what a library wraps it in (safetensors, pyarrow)
        e = e.__cause__ or e.__context__
    return False


class Landing:
    """A CLI run's results into the store: each method as it finishes (skipped while the store is locked), then
    everything at the end; says once what could not land and how to land it later."""

    def __init__(self, run_id: str, results, path: str):
        self.run_id, self.results, self.path, self.said = run_id, results, path, set()

    def ingest(self, timeout: float) -> Exception | None:
        """Copy what is finished into the store; why it could not (busy, full, damaged, ...), or None."""
        from engine import store
        problems = []
        try:
            store.ingest(self.results, self.path, problems=problems, timeout=timeout)
        except (store.StoreError, store.ResultFileError) as e:  # busy, or the disk or the store file went bad
            return e
        for p in problems:
            if p not in self.said:
                self.said.add(p)
                print(f"warning: {p}", file=sys.stderr)
        return None

    def after_method(self, method):
        why = self.ingest(RUN_INGEST_TIMEOUT_S)
        if why:
            print(f"note: {method} kept in {self.results}, not yet in the store ({why}); trying again later",
                  file=sys.stderr)

    def finish(self, code: int, timeout: float, outcome: str | None = None) -> int:
        """Land everything; the exit code. `outcome`: what already went wrong with the run (said in the same line
        when the store cannot be written either). Only a lock held by another process is exit 3."""
        from engine import store
        why = self.ingest(timeout)
        later = f"python -m engine ingest {self.results} --store {self.path}"
        if why is None:
            if outcome:
                print(f"{outcome} (finished methods are kept)", file=sys.stderr)
            return code
        if isinstance(why, store.StoreBusy):
            if outcome:
                print(f"{outcome} (finished methods are kept)", file=sys.stderr)
            print(f"run {self.run_id}: results kept in {self.results} but not in the store ({why}). When the store "
                  f"is free:\n    {later}", file=sys.stderr)
            return STORE_NOT_WRITTEN
        head = outcome or f"run {self.run_id}: done"
        if isinstance(why, store.StoreDamaged):
            then = f"land them in a new store: python -m engine ingest {self.results} --store NEW.duckdb"
        elif isinstance(why, store.StoreFull):
            then = f"free some space, then: {later}"
        else:
            then = f"once that is fixed: {later}"
        print(f"error: {head}; its results are kept in {self.results} but not in the store: {why}; {then}",
              file=sys.stderr)
        return 1
