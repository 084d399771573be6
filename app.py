"""Persona LoRA Lab dashboard: `streamlit run app.py`.

Navigation, the shared sidebar (store path, job summary) and the auto-refresh that ingests finished
job results into the store every few seconds. The pages live in pages/ and only present.
"""
import streamlit as st

import ui
from engine import settings

st.set_page_config(page_title="Persona LoRA Lab", page_icon=":material/science:", layout="wide")

pages = [
    st.Page(ui.PAGES["compare"], title="Compare", icon=":material/leaderboard:", default=True),
    st.Page(ui.PAGES["launch"], title="Launch", icon=":material/rocket_launch:"),
    st.Page(ui.PAGES["jobs"], title="Jobs", icon=":material/pending_actions:"),
    st.Page(ui.PAGES["persona"], title="Persona", icon=":material/person:"),
    st.Page(ui.PAGES["clusters"], title="Clusters", icon=":material/scatter_plot:"),
    st.Page(ui.PAGES["studies"], title="Studies", icon=":material/grid_on:"),
]
page = st.navigation(pages)
ui.remember_page(page)

with st.sidebar:
    st.markdown("### :material/science: Persona LoRA Lab")
    if "store_path" not in st.session_state:
        st.session_state.store_path = settings.store_path()
    st.text_input("Store (DuckDB file)", key="store_path",
                  help="Default: $PLL_STORE or store.duckdb. Jobs live in $PLL_JOBS or jobs/ beside the store. "
                       "Other stores: inside the data folder ($PLL_HOME).")
    if ui.store_path_problem():
        st.error(f"{ui.store_path_problem()}; showing {ui.store_file()}", icon=":material/block:")

    @st.fragment(run_every=3)
    def job_summary():
        ui.recover_stale_tick()
        polled = ui.poll_jobs()
        active = [j for j in polled["jobs"] if j["status"] in ("queued", "running")]
        if active:
            st.caption(f":material/pending_actions: {len(active)} job(s) active")
            for j in active[:3]:
                p = (j.get("progress") or {}).get("fraction") or 0.0
                st.progress(min(1.0, float(p)), text=f"{j['job_id'][-6:]} · {j['status']}")
        if polled.get("store_error"):
            st.error(polled["store_error"], icon=":material/error:")
        elif polled.get("busy"):
            st.caption("store busy — retrying")
        troubled = [j for j in polled["jobs"] if j.get("poll_error")]
        if troubled:
            st.caption(f":material/warning: {len(troubled)} job(s) with results that could not be stored — see Jobs")
        if ui.new_results():  # new results (ingested by this or another open tab): redraw the page
            st.rerun(scope="app")

    job_summary()

try:
    page.run()
finally:  # also when the page stops early or switches: the query parameters it leaves are the ones shown
    ui.remember_page(page)
