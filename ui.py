"""Shared pieces of the dashboard pages: the store path, cached reads, job polling, small widgets.

Reads go through engine.analysis.views inside st.cache_data, keyed by the store path and the store's version
(file mtimes), so new results appear as soon as they are ingested. One process-wide lock serialises
this process's store connections (store.PROCESS_LOCK): DuckDB refuses a read-only and a read-write
connection to the same file inside one process, and Streamlit sessions are threads of one process.
Polling jobs holds it only while a connection is open and waits at most a second for a locked store,
and only one session polls at a time (the others show the latest poll), so a busy store never freezes
the open tabs.
"""
from __future__ import annotations

import math
import threading

import streamlit as st

from engine import settings, store
from engine.analysis import views
from engine.lab import jobs, paths

STORE_LOCK = store.PROCESS_LOCK
_POLL_LOCK = threading.Lock()
_LAST_POLL: dict[tuple, dict] = {}
_INGESTS: dict[tuple, int] = {}  # (store, jobs) -> how many polls of this process ingested something

PAGES = {
    "compare": "pages/compare.py",
    "launch": "pages/launch.py",
    "jobs": "pages/jobs.py",
    "persona": "pages/persona.py",
    "clusters": "pages/clusters.py",
    "studies": "pages/studies.py",
}


def store_path_problem() -> str | None:
    """Why the store path typed in the sidebar is not used (outside the data folder), or None."""
    typed = (st.session_state.get("store_path") or "").strip()
    if not typed or typed == settings.store_path():
        return None
    try:
        paths.confine(typed, "store", also=[settings.store_path()])
    except paths.PathError as e:
        return str(e)
    return None


def store_file() -> str:
    """The store typed in the sidebar when it lies inside the data folder, else the configured one."""
    typed = (st.session_state.get("store_path") or "").strip()
    if not typed or store_path_problem():
        return settings.store_path()
    return str(paths.confine(typed, "store", also=[settings.store_path()]))


def jobs_dir():
    return settings.jobs_root(None, store_file())


@st.cache_data(show_spinner=False, max_entries=256)
def _cached(fn: str, path: str, version: tuple, args: tuple, kwargs: tuple):
    with STORE_LOCK:
        return getattr(views, fn)(*args, path=path, **dict(kwargs))


def read(fn: str, *args, **kwargs):
    """views.<fn>(*args, path=store) through the cache; lists become tuples (hashable)."""
    path = store_file()
    args = tuple(tuple(a) if isinstance(a, list) else a for a in args)
    kwargs = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items()))
    try:
        return _cached(fn, path, store.version(path), args, kwargs)
    except store.StoreBusy:
        st.warning("The store is busy (another process is writing); showing nothing for now — it will refresh.")
        st.stop()
    except store.StoreError as e:  # not a DuckDB file, a folder, another program's database: retrying won't help
        st.error(f"{e}. Choose another store in the sidebar.", icon=":material/error:")
        st.stop()


def poll_jobs() -> dict:
    """Ingest new job results into the store; never raises for the store or a job folder (engine.lab.jobs.poll).

    One session polls at a time: another session asking meanwhile gets the latest result at once.
    """
    key = (store_file(), str(jobs_dir()))
    if not _POLL_LOCK.acquire(blocking=False):
        last = _LAST_POLL.get(key)
        if last is None:
            return {"jobs": jobs.list_jobs(jobs_dir()), "ingested": {}, "busy": False, "store_error": None}
        return {**last, "ingested": {}}
    try:
        out = jobs.poll(store_file(), jobs_dir())
        if out["ingested"]:
            _INGESTS[key] = _INGESTS.get(key, 0) + 1
    finally:
        _POLL_LOCK.release()
    _LAST_POLL[key] = out
    return out


def new_results() -> bool:
    """Whether any session ingested results since this session last asked (its page should be redrawn)."""
    n = _INGESTS.get((store_file(), str(jobs_dir())), 0)
    seen = st.session_state.get("_pll_ingests_seen")
    st.session_state["_pll_ingests_seen"] = n
    return seen is not None and n != seen


_MARKDOWN_SPECIAL = "\\`*_{}[]()<>#+-.!|~$:"


def plain(text) -> str:
    """Text shown literally where Streamlit renders Markdown (no links, images, formatting from data)."""
    return "".join("\\" + c if c in _MARKDOWN_SPECIAL else c for c in str(text))


def qp_list(name: str) -> list[str]:
    v = st.query_params.get(name)
    return [x for x in v.split(",") if x] if v else []


def table(data, **kwargs):
    """st.dataframe with "—" for a missing value (the reference row compares with nothing; one persona has no
    spread), never "None"."""
    return st.dataframe(data, placeholder="—", **kwargs)


def qp_float(name: str, default: float) -> float:
    """A number from the URL, or the default when absent or not a finite number in (0, 1]."""
    try:
        v = float(st.query_params.get(name, default))
    except (TypeError, ValueError):
        return default
    return v if 0 < v <= 1 else default


def set_qp(**kv):
    for k, v in kv.items():
        if v is None or v == [] or v == "":
            st.query_params.pop(k, None)
        else:
            st.query_params[k] = ",".join(v) if isinstance(v, (list, tuple)) else str(v)


def pick_run(runs_df, key: str = "run", label: str = "Run"):
    """A run selectbox bound to ?run=; returns the run id (or None)."""
    ids = list(runs_df.run_id)
    if not ids:
        return None
    labels = {r["run_id"]: views.run_label(r) for _, r in runs_df.iterrows()}
    want = st.query_params.get(key)
    index = ids.index(want) if want in ids else 0
    run_id = st.selectbox(label, ids, index=index, format_func=lambda r: labels.get(r, r), key=f"pick_{key}")
    set_qp(**{key: run_id})
    return run_id


def remember_page(page) -> None:
    """Record, on every full run, the page the browser now shows and its query parameters (recover_stale_tick)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx
    ctx = get_script_run_ctx()
    if ctx is not None:
        st.session_state["_pll_page"] = {"hash": ctx.page_script_hash, "page": page,
                                         "query": st.query_params.to_dict()}


def recover_stale_tick() -> None:
    """Call first in a run_every fragment that lives on every page.

    After a server-side st.switch_page the browser keeps ticking its fragment timers until the new page's
    first message arrives; a tick sent in that window names the old page. Streamlit runs it as a fragment
    run of the old page and the browser, now on the new page, clears its main area for it: the page stays
    blank until the next full run (the blank Compare page of a busy machine, where that window is long).
    Such a tick is answered with a full run of the page the browser really shows.
    """
    from streamlit.runtime.scriptrunner import get_script_run_ctx
    shown = st.session_state.get("_pll_page")
    ctx = get_script_run_ctx()
    if shown and ctx is not None and ctx.page_script_hash != shown["hash"]:
        st.switch_page(shown["page"], query_params=shown["query"])


def page_setup():
    """Call first in every page. On a fresh server, the very first request to a page URL (a shared link) runs
    that page file alone in Streamlit's legacy pages/ mode, without app.py; rerunning once goes through
    app.py's st.navigation (which switches the server to it for good)."""
    if "store_path" not in st.session_state and not st.session_state.get("_app_bootstrapped"):
        st.session_state["_app_bootstrapped"] = True
        try:  # what app.py's st.navigation call does; the legacy mode only reads this flag
            from streamlit.runtime.pages_manager import PagesManager
            PagesManager.uses_pages_directory = False
        except (ImportError, AttributeError):
            pass
        st.rerun()


def fmt_seconds(s: float) -> str:
    """Seconds as people read them: 42 s, 3.5 min, 2.1 h; – when unknown."""
    if s is None or not math.isfinite(s):
        return "–"
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"
