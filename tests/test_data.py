"""Loading and validating datasets: good files load, every broken one is rejected with FILE:LINE."""
import hashlib
import json

import pytest

from engine.data.dataset import DataError, Example, dataset_from_records, load_dataset, load_jsonl

PROFILE = {"p1": "Night-shift nurse, likes dim warm light.", "p2": "Retired teacher who reads at night."}


def dialogue(pid="p1", split="test", **extra):
    line = {"persona_id": pid, "persona": PROFILE[pid],
            "messages": [{"role": "user", "text": "Dim the lights."},
                         {"role": "assistant", "text": "Done: lights brightness 30."}],
            "split": split}
    return line | extra


def choice(pid="p1", split="test", **extra):
    line = {"persona_id": pid, "persona": PROFILE[pid], "prompt": "Evening light?",
            "choices": ["dim and warm", "bright and cool"], "answer": 0, "split": split}
    return line | extra


def write(tmp_path, lines, name="data.jsonl"):
    """Lines are dicts (dumped as JSON) or raw str/bytes written as they are."""
    path = tmp_path / name
    chunks = []
    for line in lines:
        if isinstance(line, bytes):
            chunks.append(line)
        elif isinstance(line, str):
            chunks.append(line.encode("utf-8"))
        else:
            chunks.append(json.dumps(line).encode("utf-8"))
    path.write_bytes(b"\n".join(chunks) + b"\n")
    return path


def problems_of(path, **kwargs):
    with pytest.raises(DataError) as err:
        load_jsonl(path, **kwargs)
    assert str(err.value) == "\n".join(err.value.problems)
    return err.value.problems


# -----------------------------------------------------------------------------
# good files

def test_good_dialogue_file(tmp_path):
    two_turns = dialogue("p2", "train", id="d2")
    two_turns["messages"] = [
        {"role": "system", "text": "You run a smart home."},
        {"role": "user", "text": "Set the AC to 21 degrees."},
        {"role": "assistant", "text": "Done: ac temperature 21."},
        {"role": "user", "text": "And the TV to Netflix."},
        {"role": "assistant", "text": "Done: tv input netflix."},
    ]
    path = write(tmp_path, [dialogue("p1", "train", id="d1", kind="general"), "", two_turns,
                            dialogue("p1", "val"), dialogue("p2", "test", kind="personal"), dialogue("p1", "test")])
    ds = load_jsonl(path, context_window=2)
    assert ds.task == "dialogue"
    assert ds.personas == {"p1": PROFILE["p1"], "p2": PROFILE["p2"]}
    assert ds.source == str(path)
    assert ds.hash == hashlib.sha256(path.read_bytes()).hexdigest()
    ids = [e.example_id for e in ds.examples]
    assert ids == ["d1", "d2#1", "d2#2", "p1:L4#1", "p2:L5#1", "p1:L6#1"]
    first, d2_1, d2_2 = ds.examples[:3]
    assert first == Example("d1", "p1", "train", "general", context=(("user", "Dim the lights."),),
                            target="Done: lights brightness 30.")
    assert d2_1.context == (("system", "You run a smart home."), ("user", "Set the AC to 21 degrees."))
    assert d2_2.context == (("assistant", "Done: ac temperature 21."), ("user", "And the TV to Netflix."))  # window 2
    assert d2_2.target == "Done: tv input netflix."
    assert [e.example_id for e in ds.split("train")] == ["d1", "d2#1", "d2#2"]
    assert {k: [e.example_id for e in v] for k, v in ds.by_persona("val").items()} == {"p1": ["p1:L4#1"], "p2": []}
    assert ds.examples[4].kind == "personal" and ds.examples[5].kind is None


def test_edgewisepersona_shaped_file_without_split(tmp_path):
    """`character`/`content` aliases, no split: each persona's lines go 60/20/20 in file order."""
    lines = []
    for i in range(10):
        pid = "a" if i < 5 else "b"
        lines.append({"persona_id": pid, "character": f"Profile of {pid}.",
                      "messages": [{"role": "user", "content": f"request {i}"},
                                   {"role": "assistant", "content": f"reply {i}"}]})
    lines.insert(3, {"persona_id": "c", "character": "Profile of c.",
                     "messages": [{"role": "user", "text": "x"}, {"role": "assistant", "text": "y"}]})
    ds = load_jsonl(write(tmp_path, lines))
    assert ds.personas == {"a": "Profile of a.", "c": "Profile of c.", "b": "Profile of b."}
    splits = {pid: [e.split for e in ds.examples if e.persona_id == pid] for pid in ds.personas}
    assert splits["a"] == ["train"] * 3 + ["val", "test"]
    assert splits["b"] == ["train"] * 3 + ["val", "test"]
    assert splits["c"] == ["test"]  # a persona with one dialogue is only tested
    assert [e.target for e in ds.examples if e.persona_id == "a"] == [f"reply {i}" for i in range(5)]
    assert ds.examples[0].context == (("user", "request 0"),)


@pytest.mark.parametrize("n, expected", [
    (1, (0, 0, 1)), (2, (1, 0, 1)), (3, (1, 1, 1)), (4, (2, 1, 1)), (5, (3, 1, 1)), (10, (6, 2, 2)), (50, (30, 10, 10)),
])
def test_auto_split_sizes(tmp_path, n, expected):
    ds = load_jsonl(write(tmp_path, [{k: v for k, v in dialogue().items() if k != "split"}] * n))
    assert tuple(len(ds.split(s)) for s in ("train", "val", "test")) == expected


def test_good_choice_file(tmp_path):
    path = write(tmp_path, [choice("p1", "train", id="c1"), choice("p1", "test", answer=1), choice("p2", "test")])
    ds = load_jsonl(path)
    assert ds.task == "choice"
    assert [e.example_id for e in ds.examples] == ["c1", "p1:L2", "p2:L3"]
    e = ds.examples[1]
    assert (e.prompt, e.choices, e.answer, e.target) == ("Evening light?", ("dim and warm", "bright and cool"), 1, None)


def test_dataset_from_records_and_load_dataset():
    records = [dialogue("p1", "train"), dialogue("p1", "test")]
    ds = dataset_from_records(records, "my-records")
    assert [e.example_id for e in ds.examples] == ["p1:L1#1", "p1:L2#1"]
    with pytest.raises(DataError) as err:
        dataset_from_records([dialogue("p1", "test"), dialogue("p1", "later")], "my-records")
    assert err.value.problems == ["my-records:2: unknown split 'later' (expected one of train, val, test)"]
    sim = load_dataset("sim:personas=2,train_per_persona=3,val_per_persona=1,test_per_persona=1")
    assert sim.source.startswith("sim:personas=2,train_per_persona=3") and len(sim.personas) == 2


# -----------------------------------------------------------------------------
# one test per validation error: the exact FILE:LINE prefix and a recognisable message

def without(line, key):
    return {k: v for k, v in line.items() if k != key}


def with_messages(*messages):
    return dialogue(messages=list(messages))


BAD_LINES = {
    "broken JSON": ('{"persona_id": "p1", ', 2, "broken JSON"),
    "not an object": ("[1, 2, 3]", 2, "line is not a JSON object (got list)"),
    "no task fields": ({"persona_id": "p1", "persona": PROFILE["p1"], "split": "test"}, 2, "neither 'messages'"),
    "missing persona_id": (without(dialogue(), "persona_id"), 2, "'persona_id' must be a non-empty string"),
    "empty persona_id": (dialogue(persona_id=""), 2, "'persona_id' must be a non-empty string"),
    "persona_id not a string": (dialogue(persona_id=7), 2, "'persona_id' must be a non-empty string"),
    "empty persona": (dialogue(persona=" "), 2, "'persona' (or 'character') must be a non-empty string when given"),
    "persona not a string": (dialogue(persona=["a"]), 2, "'persona' (or 'character') must be a non-empty string"),
    "messages not a list": (dialogue(messages="hi"), 2, "'messages' must be a non-empty list"),
    "empty messages": (dialogue(messages=[]), 2, "'messages' must be a non-empty list"),
    "message not an object": (with_messages("hi", {"role": "assistant", "text": "ok"}), 2, "message 1 is not an object"),
    "unknown role": (with_messages({"role": "bot", "text": "hi"}, {"role": "assistant", "text": "ok"}), 2,
                     "message 1: unknown role 'bot'"),
    "empty text": (with_messages({"role": "user", "text": " "}, {"role": "assistant", "text": "ok"}), 2,
                   "message 1: empty or missing 'text'"),
    "no assistant turn": (with_messages({"role": "user", "text": "hi"}), 2, "dialogue has no assistant turn"),
    "unknown split": (dialogue(split="dev"), 2, "unknown split 'dev'"),
    "unknown kind": (dialogue(kind="weird"), 2, "unknown kind 'weird' (expected one of personal, general)"),
    "duplicate id": (dialogue(id="x"), 2, "duplicate id 'x' (first on line 1)"),
    "empty id": (dialogue(id=""), 2, "'id' must be a non-empty string"),
    "profile changes": (dialogue(persona="Someone else."), 2, "persona 'p1' has a different profile text than on line 1"),
    "split missing on one line": (without(dialogue(), "split"), 2, "'split' is missing here but given on line 1"),
    "choice line in dialogue file": (choice(), 2, "a choice line in a dialogue file (the task was set by line 1)"),
    "invalid UTF-8": (b'{"persona_id": "p1\xff"}', 2, "invalid UTF-8"),
}


@pytest.mark.parametrize("name", BAD_LINES)
def test_each_dialogue_problem_is_reported_at_its_line(tmp_path, name):
    bad, line, message = BAD_LINES[name]
    path = write(tmp_path, [dialogue(id="x"), bad, dialogue("p2")])
    problems = problems_of(path)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{path}:{line}: ")
    assert message in problems[0]


BAD_CHOICES = {
    "answer out of range": (choice(answer=2), "'answer' 2 is out of range for 2 choices (0..1)"),
    "negative answer": (choice(answer=-1), "'answer' -1 is out of range"),
    "answer not int": (choice(answer="0"), "'answer' must be an integer index, got '0'"),
    "answer is bool": (choice(answer=True), "'answer' must be an integer index, got True"),
    "missing answer": (without(choice(), "answer"), "'answer' must be an integer index, got None"),
    "duplicate choices": (choice(choices=["a", "b", "a"]), "duplicate choice 'a'"),
    "one choice": (choice(choices=["a"]), "'choices' must be a list of at least 2 strings"),
    "choice not a string": (choice(choices=["a", 3]), "every choice must be a non-empty string"),
    "empty prompt": (choice(prompt=""), "'prompt' must be a non-empty string"),
    "dialogue line in choice file": (dialogue(), "a dialogue line in a choice file (the task was set by line 1)"),
}


@pytest.mark.parametrize("name", BAD_CHOICES)
def test_each_choice_problem_is_reported_at_its_line(tmp_path, name):
    bad, message = BAD_CHOICES[name]
    path = write(tmp_path, [choice(), bad, choice("p2")])
    problems = problems_of(path)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{path}:2: ") and message in problems[0]


def test_persona_without_test_examples_is_reported_at_its_first_line(tmp_path):
    path = write(tmp_path, [dialogue("p1"), dialogue("p2", "train"), dialogue("p2", "val")])
    assert problems_of(path) == [f"{path}:2: persona 'p2' has no test examples"]


def test_no_test_examples_is_not_echoed_for_a_persona_with_a_bad_line(tmp_path):
    path = write(tmp_path, [dialogue("p1"), dialogue("p2", "dev")])
    assert problems_of(path) == [f"{path}:2: unknown split 'dev' (expected one of train, val, test)"]


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n  \n")
    assert problems_of(path) == [f"{path}:1: file is empty"]
    assert problems_of(write(tmp_path, [], "zero.jsonl")) == [f"{tmp_path / 'zero.jsonl'}:1: file is empty"]


def test_missing_file(tmp_path):
    path = tmp_path / "nope.jsonl"
    assert problems_of(path) == [f"{path}: no such file"]


def test_all_problems_are_reported_in_line_order(tmp_path):
    path = write(tmp_path, [dialogue(), "not json", dialogue(kind="odd"), "", dialogue(split="dev")])
    problems = problems_of(path)
    assert len(problems) == 3
    assert [p.split(": ")[0] for p in problems] == [f"{path}:2", f"{path}:3", f"{path}:5"]


def test_several_problems_on_one_line_are_all_reported(tmp_path):
    bad = dialogue(split="dev", kind="odd", messages=[{"role": "bot", "text": ""}])
    problems = problems_of(write(tmp_path, [dialogue(), bad]))
    assert len(problems) == 4
    assert all(":2: " in p for p in problems)


def test_problem_cap(tmp_path):
    path = write(tmp_path, [dialogue()] + ["{oops"] * 60)
    problems = problems_of(path)
    assert len(problems) == 51
    assert problems[49].startswith(f"{path}:51: ")
    assert problems[50] == "... and 10 more problems"


def test_bad_context_window(tmp_path):
    with pytest.raises(ValueError, match="context_window"):
        load_jsonl(write(tmp_path, [dialogue()]), context_window=0)


# -----------------------------------------------------------------------------
# profiles are optional; odd JSON; ids that collide with generated ones


def test_a_file_without_profiles_loads(tmp_path):
    """The study's split files have persona_id, dialogue_idx and messages, no profile text."""
    lines = [{k: v for k, v in dialogue(pid, split).items() if k != "persona"} | {"dialogue_idx": i}
             for i, (pid, split) in enumerate([("p1", "train"), ("p1", "test"), ("p2", "train"), ("p2", "test")])]
    ds = load_jsonl(write(tmp_path, lines))
    assert ds.personas == {"p1": None, "p2": None} and len(ds.examples) == 4


def test_profile_given_on_some_lines_is_kept_and_must_agree(tmp_path):
    path = write(tmp_path, [without(dialogue("p1", "train"), "persona"), dialogue("p1"), dialogue("p2")])
    assert load_jsonl(path).personas == {"p1": PROFILE["p1"], "p2": PROFILE["p2"]}
    path = write(tmp_path, [without(dialogue("p1", "train"), "persona"), dialogue("p1"), dialogue("p1", persona="x")])
    assert problems_of(path) == [f"{path}:3: persona 'p1' has a different profile text than on line 2"]


def test_deeply_nested_json_is_a_problem_at_its_line(tmp_path):
    path = write(tmp_path, [dialogue(), "[" * 100_000 + "]" * 100_000, dialogue("p2")])
    assert problems_of(path) == [f"{path}:2: JSON nested too deeply"]


def test_huge_number_is_a_problem_at_its_line(tmp_path):
    path = write(tmp_path, [dialogue(), '{"persona_id": "p1", "answer": ' + "9" * 5000 + "}", dialogue("p2")])
    problems = problems_of(path)
    assert len(problems) == 1 and problems[0].startswith(f"{path}:2: unreadable JSON value")


def test_explicit_id_equal_to_a_generated_one_is_rejected(tmp_path):
    path = write(tmp_path, [dialogue("p1"), dialogue("p2", id="p1:L1#1")])
    assert problems_of(path) == [f"{path}:2: example id 'p1:L1#1' is also the id of an example on line 1; "
                                 "give another 'id'"]
    two = dialogue("p1", id="x", messages=[{"role": "user", "text": "a"}, {"role": "assistant", "text": "b"},
                                           {"role": "user", "text": "c"}, {"role": "assistant", "text": "d"}])
    path = write(tmp_path, [two, dialogue("p2", id="x#2")], name="turns.jsonl")
    assert problems_of(path) == [f"{path}:2: example id 'x#2' is also the id of an example on line 1; "
                                 "give another 'id'"]
