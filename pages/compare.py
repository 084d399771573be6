"""Compare: methods across runs — table with honest per-persona statistics, charts, click to drill down."""
import altair as alt
import streamlit as st

import ui
from engine.analysis import stats, views
from engine.lab import demos, jobs
from engine.lab.study import submit_study

ui.page_setup()
st.title("Compare methods")

runs = ui.read("runs")


def welcome():
    st.markdown(
        "#### Welcome to Persona LoRA Lab\n"
        "Does personalising a small language model with LoRA adapters (one per persona, per cluster, merged, "
        "hybrid) beat one shared adapter? The store is empty — start with a demo on the built-in smart-home "
        "persona simulator, or configure your own run on **Launch**.")
    c1, c2, c3 = st.columns(3)
    with c1:
        st.markdown("**Quick demo** — `tiny-random` model, 6 personas, every method. Under a minute on a laptop CPU; "
                    "a 2-layer random model only learns the reply format, so the scores are a toy's, but every "
                    "chart fills in.")
        if st.button("Run the quick demo", icon=":material/play_arrow:", type="primary", key="demo_tiny"):
            _start_demo("tiny")
    with c2:
        st.markdown("**Real demo** — SmolLM2-135M-Instruct, 8 personas, base / unified / per_persona. "
                    "Several minutes on CPU.")
        if st.button("Run the SmolLM2 demo", icon=":material/play_arrow:", key="demo_smollm2"):
            _start_demo("smollm2")
    with c3:
        st.markdown("**Quick study** — the same toy over a grid: `personal_fraction` 0 and 0.5 × 2 seeds, four "
                    "methods, four runs in about a minute; the **Studies** page then plots score against the knob.")
        if st.button("Run the quick study", icon=":material/grid_on:", key="demo_study"):
            _start_demo("study")
    active = [j for j in jobs.list_jobs(ui.jobs_dir()) if j["status"] in jobs.ACTIVE]
    if active:
        st.info(f"{len(active)} job(s) running — results appear here as each method finishes.")
        st.page_link(ui.PAGES["jobs"], label="Open Jobs", icon=":material/pending_actions:")


def _start_demo(which):
    try:
        if which == "study":
            submit_study(demos.quick_study_spec(), store_file=ui.store_file(), jobs_dir=ui.jobs_dir())
        else:
            jobs.submit(demos.demo_spec(which), store_file=ui.store_file(), jobs_dir=ui.jobs_dir())
    except Exception as e:
        st.error(f"Could not start the demo: {e}")
        return
    st.switch_page(ui.PAGES["jobs"])


if runs.empty:
    welcome()
    st.stop()

# ----------------------------------------------------------------------------- selection (URL state)
labels = {r["run_id"]: views.run_label(r) for _, r in runs.iterrows()}
all_ids = list(runs.run_id)
wanted = [r for r in ui.qp_list("runs") if r in all_ids]
if not wanted:
    done = runs[(runs.status == "done") & (runs.n_methods_done > 0)]
    wanted = list((done if len(done) else runs[runs.n_methods_done > 0] if (runs.n_methods_done > 0).any()
                   else runs).run_id[:1])
run_ids = st.multiselect("Runs", all_ids, default=wanted, format_func=lambda r: labels.get(r, r))
if not run_ids:
    st.info("Choose one or more runs.")
    st.stop()

metrics = ui.read("available_metrics", run_ids)
all_scores = ui.read("persona_scores", run_ids, "score")
methods_avail = sorted(all_scores.method.unique())
if not methods_avail:
    st.info("No method of these runs has finished yet. Progress is on the Jobs page.")
    st.page_link(ui.PAGES["jobs"], label="Open Jobs", icon=":material/pending_actions:")
    st.stop()

c1, c2, c3, c4 = st.columns([3, 1, 1, 1])
want_methods = [m for m in ui.qp_list("methods") if m in methods_avail] or methods_avail
methods = c1.multiselect("Methods", methods_avail, default=want_methods)
ref_q = st.query_params.get("ref")
ref_default = ref_q if ref_q in methods_avail else ("unified" if "unified" in methods_avail else methods_avail[0])
reference = c2.selectbox("Reference (Δ vs)", methods_avail, index=methods_avail.index(ref_default))
primary = sorted({m for m in runs[runs.run_id.isin(run_ids)].get("metric", []) if isinstance(m, str)})
metric_q = st.query_params.get("metric")
metric = c3.selectbox("Metric", metrics, index=metrics.index(metric_q) if metric_q in metrics else 0,
                      format_func=lambda m: f"score (= {' / '.join(primary)})" if m == "score" and primary else m)
kind_labels = views.KIND_LABELS
kind_q = st.query_params.get("kind")
kind = c4.radio("Test targets", list(kind_labels), index=list(kind_labels).index(kind_q) if kind_q in kind_labels else 0,
                format_func=kind_labels.get, horizontal=True, key="kind", help=views.KIND_HELP)
ui.set_qp(runs=run_ids, methods=None if set(methods) == set(methods_avail) else methods,
          ref=None if reference == "unified" else reference, metric=None if metric == "score" else metric,
          kind=None if kind == "all" else kind)
if not methods:
    st.stop()

c5, c6, _ = st.columns([1, 1, 2])
margin = c5.number_input("Equivalence margin ±δ", min_value=0.001, max_value=1.0, step=0.005, format="%.3f",
                         value=ui.qp_float("margin", stats.DEFAULT_MARGIN), key="margin",
                         help="TOST: two methods count as equivalent when their paired difference lies within ±δ")
effect = c6.number_input("Effect to detect", min_value=0.001, max_value=1.0, step=0.005, format="%.3f",
                         value=ui.qp_float("effect", stats.DEFAULT_EFFECT), key="effect",
                         help="personas needed: how many personas the paired t-test needs to detect this Δ with 80% "
                              "power, from the spread of the per-persona differences seen here")
ui.set_qp(margin=None if margin == stats.DEFAULT_MARGIN else f"{margin:g}",
          effect=None if effect == stats.DEFAULT_EFFECT else f"{effect:g}")
table = ui.read("compare_table", run_ids, reference=reference, metric=metric, methods=methods, kind=kind,
                margin=margin, effect=effect)
if table.empty:
    st.info(f"No persona has a {metric} value on {kind_labels[kind]} test targets for these methods.")
    st.stop()
scores = ui.read("persona_scores", run_ids, metric, kind=kind)
scores = scores[scores.method.isin(methods)]
ceiling = ui.read("blind_ceiling", run_ids, metric, kind=kind)
multi = len(run_ids) > 1
table["run"] = table.run_id.map(lambda r: f"{r[-6:]} · {runs.set_index('run_id').name.get(r, '')}")
scores["run"] = scores.run_id.map(dict(zip(table.run_id, table.run)))
ceiling["run"] = ceiling.run_id.map(dict(zip(table.run_id, table.run)))

# ----------------------------------------------------------------------------- table
st.subheader("Methods")
st.caption(f"{metric} per persona (mean over its {kind_labels[kind]} test examples that have the figure: action "
           "metrics only where the reference names a setting, `refrained` only where it names none), then mean and "
           f"std **over the personas that have it** with the 95% t-interval; Δ = paired difference vs **{reference}** "
           f"with its t-interval and Wilcoxon p. **Significant means Holm-adjusted p < 0.05** over the "
           f"{max(len(methods) - 1, 1)} method(s) compared with {reference} here; a method neither significantly "
           f"different nor equivalent within ±{margin:g} (TOST) is *inconclusive* — not evidence of no difference. "
           f"MDE: the smallest Δ this many personas detect with 80% power; personas needed: to detect Δ = {effect:g}. "
           "helped / hurt / tied = personas better / worse / equal (within 1e-9) vs the reference. targets / "
           "settings: the test targets whose reference names a setting (of the part, for stated / supplied) and those "
           "settings. train s counts every stage a method needs, reused ones included. — = undefined (one persona, or "
           "the reference itself).")
if limit := views.significance_limit_text(table):
    st.warning(limit)
if len(ceiling):
    st.caption("Persona-blind ceiling (the data's persona-blind replies, scored like a method): "
               + ", ".join(f"{c:.3f}" + (f" ({r})" if multi else "") for c, r in zip(ceiling.ceiling, ceiling.run))
               + " — a method above it uses what it knows of the persona.")
cols = ["run", "method", "n_personas", "n_targets", "n_settings", "mean", "std", "ci_low", "ci_high", "delta",
        "delta_ci_low", "delta_ci_high", "verdict", "wilcoxon_p", "holm_p", "tost_p", "mde", "personas_needed", "helped",
        "hurt", "tied", "train_seconds", "eval_seconds", "epochs_trained", "stages", "trainable_params", "peak_mem_mb"]
show = table[cols].copy()
show["verdict"] = show.verdict.fillna("—")  # the reference row compares with nothing: "—", never "None"
for c in ("helped", "hurt", "tied"):
    show[c] = show[c].astype("Int64")
if not multi:
    show = show.drop(columns="run")
formats = {"mean": "{:.4f}", "std": "{:.4f}", "ci_low": "{:.4f}", "ci_high": "{:.4f}", "delta": "{:+.4f}",
           "delta_ci_low": "{:+.4f}", "delta_ci_high": "{:+.4f}", "wilcoxon_p": "{:.3g}", "holm_p": "{:.3g}",
           "tost_p": "{:.3g}", "mde": "{:.4f}", "personas_needed": "{:,.0f}", "helped": "{:d}", "hurt": "{:d}",
           "tied": "{:d}", "train_seconds": "{:.1f}", "eval_seconds": "{:.1f}", "epochs_trained": "{:.1f}",
           "trainable_params": "{:,.0f}", "peak_mem_mb": "{:.0f}", "n_targets": "{:.0f}", "n_settings": "{:.0f}"}
ui.table(show.style.format(formats, na_rep="—"), hide_index=True, width="stretch", key="compare_table",
             height=min(36 * (len(show) + 1) + 4, 640), column_config={
    "n_personas": st.column_config.NumberColumn("personas", help="personas with a value (a persona none of whose "
                                                 "targets has the figure is left out)"),
    "n_targets": st.column_config.NumberColumn("targets", help="test targets whose reference names a setting"),
    "n_settings": st.column_config.NumberColumn("settings", help="the reference settings behind the action metrics"),
    "ci_low": st.column_config.NumberColumn("CI low"), "ci_high": st.column_config.NumberColumn("CI high"),
    "delta": st.column_config.NumberColumn(f"Δ vs {reference}"),
    "delta_ci_low": st.column_config.NumberColumn("Δ CI low"), "delta_ci_high": st.column_config.NumberColumn("Δ CI high"),
    "wilcoxon_p": st.column_config.NumberColumn("Wilcoxon p"),
    "holm_p": st.column_config.NumberColumn("p (Holm)", help="adjusted over the methods compared in this view"),
    "tost_p": st.column_config.NumberColumn("TOST p", help="equivalence within the margin: small = equivalent"),
    "mde": st.column_config.NumberColumn("MDE", help="minimum detectable effect at 80% power (two-sided paired t)"),
    "personas_needed": st.column_config.NumberColumn("personas needed"),
    "train_seconds": st.column_config.NumberColumn("train s", help="every stage the method needs, reused ones included"),
    "eval_seconds": st.column_config.NumberColumn("eval s"),
    "epochs_trained": st.column_config.NumberColumn(
        "epochs", help="mean over adapters: each stops after `patience` epochs without a better validation loss"),
    "stages": st.column_config.TextColumn("stages"),
    "trainable_params": st.column_config.NumberColumn("trainable params"),
    "peak_mem_mb": st.column_config.NumberColumn(
        "peak MB", help="during this method: CUDA allocator peak, or the process's peak RSS on CPU"),
})
st.caption(views.coverage_text(ui.read("seed_coverage", run_ids)))
st.download_button("Download CSV", table.drop(columns=["run"]).to_csv(index=False).encode(),
                   file_name=f"compare-{'-'.join(r[-6:] for r in run_ids)}.csv", mime="text/csv")

groups = ui.read("seed_groups", run_ids) if multi else {}
if groups and len(set(groups.values())) < len(groups):
    together = st.toggle("Take runs that differ only in seed together", value=st.query_params.get("seeds") == "1",
                         key="group_seeds", help="per persona the mean over seeds, then statistics over personas; "
                                                 "beside it the mean ± std over seeds of each seed's mean")
    ui.set_qp(seeds="1" if together else None)
    if together:
        over = ui.read("compare_over_seeds", run_ids, reference=reference, metric=metric, methods=methods, kind=kind,
                       margin=margin, effect=effect)
        st.markdown("**Over seeds**")
        st.caption(views.coverage_text(ui.read("seed_coverage", run_ids), pooled_seeds=True))
        cols = ["group", "method", "n_seeds", "seed_mean", "seed_std", "n_personas", "mean", "std", "ci_low", "ci_high",
                "delta", "delta_ci_low", "delta_ci_high", "wilcoxon_p", "holm_p", "verdict", "tost_p", "mde",
                "personas_needed", "helped", "hurt", "tied"]
        ui.table(over[cols].style.format(precision=4, na_rep="—"), hide_index=True, width="stretch",
                     key="seed_table", column_config={
                         "seed_mean": st.column_config.NumberColumn("mean over seeds"),
                         "seed_std": st.column_config.NumberColumn("std over seeds"),
                         "mean": st.column_config.NumberColumn("mean (seed-averaged personas)")})
        st.download_button("Download CSV (over seeds)", over[cols].to_csv(index=False).encode(),
                           file_name=f"compare-seeds-{'-'.join(r[-6:] for r in run_ids)}.csv", mime="text/csv")

routes = ui.read("routing", run_ids) if "routed" in set(table.method) else None
if routes is not None and len(routes["summary"]):
    st.markdown("**Routing** — `routed` picks each persona's method by its mean validation score")
    c1, c2 = st.columns([3, 2])
    with c1:
        summ = routes["summary"].assign(run=lambda t: t.run_id.map(dict(zip(table.run_id, table.run))))
        ui.table(summ[["run", "routed", "routed_on_test", "gap"]] if multi else
                     summ[["routed", "routed_on_test", "gap"]], hide_index=True, width="stretch", column_config={
            "routed": st.column_config.NumberColumn("routed (validation)", format="%.4f"),
            "routed_on_test": st.column_config.NumberColumn(
                "routed on test (optimistic)", format="%.4f",
                help="the per-persona best method chosen on the TEST scores: an upper bound, never a method"),
            "gap": st.column_config.NumberColumn("what test routing overstates", format="%+.4f")})
        st.caption("score (all targets) · the optimistic figure chooses on the very targets it is scored on, as "
                   "test-set routing does")
    with c2:
        counts = routes["choices"].groupby(["run_id", "method"]).size().reset_index(name="personas")
        st.altair_chart(alt.Chart(counts).mark_bar().encode(
            y=alt.Y("method:N", sort="-x", title=None), x=alt.X("personas:Q", title="personas routed to", axis=alt.Axis(tickMinStep=1, format="d")),
            color=alt.Color("method:N", legend=None), **({"row": alt.Row("run_id:N", title=None)} if multi else {}),
            tooltip=["method", "personas"]).properties(height=36 * counts.method.nunique() + 50), width="stretch")

# ----------------------------------------------------------------------------- charts
order = [m for m in methods if m in set(table.method)]
color = alt.Color("method:N", sort=order, legend=None)
pick = alt.selection_point(name="pick", fields=["run_id", "method"], on="click")
enc_x = alt.X("method:N", sort=order, title=None)
offset = {"xOffset": alt.XOffset("run:N")} if multi else {}
bars = alt.Chart(table).mark_bar().encode(
    x=enc_x, y=alt.Y("mean:Q", title=f"mean {metric} over personas"), color=color,
    opacity=alt.condition(pick, alt.value(1.0), alt.value(0.55)),
    tooltip=["run", "method", alt.Tooltip("mean:Q", format=".4f"), alt.Tooltip("ci_low:Q", format=".4f"),
             alt.Tooltip("ci_high:Q", format=".4f"), alt.Tooltip("delta:Q", format="+.4f"), "n_personas"],
    **offset).add_params(pick)
errs = alt.Chart(table).mark_errorbar(ticks=True).encode(
    x=enc_x, y=alt.Y("ci_low:Q", title=""), y2="ci_high:Q", **offset)
box = alt.Chart(scores).mark_boxplot(extent=1.5, opacity=0.35, outliers=False).encode(
    x=alt.X("method:N", sort=order, title=None), y=alt.Y("score:Q", title=f"{metric} per persona"), color=color)
ppick = alt.selection_point(name="persona", fields=["run_id", "persona_id"], on="click")
points = alt.Chart(scores).mark_circle(size=38, opacity=0.75).encode(
    x=alt.X("method:N", sort=order), xOffset=alt.XOffset("jitter:Q", scale=alt.Scale(domain=[-1.5, 1.5])),
    y="score:Q", color=color,
    tooltip=["persona_id", "method", "run", alt.Tooltip("score:Q", format=".4f")],
).transform_calculate(jitter="sqrt(-2 * log(random())) * cos(2 * PI * random()) * 0.35").add_params(ppick)

bar_layers = bars + errs
if len(ceiling):
    rule = alt.Chart(ceiling).mark_rule(strokeDash=[6, 4], color="gray").encode(
        y="ceiling:Q", tooltip=["run", alt.Tooltip("ceiling:Q", title="persona-blind ceiling", format=".4f")])
    label = alt.Chart(ceiling.head(1)).mark_text(align="left", dx=4, dy=-6, color="gray").encode(
        y="ceiling:Q", text=alt.value("persona-blind ceiling"), x=alt.value(0))
    bar_layers = bar_layers + rule + label
c1, c2 = st.columns(2)
with c1:
    st.markdown("**Mean with 95% CI** — click a bar to open that method")
    ev_bar = st.altair_chart(bar_layers.properties(height=320), on_select="rerun", key="bar_chart",
                             width="stretch")
with c2:
    st.markdown("**Per-persona scores** — click a point to open that persona")
    ev_box = st.altair_chart((box + points).properties(height=320), on_select="rerun", key="box_chart",
                             width="stretch")

timed = table.train_seconds.notna() | table.eval_seconds.notna()  # imported methods have no times
tdf = table[timed].assign(time=table.total_seconds.clip(lower=0.01))
tpick = alt.selection_point(name="tpick", fields=["run_id", "method"], on="click")
scatter = alt.Chart(tdf).mark_circle(size=160).encode(
    x=alt.X("time:Q", scale=alt.Scale(type="log"), title="train + eval seconds (log)"),
    y=alt.Y("mean:Q", title=f"mean {metric}", scale=alt.Scale(zero=False)), color=alt.Color("method:N", sort=order),
    **({"shape": alt.Shape("run:N")} if multi else {}),
    tooltip=["run", "method", alt.Tooltip("train_seconds:Q", format=".1f"),
             alt.Tooltip("eval_seconds:Q", format=".1f"), alt.Tooltip("mean:Q", format=".4f"), "trainable_params"],
).add_params(tpick)
st.markdown("**Score against time** — what each point of accuracy costs")
ev_time = st.altair_chart(scatter.properties(height=300), on_select="rerun", key="time_chart", width="stretch") \
    if len(tdf) else None
if not timed.all():
    st.caption("Not on the time chart (imported results have no times): "
               f"{ui.plain(', '.join(sorted(set(table[~timed].method))))}.")


def _first(event, name):
    try:
        sel = event.selection.get(name) if event is not None else None
    except AttributeError:
        return None
    return sel[0] if sel else None


hit = _first(ev_box, "persona")
if hit and hit.get("persona_id"):
    st.switch_page(ui.PAGES["persona"], query_params={"run": hit.get("run_id") or run_ids[0],
                                                     "persona": hit["persona_id"]})
for ev, name in ((ev_bar, "pick"), (ev_time, "tpick")):
    hit = _first(ev, name)
    if hit and hit.get("method") and hit["method"] != st.query_params.get("method"):
        ui.set_qp(method=hit["method"], mrun=hit.get("run_id"))

# ----------------------------------------------------------------------------- one method, per persona
st.subheader("One method, persona by persona")
m_q = st.query_params.get("method")
c1, c2 = st.columns(2)
method = c1.selectbox("Method", order, index=order.index(m_q) if m_q in order else 0, key="detail_method")
mrun_q = st.query_params.get("mrun")
mrun = c2.selectbox("Run", run_ids, index=run_ids.index(mrun_q) if mrun_q in run_ids else 0,
                    format_func=lambda r: labels.get(r, r), key="detail_run") if multi else run_ids[0]
ui.set_qp(method=method, mrun=mrun if multi else None)
one = scores[(scores.run_id == mrun) & (scores.method == method)][["persona_id", "score"]]
st.caption(f"{metric} on {kind_labels[kind]} test targets")
ref = scores[(scores.run_id == mrun) & (scores.method == reference)][["persona_id", "score"]]
one = one.merge(ref.rename(columns={"score": "reference"}), on="persona_id", how="left")
one["delta"] = one.score - one.reference
one = one.sort_values("score", ascending=False)
st.caption(f"{len(one)} personas · select a row to open the persona")
ev_rows = ui.table(one, hide_index=True, width="stretch", on_select="rerun", selection_mode="single-row",
                       key="persona_rows", column_config={
                           "score": st.column_config.NumberColumn(format="%.4f"),
                           "reference": st.column_config.NumberColumn(reference, format="%.4f"),
                           "delta": st.column_config.NumberColumn(f"Δ vs {reference}", format="%+.4f")})
rows = ev_rows.selection.rows if ev_rows is not None and hasattr(ev_rows, "selection") else []
if rows:
    st.switch_page(ui.PAGES["persona"], query_params={"run": mrun, "persona": one.iloc[rows[0]].persona_id})

# ----------------------------------------------------------------------------- who gains
if method != reference:
    st.markdown(f"**Who gains** — each persona's Δ ({method} − {reference}) against what it has; the line is the "
                "least-squares fit, its slope with a 95% t-interval (n − 2 degrees of freedom)")
    attribute = st.radio("against", views.GAIN_ATTRIBUTES, horizontal=True, key="gain_attribute",
                         format_func={"n_train": "train examples", "n_val": "val examples", "n_test": "test examples",
                                      "silhouette": "silhouette (profile clusters)"}.get)
    g = ui.read("gains", [mrun], method, reference=reference, metric=metric, kind=kind, attribute=attribute)
    pts = g["personas"].dropna(subset=[attribute])
    if len(pts) and len(g["slopes"]):
        s = g["slopes"].iloc[0]
        dots = alt.Chart(pts).mark_circle(size=60).encode(
            x=alt.X(f"{attribute}:Q", scale=alt.Scale(zero=False)), y=alt.Y("delta:Q", title=f"Δ vs {reference}"),
            tooltip=["persona_id", attribute, alt.Tooltip("delta:Q", format="+.4f")])
        layers = dots + alt.Chart(pts).mark_rule(color="black").encode(y=alt.datum(0))
        if s.slope == s.slope:
            layers = layers + dots.transform_regression(attribute, "delta").mark_line(color="gray")
        st.altair_chart(layers.properties(height=260), width="stretch")
        interval = (f"[{s.ci_low:+.4f}, {s.ci_high:+.4f}]" if s.ci_low == s.ci_low else
                    "— (the points lie on the line: no spread to estimate it from)")
        st.caption(f"slope {s.slope:+.4f} per unit of {attribute}, 95% CI {interval}, n = {int(s.n)} personas"
                   if s.slope == s.slope else
                   f"no slope: {attribute} does not vary across these {int(s.n)} personas (the simulator's "
                   "train_spread knob spreads train sizes)")
    else:
        st.caption(f"No persona has both a Δ and a {attribute} in this run.")
