"""Studies: when does personalization win? Score and Δ against the varied knob, winners over two knobs."""
import altair as alt
import streamlit as st

import ui
from engine.analysis import views

ui.page_setup()
st.title("Studies")

studies = ui.read("studies")
if studies.empty:
    st.info("No study yet. A study runs one set of methods over a grid of simulator knobs (or hyperparameters) "
            "and seeds:\n\n`python -m engine study --data sim:personas=8 --vary personal_fraction=0,0.25,0.5,0.75 "
            "--seeds 0,1 --methods base,unified,per_persona,hybrid --model tiny-random`")
    st.stop()

ids = list(studies.study_id)
names = {r.study_id: f"{r.name} · {r.n_done}/{r.n_runs} runs · {r.status}" for r in studies.itertuples()}
want = st.query_params.get("study")
study_id = st.selectbox("Study", ids, index=ids.index(want) if want in ids else 0, format_func=names.get)
kind_labels = views.KIND_LABELS
c1, c2 = st.columns([1, 2])
ref_q, kind_q = st.query_params.get("ref"), st.query_params.get("kind")
kind = c2.radio("Test targets", list(kind_labels), horizontal=True, format_func=kind_labels.get,
                index=list(kind_labels).index(kind_q) if kind_q in kind_labels else 0, help=views.KIND_HELP)
first = ui.read("study_view", study_id, kind=kind)
methods = sorted(first["table"].method.unique()) if len(first["table"]) else []
if not methods:
    st.info("No run of this study has finished a method yet. Progress is on the Jobs page or the study's terminal.")
    st.stop()
reference = c1.selectbox("Reference (Δ vs)", methods, index=methods.index(ref_q) if ref_q in methods else
                         (methods.index("unified") if "unified" in methods else 0))
ui.set_qp(study=study_id, ref=None if reference == "unified" else reference, kind=None if kind == "all" else kind)
view = ui.read("study_view", study_id, reference=reference, kind=kind)
table, axes, ceiling = view["table"], view["axes"], view["ceiling"]
st.caption("Per grid point: each persona's score averaged over seeds, then mean and 95% t-interval **over "
           "personas** (those with a score: action metrics count only targets whose reference names a setting); Δ "
           "is paired per persona. Seed spread: std over seeds of the over-persona mean. settings: the reference "
           "settings behind the figure per run.")
if not axes:
    st.info("This study varies seeds only: open its runs on Compare (group by seed).")
    st.stop()
x = axes[0]
xenc = alt.X(f"{x}:Q", title=x)
color = alt.Color("method:N", sort=methods)
pick = alt.selection_point(name="point", fields=["point", "method"], on="click")
facet = {"row": alt.Row(f"{axes[1]}:N")} if len(axes) > 1 else {}

band = alt.Chart(table).mark_area(opacity=0.18).encode(x=xenc, y="ci_low:Q", y2="ci_high:Q", color=color)
line = alt.Chart(table).mark_line(point=True).encode(
    x=xenc, y=alt.Y("mean:Q", title="mean over personas"), color=color,
    tooltip=["method", x, alt.Tooltip("mean:Q", format=".3f"), alt.Tooltip("ci_low:Q", format=".3f"),
             alt.Tooltip("ci_high:Q", format=".3f"), alt.Tooltip("seed_std:Q", format=".3f", title="seed std"),
             "n_seeds"]).add_params(pick)
layers = band + line
if len(ceiling):
    layers = layers + alt.Chart(ceiling).mark_line(strokeDash=[6, 4], color="gray").encode(
        x=xenc, y="ceiling:Q", tooltip=[alt.Tooltip("ceiling:Q", title="persona-blind ceiling", format=".3f")])
st.markdown(f"**Score against {x}** — 95% CI band; dashed: the persona-blind ceiling; click a point to open "
            "its runs on Compare")
score_chart = layers.properties(height=220).facet(**facet) if facet else layers.properties(height=300)
ev = st.altair_chart(score_chart, on_select="rerun", key="score_chart", width="stretch" if not facet else "content")

deltas = table[table.method != reference]
dband = alt.Chart(deltas).mark_area(opacity=0.18).encode(x=xenc, y="delta_ci_low:Q", y2="delta_ci_high:Q",
                                                          color=color)
dline = alt.Chart(deltas).mark_line(point=True).encode(
    x=xenc, y=alt.Y("delta:Q", title=f"Δ vs {reference}"), color=color,
    shape=alt.condition("datum.holm_p < 0.05", alt.value("diamond"), alt.value("circle")),
    tooltip=["method", x, alt.Tooltip("delta:Q", format="+.3f"), alt.Tooltip("delta_ci_low:Q", format="+.3f"),
             alt.Tooltip("delta_ci_high:Q", format="+.3f"), alt.Tooltip("wilcoxon_p:Q", title="p", format=".3g"),
             alt.Tooltip("holm_p:Q", title="p (Holm)", format=".3g"), "verdict", "helped", "hurt"])
zero = alt.Chart(deltas).mark_rule(color="black").encode(y=alt.datum(0))
st.caption(views.coverage_text(view["coverage"], pooled_seeds=True))
st.markdown(f"**Δ vs {reference}** — paired 95% CI; diamonds: significant, i.e. Holm-adjusted Wilcoxon p < 0.05 "
            f"over the methods compared with {reference} at that point")
if limit := views.significance_limit_text(table, by="point"):
    st.warning(limit)
st.altair_chart((dband + dline + zero).properties(height=260) if not facet else
                (dband + dline + zero).properties(height=200).facet(**facet),
                width="stretch" if not facet else "content")
if len(axes) == 1:
    for m in [m for m in methods if m != reference]:
        st.markdown(f"- {views.crossover_text(table, x, m, reference)}")

if len(axes) == 2:
    cells = view["cells"].assign(label=lambda t: t.apply(
        lambda r: f"{r.winner} +{r.margin:.3f}" if r.significant else "no significant winner", axis=1))
    st.markdown("**Winner per grid point** — best mean; its margin over the runner-up is paired per persona")
    heat = alt.Chart(cells).mark_rect().encode(
        x=alt.X(f"{axes[0]}:O"), y=alt.Y(f"{axes[1]}:O"),
        color=alt.condition("datum.significant", alt.Color("winner:N"), alt.value("lightgray")),
        tooltip=["winner", "runner_up", alt.Tooltip("margin:Q", format="+.3f"),
                 alt.Tooltip("margin_ci_low:Q", format="+.3f"), alt.Tooltip("margin_ci_high:Q", format="+.3f")])
    text = alt.Chart(cells).mark_text(fontSize=11).encode(x=f"{axes[0]}:O", y=f"{axes[1]}:O", text="label:N")
    st.altair_chart((heat + text).properties(height=60 * cells[axes[1]].nunique() + 40), width="stretch")

st.markdown("**Time against score across the grid**")
st.altair_chart(alt.Chart(table).mark_circle(size=90).encode(
    x=alt.X("seconds:Q", scale=alt.Scale(type="log"), title="train + eval seconds (mean over seeds, log)"),
    y=alt.Y("mean:Q", scale=alt.Scale(zero=False)), color=color,
    tooltip=["method", *axes, alt.Tooltip("seconds:Q", format=".1f"), alt.Tooltip("mean:Q", format=".3f")]
).properties(height=260), width="stretch")

show = table[[*axes, "method", "n_personas", "n_settings", "n_seeds", "mean", "ci_low", "ci_high", "seed_std", "delta",
              "delta_ci_low", "delta_ci_high", "wilcoxon_p", "holm_p", "verdict", "tost_p", "mde", "helped", "hurt",
              "tied", "seconds"]].assign(verdict=lambda t: t.verdict.fillna("—"))
ui.table(show.style.format(precision=4, na_rep="—").format({"n_settings": "{:.0f}"}, na_rep="—"),
             hide_index=True, width="stretch", column_config={"n_settings": st.column_config.NumberColumn(
                 "settings", help="reference settings behind the action metrics per run (mean over seeds)")})
st.download_button("Download CSV", show.to_csv(index=False).encode(), file_name=f"{study_id}.csv", mime="text/csv")

sel = ev.selection.get("point") if ev is not None and hasattr(ev, "selection") else None
if sel and sel[0].get("point"):
    hit = table[(table.point == sel[0]["point"])]
    if len(hit):
        st.switch_page(ui.PAGES["compare"], query_params={"runs": ",".join(hit.run_ids.iloc[0]),
                                                        "ref": reference})
