"""Importing other tools' per-persona results (engine.lab.importer, `engine import`, Launch's Import section).

The same table written as CSV, a JSON list, a JSON object holding the list, and JSONL must give the same rows;
every bad file must be refused with `FILE:LINE: what`, exit 2 and the store byte-for-byte as it was (or still
absent); the statistics of an imported method must be those of a trained method with the same per-persona
scores, and equal a hand computation.
"""
import hashlib
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from engine import store
from engine.lab import cli
from engine.lab import importer
from engine.analysis import views
from tests.conftest import open_page

ROOT = Path(__file__).resolve().parent.parent
# persona, action_f1 (a metric the store has a column for), bleu (another metric), latency_ms (not in [0, 1]), note
ROWS = [("p1", 0.8, 0.31, 120, "a"), ("p2", 0.6, 0.25, 95, "b"), ("p3", 0.9, 0.4, 130, "c"), ("p4", 0.5, 0.2, 101, "d")]
COLUMNS = ("persona_id", "action_f1", "bleu", "latency_ms", "note")


def records(rows=ROWS):
    return [dict(zip(COLUMNS, r)) for r in rows]


def as_csv(rows=ROWS, columns=COLUMNS):
    return ",".join(columns) + "\n" + "".join(",".join(str(v) for v in r) + "\n" for r in rows)


def as_json_list(rows=ROWS):
    return json.dumps(records(rows), indent=2) + "\n"


def as_json_object(rows=ROWS):
    return json.dumps({"tool": "my-eval", "version": [1, 2], "per_persona": records(rows)}, indent=2) + "\n"


def as_jsonl(rows=ROWS):
    return "".join(json.dumps(r) + "\n" for r in records(rows))


def record_start_lines(text):
    """Lines where the records of an indented JSON list start (json.dumps(indent=2) puts each '{' on its own line),
    found without the importer's own position tracking."""
    lines = text.split("\n")
    depth_of_list = 1 if text.lstrip().startswith("[") else 2
    return [i + 1 for i, line in enumerate(lines) if line == "  " * depth_of_list + "{"]


def run_cli(args, capsys):
    code = cli.main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def snapshot(path):
    return Path(path).read_bytes() if Path(path).exists() else None


@pytest.fixture
def lab(tmp_path):
    """A store that already holds one imported run (so 'unchanged' means something), and a folder for files."""
    files = tmp_path / "files"
    files.mkdir()
    (files / "base.csv").write_text(as_csv())
    path = str(tmp_path / "store.duckdb")
    run_id = importer.import_results([("base.csv", (files / "base.csv").read_bytes())], path=path)
    return {"store": path, "files": files, "run": run_id}


def frame(path, table, run_id, drop=("run_id",)):
    df = store.query(f"SELECT * FROM {table} WHERE run_id = ? ORDER BY method, "
                     f"{'persona_id' if table == 'persona_results' else 'method'}", [run_id], path)
    return df.drop(columns=list(drop)).reset_index(drop=True)


# ----------------------------------------------------------------------------- the same table in four formats

def test_four_formats_give_identical_rows(tmp_path, capsys):
    texts = {"mine.csv": as_csv(), "mine.json": as_json_list(), "mine_object.json": as_json_object(),
             "mine.jsonl": as_jsonl()}
    path = str(tmp_path / "s.duckdb")
    runs = {}
    for name, text in texts.items():
        (tmp_path / name).write_text(text)
        code, out, err = run_cli(["import", str(tmp_path / name), "--method", "mine", "--store", path], capsys)
        assert code == 0, err
        runs[name] = out.strip().splitlines()[-1]
    assert len(set(runs.values())) == 4
    first = frame(path, "persona_results", runs["mine.csv"])
    assert list(first.persona_id) == ["p1", "p2", "p3", "p4"]
    assert list(first.score) == [0.8, 0.6, 0.9, 0.5]  # the first metric column (action_f1) is the score
    assert list(first.action_f1) == list(first.score)  # a metric the store has a column for lands in it
    assert json.loads(first.metrics_json[0]) == {"action_f1": 0.8, "bleu": 0.31}
    methods = {n: frame(path, "method_results", r) for n, r in runs.items()}
    for name, run_id in runs.items():
        pd.testing.assert_frame_equal(frame(path, "persona_results", run_id), first)
        pd.testing.assert_frame_equal(methods[name].drop(columns="details_json"),
                                      methods["mine.csv"].drop(columns="details_json"))
        details = json.loads(methods[name].details_json[0])["imported"]
        assert details["other_columns"] == {"latency_ms": {"p1": 120.0, "p2": 95.0, "p3": 130.0, "p4": 101.0}}
        assert details["text_columns"] == ["note"] and details["metrics"] == ["action_f1", "bleu"]
        assert details["sha256"] == hashlib.sha256(texts[name].encode()).hexdigest()
    run = store.query("SELECT * FROM runs WHERE run_id = ?", [runs["mine.jsonl"]], path).iloc[0]
    assert run.task == "imported" and run.metric == "action_f1" and run.n_personas == 4 and run.status == "done"
    assert run.dataset_hash == hashlib.sha256(texts["mine.jsonl"].encode()).hexdigest()
    assert json.loads(run.config_json)["imported"]["mine"]["sha256"] == run.dataset_hash


def test_score_column_choice(tmp_path):
    columns = ("persona_id", "bleu", "score", "latency_ms")
    rows = [("p1", 0.1, 0.7, 3), ("p2", 0.2, 0.9, 4)]
    raw = as_csv(rows, columns).encode()
    assert importer.read_results("f.csv", raw).score_column == "score"  # `score` when present, before any other
    assert importer.read_results("f.csv", raw, metric_column="bleu").score_column == "bleu"
    ids = importer.read_results("f.csv", b"who,acc\n1,0.5\n2,0.25\n", persona_column="who")
    assert ids.personas == ["1", "2"] and ids.numbers["acc"] == {"1": 0.5, "2": 0.25}


def test_default_method_names_are_usable_names():
    assert importer.method_names(["runs/per persona (2).csv", "b.x.jsonl"], None) == ["per_persona_2", "b.x"]
    with pytest.raises(importer.ImportProblems, match="method 'b' named twice"):
        importer.method_names(["a/b.csv", "c/b.json"], None)


def test_json_record_lines_are_where_each_object_starts():
    text = as_json_object()
    rf = importer.read_results("x.json", text.encode())
    assert [rf.lines[p] for p in rf.personas] == record_start_lines(text)
    assert record_start_lines(text)[1] > 9  # several lines per record: a line count, not a record count


# ----------------------------------------------------------------------------- statistics

T_975_3DF = 3.182446305284263  # Student t, 97.5th percentile, 3 degrees of freedom (tables)


def test_statistics_equal_a_hand_computation(lab, capsys):
    scores = [0.8, 0.6, 0.9, 0.5]  # action_f1 of ROWS
    mean = sum(scores) / 4  # 0.7
    std = math.sqrt(sum((x - mean) ** 2 for x in scores) / 3)  # sqrt(0.1 / 3)
    half = T_975_3DF * std / math.sqrt(4)
    (lab["files"] / "ref.csv").write_text(as_csv([("p1", 0.7, 0, 0, ""), ("p2", 0.6, 0, 0, ""),
                                                  ("p3", 0.8, 0, 0, ""), ("p4", 0.3, 0, 0, "")]))
    code, _, err = run_cli(["import", str(lab["files"] / "ref.csv"), "--run", lab["run"], "--store", lab["store"]],
                           capsys)
    assert code == 0, err
    table = views.compare_table([lab["run"]], reference="ref", path=lab["store"]).set_index("method")
    base = table.loc["base"]
    assert base.n_personas == 4
    assert base["mean"] == pytest.approx(0.7, abs=1e-12)
    assert base["std"] == pytest.approx(std, abs=1e-12) and std == pytest.approx(0.182574, abs=1e-6)
    assert (base.ci_low, base.ci_high) == pytest.approx((mean - half, mean + half), abs=1e-9)
    assert (base.ci_low, base.ci_high) == pytest.approx((0.40949, 0.99051), abs=1e-5)
    # paired against ref: differences 0.1, 0, 0.1, 0.2 -> mean 0.1, helped 3, tied 1 (|d| <= 1e-9), hurt 0
    assert base.delta == pytest.approx(0.1, abs=1e-12)
    assert (base.helped, base.hurt, base.tied) == (3, 0, 1)
    summary = store.queries.method_results([lab["run"]], lab["store"]).set_index("method").loc["base"]
    assert summary.mean_score == pytest.approx(0.7) and summary.n_personas == 4
    code, out, _ = run_cli(["runs", "--store", lab["store"]], capsys)
    line = [x for x in out.splitlines() if x.strip().startswith("base ")][0]
    assert "0.700 ± 0.183" in line and "95% CI 0.409–0.991, n=4" in line


def test_statistics_equal_a_trained_methods(lab, tmp_path):
    """A method written by the run path (store.method_summary + write_method_files) with the same per-persona
    scores gets the same row on Compare as the imported one."""
    per_persona = pd.DataFrame({"persona_id": ["p1", "p2", "p3", "p4"], "n_test": 3,
                                "score": [0.8, 0.6, 0.9, 0.5], "action_f1": [0.8, 0.6, 0.9, 0.5]})
    res = tmp_path / "trained"
    store.write_run_file(res, {"run_id": "trained-run", "created_at": "2026-01-01T00:00:00+00:00", "name": "t",
                               "status": "done", "task": "dialogue", "n_personas": 4, "model": "tiny-random",
                               "seed": 0, "methods": "base", "metric": "action_f1", "config_json": "{}"})
    store.write_method_files(res, "base", store.method_summary("base", per_persona, train_seconds=1.0,
                                                               eval_seconds=1.0, details_json="{}"),
                               {"persona_results": per_persona})
    store.ingest(res, lab["store"])
    table = views.compare_table([lab["run"], "trained-run"], path=lab["store"])
    stats_cols = ["n_personas", "mean", "std", "ci_low", "ci_high"]
    a, b = (table[table.run_id == r][stats_cols].reset_index(drop=True) for r in (lab["run"], "trained-run"))
    pd.testing.assert_frame_equal(a, b)
    summaries = store.queries.method_results(None, lab["store"]).set_index("run_id")
    assert summaries.loc[lab["run"], "mean_score"] == summaries.loc["trained-run", "mean_score"]


# ----------------------------------------------------------------------------- bad files

def _bad_json_list():
    recs = records()
    recs[2]["action_f1"] = "high"
    return json.dumps(recs, indent=2)


BAD = {
    # name: (content, expected "LINE", words in the message)
    "no_persona_column.csv": ("id,score\np1,0.5\np2,0.7\n", 1, "no column 'persona_id'"),
    "duplicated.csv": ("persona_id,score\np1,0.5\np2,0.7\np1,0.9\n", 4, "persona 'p1' again (first at line 2)"),
    "not_numeric.csv": ("persona_id,score\np1,0.5\np2,abc\n", 3, "'abc' is not a number"),
    "out_of_range.csv": ("persona_id,score\np1,0.5\np2,0.7\np3,1.5\n", 4, "outside [0, 1]"),
    "negative_accuracy.jsonl": ('{"persona_id": "p1", "accuracy": 0.5}\n{"persona_id": "p2", "accuracy": -0.1}\n', 2,
                                "outside [0, 1]"),
    "no_metric.csv": ("persona_id,latency_ms,note\np1,120,a\np2,95,b\n", 1, "no metric column"),
    "empty.csv": ("", 1, "empty file"),
    "blank.jsonl": ("\n  \n\n", 1, "empty file"),
    "header_only.csv": ("persona_id,score\n", 1, "no records"),
    "ragged.csv": ("persona_id,score\np1,0.5\np2,0.7,0.1\n", 3, "3 fields, the header (line 1) has 2"),
    "unclosed_quote.csv": ('persona_id,score\np1,0.5\n"p2,0.7\n', 3, "malformed CSV"),
    "missing_value.csv": ("persona_id,score\np1,0.5\np2,\np3,0.1\n", 3, "has no value here"),
    "not_finite.csv": ("persona_id,score,loss\np1,0.5,1e999\np2,0.7,2\n", 2, "not a finite number"),
    "malformed.json": ('[\n  {"persona_id": "p1", "score": 0.5},\n  {"persona_id": "p2" "score": 0.7}\n]\n', 3,
                       "malformed JSON"),
    "malformed.jsonl": ('{"persona_id": "p1", "score": 0.5}\n{"persona_id": "p2", "score": 0.7\n', 2, "malformed JSON"),
    "trailing.json": ('[{"persona_id": "p1", "score": 0.5}]\n[{"persona_id": "p2", "score": 0.5}]\n', 2,
                      "extra data after the JSON document"),
    "no_list.json": ('{\n  "tool": "x",\n  "n": 3\n}\n', 1, "no list of per-persona records"),
    "two_lists.json": ('{"a": [{"persona_id": "p1", "score": 0.5}],\n "b": [{"persona_id": "p1", "score": 0.5}]}\n', 2,
                       "a second list of records"),
    "not_object.jsonl": ('{"persona_id": "p1", "score": 0.5}\n[1, 2]\n', 2, "must be a JSON object"),
    "persona_missing_in_record.json": ('[\n  {"persona_id": "p1", "score": 0.5},\n  {"score": 0.7}\n]\n', 3,
                                       "'persona_id' must be a non-empty text"),
    "not_numeric_in_list.json": (_bad_json_list(), record_start_lines(_bad_json_list())[2], "'high' is not a number"),
}


@pytest.mark.parametrize("name", sorted(BAD))
@pytest.mark.parametrize("store_exists", [True, False], ids=["store", "no-store"])
def test_bad_file_is_refused_with_its_line_and_nothing_written(name, store_exists, lab, tmp_path, capsys):
    text, line, words = BAD[name]
    f = lab["files"] / name
    f.write_text(text)
    path = lab["store"] if store_exists else str(tmp_path / "never.duckdb")
    before = snapshot(path)
    code, out, err = run_cli(["import", str(f), "--store", path], capsys)
    assert code == 2
    assert err.startswith(f"{f}:{line}: "), err
    assert words in err.splitlines()[0]
    assert "Traceback" not in err and out == ""
    assert snapshot(path) == before  # byte for byte; None: still absent


def test_bad_utf8_names_its_line(lab, capsys):
    f = lab["files"] / "latin1.csv"
    f.write_bytes(b"persona_id,score\np1,0.5\np\xe9,0.7\n")
    before = snapshot(lab["store"])
    code, _, err = run_cli(["import", str(f), "--store", lab["store"]], capsys)
    assert code == 2 and err.startswith(f"{f}:3: not UTF-8")
    assert snapshot(lab["store"]) == before


def test_every_problem_of_a_file_is_listed(lab, capsys):
    f = lab["files"] / "many.csv"
    f.write_text("persona_id,score\np1,0.5\np1,0.6\np2,2\n,0.3\n")
    code, _, err = run_cli(["import", str(f), "--store", lab["store"]], capsys)
    assert code == 2
    assert [x.split(": ")[0] for x in err.splitlines()] == [f"{f}:3", f"{f}:5", f"{f}:4"]


def test_personas_must_match_across_the_files_of_one_run(lab, capsys):
    a, b = lab["files"] / "a.csv", lab["files"] / "b.csv"
    a.write_text(as_csv())
    b.write_text(as_csv(ROWS[:3] + [("p9", 0.5, 0.2, 101, "d")]))
    before = snapshot(lab["store"])
    code, _, err = run_cli(["import", str(a), str(b), "--store", lab["store"]], capsys)
    assert code == 2
    assert err.splitlines() == [
        f"{b}:5: persona 'p9' is not in {a} (every method of a run scores the same personas)",
        f"{b}:1: persona(s) 'p4' of {a} missing here (every method of a run scores the same personas)"]
    assert snapshot(lab["store"]) == before


def test_one_run_has_one_score_column(lab, capsys):
    a, b = lab["files"] / "a.csv", lab["files"] / "b.csv"
    a.write_text("persona_id,acc\np1,0.5\np2,0.6\n")
    b.write_text("persona_id,f1\np1,0.5\np2,0.6\n")
    before = snapshot(lab["store"])
    code, _, err = run_cli(["import", str(a), str(b), "--store", lab["store"]], capsys)
    assert code == 2 and err.startswith(f"{b}:1: the score would be column 'f1' here but 'acc'")
    assert snapshot(lab["store"]) == before


# ----------------------------------------------------------------------------- methods of a run, --run

def test_several_files_methods_from_their_names_or_one_method_each(lab, capsys):
    a, b = lab["files"] / "lora.csv", lab["files"] / "prompting.jsonl"
    a.write_text(as_csv())
    b.write_text(as_jsonl())
    code, out, err = run_cli(["import", str(a), str(b), "--name", "study", "--store", lab["store"]], capsys)
    assert code == 0, err
    run_id = out.strip().splitlines()[-1]
    run = store.query("SELECT * FROM runs WHERE run_id = ?", [run_id], lab["store"]).iloc[0]
    assert run["name"] == "study" and run.methods == "lora,prompting"
    sha = [hashlib.sha256(f.read_bytes()).hexdigest() for f in (a, b)]
    assert run.dataset_hash == hashlib.sha256("\n".join(sorted(sha)).encode()).hexdigest()
    before = snapshot(lab["store"])
    code, _, err = run_cli(["import", str(a), str(b), "--method", "x", "--store", lab["store"]], capsys)
    assert code == 2 and "give --method once per file" in err
    code, _, err = run_cli(["import", str(a), str(b), "--method", "x", "--method", "x", "--store", lab["store"]],
                           capsys)
    assert code == 2 and "method 'x' named twice" in err
    code, _, err = run_cli(["import", str(a), "--method", "a/b", "--store", lab["store"]], capsys)
    assert code == 2 and "method name 'a/b'" in err
    assert snapshot(lab["store"]) == before


def test_run_adds_a_method_to_an_imported_run(lab, capsys):
    f = lab["files"] / "second.jsonl"
    f.write_text(as_jsonl([(p, round(1 - a, 2), b, c, d) for p, a, b, c, d in ROWS]))
    old = store.query("SELECT * FROM runs WHERE run_id = ?", [lab["run"]], lab["store"]).iloc[0]
    code, out, err = run_cli(["import", str(f), "--run", lab["run"], "--store", lab["store"]], capsys)
    assert code == 0, err
    assert out.strip().splitlines()[-1] == lab["run"]
    assert "second" in out and "base" in out  # `runs` output of the whole run
    run = store.query("SELECT * FROM runs WHERE run_id = ?", [lab["run"]], lab["store"]).iloc[0]
    assert run.methods == "base,second" and run.created_at == old.created_at and run.n_personas == 4
    assert set(json.loads(run.config_json)["imported"]) == {"base", "second"}
    assert run.dataset_hash != old.dataset_hash
    rows = store.queries.persona_results([lab["run"]], lab["store"])
    assert rows.groupby("method").size().to_dict() == {"base": 4, "second": 4}
    assert list(rows[rows.method == "second"].score) == [0.2, 0.4, 0.1, 0.5]
    assert len(store.query("SELECT * FROM personas WHERE run_id = ?", [lab["run"]], lab["store"])) == 4


@pytest.mark.parametrize("case", ["other personas", "taken method", "other score", "no run", "not imported"])
def test_run_refusals_write_nothing(case, lab, tmp_path, capsys):
    f = lab["files"] / "second.csv"
    args = ["--run", lab["run"]]
    if case == "other personas":
        f.write_text(as_csv(ROWS[:3] + [("p9", 0.5, 0.2, 101, "d")]))
        want = f"{f}:5: persona 'p9' is not in run '{lab['run']}'"
    elif case == "taken method":
        f.write_text(as_csv())
        args += ["--method", "base"]
        want = f"import: run '{lab['run']}' already has method 'base'"
    elif case == "other score":
        f.write_text(as_csv())
        args += ["--metric-column", "bleu"]
        want = f"{f}:1: run '{lab['run']}' scores 'action_f1'"
    elif case == "no run":
        f.write_text(as_csv())
        args = ["--run", "nope"]
        want = "import: no run 'nope'"
    else:
        res = tmp_path / "trained"
        store.write_run_file(res, {"run_id": "trained-run", "status": "done", "task": "dialogue", "methods": "base"})
        store.ingest(res, lab["store"])
        f.write_text(as_csv())
        args = ["--run", "trained-run"]
        want = "import: run 'trained-run' is a dialogue run, not an imported one"
    before = snapshot(lab["store"])
    code, _, err = run_cli(["import", str(f), *args, "--store", lab["store"]], capsys)
    assert code == 2 and err.startswith(want), err
    assert snapshot(lab["store"]) == before


def test_run_on_a_store_that_does_not_exist_creates_nothing(lab, tmp_path, capsys):
    path = tmp_path / "absent.duckdb"
    code, _, err = run_cli(["import", str(lab["files"] / "base.csv"), "--run", "x", "--store", str(path)], capsys)
    assert code == 2 and "does not exist" in err
    assert not path.exists()


# ----------------------------------------------------------------------------- dashboard

def app(where, page, monkeypatch, **query):
    return open_page(monkeypatch, where["store"], Path(where["store"]).parent / "jobs", page, **query)


def shown(at):
    out = []
    for kind in ("markdown", "caption", "info", "success", "error", "warning", "text", "code"):
        out += [str(e.value) for e in at.get(kind)]
    return "\n".join(out)


def test_launch_imports_an_uploaded_file(tmp_path, monkeypatch):
    where = {"store": str(tmp_path / "s.duckdb")}
    at = app(where, "launch", monkeypatch)
    at.file_uploader(key="import_upload").set_value(("study.csv", as_csv().encode(), "text/csv")).run()
    assert not at.exception
    assert "4 personas · metrics: action\\_f1, bleu · kept as details: latency\\_ms" in shown(at)  # as text
    score = [s for s in at.selectbox if s.label.startswith("Score column")][0]
    assert score.value == "action_f1" and score.options == ["action_f1", "bleu"]
    score.select("bleu").run()
    at.text_input(key="import_method").input("their_lora").run()
    at.button(key="import_button").click().run()
    assert not at.exception, [e.message for e in at.exception]
    runs = store.queries.runs(where["store"])
    assert len(runs) == 1 and runs.task[0] == "imported" and runs.metric[0] == "bleu"
    rows = store.queries.persona_results(list(runs.run_id), where["store"])
    assert set(rows.method) == {"their_lora"} and list(rows.score) == [0.31, 0.25, 0.4, 0.2]
    links = [e for e in at.get("page_link") if "Compare" in e.proto.label]
    assert links and links[0].proto.query_string == f"runs={runs.run_id[0]}"
    assert at.button(key="import_button").disabled  # the same import is not repeated by a second click


def test_launch_import_shows_file_line_and_writes_nothing(lab, monkeypatch):
    monkeypatch.setenv("PLL_HOME", str(Path(lab["store"]).parent))  # paths typed into the dashboard stay inside it
    bad = lab["files"] / "bad.csv"
    bad.write_text("persona_id,score\np1,0.5\np2,1.5\n")
    before = snapshot(lab["store"])
    at = app(lab, "launch", monkeypatch)
    at.radio(key="import_kind").set_value("File path").run()
    at.text_input(key="import_path").input(str(bad)).run()
    assert not at.exception
    assert f"{bad}:3: column 'score' = 1.5 is outside [0, 1]" in shown(at)
    assert "import_button" not in {b.key for b in at.button}  # nothing to import
    assert snapshot(lab["store"]) == before


def test_launch_adds_to_an_imported_run_and_refuses_other_personas(lab, monkeypatch):
    at = app(lab, "launch", monkeypatch)
    other = as_csv(ROWS[:3] + [("p9", 0.5, 0.2, 101, "d")]).encode()
    at.file_uploader(key="import_upload").set_value(("other.csv", other, "text/csv")).run()
    at.radio(key="import_into").set_value("An imported run").run()
    assert at.selectbox(key="import_run").value == lab["run"]
    before = snapshot(lab["store"])
    at.button(key="import_button").click().run()
    assert not at.exception
    assert f"other.csv:5: persona 'p9' is not in run '{lab['run']}'" in shown(at)
    assert snapshot(lab["store"]) == before


def test_pages_render_an_imported_run(lab, monkeypatch):
    at = app(lab, "compare", monkeypatch, runs=lab["run"])
    table = at.dataframe[0].value
    assert list(table.method) == ["base"] and table["mean"][0] == pytest.approx(0.7)
    assert "imported results have no times" in shown(at)
    at = app(lab, "persona", monkeypatch, run=lab["run"], persona="p2")
    assert at.selectbox(key="persona_pick").value == "p2"
    assert "no profile text, cluster, test examples or replies were imported" in shown(at)
    assert "Imported results have no test examples or replies" in shown(at)
    at = app(lab, "clusters", monkeypatch)
    assert "imported per-persona scores only: no profile texts" in shown(at)
    code_runs = views.runs(lab["store"])
    assert views.run_label(code_runs.iloc[0]).endswith("· imported · done")
