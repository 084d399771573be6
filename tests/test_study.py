"""Studies: a grid of runs with coordinates, resumed without redoing anything, and statistics over seeds."""
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from engine import store
from engine.analysis import stats
from engine.lab.study import StudySpec, run_study, study_runs
from engine.training.config import ConfigError
from tests.conftest import ROOT, open_page

SMALL = "sim:personas=3,train_per_persona=2,val_per_persona=1,test_per_persona=1"
TRAIN = {"epochs": 1, "max_new_tokens": 2, "r": 4}


@pytest.mark.slow
def test_a_2x2x2_study_lands_every_run_with_its_coordinates(tmp_path):
    db = str(tmp_path / "store.duckdb")
    spec = StudySpec(data=SMALL, vary={"personal_fraction": [0.0, 0.5], "train_per_persona": [2, 3]}, seeds=[0, 1],
                     methods=["base", "unified"], model="tiny-random", train=TRAIN, name="grid")
    study_id = run_study(spec, db)
    runs = study_runs(study_id, db)
    assert len(runs) == 8 and (runs.status == "done").all()
    got = {(r.at_personal_fraction, r.at_train_per_persona, r.at_seed) for r in runs.itertuples()}
    assert got == {(f, n, s) for f in (0.0, 0.5) for n in (2, 3) for s in (0, 1)}
    for r in runs.itertuples():  # the coordinates are what the run really used
        assert f"personal_fraction={r.at_personal_fraction}" in r.dataset and r.seed == r.at_seed
        assert f"train_per_persona={r.at_train_per_persona}," in r.dataset
    results = store.query("SELECT run_id, count(*) AS n FROM method_results GROUP BY run_id", path=db)
    assert set(results.run_id) == set(runs.run_id) and (results.n == 2).all()
    row = store.query("SELECT * FROM studies", path=db).iloc[0]
    assert (row.study_id, row.status, row.n_runs) == (study_id, "done", 8)
    assert StudySpec(**json.loads(row.spec_json)) == spec
    # plain SQL over coordinates, as the README shows
    q = store.query("SELECT json_extract(coords_json, '$.personal_fraction')::DOUBLE AS f, avg(m.mean_score) AS s "
                    "FROM runs JOIN method_results m USING (run_id) WHERE study_id = ? GROUP BY f ORDER BY f",
                    [study_id], db)
    assert q.f.tolist() == [0.0, 0.5]


def test_hyperparameters_vary_on_any_data(tmp_path):
    spec = StudySpec(data=SMALL, vary={"r": [2, 4]}, seeds=[3], methods=["unified"], model="tiny-random",
                     train={"epochs": 1, "max_new_tokens": 2})
    points = spec.points()
    assert [(c, s.train["r"], s.seed) for c, s in points] == [({"r": 2, "seed": 3}, 2, 3), ({"r": 4, "seed": 3}, 4, 3)]


@pytest.mark.parametrize("change,message", [
    ({"vary": {"personal_fraction": [0.1], "r": [4], "lr": [1e-3]}}, "at most 2 axes"),
    ({"vary": {"colour": [1, 2]}}, "not a simulator knob"),
    ({"vary": {"personal_fraction": []}}, "distinct values"),
    ({"vary": {"personal_fraction": [0.5, 0.5]}}, "distinct values"),
    ({"vary": {"personal_fraction": [0.5, 7]}}, "personal_fraction=7"),
    ({"vary": {"r": [0, 4]}}, "at r=0"),
    ({"vary": {"seed": [1, 2]}}, "--seeds"),
    ({"seeds": []}, "seeds"),
    ({"seeds": [1, 1]}, "seeds"),
    ({"seeds": [-1]}, "seeds"),
    ({"data": "my.jsonl", "vary": {"archetypes": [2, 3]}}, "is not the simulator"),
    ({"methods": ["nope"]}, "unknown method"),
])
def test_a_bad_study_is_refused_before_any_work(tmp_path, change, message):
    spec = StudySpec(**{**dict(data=SMALL, vary={"personal_fraction": [0.0, 0.5]}, seeds=[0], methods=["base"],
                               model="tiny-random", train=TRAIN), **change})
    db = tmp_path / "store.duckdb"
    with pytest.raises((ConfigError, ValueError), match=message):
        run_study(spec, str(db))
    assert not db.exists()


def _method_rows(db):
    return store.query("SELECT run_id, method, train_seconds, eval_seconds, mean_score FROM method_results "
                       "ORDER BY run_id, method", path=db)


@pytest.mark.slow
def test_resume_after_a_kill_redoes_nothing_finished(tmp_path):
    db = str(tmp_path / "store.duckdb")
    cmd = [sys.executable, "-m", "engine", "study", "--data", SMALL, "--vary", "personal_fraction=0,0.25,0.5",
           "--seeds", "0", "--methods", "base,unified", "--model", "tiny-random", "--epochs", "1",
           "--max-new-tokens", "2", "--r", "4", "--store", db]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 180
    first = None
    while time.monotonic() < deadline:  # kill -9 as soon as the first run has landed whole
        try:
            rows = _method_rows(db)
        except store.StoreError:
            rows = pd.DataFrame()
        if len(rows) >= 2:
            first = rows
            break
        assert p.poll() is None, p.communicate()[1][-2000:]
        time.sleep(0.2)
    assert first is not None, "the first run never landed"
    p.send_signal(signal.SIGKILL)
    p.wait(30)
    study_id = store.query("SELECT study_id FROM studies", path=db).study_id[0]
    before = _method_rows(db)
    assert len(before) < 6  # killed before the end
    listed = subprocess.run([sys.executable, "-m", "engine", "runs", "--store", db], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert listed.returncode == 0 and "running" not in listed.stdout, listed.stdout  # its process is gone (issue 20)
    assert store.query("SELECT status FROM studies", path=db).status[0] == "interrupted"
    r = subprocess.run([sys.executable, "-m", "engine", "study", "--resume", study_id, "--store", db], cwd=ROOT,
                       capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == study_id
    after = _method_rows(db)
    assert len(after) == 6
    kept = after.merge(before, on=["run_id", "method"], suffixes=("", "_before"))
    assert len(kept) == len(before)  # every finished method is still there, untouched
    assert (kept.train_seconds == kept.train_seconds_before).all() and (kept.mean_score == kept.mean_score_before).all()
    assert store.query("SELECT status FROM studies", path=db).status[0] == "done"
    assert set(store.queries.runs(db).status) == {"done"}


def test_statistics_over_seeds_equal_a_hand_computation():
    """Two seeds of one configuration: per persona the mean over seeds, then statistics over personas."""
    rows = []
    table = {  # run -> method -> persona -> score
        "s0": {"unified": {"a": 0.2, "b": 0.4, "c": 0.6}, "per_persona": {"a": 0.3, "b": 0.3, "c": 0.9}},
        "s1": {"unified": {"a": 0.4, "b": 0.4, "c": 0.8}, "per_persona": {"a": 0.5, "b": 0.1, "c": 0.9}},
    }
    for run, methods in table.items():
        for m, personas in methods.items():
            rows += [(run, m, p, s) for p, s in personas.items()]
    df = pd.DataFrame(rows, columns=["run_id", "method", "persona_id", "score"])
    out = stats.over_seeds(df, {"s0": "g", "s1": "g"}, reference="unified").set_index("method")
    unified = np.array([0.3, 0.4, 0.7])          # seed means per persona
    pp = np.array([0.4, 0.2, 0.9])
    assert out.loc["unified", "n_personas"] == 3 and out.loc["unified", "n_seeds"] == 2
    assert out.loc["unified", "mean"] == pytest.approx(unified.mean())
    assert out.loc["unified", "std"] == pytest.approx(unified.std(ddof=1))
    half = 4.302652729911275 * unified.std(ddof=1) / math.sqrt(3)  # t(0.975, df=2)
    assert out.loc["unified", "ci_low"] == pytest.approx(unified.mean() - half)
    assert out.loc["per_persona", "delta"] == pytest.approx((pp - unified).mean())
    assert (out.loc["per_persona", "helped"], out.loc["per_persona", "hurt"]) == (2, 1)
    seed_means = np.array([np.mean([0.3, 0.3, 0.9]), np.mean([0.5, 0.1, 0.9])])
    assert out.loc["per_persona", "seed_mean"] == pytest.approx(seed_means.mean())
    assert out.loc["per_persona", "seed_std"] == pytest.approx(seed_means.std(ddof=1))
    one = stats.over_seeds(df[df.run_id == "s0"], {"s0": "g"}).set_index("method")
    assert math.isnan(one.loc["unified", "seed_std"]) and one.loc["unified", "n_seeds"] == 1


@pytest.fixture(scope="module")
def studied(tmp_path_factory):
    """One study per shape: one axis x 2 seeds, and two axes x 1 seed (tiny-random)."""
    d = tmp_path_factory.mktemp("studies")
    db = str(d / "store.duckdb")
    one = run_study(StudySpec(data=SMALL, vary={"personal_fraction": [0.0, 0.5]}, seeds=[0, 1],
                              methods=["base", "unified"], model="tiny-random", train=TRAIN, name="one axis"), db)
    two = run_study(StudySpec(data=SMALL, vary={"personal_fraction": [0.0, 0.5], "r": [2, 4]}, seeds=[0],
                              methods=["base", "unified"], model="tiny-random", train=TRAIN, name="two axes"), db)
    return {"store": db, "jobs": d / "jobs", "one": one, "two": two}


def _page(studied, monkeypatch, **query):
    return open_page(monkeypatch, studied["store"], studied["jobs"], "studies", **query)


def test_studies_page_one_axis(studied, monkeypatch):
    from engine.analysis import views
    at = _page(studied, monkeypatch, study=studied["one"])
    assert at.selectbox[0].value == studied["one"]
    assert len(at.get("vega_lite_chart")) == 3  # score with CI band, Δ with CI band, time vs score
    text = "\n".join(str(m.value) for m in at.markdown)
    assert "base" in text and ("beats unified" in text or "never beats unified" in text)
    view = views.study_view(studied["one"], path=studied["store"])
    t = view["table"]
    assert set(t.personal_fraction) == {0.0, 0.5} and set(t.n_seeds) == {2} and len(t) == 4
    assert all(len(r) == 2 for r in t.run_ids)  # each point pools its two seeds


@pytest.mark.parametrize("personas, warned", [(6, True), (12, False)])
def test_studies_page_says_when_no_point_can_be_significant(tmp_path, monkeypatch, personas, warned):
    """8 methods (7 comparisons per point): 6 personas cannot reach Holm p < 0.05 (7 x 2/2^6 = 0.22), 12 can."""
    from bench_pages import build_studies
    db = str(tmp_path / "store.duckdb")
    (study,) = build_studies(db, n_studies=1, n_runs=4, n_methods=8, n_personas=personas, work_dir=tmp_path / "w")
    at = open_page(monkeypatch, db, tmp_path / "jobs", "studies", study=study)
    limits = [w.value for w in at.warning if "No method can be significant" in w.value]
    assert len(limits) == warned
    if warned:
        assert limits[0].startswith("personal_fraction=0.0; personal_fraction=1.0: ")  # one limit, said once
        assert "at most 1 method with" in limits[0]
        assert "Holm over 7 comparisons" in limits[0]


def test_studies_page_two_axes_has_a_winner_map(studied, monkeypatch):
    at = _page(studied, monkeypatch, study=studied["two"])
    assert len(at.get("vega_lite_chart")) == 4  # + the winner heat map
    from engine.analysis import views
    cells = views.study_view(studied["two"], path=studied["store"])["cells"]
    assert len(cells) == 4 and set(cells.winner) <= {"base", "unified"}
    assert (cells.significant == (cells.margin_ci_low > 0)).all()


def test_crossover_in_words():
    from engine.analysis.views import crossover_text
    t = pd.DataFrame({"method": "per_persona", "personal_fraction": [0.0, 0.25, 0.5, 0.75],
                      "delta": [-0.05, 0.01, 0.08, 0.12], "delta_ci_low": [-0.08, -0.02, 0.05, 0.07],
                      "delta_ci_high": [-0.02, 0.04, 0.11, 0.17]})
    s = crossover_text(t, "personal_fraction", "per_persona", "unified")
    assert s.startswith("per_persona beats unified from personal_fraction ≥ 0.5 on") and "+0.080 [+0.050, +0.110]" in s
    never = crossover_text(t.assign(delta_ci_low=-0.1), "personal_fraction", "per_persona", "unified")
    assert "never beats unified significantly" in never and "significantly worse at personal_fraction ∈ {0.0}" in never
    # with Holm-adjusted p, "significant" is after adjustment: a CI that excludes 0 is not enough
    adjusted = crossover_text(t.assign(holm_p=[0.01, 0.5, 0.2, 0.01]), "personal_fraction", "per_persona", "unified")
    assert adjusted.startswith("per_persona beats unified from personal_fraction ≥ 0.75 on"), adjusted


def test_compare_takes_seeds_together(studied, monkeypatch):
    from engine.analysis import views
    runs = study_runs(studied["one"], studied["store"])
    groups = views.seed_groups(list(runs.run_id), studied["store"])
    assert len(set(groups.values())) == 2  # two personal_fraction values, two seeds each
    for f in (0.0, 0.5):
        ids = list(runs[runs.at_personal_fraction == f].run_id)
        assert len({groups[i] for i in ids}) == 1
    at = open_page(monkeypatch, studied["store"], studied["jobs"], "compare", runs=",".join(runs.run_id), seeds="1")
    (seed_table,) = [d.value for d in at.dataframe if "n_seeds" in d.value]
    assert len(seed_table) == 4 and set(seed_table.n_seeds) == {2}
    scores = store.queries.persona_results(list(runs.run_id), studied["store"])
    hand = stats.over_seeds(scores, groups)
    assert sorted(seed_table["mean"].round(6)) == sorted(hand["mean"].round(6))


def test_a_dashboard_study_queues_one_job_per_run_and_cancels_as_a_whole(tmp_path, monkeypatch):
    from engine.lab import jobs
    from engine.lab.study import cancel_study, submit_study
    db, jd = str(tmp_path / "store.duckdb"), tmp_path / "jobs"
    spec = StudySpec(data=SMALL, vary={"personal_fraction": [0.0, 0.5]}, seeds=[0, 1], methods=["base"],
                     model="tiny-random", train=TRAIN, name="queued")
    study_id = submit_study(spec, store_file=db, jobs_dir=jd, spawn=False)
    queued = jobs.list_jobs(jd)
    assert len(queued) == 4 and {j["study_id"] for j in queued} == {study_id}
    assert sorted(j["run_id"] for j in queued) == [f"{study_id}-{i:03d}" for i in range(4)]
    saved = [json.loads((jd / j["job_id"] / "spec.json").read_text())["spec"] for j in queued]
    assert sorted((json.loads(s["study"]["coords_json"])["personal_fraction"], s["seed"]) for s in saved) == \
        [(0.0, 0), (0.0, 1), (0.5, 0), (0.5, 1)]
    row = store.query("SELECT status, n_runs FROM studies", path=db).iloc[0]
    assert (row.status, row.n_runs) == ("queued", 4)
    assert cancel_study(study_id, db, jd) == 4
    assert {j["status"] for j in jobs.list_jobs(jd)} == {"cancelled"}
    assert store.query("SELECT status FROM studies", path=db).status[0] == "cancelled"


def test_a_bad_dashboard_study_writes_nothing(tmp_path):
    from engine.lab.study import submit_study
    db, jd = tmp_path / "store.duckdb", tmp_path / "jobs"
    with pytest.raises(ConfigError):
        submit_study(StudySpec(data=SMALL, vary={"personal_fraction": [0.5, 3]}, seeds=[0], methods=["base"],
                               model="tiny-random"), store_file=str(db), jobs_dir=jd, spawn=False)
    assert not db.exists() and not jd.exists()


def test_launch_starts_a_study_and_jobs_shows_it_whole(tmp_path, monkeypatch):
    from engine.lab import jobs
    started = []
    monkeypatch.setattr(jobs, "start_worker", lambda job_id, root: started.append(job_id) or 0)
    at = open_page(monkeypatch, tmp_path / "store.duckdb", tmp_path / "jobs", "launch")
    assert any("4 runs" in str(c.value) for c in at.caption)  # personal_fraction 0, 0.25, 0.5, 0.75 x seed 0
    at.button(key="start_study").click().run()
    assert len(started) == 4
    at.switch_page("pages/jobs.py").run()
    text = "\n".join(str(m.value) for m in at.markdown)
    assert "0/4 runs done" in text
    assert at.button(key=[k for k in (b.key for b in at.button) if k and k.startswith("cancel_study_")][0])


def test_welcome_quick_study_button_queues_the_grid(tmp_path, monkeypatch):
    from engine.lab import jobs
    from engine.lab import demos
    started = []
    monkeypatch.setattr(jobs, "start_worker", lambda job_id, root: started.append(job_id) or 0)
    at = open_page(monkeypatch, tmp_path / "store.duckdb", tmp_path / "jobs", "compare")
    at.button(key="demo_study").click().run()
    assert not at.exception, [e.message for e in at.exception]
    spec = demos.quick_study_spec()
    assert len(started) == len(spec.points()) == 4
    assert {j["study_id"] for j in jobs.list_jobs(tmp_path / "jobs")} == \
        set(store.query("SELECT study_id FROM studies", path=str(tmp_path / "store.duckdb")).study_id)


def test_a_study_s_progress_as_a_whole():
    from engine.lab import jobs
    js = [{"status": "done", "started_at": "2026-01-01T00:00:00+00:00", "finished_at": "2026-01-01T00:01:00+00:00"},
          {"status": "done", "started_at": "2026-01-01T00:01:00+00:00", "finished_at": "2026-01-01T00:04:00+00:00"},
          {"status": "running", "started_at": "2026-01-01T00:04:00+00:00"}, {"status": "queued"},
          {"status": "failed"}]
    g = jobs.group_progress(js)
    assert (g["total"], g["active"], g["counts"]["done"], g["counts"]["failed"]) == (5, 2, 2, 1)
    assert g["eta_seconds"] == pytest.approx(2 * 120.0)  # mean of the finished runs (60 s, 180 s) x 2 left
    assert jobs.group_progress(js[2:4])["eta_seconds"] is None  # nothing finished yet: no estimate


def test_data_seeds_draw_the_simulator_anew_and_their_personas_count_apart(tmp_path):
    """--data-seeds: every point runs on each simulator draw; in the Studies view a draw's personas are personas of
    their own (p000 of draw 7 is not p000 of draw 8), each averaged over the training seeds; the view says what its
    intervals cover."""
    from engine.analysis import views
    db = str(tmp_path / "store.duckdb")
    spec = StudySpec(data=SMALL, vary={"personal_fraction": [0.5]}, seeds=[0, 1], data_seeds=[7, 8],
                     methods=["base", "unified"], model="tiny-random", train=TRAIN)
    study_id = run_study(spec, db)
    runs = study_runs(study_id, db)
    assert {(r.at_data_seed, r.at_seed) for r in runs.itertuples()} == {(7, 0), (7, 1), (8, 0), (8, 1)}
    for r in runs.itertuples():
        assert r.dataset.endswith(f"seed={r.at_data_seed}")
    view = views.study_view(study_id, path=db)
    t = view["table"].set_index("method")
    assert (t.n_personas == 3 * 2).all() and (t.n_seeds == 4).all()  # 3 personas x 2 draws; 4 runs per point
    # by hand: per (draw, persona) the mean over training seeds, then the mean over those 6 units
    scores = store.queries.persona_results(list(runs.run_id), db)
    scores["draw"] = scores.run_id.map(dict(zip(runs.run_id, runs.at_data_seed)))
    unit = scores[scores.method == "unified"].groupby(["draw", "persona_id"]).score.mean()
    assert len(unit) == 6 and t.loc["unified", "mean"] == pytest.approx(unit.mean())
    assert view["coverage"] == {"train_seeds": [0, 1], "data_draws": [7, 8]}
    assert "data draws 7, 8" in views.coverage_text(view["coverage"], pooled_seeds=True)
    # the README's study table shows the same numbers
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "readme_table.py"), "--store", db, "--study", study_id],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if "| `base` |" in line)
    assert f"| 6 | {t.loc['base', 'mean']:.3f} (" in row and "data draws 7, 8" in out.stdout
    with pytest.raises(ConfigError, match="one fixed dataset"):
        StudySpec(data=str(ROOT / "tests" / "data" / "edgewise_cold_start_000-099.jsonl"), data_seeds=[1]).points()
    with pytest.raises(ConfigError, match="--data-seeds"):
        StudySpec(data=SMALL, vary={"data_seed": [1, 2]}).points()


@pytest.mark.parametrize("seeds, draws, pooled, says, never", [
    ([0, 1], [7, 8], True, ["averaged over training seeds 0, 1", "data draws 7, 8", "personas of their own"], ["one run"]),
    ([0], [7, 8, 9], True, ["over personas", "one training seed (0)", "data draws 7, 8, 9", "personas of their own"],
     ["one run", "averaged"]),
    ([0, 1], [7], True, ["averaged over training seeds 0, 1", "data draw 7", "do not cover"], ["one run"]),
    ([0], [7], True, ["personas of one run", "training seed (0)"], ["averaged"]),
    ([0], [7, 8, 9], False, ["personas of one run"], ["averaged"]),
    ([], [None], True, ["imported results", "one fixed dataset"], ["one run"]),
])
def test_coverage_text_says_what_an_interval_covers(seeds, draws, pooled, says, never):
    """A study pooled over data draws with one training seed covers the draws (it once said 'one run')."""
    from engine.analysis import views
    text = views.coverage_text({"train_seeds": seeds, "data_draws": draws}, pooled_seeds=pooled)
    assert all(s in text for s in says) and not any(n in text for n in never), text
