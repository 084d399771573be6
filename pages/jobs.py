"""Jobs: live status and progress of background runs, log tail, cancel, retry, open results."""
import pandas as pd
import streamlit as st

import ui
from engine.lab import jobs
from engine.models.loading import ModelError
from engine.lab.study import cancel_study

ui.page_setup()
st.title("Jobs")
st.caption("Each job is a detached worker process (`python -m engine worker <job_id>`), one per device at a time; "
           "jobs keep running when the dashboard closes. Finished methods are ingested into the store as they "
           "complete.")

if st.session_state.get("just_started"):
    st.success(f"Started {len(st.session_state['just_started'])} job(s): "
               f"{', '.join(st.session_state.pop('just_started'))}")


def _eta(p):
    return ui.fmt_seconds(p.get("eta_seconds")) if p.get("eta_seconds") is not None else "–"


def study_block(study_id: str, js: list[dict]):
    """A study as a whole: runs done / total, ETA from its finished runs, cancel all, open the Studies page."""
    g = jobs.group_progress(js)
    done = g["counts"]["done"]
    with st.container(border=True):
        st.markdown(f"**Study {ui.plain(study_id)}** · {done}/{g['total']} runs done"
                    + "".join(f" · {g['counts'][s]} {s}" for s in ("failed", "cancelled") if g["counts"][s])
                    + (f" · ETA {ui.fmt_seconds(g['eta_seconds'])}" if g["eta_seconds"] is not None else ""))
        st.progress(done / g["total"])
        c1, c2 = st.columns(2)
        if g["active"] and c1.button("Cancel the study", key=f"cancel_study_{study_id}"):
            cancel_study(study_id, ui.store_file(), ui.jobs_dir())
            ui.poll_jobs()
            st.rerun(scope="fragment")
        c2.page_link(ui.PAGES["studies"], label="Open the study", icon=":material/grid_on:",
                     query_params={"study": study_id})


@st.fragment(run_every=2)
def live():
    polled = ui.poll_jobs()
    all_jobs = polled["jobs"]
    if polled.get("store_error"):
        st.error(f"{polled['store_error']}. Results are kept in the job folders until the store can be written.")
    elif polled.get("busy"):
        st.caption("The store is busy; results will be ingested on the next refresh.")
    if not all_jobs:
        st.info("No jobs yet. Start one on Launch (or with a demo button on Compare when the store is empty).")
        st.page_link(ui.PAGES["launch"], label="Open Launch", icon=":material/rocket_launch:")
        return
    by_study = {}
    for j in all_jobs:
        if j.get("study_id"):
            by_study.setdefault(j["study_id"], []).append(j)
    for sid, js in by_study.items():
        study_block(sid, js)
    rows = []
    for j in all_jobs:
        p = j.get("progress") or {}
        frac = 1.0 if j["status"] == "done" else float(p.get("fraction") or 0.0)
        rows.append({"job": j["job_id"], "status": j["status"], "progress": frac,
                     "phase": (p.get("phase") or "starting") if j["status"] in jobs.ACTIVE else "",
                     "methods": f"{p['methods_done']}/{p['methods_total']}"
                     if {"methods_done", "methods_total"} <= set(p) else "–",
                     "ETA": _eta(p) if j["status"] == "running" else "", "device": j.get("device"),
                     "run": j.get("run_id"), "created": (j.get("created_at") or "")[:19].replace("T", " ")})
    ui.table(pd.DataFrame(rows), hide_index=True, width="stretch", key="jobs_table", column_config={
        "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0, format="percent")})

    st.subheader("Details")
    ingested_runs = set(ui.read("runs").run_id)
    for n, j in enumerate(all_jobs[:20]):
        jid, status = j["job_id"], j["status"]
        p = j.get("progress") or {}
        icon = {"queued": "hourglass_empty", "running": "play_circle", "done": "check_circle", "failed": "error",
                "cancelled": "cancel"}.get(status, "circle")
        with st.expander(f"{ui.plain(jid)} · {status} · {ui.plain(p.get('phase') or '')}",
                         expanded=status in jobs.ACTIVE or n == 0,
                         icon=f":material/{icon}:"):
            if status in jobs.ACTIVE:
                st.progress(min(1.0, float(p.get("fraction") or 0.0)),
                            text=f"{ui.plain(p.get('phase') or 'starting / waiting for the device')} · "
                                 f"{p.get('done', 0)}/{p.get('total', '?')} · ETA {_eta(p)}")
                if p.get("shards"):  # a run on a Ray cluster (engine.backends.ray)
                    st.caption(f"Ray cluster {ui.plain(str(j.get('device', '')).removeprefix('ray:'))}: "
                               f"{p.get('nodes', '?')} nodes · {p.get('actors', '?')} actors busy · "
                               f"{p.get('cpus', 0)} CPUs, {p.get('gpus', 0)} GPUs in use · {ui.plain(p['shards'])}")
            if j.get("error") and status != "cancelled":
                st.error(ui.plain(j["error"]))
            if j.get("poll_error"):
                st.warning("Some results of this job could not be stored: " + ui.plain(j["poll_error"]))
            c1, c2, c3 = st.columns(3)
            if status in jobs.ACTIVE and c1.button("Cancel", key=f"cancel_{jid}"):
                jobs.cancel(jid, ui.jobs_dir(), grace=3.0)
                ui.poll_jobs()
                st.rerun(scope="fragment")
            if status in jobs.FINISHED and c2.button("Retry", key=f"retry_{jid}"):
                try:
                    new = jobs.retry(jid, ui.jobs_dir(), ui.store_file())
                    st.toast(f"Started {new}")
                except (ValueError, ModelError, OSError) as e:  # the spec no longer passes its checks
                    st.error(ui.plain(f"{type(e).__name__}: {e}"))
                st.rerun(scope="fragment")
            if j.get("run_id") in ingested_runs:  # a link: the browser stops this page's timers before it leaves
                c3.page_link(ui.PAGES["compare"], label="Open results", icon=":material/leaderboard:",
                             query_params={"runs": j["run_id"]})
            st.code(jobs.log_tail(jid, ui.jobs_dir(), 25) or "(no log yet)", language=None)


live()
