"""Every dashboard page rendered with streamlit's AppTest, on a store with results and on an empty store.

The store with results holds one real tiny-random run (made by a job's worker, in-process, then ingested
by jobs.poll — the dashboard's own path) and two synthetic runs with clusters, UMAP, a K sweep and merge
weights (bench/bench_pages.build_store), so the cluster and merge views have something to show.
"""
import contextlib
import json
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine import store
from engine.lab import cli, jobs, worker
from engine.analysis import estimate
from engine.methods.registry import known_methods
from engine.lab.spec import RunSpec
from tests.conftest import open_page

ROOT = Path(__file__).resolve().parent.parent
from bench_pages import build_store  # noqa: E402


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    d = tmp_path_factory.mktemp("app")
    path, jobs_dir = str(d / "store.duckdb"), d / "jobs"
    spec = RunSpec(data="sim:personas=3,train_per_persona=3,val_per_persona=1,test_per_persona=2",
                   model="tiny-random", methods=known_methods(), device="cpu", name="tiny app test",
                   train={"epochs": 1, "max_new_tokens": 4})
    job_id = jobs.submit(spec, jobs_dir=jobs_dir, spawn=False)
    old = signal.getsignal(signal.SIGTERM)
    try:
        with open(jobs_dir / job_id / "log.txt", "w") as log, contextlib.redirect_stdout(log):
            assert worker.worker_main(job_id, jobs_dir) == 0
    finally:
        signal.signal(signal.SIGTERM, old)
    jobs.poll(path, jobs_dir)
    real = store.queries.runs(path).run_id[0]
    synth = build_store(path, n_personas=12, n_methods=8, n_runs=2, work_dir=d / "synth")
    return {"store": path, "jobs": jobs_dir, "real": real, "synth": synth, "job": job_id}


@pytest.fixture
def empty(tmp_path):
    return {"store": str(tmp_path / "empty.duckdb"), "jobs": tmp_path / "jobs"}


def app(where, page, monkeypatch, **query):
    return open_page(monkeypatch, where["store"], where["jobs"], page, **query)


def texts(at):
    out = []
    for kind in ("markdown", "caption", "info", "success", "error", "warning", "title", "subheader", "text"):
        out += [str(e.value) for e in at.get(kind)]
    return "\n".join(out)


def charts(at):
    return at.get("vega_lite_chart")


# ----------------------------------------------------------------------------- empty store

@pytest.mark.parametrize("page", ["compare", "launch", "jobs", "persona", "clusters", "studies"])
def test_pages_on_empty_store(empty, page, monkeypatch):
    at = app(empty, page, monkeypatch)
    assert at.title


def test_welcome_demo_button_starts_a_job(empty, monkeypatch):
    started = []
    monkeypatch.setattr(jobs, "start_worker", lambda job_id, root: started.append(job_id) or 0)
    at = app(empty, "compare", monkeypatch)
    assert "Welcome" in texts(at)
    assert {b.key for b in at.button} >= {"demo_tiny", "demo_smollm2"}
    at.button(key="demo_tiny").click().run()
    assert not at.exception
    assert len(started) == 1
    assert [j["job_id"] for j in jobs.list_jobs(empty["jobs"])] == started
    saved = (empty["jobs"] / started[0] / "spec.json").read_text()
    assert "tiny-random" in saved


# ----------------------------------------------------------------------------- store with results

def test_compare(full, monkeypatch):
    at = app(full, "compare", monkeypatch, runs=full["real"])
    assert at.multiselect[0].value == [full["real"]]
    table = at.dataframe[0].value
    assert set(known_methods()) <= set(table.method)
    for col in ("mean", "std", "ci_low", "ci_high", "delta", "wilcoxon_p", "helped", "hurt", "train_seconds",
                "trainable_params"):
        assert col in table.columns
    assert len(charts(at)) == 5  # routing choices, bars with CI, box + points, time vs score, who gains
    (routing,) = [d.value for d in at.dataframe if "routed_on_test" in d.value]  # validation vs test routing
    assert list(routing.columns) == ["routed", "routed_on_test", "gap"] and len(routing) == 1
    assert routing.gap.iloc[0] == routing.routed_on_test.iloc[0] - routing.routed.iloc[0] >= -1e-12
    assert at.get("download_button")
    ref = [s for s in at.selectbox if s.label.startswith("Reference")][0]
    assert ref.value == "unified"
    # 3 personas, 16 comparisons: Holm cannot reach 0.05 whatever the scores, and the page says so
    (limit,) = [w.value for w in at.warning if "No method can be significant" in w.value]
    assert "of 3 personas differing" in limit or "with 3 personas" in limit
    assert "at least" in limit


def test_compare_several_runs_reference_and_method(full, monkeypatch):
    at = app(full, "compare", monkeypatch, runs=",".join(full["synth"]), ref="base", method="merge:exact")
    table = at.dataframe[0].value
    assert not [w for w in at.warning if "No method can be significant" in w.value]  # 12 personas, 7 comparisons
    assert len(table) == 16 and "run" in table.columns
    assert table[table.method == "base"].delta.isna().all()
    assert table[table.method == "unified"].delta.notna().all()
    assert at.selectbox(key="detail_method").value == "merge:exact"
    (per_persona,) = [d.value for d in at.dataframe if "persona_id" in d.value]
    assert len(per_persona) == 12 and "delta" in per_persona.columns
    # switching the reference is reflected in the URL
    [s for s in at.selectbox if s.label.startswith("Reference")][0].select("unified").run()
    assert not at.exception
    assert "ref" not in at.query_params


def test_launch(full, monkeypatch):
    at = app(full, "launch", monkeypatch)
    assert "Dataset OK" in texts(at)
    assert at.get("metric") and "Estimated time" in at.get("metric")[0].label
    assert set(at.multiselect(key="methods").options) == set(known_methods())


def test_launch_bad_file_shows_problems_and_starts_nothing(full, tmp_path, monkeypatch):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"persona_id": "p1"}\nnot json\n')
    monkeypatch.setenv("PLL_HOME", str(tmp_path))  # the dashboard opens paths inside its data folder only
    at = app(full, "launch", monkeypatch)
    at.radio(key="data_kind").set_value("JSONL file path").run()
    at.text_input(key="data_path").input(str(bad)).run()
    assert not at.exception
    shown = texts(at) + "\n".join(str(c.value) for c in at.code)
    assert f"{bad}:2:" in shown
    assert at.button(key="start").disabled


def test_launch_start_submits_one_job_per_seed(full, tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr(jobs, "start_worker", lambda job_id, root: started.append(job_id) or 0)
    where = {"store": str(tmp_path / "s.duckdb"), "jobs": tmp_path / "jobs"}
    at = app(where, "launch", monkeypatch)
    at.selectbox(key="model_choice").select("tiny-random").run()
    at.text_input(key="seeds").input("0, 1").run()
    at.button(key="start").click().run()
    assert not at.exception
    assert len(started) == 2
    seeds = sorted(j["spec"]["seed"] for j in
                   (json.loads((where["jobs"] / s / "spec.json").read_text()) for s in started))
    assert seeds == [0, 1]


def test_jobs_page(full, monkeypatch):
    at = app(full, "jobs", monkeypatch)
    table = at.dataframe[0].value
    assert full["job"] in set(table.job) and set(table.status) == {"done"}
    assert at.button(key=f"retry_{full['job']}")
    links = [e for e in at.get("page_link") if "Open results" in e.proto.label]
    run_id = store.queries.runs(full["store"]).run_id[0]
    assert links and links[0].proto.query_string == f"runs={run_id}"  # a link, not a server-side page switch
    assert "done" in "\n".join(str(c.value) for c in at.code)  # the log tail


def test_persona_real_run(full, monkeypatch):
    at = app(full, "persona", monkeypatch, run=full["real"], persona="p001")
    assert at.selectbox(key="persona_pick").value == "p001"
    assert len(charts(at)) >= 1
    n_examples = store.query("SELECT count(DISTINCT example_id) AS n FROM predictions WHERE run_id = ? AND "
                             "persona_id = 'p001'", [full["real"]], full["store"])["n"][0]
    assert len(at.expander) == n_examples > 0  # one per test example
    replies = [d.value for d in at.dataframe if "prediction" in d.value.columns][0]
    assert set(replies.method) == set(known_methods())
    assert at.selectbox(key="merge_method").options  # the engine's merge methods store neighbour weights


def test_persona_with_merge_weights_and_search(full, monkeypatch):
    run = full["synth"][0]
    at = app(full, "persona", monkeypatch, run=run, persona="p003")
    assert "Persona p003" in texts(at)
    assert len(charts(at)) == 2  # scores + merge weights
    assert at.selectbox(key="merge_method").options
    at.text_input(key="persona_search").input("p01").run()
    assert not at.exception
    options = at.selectbox(key="persona_pick").options
    assert {o.split(" ")[0] for o in options} >= {"p010", "p011", "p003"}  # the chosen one stays listed


def test_clusters(full, monkeypatch):
    run = full["synth"][0]
    at = app(full, "clusters", monkeypatch, run=run)
    assert at.get("metric")[0].label == "Overall silhouette"
    assert len(charts(at)) == 3  # UMAP, silhouette vs K, per persona
    at.radio(key="color_by").set_value("gain over unified").run()
    assert not at.exception
    assert at.query_params["color"] == "gain"


def test_clusters_default_run_from_real_engine_run(monkeypatch, full):
    at = app(full, "clusters", monkeypatch, run=full["real"])  # clusters made by the engine's cluster method
    assert at.get("metric")[0].label == "Overall silhouette"
    assert at.get("metric")[2].value == "3"


def test_views_estimate_uses_measured_speed(full):
    from engine.data.dataset import load_dataset
    from engine.training.config import TrainConfig
    ds = load_dataset("sim:personas=4,train_per_persona=4,val_per_persona=1,test_per_persona=1")
    est = estimate.estimate_seconds(ds, "tiny-random", ["base", "unified"], TrainConfig(), path=full["store"])
    assert est["measured"] and est["seconds"] > 0
    cold = estimate.estimate_seconds(ds, "never-run-model", ["base", "unified"], TrainConfig(), path=full["store"])
    assert not cold["measured"]


def test_engine_compare_prints_what_compare_shows(full, monkeypatch, capsys):
    """The same figures from the same functions: the page's table and `python -m engine compare`, with a margin
    and an effect set in the URL and on the command line; the reference row says "—", never None."""
    run = full["synth"][0]
    at = app(full, "compare", monkeypatch, runs=run, margin="0.03", effect="0.1")
    page = at.dataframe[0].value.set_index("method")
    assert cli.main(["compare", "--store", full["store"], "--runs", run, "--format", "json", "--margin", "0.03",
                     "--effect", "0.1"]) == 0
    printed = pd.DataFrame(json.loads(capsys.readouterr().out)).set_index("method")
    assert set(printed.index) == set(page.index)
    for col in ("n_personas", "mean", "delta", "delta_ci_low", "delta_ci_high", "wilcoxon_p", "holm_p", "tost_p", "mde",
                "personas_needed"):
        np.testing.assert_allclose(printed[col].astype(float), page.loc[printed.index, col].astype(float),
                                   equal_nan=True, err_msg=col)
    assert list(printed.verdict.fillna("—")) == list(page.loc[printed.index, "verdict"])
    assert page.loc["unified", "verdict"] == "—" and pd.isna(page.loc["unified", "helped"])  # shown as —
    assert "None" not in page[["verdict", "helped", "hurt", "tied"]].astype(str).to_string()
    caption = " ".join(c.value for c in at.caption)
    assert "Holm-adjusted p < 0.05" in caption and "±0.03" in caption and "Δ = 0.1" in caption


def test_who_gains_fits_the_per_persona_delta_against_a_persona_attribute(full):
    """views.gains: per persona Δ (method − reference) beside the attribute, and the slope of the fit with its
    t-interval, equal to the slope computed by hand from the store's rows; no slope where the attribute is flat."""
    from engine.analysis import stats, views
    run = full["synth"][0]
    g = views.gains([run], "per_persona", "unified", attribute="silhouette", path=full["store"])
    rows = store.queries.persona_results([run], full["store"]).pivot_table(index="persona_id", columns="method",
                                                                           values="score")
    hand_delta = (rows["per_persona"] - rows["unified"]).sort_index()
    got = g["personas"].set_index("persona_id").sort_index()
    np.testing.assert_allclose(got.delta, hand_delta)
    attrs = store.queries.persona_attributes([run], full["store"]).set_index("persona_id").sort_index()
    hand = stats.slope(attrs.silhouette, hand_delta)
    s = g["slopes"].iloc[0]
    assert (s.slope, s.ci_low, s.ci_high) == pytest.approx((hand["slope"], hand["ci_low"], hand["ci_high"]))
    assert s.ci_low < s.slope < s.ci_high and int(s.n) == len(hand_delta)
    flat = views.gains([run], "per_persona", "unified", attribute="n_train", path=full["store"])["slopes"].iloc[0]
    assert np.isnan(flat.slope)  # every persona has 30 train examples here: nothing to fit
