"""Clusters: UMAP map of profile embeddings, silhouettes (overall, per cluster, per persona), silhouette vs K."""
import altair as alt
import streamlit as st

import ui
from engine.methods.registry import needs_profile

ui.page_setup()
st.title("Clusters")
st.caption("Profile texts embedded with MiniLM, clustered with KMeans (the `cluster` method). The study found a "
           "silhouette of 0.022 — text similarity need not mean behavioural similarity.")

PROFILE_METHODS = "`cluster` or a `merge:*` method"


def why_no_map(run) -> str:
    """Why a run has no profile map (the runner makes one only when a method reads the profiles)."""
    methods = [m for m in str(run.get("methods") or "").split(",") if m]
    if run.get("task") == "imported":
        return "it holds imported per-persona scores only: no profile texts to embed and cluster"
    if not any(needs_profile(m) for m in methods):
        return (f"its methods ({', '.join(methods) or 'none'}) do not read profile texts, so no map was made; "
                f"a run with {PROFILE_METHODS} has one (they need a profile text for every persona)")
    if (run.get("n_personas") or 0) < 3:
        return "it has fewer than 3 personas"
    if run.get("status") == "running":
        return "it is still running (the map is made at its end)"
    return f"it ended ({run.get('status')}) before its map was made"


all_runs = ui.read("runs")
with_clusters = set(ui.read("runs_with_clusters"))
runs = all_runs[all_runs.run_id.isin(with_clusters)]
without = all_runs[~all_runs.run_id.isin(with_clusters)]
if runs.empty:
    st.info(f"No run with a profile map yet: the map comes with runs that include {PROFILE_METHODS}; start one "
            "on Launch.")
    st.page_link(ui.PAGES["launch"], label="Open Launch", icon=":material/rocket_launch:")
if len(without):
    with st.expander(f"{len(without)} run(s) without a map, and why", expanded=runs.empty):
        for _, r in without.head(20).iterrows():
            st.markdown(f"- `{r['run_id']}` · {ui.plain(r.get('name') or '')}: {why_no_map(r)}")
if runs.empty:
    st.stop()

run_id = ui.pick_run(runs)
methods = sorted(ui.read("persona_scores", [run_id]).method.unique())
gain_opts = [m for m in methods if m != "unified"]
c1, c2 = st.columns(2)
color_by = c1.radio("Colour by", ["cluster", "gain over unified"], horizontal=True, key="color_by",
                    index=1 if st.query_params.get("color") == "gain" else 0)
gq = st.query_params.get("gain")
gain_method = c2.selectbox("Gain of method", gain_opts, key="gain_method",
                           index=gain_opts.index(gq) if gq in gain_opts else (
                               gain_opts.index("cluster") if "cluster" in gain_opts else 0)) if gain_opts else None
ui.set_qp(color="gain" if color_by != "cluster" else None, gain=gain_method)
v = ui.read("cluster_view", run_id, gain_method=gain_method)
pers = v["personas"]

m1, m2, m3 = st.columns(3)
m1.metric("Overall silhouette", "–" if v["overall_silhouette"] != v["overall_silhouette"]
          else f"{v['overall_silhouette']:.3f}")
m2.metric("Clusters", int(pers.cluster.nunique()) if v["has_clusters"] else "–")
m3.metric("Personas", len(pers))

if v["has_map"]:
    if color_by == "cluster" or "unified" not in methods:
        colour = alt.Color("cluster:N", title="cluster")
    else:
        lim = float(pers.gain.abs().max() or 0.01)
        colour = alt.Color("gain:Q", title=f"{gain_method} − unified",
                           scale=alt.Scale(scheme="redblue", domain=[-lim, lim]))
    pick = alt.selection_point(name="persona", fields=["persona_id"], on="click")
    mp = alt.Chart(pers.assign(profile_short=pers.profile.fillna("").str.slice(0, 120))).mark_circle(size=90).encode(
        x=alt.X("umap_x:Q", title="UMAP 1", axis=alt.Axis(labels=False), scale=alt.Scale(zero=False)),
        y=alt.Y("umap_y:Q", title="UMAP 2", axis=alt.Axis(labels=False), scale=alt.Scale(zero=False)), color=colour,
        tooltip=["persona_id", "cluster", alt.Tooltip("silhouette:Q", format=".3f"),
                 alt.Tooltip("gain:Q", format="+.4f"), "profile_short"]).add_params(pick)
    st.markdown("**Profile embeddings (UMAP)** — click a persona to open it")
    ev = st.altair_chart(mp.properties(height=420), on_select="rerun", key="umap_chart", width="stretch")
    sel = ev.selection.get("persona") if ev is not None and hasattr(ev, "selection") else None
    if sel and sel[0].get("persona_id"):
        st.switch_page(ui.PAGES["persona"], query_params={"run": run_id, "persona": sel[0]["persona_id"]})
else:
    st.caption("This run stores no UMAP coordinates.")

c1, c2 = st.columns(2)
with c1:
    st.markdown("**Per cluster**")
    ui.table(v["per_cluster"], hide_index=True, width="stretch", column_config={
        "silhouette": st.column_config.NumberColumn("mean silhouette", format="%.3f"),
        "gain": st.column_config.NumberColumn(f"mean gain ({gain_method} − unified)", format="%+.4f")})
with c2:
    ks = v["cluster_k"]
    st.markdown("**Silhouette against K**")
    if ks.empty:
        st.caption("No K sweep stored for this run (it needs at least 3 personas).")
    else:
        line = alt.Chart(ks).mark_line(point=True).encode(x=alt.X("k:O", title="K"),
                                                          y=alt.Y("silhouette:Q", title="silhouette"))
        chosen = alt.Chart(ks[ks.chosen.fillna(False).astype(bool)]).mark_point(
            size=200, color="red", shape="diamond", filled=True).encode(x="k:O", y="silhouette:Q")
        st.altair_chart((line + chosen).properties(height=260), width="stretch")

if pers.silhouette.notna().any():
    st.markdown("**Silhouette per persona**")
    st.altair_chart(alt.Chart(pers.dropna(subset=["silhouette"])).mark_bar().encode(
        x=alt.X("persona_id:N", sort="-y", title=None, axis=alt.Axis(labels=len(pers) <= 60)),
        y=alt.Y("silhouette:Q"), color="cluster:N",
        tooltip=["persona_id", "cluster", alt.Tooltip("silhouette:Q", format=".3f")]).properties(height=240),
        width="stretch")
