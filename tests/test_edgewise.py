"""EdgeWisePersona's own release and the seed study's split files load as they are; files that disagree are refused
whole with FILE:LINE (or FILE and persona) problems.

Fixture folders are written per test from tests/edgewise_data.py: the dialogues are real, the characters, routines
and meta are invented test fixtures.
"""
import json

import pytest

from engine.data import contract, edgewise
from engine.data.dataset import DataError, load_dataset, load_jsonl, source_stamp
from engine.lab import paths
from tests.edgewise_data import REAL, meta_of, real_dialogues, release, spontaneous, study_splits, write_release

SPLIT_ORDER = ("train", "val", "test")


def problems_of(source, **kwargs):
    with pytest.raises(DataError) as err:
        load_dataset(str(source), **kwargs)
    return err.value.problems


def session_splits(ds, pid):
    """[(dialogue index, split)] of a persona, one per session (its examples share them)."""
    out = {}
    for e in ds.examples:
        if e.persona_id == pid:
            out[int(e.example_id.split(":D")[1].split("#")[0])] = e.split
    return sorted(out.items())


def assert_time_ordered_60_20_20(ds, sessions):
    """Each persona's first 60% of sessions train, the next 20% val, the last 20% test (10 -> 6/2/2)."""
    assert contract.auto_splits(10) == ["train"] * 6 + ["val"] * 2 + ["test"] * 2
    for u, pid in enumerate(ds.personas):
        expected = contract.auto_splits(sessions)
        assert session_splits(ds, pid) == [(u * sessions + s, expected[s]) for s in range(sessions)], pid


# ----------------------------------------------------------------------------- the release as it is

def test_release_loads_as_it_is(tmp_path):
    folder = write_release(tmp_path / "ew", users=4, sessions=10)
    ds = load_dataset(str(folder))
    lines = release(4, 10)
    assert ds.task == "dialogue" and ds.source == str(folder)
    assert ds.personas == {f"persona_{u:03d}": lines["characters.jsonl"][u]["character"] for u in range(4)}
    assert len(ds.examples) == 4 * 10 * 2  # every assistant turn a target: the real dialogues have two each
    assert ds.notes == [] and ds.split_rule == contract.AUTO_SPLIT
    assert_time_ordered_60_20_20(ds, 10)
    dialogues = real_dialogues()
    first = [e for e in ds.examples if e.persona_id == "persona_001"][:2]
    assert [e.example_id for e in first] == ["persona_001:D10#1", "persona_001:D10#2"]
    assert first[0].context == (("user", dialogues[10][0]["text"]),)
    assert first[0].target == dialogues[10][1]["text"] and first[1].target == dialogues[10][3]["text"]
    for e in ds.examples:  # each example keeps its session's meta and kind (routine applied or not)
        s = int(e.example_id.split(":D")[1].split("#")[0]) % 10
        assert e.meta == meta_of(s)
        assert e.kind == ("general" if spontaneous(s) else "personal")


def test_swapping_the_split_rule_would_be_caught(tmp_path, monkeypatch):
    """The mutant: the last sessions for train instead of test. The check above must fail on it."""
    folder = write_release(tmp_path / "ew", users=2, sessions=10)
    monkeypatch.setattr(edgewise, "auto_splits", lambda n: list(reversed(contract.auto_splits(n))))
    with pytest.raises(AssertionError):
        assert_time_ordered_60_20_20(load_dataset(str(folder)), 10)


def test_hash_follows_the_files(tmp_path):
    folder = write_release(tmp_path / "ew", users=2, sessions=5)
    h = load_dataset(str(folder)).hash
    assert load_dataset(str(write_release(tmp_path / "same", users=2, sessions=5))).hash == h
    lines = release(2, 5)
    lines["characters.jsonl"][1] = {"character": "TEST FIXTURE, invented: someone else."}
    assert load_dataset(str(write_release(tmp_path / "other", lines=lines))).hash != h


def test_describe_meta_reads_the_trigger_fields_in_order():
    meta = {"weather": "rainy", "time_of_day": "evening", "outdoor_temp": "cold", "day_of_week": "weekday",
            "sun_phase": "after_sunset", "room": "kitchen"}
    assert edgewise.describe_meta(meta) == "evening · weekday · after sunset · rainy · cold · room: kitchen"
    assert edgewise.describe_meta(None) == "" and edgewise.describe_meta({}) == ""


# ----------------------------------------------------------------------------- files that disagree

def edited(edit, users=4, sessions=5):
    lines = release(users, sessions)
    edit(lines)
    return lines


def set_role(lines):
    lines["sessions.jsonl"][0]["sessions"][0]["messages"][1]["role"] = "bot"


def set_messages(lines):
    lines["sessions.jsonl"][2]["sessions"][1]["messages"] = []


def set_applied(lines):
    lines["sessions.jsonl"][1]["sessions"][3]["applied_routines"] = [2]


def set_character(lines):
    lines["characters.jsonl"][2] = {"character": " "}


BAD_RELEASES = {
    "a file with a line more": (lambda L: L["routines.jsonl"].append({"routines": []}),
                                ["characters.jsonl:5: ends after 4 user lines, but routines.jsonl has 5",
                                 "sessions.jsonl:5: ends after 4 user lines, but routines.jsonl has 5"]),
    "a line that is not JSON": (lambda L: L["characters.jsonl"].__setitem__(1, '{"character": '),
                                ["characters.jsonl:2: broken JSON"]),
    "a line that is not an object": (lambda L: L["routines.jsonl"].__setitem__(3, "[]"),
                                     ["routines.jsonl:4: line is not a JSON object (got list)"]),
    "a session without messages": (set_messages, ["sessions.jsonl:3: session 2: 'messages' must be a non-empty list"]),
    "a bad role": (set_role, ["sessions.jsonl:1: session 1: message 2: unknown role 'bot'"]),
    "applied_routines outside the user's routines": (
        set_applied, ["sessions.jsonl:2: session 4: 'applied_routines' [2] point outside this user's 2 routines (0..1)"]),
    "an empty character": (set_character, ["characters.jsonl:3: 'character' must be a non-empty string"]),
    "a user without sessions": (lambda L: L["sessions.jsonl"].__setitem__(0, {"sessions": []}),
                                ["sessions.jsonl:1: 'sessions' must be a non-empty list"]),
    "meta that is not an object": (lambda L: L["sessions.jsonl"][3]["sessions"][0].__setitem__("meta", "evening"),
                                   ["sessions.jsonl:4: session 1: 'meta' must be an object, got str"]),
    "three empty files": (lambda L: [L.__setitem__(name, []) for name in edgewise.FILES],
                          ["characters.jsonl:1: file is empty", "routines.jsonl:1: file is empty",
                           "sessions.jsonl:1: file is empty"]),
    "a blank line between users": (lambda L: L["sessions.jsonl"].insert(2, ""),
                                   ["sessions.jsonl:3: blank line: the three files hold one line per user"]),
}


@pytest.mark.parametrize("name", BAD_RELEASES)
def test_files_that_disagree_are_refused_whole(tmp_path, name):
    edit, expected = BAD_RELEASES[name]
    folder = write_release(tmp_path / "ew", lines=edited(edit))
    problems = problems_of(folder)
    assert len(problems) == len(expected), problems
    for problem, start in zip(problems, expected):
        assert problem.startswith(f"{folder}/{start}"), problem


def test_every_problem_of_every_file_is_listed_in_file_then_line_order(tmp_path):
    def edit(lines):
        set_applied(lines)
        set_role(lines)
        set_character(lines)
    folder = write_release(tmp_path / "ew", lines=edited(edit))
    assert [p.split(": ")[0] for p in problems_of(folder)] == [
        f"{folder}/characters.jsonl:3", f"{folder}/sessions.jsonl:1", f"{folder}/sessions.jsonl:2"]


@pytest.mark.parametrize("present, needle", [
    ((), "is a folder, not a JSONL file nor EdgeWisePersona's release"),
    (("characters.jsonl",), "is a folder without EdgeWisePersona's routines.jsonl, sessions.jsonl (it has "
                            "characters.jsonl"),
])
def test_a_folder_that_is_not_the_release(tmp_path, present, needle):
    folder = tmp_path / "data"
    folder.mkdir()
    for name in present:
        (folder / name).write_text('{"character": "x"}\n')
    (problem,) = problems_of(folder)
    assert problem.startswith(f"{folder}: {needle}"), problem


# ----------------------------------------------------------------------------- split files

def test_the_studys_split_file_beside_the_release_decides(tmp_path):
    folder = write_release(tmp_path / "ew", users=3, sessions=10)
    (folder / "edgesplits.json").write_text(json.dumps(study_splits(3, 10)))
    ds = load_dataset(str(folder))
    assert ds.split_rule == f"split file {folder / 'edgesplits.json'}"
    assert ds.notes[0] == f"splits from {folder / 'edgesplits.json'} (found beside the data)"
    assert "'online' ignored (3 personas have it)" in ds.notes[1] and len(ds.notes) == 2
    for u, pid in enumerate(ds.personas):  # the study's int() rule: 6 / 2 / 2 of 10, by global index
        base = u * 10
        assert session_splits(ds, pid) == [(base + s, "train" if s < 6 else "val" if s < 8 else "test")
                                           for s in range(10)]
    assert ds.hash != load_dataset(str(write_release(tmp_path / "bare", users=3, sessions=10))).hash


def test_a_named_split_file_wins_and_unlisted_dialogues_are_left_out(tmp_path):
    folder = write_release(tmp_path / "ew", users=2, sessions=10)
    (folder / "edgesplits.json").write_text(json.dumps(study_splits(2, 10)))
    mine = {"persona_000": {"train": [0, 1], "val": [2], "test": [9]},
            "persona_001": {"train": [10, 11, 12], "val": [], "test": [18, 19]}}
    named = tmp_path / "mine.json"
    named.write_text(json.dumps(mine))
    ds = load_dataset(str(folder), splits=str(named))
    assert session_splits(ds, "persona_000") == [(0, "train"), (1, "train"), (2, "val"), (9, "test")]
    assert session_splits(ds, "persona_001") == [(10, "train"), (11, "train"), (12, "train"), (18, "test"),
                                                 (19, "test")]
    assert ds.notes == [f"splits from {named}",
                        f"{named}: 11 of 20 dialogues are in no train, val or test list and are left out"]


def test_per_persona_indices_are_not_what_the_study_means(tmp_path):
    """The study numbers dialogues across the whole data: a split file counting each persona's sessions from 0
    names other personas' dialogues, and is refused rather than read wrongly."""
    folder = write_release(tmp_path / "ew", users=2, sessions=10)
    local = {f"persona_{u:03d}": {"train": list(range(6)), "val": [6, 7], "test": [8, 9]} for u in range(2)}
    (folder / "edgesplits.json").write_text(json.dumps(local))
    problems = problems_of(folder)
    assert problems[0] == (f"{folder / 'edgesplits.json'}: persona 'persona_001': train index 0 is not one of its "
                           "dialogues (its dialogues are 10..19; 0 is persona_000's)")
    assert len(problems) == 10 and all("'persona_001'" in p for p in problems)


BAD_SPLITS = {
    "an index that does not exist": (lambda s: s["persona_000"]["test"].append(99),
                                     "persona 'persona_000': test index 99 is not one of its dialogues (its "
                                     "dialogues are 0..9)"),
    "a dialogue in two splits": (lambda s: s["persona_001"]["val"].append(10),
                                 "persona 'persona_001': dialogue 10 is in both train and val"),
    "a dialogue twice in one split": (lambda s: s["persona_001"]["test"].append(19),
                                      "persona 'persona_001': dialogue 19 is twice in test"),
    "a persona the data lacks": (lambda s: s.__setitem__("persona_002", {"test": [20]}),
                                 "persona 'persona_002' is not in the data"),
    "a persona the file lacks": (lambda s: s.pop("persona_000"),
                                 "persona 'persona_000' of the data has no entry"),
    "a persona without test": (lambda s: s["persona_000"].__setitem__("test", []),
                               "persona 'persona_000' has no test dialogues"),
    "indices that are not integers": (lambda s: s["persona_001"].__setitem__("train", ["10"]),
                                      "persona 'persona_001': 'train' must be a list of dialogue indices"),
    "an entry that is not an object": (lambda s: s.__setitem__("persona_001", [10, 11]),
                                       "persona 'persona_001': its entry must be an object of split lists"),
}


@pytest.mark.parametrize("name", BAD_SPLITS)
def test_a_split_file_that_does_not_fit_is_refused_naming_file_and_persona(tmp_path, name):
    edit, message = BAD_SPLITS[name]
    folder = write_release(tmp_path / "ew", users=2, sessions=10)
    splits = study_splits(2, 10)
    edit(splits)
    path = tmp_path / "splits.json"
    path.write_text(json.dumps(splits))
    (problem,) = problems_of(folder, splits=str(path))
    assert problem.startswith(f"{path}: {message}"), problem


@pytest.mark.parametrize("text, needle", [("{oops", ":1: broken JSON"), ("[]", ": a split file is a JSON object"),
                                          (None, ": no such split file")])
def test_a_split_file_that_is_no_split_file(tmp_path, text, needle):
    folder = write_release(tmp_path / "ew", users=1, sessions=5)
    path = tmp_path / "splits.json"
    if text is not None:
        path.write_text(text)
    (problem,) = problems_of(folder, splits=str(path))
    assert problem.startswith(f"{path}{needle}"), problem


def test_a_split_file_does_not_apply_to_the_simulator(tmp_path):
    (problem,) = problems_of("sim:personas=2", splits=str(tmp_path / "s.json"))
    assert "applies to data files, not to the simulator" in problem


# ----------------------------------------------------------------------------- the study's flattened files

def flatten(lines) -> list[dict]:
    """The seed study's dialogs_clean.jsonl for a release: one record per session, personas in line order."""
    out = []
    for u, (c, r, s) in enumerate(zip(lines["characters.jsonl"], lines["routines.jsonl"], lines["sessions.jsonl"])):
        for session in s["sessions"]:
            out.append({"persona_id": f"persona_{u:03d}", "session_id": session["session_id"],
                        "character": c["character"], "routines": r["routines"], "meta": session["meta"],
                        "messages": session["messages"], "applied_routines": session["applied_routines"]})
    return out


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_the_flattened_file_with_its_splits_loads_like_the_release(tmp_path):
    folder = write_release(tmp_path / "ew", users=3, sessions=10)
    (folder / "edgesplits.json").write_text(json.dumps(study_splits(3, 10)))
    flat = tmp_path / "flat"
    flat.mkdir()
    path = write_jsonl(flat / "dialogs_clean.jsonl", flatten(release(3, 10)))
    (flat / "edgesplits.json").write_text(json.dumps(study_splits(3, 10)))
    a, b = load_dataset(str(folder)), load_dataset(str(path))
    assert a.personas == b.personas
    assert [(e.persona_id, e.split, e.kind, e.meta, e.context, e.target) for e in a.examples] == \
           [(e.persona_id, e.split, e.kind, e.meta, e.context, e.target) for e in b.examples]
    assert b.notes[0] == f"splits from {flat / 'edgesplits.json'} (found beside the data)"


def test_the_shipped_dialogues_index_by_dialogue_idx(tmp_path):
    """The 100 real dialogues carry the study's dialogue_idx (persona i's is 50 i + 40): a split file names them so."""
    records = [json.loads(line) for line in REAL.read_text().splitlines()]
    assert [r["dialogue_idx"] for r in records[:3]] == [40, 90, 140]
    data = write_jsonl(tmp_path / "cold.jsonl", records)
    (tmp_path / "edgesplits.json").write_text(json.dumps(
        {r["persona_id"]: {"train": [], "val": [], "test": [r["dialogue_idx"]], "online": []} for r in records}))
    ds = load_dataset(str(data))
    assert len(ds.personas) == 100 and len(ds.split("test")) == 200 and not ds.split("train")
    by_position = {f"persona_{i:03d}": {"test": [i]} for i in range(100)}  # the file's order, not dialogue_idx
    (tmp_path / "edgesplits.json").write_text(json.dumps(by_position))
    problems = problems_of(data)
    assert problems[0].endswith("persona 'persona_000': test index 0 is not one of its dialogues (its dialogue "
                                "indices: 40)")


def test_without_dialogue_idx_an_index_is_the_records_position(tmp_path):
    records = [{"persona_id": p, "messages": [{"role": "user", "text": f"q{i}"}, {"role": "assistant", "text": f"a{i}"}]}
               for i, p in enumerate(["a", "b", "a", "b", "a"])]
    data = write_jsonl(tmp_path / "d.jsonl", records)
    splits = tmp_path / "s.json"
    splits.write_text(json.dumps({"a": {"train": [0, 2], "test": [4]}, "b": {"test": [1, 3]}}))
    ds = load_jsonl(data, splits=str(splits))
    assert [(e.persona_id, e.target, e.split) for e in ds.examples] == [
        ("a", "a0", "train"), ("b", "a1", "test"), ("a", "a2", "train"), ("b", "a3", "test"), ("a", "a4", "test")]


@pytest.mark.parametrize("records, needle", [
    ([{"split": "train"}, {"split": "test"}], ":1: 'split' is given on the lines and the split file"),
    ([{"dialogue_idx": 0}, {}], ":2: 'dialogue_idx' is given on some lines and not on others"),
    ([{"dialogue_idx": 3}, {"dialogue_idx": 3}], ":2: dialogue_idx 3 is also on line 1"),
    ([{"dialogue_idx": -1}, {"dialogue_idx": 1}], ":1: 'dialogue_idx' must be an integer >= 0, got -1"),
])
def test_lines_a_split_file_cannot_read_are_refused(tmp_path, records, needle):
    base = {"persona_id": "a", "messages": [{"role": "user", "text": "q"}, {"role": "assistant", "text": "a"}]}
    data = write_jsonl(tmp_path / "d.jsonl", [base | r for r in records])
    splits = tmp_path / "s.json"
    splits.write_text(json.dumps({"a": {"train": [0], "test": [1]}}))
    (problem,) = problems_of(data, splits=str(splits))
    assert problem.startswith(f"{data}{needle}"), problem


def test_jsonl_lines_keep_meta_and_read_applied_routines_as_kind(tmp_path):
    msg = [{"role": "user", "text": "q"}, {"role": "assistant", "text": "a"}]
    records = [{"persona_id": "a", "messages": msg, "meta": {"weather": "rainy"}, "applied_routines": [0]},
               {"persona_id": "a", "messages": msg, "applied_routines": []},
               {"persona_id": "a", "messages": msg, "applied_routines": [1], "kind": "general"}]
    ds = load_jsonl(write_jsonl(tmp_path / "d.jsonl", records))
    assert [(e.kind, e.meta) for e in ds.examples] == [("personal", {"weather": "rainy"}), ("general", None),
                                                       ("general", None)]
    bad = write_jsonl(tmp_path / "bad.jsonl", [records[0] | {"routines": [{}], "applied_routines": [3]},
                                               records[1] | {"meta": {"weather": ["rainy"]}}])
    assert [p.split(": ", 1)[1] for p in problems_of(bad)] == [
        "'applied_routines' [3] point outside this user's 1 routines (0..0)",
        "'meta' values must be text or numbers (no lists or objects)"]


# ----------------------------------------------------------------------------- uploads and cache stamps

def test_uploads_one_jsonl_or_the_three_files_together(tmp_path):
    uploads = tmp_path / "uploads"
    one = paths.save_upload(uploads, [("cold.jsonl", REAL.read_bytes())])
    assert one.parent == uploads and one.name.endswith("-cold.jsonl") and one.read_bytes() == REAL.read_bytes()
    assert paths.save_upload(uploads, [("cold.jsonl", REAL.read_bytes())]) == one  # the same bytes: saved once
    folder = write_release(tmp_path / "ew", users=2, sessions=5)
    files = [(f"C:\\Users\\me\\{name}", (folder / name).read_bytes()) for name in edgewise.FILES]
    saved = paths.save_upload(uploads, files)
    assert saved.parent == uploads and saved.is_dir() and sorted(p.name for p in saved.iterdir()) == \
        sorted(edgewise.FILES)
    assert load_dataset(str(saved)).hash == load_dataset(str(folder)).hash
    assert paths.save_upload(uploads, list(reversed(files))) == saved
    assert sorted(p.name for p in uploads.iterdir()) == sorted([one.name, saved.name])  # no temp leftovers


@pytest.mark.parametrize("names, needle", [
    (["a.jsonl", "b.jsonl"], "got a.jsonl, b.jsonl"),
    (["characters.jsonl", "routines.jsonl"], "got characters.jsonl, routines.jsonl"),
    (["characters.jsonl", "routines.jsonl", "sessions.jsonl", "sessions.jsonl"], "got characters.jsonl"),
    (["sessions.jsonl"], "sessions.jsonl alone is not a dataset"),
])
def test_other_sets_of_uploaded_files_are_refused(tmp_path, names, needle):
    with pytest.raises(paths.PathError, match=needle):
        paths.save_upload(tmp_path / "uploads", [(n, b"{}\n") for n in names])
    assert not (tmp_path / "uploads").exists()


def test_the_stamp_changes_when_a_file_or_the_split_file_changes(tmp_path):
    import os
    folder = write_release(tmp_path / "ew", users=1, sessions=5)
    first = source_stamp(str(folder))
    os.utime(folder / "routines.jsonl", ns=(1, 1))
    second = source_stamp(str(folder))
    assert second != first
    (folder / "edgesplits.json").write_text("{}")
    assert source_stamp(str(folder)) != second
    assert source_stamp("sim:personas=2") is None
