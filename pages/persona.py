"""Persona: one persona's profile, cluster, scores across methods, test replies (with the dialogue's situation when
the data has one), merge neighbours."""
import json

import altair as alt
import streamlit as st

import ui
from engine.data.edgewise import describe_meta

ui.page_setup()
st.title("Persona")

runs = ui.read("runs")
runs = runs[runs.n_methods_done > 0]
if runs.empty:
    st.info("No results yet: run something on Launch (or a demo from Compare).")
    st.stop()

run_id = ui.pick_run(runs)
imported = runs.set_index("run_id").task.get(run_id) == "imported"  # per-persona scores only
personas = ui.read("persona_list", run_id)
if personas.empty:
    st.info("This run has no personas stored.")
    st.stop()

q = st.text_input("Search personas (id or profile text)", key="persona_search")
hits = personas
if q:
    m = personas.persona_id.str.contains(q, case=False, regex=False) | \
        personas.profile.fillna("").str.contains(q, case=False, regex=False)
    hits = personas[m]
    st.caption(f"{len(hits)} of {len(personas)} personas match")
ids = list(hits.persona_id)
if not ids:
    st.stop()
want = st.query_params.get("persona")
if want in set(personas.persona_id) and want not in ids:
    ids = [want] + ids
profiles = dict(zip(personas.persona_id, personas.profile.fillna("")))
pid = st.selectbox("Persona", ids, index=ids.index(want) if want in ids else 0, key="persona_pick",
                   format_func=lambda p: f"{p} — {profiles.get(p, '')[:90]}")
ui.set_qp(run=run_id, persona=pid)

d = ui.read("persona_detail", run_id, pid)
prof = d["profile"] or {}
c1, c2 = st.columns([3, 1])
with c1:
    st.markdown(f"#### {ui.plain(pid)}")
    st.text(prof.get("profile") or "(no profile text)")  # the data's text, never rendered as Markdown
with c2:
    cl = prof.get("cluster")
    st.metric("Cluster", "–" if cl is None or cl != cl else int(cl))
    sil = prof.get("silhouette")
    st.metric("Silhouette", "–" if sil is None or sil != sil else f"{sil:.3f}")
    if not imported:
        st.caption(f"train / val / test dialogues: {prof.get('n_train')} / {prof.get('n_val')} / {prof.get('n_test')}")
if imported:
    st.info("Imported results: this run holds the per-persona scores of another tool only — no profile text, "
            "cluster, test examples or replies were imported.")

# ----------------------------------------------------------------------------- scores across methods
st.subheader("Scores across methods")
scores = d["scores"]
if scores.empty:
    st.info("No method has scored this persona yet.")
else:
    bars = alt.Chart(scores).mark_bar().encode(
        x=alt.X("method:N", title=None), y=alt.Y("score:Q", title="this persona's score"), color="method:N",
        tooltip=["method", alt.Tooltip("score:Q", format=".4f"), alt.Tooltip("run_mean:Q", format=".4f")])
    ticks = alt.Chart(scores).mark_tick(color="black", thickness=2, size=30).encode(
        x="method:N", y="run_mean:Q", tooltip=[alt.Tooltip("run_mean:Q", title="mean over personas", format=".4f")])
    st.altair_chart((bars + ticks).properties(height=260), width="stretch")
    st.caption("Bars: this persona. Black ticks: the method's mean over all personas of the run.")
    ui.table(scores.drop(columns=[c for c in scores.columns if scores[c].isna().all()]), hide_index=True,
                 width="stretch")

routes = ui.read("routing", [run_id])["choices"]
route = routes[routes.persona_id == pid]
if len(route):
    r = route.iloc[0]
    test_note = ("the same as on test" if r.method_on_test == r.method else
                 f"choosing on test would have picked **{ui.plain(r.method_on_test)}**")
    st.info(f"`routed` answers this persona with **{ui.plain(r.method)}**: the best mean validation score among "
            f"the run's methods ({test_note}).", icon=":material/alt_route:")

# ----------------------------------------------------------------------------- merge neighbours
st.subheader("Merge neighbours")
merge = d["merge"]
if merge.empty:
    st.caption("No merge method in this run (merge weights appear when a merge:* method ran).")
else:
    mm = sorted(merge.method.unique())
    mpick = st.selectbox("Merge method", mm, key="merge_method") if len(mm) > 1 else mm[0]
    mw = merge[merge.method == mpick]
    st.altair_chart(alt.Chart(mw).mark_bar().encode(
        y=alt.Y("neighbour_id:N", sort="-x", title=None), x=alt.X("weight:Q"),
        tooltip=["neighbour_id", alt.Tooltip("weight:Q", format=".3f"), alt.Tooltip("val_score:Q", format=".3f"),
                 alt.Tooltip("centrality:Q", format=".3f"), alt.Tooltip("similarity:Q", format=".3f")]
    ).properties(height=30 * len(mw) + 40), width="stretch")
    ui.table(mw.drop(columns="method"), hide_index=True, width="stretch")

# ----------------------------------------------------------------------------- test examples
st.subheader("Test examples")
preds = d["predictions"]
if preds.empty:
    st.caption("Imported results have no test examples or replies, only the scores above." if imported
               else "No predictions stored for this persona.")
else:
    ex_ids = list(dict.fromkeys(preds.example_id))
    st.caption(f"{len(ex_ids)} test example(s), each with the reference reply and every method's reply and score.")
    for i, ex in enumerate(ex_ids[:50]):
        e = preds[preds.example_id == ex]
        first = e.iloc[0]
        label = f"{ui.plain(ex)} · {ui.plain(first.kind or '')} · mean score {e.score.mean():.3f}"
        with st.expander(label, expanded=i < 2):
            st.markdown("**Context**")
            situation = describe_meta(json.loads(first.meta_json)) if isinstance(first.get("meta_json"), str) else ""
            if situation:  # the dialogue's situation (EdgeWisePersona's session meta), as the data gave it
                st.caption(f"Situation: {ui.plain(situation)}")
            st.text(first.context or "")
            st.markdown(f"**Reference:** {ui.plain(first.reference)}")
            if isinstance(first.get("persona_blind"), str) and first.persona_blind != first.reference:
                st.caption(f"Persona-blind answer (what ignoring the persona gives): {ui.plain(first.persona_blind)}")
            ui.table(e[["method", "prediction", "score"]], hide_index=True, width="stretch",
                         column_config={"score": st.column_config.NumberColumn(format="%.4f")})
