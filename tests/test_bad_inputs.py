"""Every bad or odd input a user (or someone probing the server) can give: one clear line, exit 2, nothing written.

The command-line cases run `engine.lab.cli.main` in this process against a store that already holds a run, and
check: no exception escapes (no traceback), exit code 2, the message names what is wrong (and FILE:LINE for
data files), and the store file and the runs/ folder are byte-for-byte what they were. The dashboard cases
(paths typed into the server, upload names, models it would download) go through engine.lab.paths and the
Launch page in AppTest. One good run on a file without profile texts shows the check that lets it through.
"""
import hashlib
import json
from pathlib import Path

import duckdb
import pytest

from engine import store
from engine.lab import cli
from engine.lab import paths

ROOT = Path(__file__).resolve().parent.parent
SIM = "sim:personas=3,train_per_persona=4,val_per_persona=1,test_per_persona=1"
QUICK = ["--model", "tiny-random", "--epochs", "1", "--max-new-tokens", "2"]


def line(pid, split, profile=True, **extra):
    obj = {"persona_id": pid, "messages": [{"role": "user", "text": "Dim the lights."},
                                           {"role": "assistant", "text": "Done: lights brightness 30."}],
           "split": split}
    if profile:
        obj["persona"] = f"Profile of {pid}."
    return {**obj, **extra}


def jsonl(*lines):
    return "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n"


GOOD = [line("p1", "train"), line("p1", "test"), line("p2", "train"), line("p2", "test"), line("p3", "train"),
        line("p3", "test")]
NO_PROFILES = [line(p, s, profile=False, dialogue_idx=i) for i, (p, s) in
               enumerate([("p1", "train"), ("p1", "test"), ("p2", "train"), ("p2", "test"), ("p3", "train"),
                          ("p3", "test")])]
NO_TRAIN_P2 = [line("p1", "train"), line("p1", "test"), line("p2", "val"), line("p2", "test"), line("p3", "train"),
               line("p3", "test")]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A store holding one finished run (no profile texts: base, unified, per_persona), and data files."""
    d = tmp_path_factory.mktemp("bad")
    files = d / "files"
    files.mkdir()
    for name, text in {
        "good.jsonl": jsonl(*GOOD),
        "no_profiles.jsonl": jsonl(*NO_PROFILES),
        "no_train_p2.jsonl": jsonl(*NO_TRAIN_P2),
        "broken.jsonl": jsonl(GOOD[0], "{not json", *GOOD[1:]),
        "not_object.jsonl": jsonl(GOOD[0], "[1, 2]", *GOOD[1:]),
        "nested.jsonl": jsonl(GOOD[0], "[" * 100_000 + "]" * 100_000, *GOOD[1:]),
        "huge_number.jsonl": jsonl(GOOD[0], '{"persona_id": "p1", "answer": ' + "7" * 5000 + "}", *GOOD[1:]),
        "empty.jsonl": "\n\n",
        "no_test.jsonl": jsonl(line("p1", "train"), line("p1", "test"), line("p2", "train")),
        "profile_changes.jsonl": jsonl(*GOOD, line("p1", "train", persona="Someone else.")),
        "id_collision.jsonl": jsonl(*GOOD[:2], line("p2", "test", id="p1:L1#1"), *GOOD[2:]),
        "unknown_role.jsonl": jsonl(GOOD[0], {**GOOD[1], "messages": [{"role": "bot", "text": "x"},
                                                                      {"role": "assistant", "text": "y"}]}),
        "mixed_split.jsonl": jsonl(GOOD[0], {k: v for k, v in GOOD[1].items() if k != "split"}),
        "choice_in_dialogue.jsonl": jsonl(GOOD[0], {"persona_id": "p1", "persona": "Profile of p1.", "prompt": "?",
                                                    "choices": ["a", "b"], "answer": 5, "split": "test"}),
        "empty_profile.jsonl": jsonl(GOOD[0], {**GOOD[1], "persona": ""}),
        "lone_surrogate.jsonl": jsonl(GOOD[0], line("p\ud800", "train"), *GOOD[1:]),
        "spaced_id.jsonl": jsonl(*GOOD, line(" p1", "train")),
        "control_reply.jsonl": jsonl(GOOD[0], {**GOOD[1], "messages": [
            {"role": "user", "text": "Dim the lights."}, {"role": "assistant", "text": "\x00\x01\x7f\u200b"}]}),
        "newline_id.csv": 'persona_id,score\n"p\n1",0.5\np2,0.6\n',
        "percent.csv": "persona_id,score,accuracy\np1,0.5,82%\np2,0.6,71%\n",
    }.items():
        (files / name).write_text(text)
    (files / "bad_utf8.jsonl").write_bytes(json.dumps(GOOD[0]).encode() + b'\n{"persona_id": "p\xff"}\n'
                                           + jsonl(*GOOD[1:]).encode())
    (files / "a_folder.jsonl").mkdir()
    (d / "a_folder").mkdir()
    (d / "not_duckdb.duckdb").write_text("not a database\n")
    (d / "zero.duckdb").write_bytes(b"")
    (d / "a_file").write_text("x")
    con = duckdb.connect(str(d / "foreign.duckdb"))
    con.execute("CREATE TABLE invoices (id INTEGER, total DOUBLE)")
    con.close()
    con = duckdb.connect(str(d / "foreign_runs.duckdb"))  # another program's, with a table named like ours
    con.execute("CREATE TABLE runs (id INTEGER, note VARCHAR)")
    con.execute("INSERT INTO runs VALUES (1, 'mine')")
    con.close()
    (d / "export_here").mkdir()
    (d / "export_here" / "README.md").write_text("my own notes\n")
    (d / "result_no_run").mkdir()
    (d / "result_bad_run").mkdir()
    (d / "result_bad_run" / "run.json").write_text("{truncated")

    db = d / "store.duckdb"
    assert cli.main(["run", "--data", str(files / "no_profiles.jsonl"), "--methods", "base,unified,per_persona",
                     "--store", str(db), *QUICK]) == 0  # methods that never read a profile run without one
    run_id = store.queries.runs(db).run_id[0]
    damaged = d / "damaged.duckdb"  # a store cut in half (a copy interrupted, a disk that filled up)
    damaged.write_bytes(db.read_bytes()[:db.stat().st_size // 2])
    copy = d / "reused_id"  # another run's results folder that reuses the stored run's id
    copy.mkdir()
    run = json.loads((d / "runs" / run_id / "run.json").read_text())
    (copy / "run.json").write_text(json.dumps({**run, "name": "someone else's", "status": "running",
                                               "artifacts_dir": str(copy), "host": None, "pid": None}))
    return {"dir": d, "files": files, "store": db, "run": run_id}


def snapshot(lab):
    """Bytes of every file that a bad input must leave alone."""
    d = lab["dir"]
    out = {}
    for p in sorted(d.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            out[str(p.relative_to(d))] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.is_dir():
            out[str(p.relative_to(d)) + "/"] = None
    return out


def F(lab, name):
    return str(lab["files"] / name)


def D(lab, name):
    return str(lab["dir"] / name)


# name -> (argv builder, what the one line must contain); every case must exit 2 and change nothing
CASES = {
    # data files: FILE:LINE for problems inside a file
    "broken JSON": (lambda L: ["--data", F(L, "broken.jsonl")], "broken.jsonl:2: broken JSON"),
    "line not an object": (lambda L: ["--data", F(L, "not_object.jsonl")], "not_object.jsonl:2: line is not a JSON"),
    "deeply nested JSON": (lambda L: ["--data", F(L, "nested.jsonl")], "nested.jsonl:2: JSON nested too deeply"),
    "5000-digit number": (lambda L: ["--data", F(L, "huge_number.jsonl")], "huge_number.jsonl:2: unreadable JSON"),
    "invalid UTF-8": (lambda L: ["--data", F(L, "bad_utf8.jsonl")], "bad_utf8.jsonl:2: invalid UTF-8"),
    "empty file": (lambda L: ["--data", F(L, "empty.jsonl")], "empty.jsonl:1: file is empty"),
    "missing file": (lambda L: ["--data", F(L, "nope.jsonl")], "nope.jsonl: no such file"),
    "data path is a folder": (lambda L: ["--data", F(L, "a_folder.jsonl")], "a_folder.jsonl: is a folder"),
    "persona without test": (lambda L: ["--data", F(L, "no_test.jsonl")], "no_test.jsonl:3: persona 'p2' has no test"),
    "profile text changes": (lambda L: ["--data", F(L, "profile_changes.jsonl")],
                             "profile_changes.jsonl:7: persona 'p1' has a different profile"),
    "empty profile text": (lambda L: ["--data", F(L, "empty_profile.jsonl")], "empty_profile.jsonl:2: 'persona'"),
    "id equal to a generated one": (lambda L: ["--data", F(L, "id_collision.jsonl")],
                                    "id_collision.jsonl:3: example id 'p1:L1#1'"),
    "unknown role": (lambda L: ["--data", F(L, "unknown_role.jsonl")], "unknown_role.jsonl:2: message 1: unknown role"),
    "split on some lines": (lambda L: ["--data", F(L, "mixed_split.jsonl")], "mixed_split.jsonl:2: 'split' is missing"),
    "choice line in a dialogue file": (lambda L: ["--data", F(L, "choice_in_dialogue.jsonl")],
                                       "choice_in_dialogue.jsonl:2: a choice line"),
    # what the chosen methods need from the data, checked before anything is written
    "per_persona, a persona without train": (lambda L: ["--data", F(L, "no_train_p2.jsonl"), "--methods",
                                                        "base,per_persona"], "persona(s) p2 have no train examples"),
    "hybrid, a persona without train": (lambda L: ["--data", F(L, "no_train_p2.jsonl"), "--methods", "hybrid"],
                                        "p2 have no train examples; hybrid"),
    "merge, a persona without train": (lambda L: ["--data", F(L, "no_train_p2.jsonl"), "--methods", "merge:exact"],
                                       "p2 have no train examples; merge:exact"),
    "cluster without profiles": (lambda L: ["--data", F(L, "no_profiles.jsonl"), "--methods", "base,cluster"],
                                 "method cluster needs a profile text"),
    "merge without profiles": (lambda L: ["--data", F(L, "no_profiles.jsonl"), "--methods", "unified,merge:svd"],
                               "method merge:svd needs a profile text"),
    # simulator knobs
    "no personas": (lambda L: ["--data", "sim:personas=0"], "personas"),
    "unknown knob": (lambda L: ["--data", "sim:colour=red"], "unknown simulator knob 'colour'"),
    "knob not a number": (lambda L: ["--data", "sim:personas=abc"], "personas must be an integer"),
    # methods, model, device
    "unknown method": (lambda L: ["--methods", "base,telepathy"], "unknown method 'telepathy'"),
    "duplicated method": (lambda L: ["--methods", "base,base"], "duplicated"),
    "no method": (lambda L: ["--methods", ","], "give at least one method"),
    "unknown model": (lambda L: ["--model", "no-such-model"], "unknown model 'no-such-model'"),
    "device not a device": (lambda L: ["--device", "banana"], "device: 'banana' is not a device"),
    "device tpu": (lambda L: ["--device", "tpu"], "device: 'tpu' is not a device"),
    "cuda without CUDA": (lambda L: ["--device", "cuda:3"], "no CUDA device"),
    # method options
    "cluster_k not a number": (lambda L: ["--methods", "cluster", "--cluster-k", "abc"], "cluster_k must be"),
    "cluster_k 0": (lambda L: ["--methods", "cluster", "--cluster-k", "0"], "cluster_k must be"),
    "merge_k 0": (lambda L: ["--methods", "merge:exact", "--merge-k", "0"], "merge_k must be an integer >= 1, got 0"),
    "merge_k negative": (lambda L: ["--methods", "merge:exact", "--merge-k", "-3"], "merge_k must be"),
    # hyperparameters
    "alpha inf": (lambda L: ["--alpha", "inf"], "alpha must be a finite number"),
    "alpha nan": (lambda L: ["--alpha", "nan"], "alpha must be a finite number"),
    "lr inf": (lambda L: ["--lr", "inf"], "lr must be a finite number"),
    "lr too big": (lambda L: ["--lr", "5"], "lr must be in (0, 1]"),
    "weight decay inf": (lambda L: ["--weight-decay", "inf"], "weight_decay must be a finite number"),
    "dropout 1": (lambda L: ["--dropout", "1"], "dropout must be in [0, 1)"),
    "epochs 0": (lambda L: ["--epochs", "0"], "epochs must be an integer >= 1"),
    "max_length beyond the model": (lambda L: ["--max-length", "100000000"], "max_length must be at most 2048"),
    "max_length too small": (lambda L: ["--max-length", "8"], "max_length must be an integer >= 16"),
    "max_new_tokens beyond the model": (lambda L: ["--max-new-tokens", "1000000"], "max_new_tokens must be at most"),
    "unknown targets": (lambda L: ["--targets", "q_proj,nope"], "targets: tiny-random has no layer named 'nope'"),
    "empty targets": (lambda L: ["--targets", ","], "targets must be a non-empty list"),
    "negative seed": (lambda L: ["--seed", "-1"], "seed must be an integer >= 0"),
    # the store
    "store is a folder": (lambda L: ["--store", D(L, "a_folder")], "a_folder: is a folder, not a DuckDB file"),
    "store not a DuckDB file": (lambda L: ["--store", D(L, "not_duckdb.duckdb")], "not a DuckDB database"),
    "store an empty file": (lambda L: ["--store", D(L, "zero.duckdb")], "not a DuckDB database"),
    "store of another program": (lambda L: ["--store", D(L, "foreign.duckdb")], "a DuckDB database of another program"),
    "store in a missing folder": (lambda L: ["--store", D(L, "missing/store.duckdb")], "does not exist"),
    "store folder is a file": (lambda L: ["--store", D(L, "a_file/store.duckdb")], "does not exist"),
    # issue 20: refused before the model loads, instead of failing (or running on) later
    "another program's store with a runs table": (lambda L: ["--store", D(L, "foreign_runs.duckdb")],
                                                  "a DuckDB database of another program"),
    "store cut in half": (lambda L: ["--store", D(L, "damaged.duckdb")], "the file is damaged"),
    "empty --store": (lambda L: ["--store", ""], "--store: an empty path"),
    "seed beyond 32 bits": (lambda L: ["--seed", "18446744073709551616"], "seed must be at most 2147483647"),
    "knob given twice": (lambda L: ["--data", "sim:personas=3,personas=5"], "knob 'personas' given twice"),
    "target given twice": (lambda L: ["--targets", "q_proj,q_proj"], "targets: 'q_proj' given twice"),
    "rank beyond the layers": (lambda L: ["--r", "4096"], "r must be at most 32"),
    "persona id with a lone surrogate": (lambda L: ["--data", F(L, "lone_surrogate.jsonl")],
                                         "lone_surrogate.jsonl:2: a text holds \\ud800"),
    "persona id with spaces around it": (lambda L: ["--data", F(L, "spaced_id.jsonl")],
                                         "spaced_id.jsonl:7: 'persona_id' ' p1' has spaces around it"),
    "reply of control characters": (lambda L: ["--data", F(L, "control_reply.jsonl")],
                                    "control_reply.jsonl:2: message 2: 'text' has no visible character"),
}

OTHER_COMMANDS = {
    "export into a folder with files": (lambda L: ["export", "--run", L["run"], "--method", "unified", "--out",
                                                   D(L, "export_here"), "--store", str(L["store"])],
                                        "exists and is not empty"),
    "export onto a file": (lambda L: ["export", "--run", L["run"], "--method", "unified", "--out", D(L, "a_file"),
                                      "--store", str(L["store"])], "is a file, not a folder"),
    "export into a missing folder": (lambda L: ["export", "--run", L["run"], "--method", "unified", "--out",
                                                D(L, "missing/out"), "--store", str(L["store"])], "does not exist"),
    "export unknown run": (lambda L: ["export", "--run", "nope", "--method", "unified", "--out", D(L, "new_out"),
                                      "--store", str(L["store"])], "no run 'nope'"),
    "export without --persona": (lambda L: ["export", "--run", L["run"], "--method", "per_persona", "--out",
                                            D(L, "new_out"), "--store", str(L["store"])], "give --persona"),
    "export unknown persona": (lambda L: ["export", "--run", L["run"], "--method", "per_persona", "--persona", "zz",
                                          "--out", D(L, "new_out"), "--store", str(L["store"])], "'zz' is not in"),
    "export base": (lambda L: ["export", "--run", L["run"], "--method", "base", "--out", D(L, "new_out"),
                               "--store", str(L["store"])], "base changes no weights: it has no adapter"),
    "export from a foreign store": (lambda L: ["export", "--run", L["run"], "--method", "unified", "--out",
                                               D(L, "new_out"), "--store", D(L, "foreign.duckdb")], "another program"),
    "ingest a folder without results": (lambda L: ["ingest", D(L, "result_no_run"), "--store", str(L["store"])],
                                        "not a run's result folder"),
    "ingest a truncated run file": (lambda L: ["ingest", D(L, "result_bad_run"), "--store", str(L["store"])],
                                    "run.json: unreadable"),
    "runs of a folder": (lambda L: ["runs", "--store", D(L, "a_folder")], "is a folder, not a DuckDB file"),
    "runs of a non-DuckDB file": (lambda L: ["runs", "--store", D(L, "not_duckdb.duckdb")], "not a DuckDB database"),
    # issue 20: read commands never create a store; another program's database and a damaged store are said so
    "runs of a store that is not there": (lambda L: ["runs", "--store", D(L, "typo.duckdb")], "no store at"),
    "runs with an empty --store": (lambda L: ["runs", "--store", ""], "--store: an empty path"),
    "runs of another program's store with a runs table": (lambda L: ["runs", "--store", D(L, "foreign_runs.duckdb")],
                                                           "a DuckDB database of another program"),
    "runs of a store cut in half": (lambda L: ["runs", "--store", D(L, "damaged.duckdb")], "the file is damaged"),
    "compare on a store that is not there": (lambda L: ["compare", "--runs", L["run"], "--store", D(L, "typo.duckdb")],
                                             "no store at"),
    "export from a store that is not there": (lambda L: ["export", "--run", L["run"], "--method", "unified", "--out",
                                                         D(L, "new_out"), "--store", D(L, "typo.duckdb")],
                                              "no store at"),
    "export --base-out into a folder with files": (lambda L: ["export", "--run", L["run"], "--method", "unified",
                                                              "--out", D(L, "new_out"), "--base-out",
                                                              D(L, "export_here"), "--store", str(L["store"])],
                                                   "export_here exists and is not empty"),
    "export --base-out equal to --out": (lambda L: ["export", "--run", L["run"], "--method", "unified", "--out",
                                                    D(L, "new_out"), "--base-out", D(L, "new_out"), "--store",
                                                    str(L["store"])], "is the --out folder"),
    "export into /proc": (lambda L: ["export", "--run", L["run"], "--method", "unified", "--out", "/proc/x",
                                     "--store", str(L["store"])], "--out /proc/x: cannot write there"),
    "export into /sys": (lambda L: ["export", "--run", L["run"], "--method", "unified", "--out", "/sys/x",
                                    "--store", str(L["store"])], "--out /sys/x: cannot write there"),
    "ingest a copy that reuses a stored run's id": (lambda L: ["ingest", D(L, "reused_id"), "--store", str(L["store"])],
                                                    "is already in the store"),
    "import a persona id with a newline": (lambda L: ["import", F(L, "newline_id.csv"), "--store", str(L["store"])],
                                           "newline_id.csv:2: persona 'p\\n1' has a control character"),
    "import an accuracy column of percentages": (lambda L: ["import", F(L, "percent.csv"), "--store", str(L["store"])],
                                                 "percent.csv:2: column 'accuracy': '82%' is not a number"),
    "study varying one axis twice": (lambda L: ["study", "--data", SIM, "--vary", "r=4", "--vary", "r=8", "--methods",
                                                "base", "--model", "tiny-random", "--store", str(L["store"])],
                                     "--vary r: given twice"),
}


def check_one_line_exit_2(lab, argv, needle, capsys):
    before = snapshot(lab)
    code = cli.main(argv)  # an exception here is a traceback the user would see
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2, (code, err)
    assert len(lines) == 1, err
    assert needle in lines[0], lines[0]
    assert "Traceback" not in err
    assert snapshot(lab) == before  # the store, runs/ and every other file byte-for-byte as they were


@pytest.mark.parametrize("name", CASES)
def test_run_input(lab, name, capsys):
    args, needle = CASES[name]
    argv = args(lab)
    defaults = {"--data": SIM, "--store": str(lab["store"]), "--methods": "base", "--model": "tiny-random",
                "--epochs": "1", "--max-new-tokens": "2"}
    for flag, value in defaults.items():
        if flag not in argv:
            argv += [flag, value]
    check_one_line_exit_2(lab, ["run", *argv], needle, capsys)


@pytest.mark.parametrize("name", OTHER_COMMANDS)
def test_other_command_input(lab, name, capsys):
    args, needle = OTHER_COMMANDS[name]
    check_one_line_exit_2(lab, args(lab), needle, capsys)
    assert (lab["dir"] / "export_here" / "README.md").read_text() == "my own notes\n"


def test_run_without_profiles_stored_every_method(lab):
    """A file without profile texts (the study's split files) runs every method that never reads one."""
    scores = store.queries.persona_results([lab["run"]], lab["store"])
    assert set(scores.method) == {"base", "unified", "per_persona"} and len(scores) == 9
    personas = store.query("SELECT profile, cluster, umap_x FROM personas WHERE run_id = ?", [lab["run"]],
                           path=lab["store"])
    assert len(personas) == 3 and personas.isna().all().all()  # no profile, so no map either


# ----------------------------------------------------------------------------- what the dashboard is given

@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("PLL_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


@pytest.mark.parametrize("typed", ["/etc/passwd", "../outside.duckdb", "/tmp/elsewhere/x.duckdb", "~/x.jsonl", ""])
def test_server_paths_outside_the_data_folder_are_refused(home, typed):
    with pytest.raises(paths.PathError) as e:
        paths.confine(typed, "store")
    assert str(home) in str(e.value) and "\n" not in str(e.value)
    assert paths.confine("sub/store.duckdb", "store") == home / "sub" / "store.duckdb"


@pytest.mark.parametrize("name", ["../x.jsonl", "/x.jsonl", "a" * 240 + ".jsonl", "..", "\\..\\x.jsonl",
                                  "we\x00ird.jsonl", ".hidden.jsonl"])
def test_upload_names_stay_inside_the_uploads_folder(home, name):
    folder = home / "jobs" / "uploads"
    path = paths.upload_path(folder, name, hashlib.sha256(name.encode()).hexdigest())
    assert path.parent == folder and len(path.name.encode()) <= 255 and not path.name.startswith(".")
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text("{}\n")  # writable: no FileNotFoundError, no ENAMETOOLONG
    assert [p.name for p in folder.iterdir()] == [path.name]


@pytest.mark.parametrize("model, needle", [("Qwen/Qwen2.5-0.5B-Instruct", "starts no downloads"),
                                           ("/etc", "outside the data folder"), ("../models/x", "outside")])
def test_models_the_dashboard_would_fetch_or_read_elsewhere(home, monkeypatch, model, needle):
    monkeypatch.delenv("PLL_ALLOW_DOWNLOADS", raising=False)
    monkeypatch.setenv("HF_HOME", str(home / "hf"))  # an empty cache
    with pytest.raises(paths.PathError, match=needle):
        paths.check_model(model)
    paths.check_model("tiny-random")


def test_launch_refuses_paths_and_models_it_should_not_open(home, monkeypatch):
    from streamlit.testing.v1 import AppTest
    outside = home.parent / "secret.jsonl"
    outside.write_text(jsonl(*GOOD))
    monkeypatch.setenv("PLL_STORE", str(home / "store.duckdb"))
    monkeypatch.setenv("PLL_JOBS", str(home / "jobs"))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.switch_page("pages/launch.py")
    at.run()
    at.radio(key="data_kind").set_value("JSONL file path").run()
    at.text_input(key="data_path").input(str(outside)).run()
    assert not at.exception
    errors = "\n".join(str(e.value) for e in at.error)
    assert "outside the data folder" in errors and "Dataset OK" not in "\n".join(str(s.value) for s in at.success)
    assert at.button(key="start").disabled
    at.text_input(key="data_path").input(str(home / "missing.jsonl")).run()
    at.selectbox(key="model_choice").select("other (Hugging Face id or local folder)…").run()
    at.text_input(key="model_free").input("someone/some-model").run()
    assert "starts no downloads" in "\n".join(str(e.value) for e in at.error)
    assert at.button(key="start").disabled
    assert not (home / "jobs").exists()  # nothing was started


def test_a_store_path_outside_the_data_folder_is_not_opened(home, monkeypatch):
    from streamlit.testing.v1 import AppTest
    monkeypatch.setenv("PLL_STORE", str(home / "store.duckdb"))
    monkeypatch.setenv("PLL_JOBS", str(home / "jobs"))
    typed = home.parent / "elsewhere" / "new.duckdb"
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.session_state["store_path"] = str(typed)  # what the sidebar's store field holds
    at.run()
    assert not at.exception
    assert "outside the data folder" in "\n".join(str(e.value) for e in at.sidebar.error)
    assert not typed.parent.exists()  # neither the file nor its folder was created


# ----------------------------------------------------------------------------- what the dashboard shows of the data

def test_clusters_page_says_why_a_run_has_no_map(lab, monkeypatch):
    from streamlit.testing.v1 import AppTest
    monkeypatch.setenv("PLL_STORE", str(lab["store"]))
    monkeypatch.setenv("PLL_JOBS", str(lab["dir"] / "jobs"))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.switch_page("pages/clusters.py")
    at.run()
    assert not at.exception
    shown = "\n".join(str(e.value) for e in list(at.markdown) + list(at.info))
    assert lab["run"] in shown and "do not read profile texts" in shown and "`cluster`" in shown


def test_profile_and_reply_text_is_not_rendered_as_markdown(tmp_path, monkeypatch):
    from bench_pages import build_store
    from streamlit.testing.v1 import AppTest
    db = str(tmp_path / "store.duckdb")
    run = build_store(db, n_personas=3, n_methods=2, n_runs=1, work_dir=tmp_path / "w")[0]
    evil = "![x](http://evil.example/x.png) **bold** [click](http://evil.example)"
    with store.connect(db) as con:
        con.execute("UPDATE personas SET profile = ?", [evil])
        con.execute("UPDATE predictions SET reference = ?", [evil])
    monkeypatch.setenv("PLL_STORE", db)
    monkeypatch.setenv("PLL_JOBS", str(tmp_path / "jobs"))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.query_params["run"], at.query_params["persona"] = run, "p001"
    at.switch_page("pages/persona.py")
    at.run()
    assert not at.exception
    assert evil in [str(t.value) for t in at.text]  # shown as it is
    rendered = "\n".join(str(m.value) for m in at.markdown) + "\n".join(e.label for e in at.expander)
    assert "](http://evil.example" not in rendered and "**bold**" not in rendered
    assert "Reference:" in rendered


def test_an_empty_duckdb_database_becomes_a_store(tmp_path, capsys):
    """An odd input that is fine: a DuckDB file without tables (made by `duckdb x.duckdb`) is a store without runs;
    reading it writes nothing, its first write gives it the store's tables (tests/test_reliability.py)."""
    db = tmp_path / "made_by_hand.duckdb"
    duckdb.connect(str(db)).close()
    assert cli.main(["runs", "--store", str(db)]) == 0
    assert capsys.readouterr().err == ""
    assert store.queries.runs(db).empty


def test_launch_says_which_method_needs_what_the_data_lacks(lab, monkeypatch):
    from streamlit.testing.v1 import AppTest
    monkeypatch.setenv("PLL_HOME", str(lab["dir"]))
    monkeypatch.setenv("PLL_STORE", str(lab["store"]))
    monkeypatch.setenv("PLL_JOBS", str(lab["dir"] / "launch_jobs"))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.switch_page("pages/launch.py")
    at.run()
    at.radio(key="data_kind").set_value("JSONL file path").run()
    at.text_input(key="data_path").input(F(lab, "no_profiles.jsonl")).run()
    at.multiselect(key="methods").set_value(["base", "unified"]).run()
    assert not at.exception and not at.button(key="start").disabled  # methods that never read a profile: fine
    at.multiselect(key="methods").set_value(["base", "cluster"]).run()
    assert "method cluster needs a profile text" in "\n".join(str(e.value) for e in at.error)
    assert at.button(key="start").disabled
    assert not (lab["dir"] / "launch_jobs").exists()
