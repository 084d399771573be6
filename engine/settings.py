"""Every setting the lab reads from its surroundings, in one place: folders, environment variables, ids.

    PLL_STORE            the DuckDB store (default store.duckdb, relative to the working folder)
    PLL_JOBS             the dashboard's job folders (default jobs/ beside the store)
    PLL_HOME             the data folder the dashboard may open paths in (default the project folder)
    PLL_CACHE            cached measurements and model files (default $XDG_CACHE_HOME/persona-lora-lab)
    PLL_ALLOW_DOWNLOADS  1: the dashboard may start a Hugging Face model that is not cached yet
    PLL_RAY_ADDRESS      a Ray cluster the heavy work goes to (default: this machine)

Imports nothing of the lab: every package may read it.
"""
from __future__ import annotations

import os
import uuid
from datetime import datetime, timezone
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent  # the repository root: app.py, engine/, the packaged defaults
DEFAULT_STORE = "store.duckdb"


def store_path(path: str | os.PathLike | None = None) -> str:
    """The store file: the given path, else $PLL_STORE, else store.duckdb."""
    return str(path or os.environ.get("PLL_STORE") or DEFAULT_STORE)


def runs_dir(store_file=None) -> Path:
    """Result folders (and trained adapters) of CLI runs and studies: `runs/` beside the store file."""
    return Path(store_path(store_file)).resolve().parent / "runs"


def jobs_root(jobs_dir=None, store_file=None) -> Path:
    """The dashboard's job folders: the given folder, else $PLL_JOBS, else `jobs/` beside the store file."""
    root = jobs_dir or os.environ.get("PLL_JOBS")
    return Path(root) if root else Path(store_path(store_file)).resolve().parent / "jobs"


def data_home() -> Path:
    """The folder whose paths the dashboard may open ($PLL_HOME, default the project folder)."""
    return Path(os.environ.get("PLL_HOME") or PROJECT).resolve()


def cache_dir() -> Path:
    """Cached measurements (CPU calibration) and converted model files."""
    root = os.environ.get("PLL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "persona-lora-lab")
    return Path(root)


def downloads_allowed() -> bool:
    """Whether the dashboard may start a hub model that is not in the local cache yet."""
    return os.environ.get("PLL_ALLOW_DOWNLOADS") == "1"


def ray_address(explicit: str | None = None) -> str | None:
    """The cluster a run should use: --ray ADDRESS, else $PLL_RAY_ADDRESS, else None (this machine)."""
    return explicit or os.environ.get("PLL_RAY_ADDRESS") or None


def new_id(prefix: str = "", suffix_hex: int = 6) -> str:
    """An id that sorts by creation time (UTC) and does not collide between processes: runs, jobs, studies."""
    return prefix + datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:suffix_hex]
