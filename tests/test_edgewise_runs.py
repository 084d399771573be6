"""Real EdgeWisePersona data, run: the 100 shipped dialogues (one per persona, no profiles) run what they allow and
refuse the rest up front, saying why; the seed study's five methods run on a release-layout folder; the split file
is named on the command line and in Launch; each test example's situation (session meta) reaches the Persona page.
"""
import json

import pytest

from engine import store
from engine.lab import cli
from engine.lab.runner import execute_run
from engine.lab.spec import RunSpec
from engine.lab.study import StudySpec
from engine.methods.registry import known_methods, method
from engine.training.config import ConfigError
from tests.conftest import open_page
from tests.edgewise_data import REAL, meta_of, study_splits, write_release

STUDY_METHODS = ["unified", "per_persona", "hybrid", "cluster", "merge:ab_mean"]
TRAIN = {"epochs": 1, "max_new_tokens": 4, "r": 4}


def verdict(methods) -> str | None:
    """None when the shipped dialogues allow the methods, else RunSpec.validate's reason."""
    try:
        RunSpec(data=str(REAL), model="tiny-random", methods=methods).validate()
    except ConfigError as e:
        return str(e)
    return None


# ----------------------------------------------------------------------------- the 100 shipped dialogues

def test_the_shipped_dialogues_allow_base_only_and_say_why_not_the_rest():
    """One dialogue per persona goes to test (60/20/20 keeps every persona's last for test): nothing to train on,
    nothing to validate on, and no profile text to cluster, merge or prompt with."""
    reasons = {m: verdict(["base", m] if method(m).chooses else [m]) for m in known_methods()}
    assert [m for m, why in reasons.items() if why is None] == ["base"]
    for m, why in reasons.items():
        if m == "base":
            continue
        assert why.startswith(f"{REAL}: ") and "\n" not in why
        entry = method(m)
        if entry.reads_train:
            assert "no train examples at all (each persona has one dialogue, and the 60/20/20 split per persona " \
                   "keeps a persona's only dialogue for test" in why, why
        if entry.reads_profile:
            assert f"method {m} needs a profile text" in why and "none for persona_000" in why, why
        if entry.chooses:
            assert "chooses each persona's method on val examples; the data has none" in why, why


def test_the_shipped_dialogues_run_every_method_they_allow(tmp_path):
    allowed = [m for m in known_methods() if not method(m).chooses and verdict([m]) is None]
    run_id = execute_run(RunSpec(data=str(REAL), model="tiny-random", methods=allowed, train=TRAIN), tmp_path / "r")
    store.ingest(tmp_path / "r", tmp_path / "s.duckdb")
    res = store.query("SELECT method, count(*) AS personas, sum(n_test) AS targets FROM persona_results "
                      "WHERE run_id = ? GROUP BY method", [run_id], path=tmp_path / "s.duckdb")
    assert res.values.tolist() == [["base", 100, 200]]  # every persona, both assistant turns of its dialogue


def test_the_study_methods_on_the_shipped_dialogues_exit_2_naming_why(tmp_path, capsys):
    db = tmp_path / "store.duckdb"
    code = cli.main(["run", "--data", str(REAL), "--model", "tiny-random", "--methods", ",".join(STUDY_METHODS),
                     "--store", str(db)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "no train examples at all (each persona has one dialogue" in err
    assert "method cluster needs a profile text" in err and "method merge:ab_mean needs a profile text" in err
    assert not db.exists() and not (tmp_path / "runs").exists()  # nothing written


# ----------------------------------------------------------------------------- the study's five methods

@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    """The seed study's five methods on a release-layout folder: 4 users x 10 real sessions, 6/2/2 each."""
    d = tmp_path_factory.mktemp("edgewise_run")
    folder = write_release(d / "edgewise", users=4, sessions=10)
    spec = RunSpec(data=str(folder), model="tiny-random", methods=STUDY_METHODS, train=TRAIN,
                   options={"cluster_k": 2, "merge_k": 3})
    run_id = execute_run(spec, d / "results")
    db = d / "store.duckdb"
    store.ingest(d / "results", db)
    return {"dir": d, "store": db, "run": run_id, "jobs": d / "jobs"}


@pytest.mark.slow
def test_the_five_study_methods_score_every_persona(study_run):
    db, run_id = study_run["store"], study_run["run"]
    res = store.query("SELECT method, count(*) AS personas, min(n_test) AS lo, max(n_test) AS hi FROM persona_results "
                      "WHERE run_id = ? GROUP BY method ORDER BY method", [run_id], path=db)
    assert res.values.tolist() == [[m, 4, 4, 4] for m in sorted(STUDY_METHODS)]  # 2 test sessions x 2 turns each
    personas = store.query("SELECT persona_id, n_train, n_val, n_test, profile FROM personas WHERE run_id = ? "
                           "ORDER BY persona_id", [run_id], path=db)
    assert personas[["n_train", "n_val", "n_test"]].values.tolist() == [[12, 4, 4]] * 4
    assert personas.profile.str.startswith("TEST FIXTURE").all()
    kinds = store.query("SELECT DISTINCT kind FROM persona_kind_results WHERE run_id = ?", [run_id], path=db)
    assert {"personal", "general"} <= set(kinds.kind) <= {"personal", "general", "stated", "supplied"}
    config = json.loads(store.query("SELECT config_json FROM runs WHERE run_id = ?", [run_id], path=db).config_json[0])
    assert config["split_rule"] == "60/20/20 per persona, in order" and config["data_notes"] == []


@pytest.mark.slow
def test_each_prediction_keeps_its_sessions_meta(study_run):
    preds = store.query("SELECT example_id, meta_json FROM predictions WHERE run_id = ? AND method = 'unified'",
                        [study_run["run"]], path=study_run["store"])
    assert len(preds) == 16
    for example_id, meta_json in preds.values:
        session = int(example_id.split(":D")[1].split("#")[0]) % 10
        assert session in (8, 9) and json.loads(meta_json) == meta_of(session)


@pytest.mark.slow
def test_the_persona_page_shows_each_examples_situation(study_run, monkeypatch):
    at = open_page(monkeypatch, study_run["store"], study_run["jobs"], "persona", run=study_run["run"],
                   persona="persona_002")
    captions = [str(c.value) for c in at.caption]
    import ui
    for s in (8, 9):  # the test sessions: "night · weekday · before sunrise · ..." as the data gave them
        from engine.data.edgewise import describe_meta
        assert f"Situation: {ui.plain(describe_meta(meta_of(s)))}" in captions, captions
    assert len(at.expander) == 4


@pytest.mark.slow
def test_an_older_store_without_meta_gains_the_column_when_read(study_run, tmp_path):
    import shutil

    import duckdb
    old = tmp_path / "old.duckdb"
    shutil.copy(study_run["store"], old)
    con = duckdb.connect(str(old))
    con.execute("ALTER TABLE predictions DROP COLUMN meta_json")
    con.close()
    preds = store.queries.persona_predictions(study_run["run"], "persona_000", old)
    assert len(preds) == 4 * len(STUDY_METHODS) and preds.meta_json.isna().all()


# ----------------------------------------------------------------------------- the split file on the command line

def test_run_with_splits_prints_the_notes(tmp_path, capsys):
    folder = write_release(tmp_path / "edgewise", users=2, sessions=10)
    splits = tmp_path / "edgesplits_v2.json"
    splits.write_text(json.dumps(study_splits(2, 10)))
    db = tmp_path / "store.duckdb"
    assert cli.main(["run", "--data", str(folder), "--splits", str(splits), "--methods", "base", "--model",
                     "tiny-random", "--max-new-tokens", "2", "--store", str(db)]) == 0
    err = capsys.readouterr().err
    assert f"note: splits from {splits}\n" in err
    assert f"note: {splits}: 'online' ignored (2 personas have it)" in err
    n_test = store.query("SELECT sum(n_test) AS n FROM persona_results", path=db).n[0]
    assert n_test == 2 * 2 * 2  # the study's int() rule: 2 test sessions of 10 per persona, 2 turns each


def test_a_bad_split_file_exits_2_and_writes_nothing(tmp_path, capsys):
    folder = write_release(tmp_path / "edgewise", users=2, sessions=10)
    splits = study_splits(2, 10)
    splits["persona_001"]["test"].append(3)
    path = tmp_path / "splits.json"
    path.write_text(json.dumps(splits))
    db = tmp_path / "store.duckdb"
    assert cli.main(["run", "--data", str(folder), "--splits", str(path), "--methods", "base", "--model",
                     "tiny-random", "--store", str(db)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"{path}: persona 'persona_001': test index 3 is not one of its dialogues (its dialogues are "
                   "10..19; 3 is persona_000's)")
    assert not db.exists()


def test_study_takes_the_split_file_to_every_run(tmp_path):
    args = cli.build_parser().parse_args(["study", "--data", "d", "--splits", "s.json", "--vary", "r=4,8"])
    assert args.splits == "s.json"
    spec = StudySpec(data="d", vary={"r": [4, 8]}, splits="s.json")
    assert [run.splits for _, run in spec.points()] == ["s.json", "s.json"]


# ----------------------------------------------------------------------------- Launch

def test_launch_takes_a_folder_and_a_split_file(tmp_path, monkeypatch):
    home = tmp_path / "home"
    folder = write_release(home / "edgewise", users=2, sessions=10)
    (home / "splits.json").write_text(json.dumps(study_splits(2, 10)))
    monkeypatch.setenv("PLL_HOME", str(home))
    at = open_page(monkeypatch, home / "store.duckdb", home / "jobs", "launch")
    at.radio(key="data_kind").set_value("JSONL file path").run()
    at.text_input(key="data_path").input(str(folder)).run()
    at.multiselect(key="methods").set_value(["base"]).run()
    at.selectbox(key="model_choice").select("tiny-random").run()
    assert not at.exception
    shown = "\n".join(str(e.value) for e in at.success)
    assert "Dataset OK: dialogue task, 2 personas, 24 train / 8 val / 8 test targets" in shown, shown
    assert not at.info and not at.button(key="start").disabled
    at.text_input(key="data_splits").input("splits.json").run()
    assert "24 train / 8 val / 8 test" in "\n".join(str(e.value) for e in at.success)
    infos = [str(e.value) for e in at.info]
    assert infos[0] == f"splits from {home / 'splits.json'}" and "'online' ignored" in infos[1]
    (home / "splits.json").write_text(json.dumps({"persona_000": {"test": [9]}}))
    at.text_input(key="data_splits").input("./splits.json").run()  # another text: checked again
    shown = "\n".join(str(c.value) for c in at.code)
    assert "persona 'persona_001' of the data has no entry" in shown and at.button(key="start").disabled
    assert not (home / "jobs").exists()
