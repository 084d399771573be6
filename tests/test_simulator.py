"""The simulator: deterministic, and every knob changes what it claims to."""
import json

import pytest

from engine.data import dataset_from_records, load_jsonl
from engine.simulator import (PARAMS, SIMULATOR_DEFAULTS, build_benchmark, format_sim_spec, parse_sim_spec,
                              profile_hint_count, simulate, write_jsonl)
from engine.smarthome import parse_actions

SMALL = dict(personas=6, train_per_persona=8, val_per_persona=4, test_per_persona=4)


def exchanges(record):
    """(user text, assistant text) pairs of a dialogue record."""
    m = record["messages"]
    return [(m[i]["text"], m[i + 1]["text"]) for i in range(0, len(m), 2)]


def test_same_seed_same_bytes_other_seed_other_records(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_jsonl(simulate(**SMALL, seed=3), a)
    write_jsonl(simulate(**SMALL, seed=3), b)
    assert a.read_bytes() == b.read_bytes()
    assert simulate(**SMALL, seed=4) != simulate(**SMALL, seed=3)


def test_record_format():
    records = simulate(**SMALL)
    assert len({r["id"] for r in records}) == len(records)
    for r in records:
        assert set(r) == {"id", "persona_id", "persona", "split", "kind", "messages"}
        assert r["kind"] in ("personal", "general") and r["split"] in ("train", "val", "test")
        assert len(r["messages"]) in (2, 4)
        assert [m["role"] for m in r["messages"]] == ["user", "assistant"] * (len(r["messages"]) // 2)
        for user, _ in exchanges(r):
            assert len(user.split()) < 25
    profiles = {}
    for r in records:
        assert profiles.setdefault(r["persona_id"], r["persona"]) == r["persona"]  # same text on every line
    assert list(profiles) == [f"p{i:03d}" for i in range(6)]
    for text in profiles.values():
        assert 1 <= text.count(".") <= 3


def test_counts_per_split():
    records = simulate(personas=3, train_per_persona=7, val_per_persona=2, test_per_persona=5)
    for pid in ("p000", "p001", "p002"):
        counts = {s: sum(r["persona_id"] == pid and r["split"] == s for r in records) for s in ("train", "val", "test")}
        assert counts == {"train": 7, "val": 2, "test": 5}


@pytest.mark.parametrize("fraction", [0.0, 0.5, 1.0, 0.25])
def test_personal_share_tracks_personal_fraction(fraction):
    records = simulate(**SMALL, personal_fraction=fraction)
    for pid in {r["persona_id"] for r in records}:
        for split, n in (("train", 8), ("val", 4), ("test", 4)):
            kinds = [r["kind"] for r in records if r["persona_id"] == pid and r["split"] == split]
            assert kinds.count("personal") == int(n * fraction + 0.5)


@pytest.mark.parametrize("archetypes", [1, 3, 5, 12])
def test_archetypes_set_number_of_distinct_preference_profiles(archetypes):
    personas, _ = build_benchmark(**SMALL | {"personas": 24}, archetypes=archetypes, archetype_noise=0.0)
    distinct = {tuple(p.preferences.values()) for p in personas}
    assert len(distinct) == archetypes
    assert len({p.archetype for p in personas}) == archetypes


def test_archetype_noise_makes_personas_deviate():
    quiet, _ = build_benchmark(**SMALL | {"personas": 20}, archetypes=1, archetype_noise=0.0)
    noisy, _ = build_benchmark(**SMALL | {"personas": 20}, archetypes=1, archetype_noise=0.5)
    assert len({tuple(p.preferences.values()) for p in quiet}) == 1
    assert len({tuple(p.preferences.values()) for p in noisy}) > 15


@pytest.mark.parametrize("fidelity, hints", [(0.0, 0), (0.3, 3), (1.0, len(PARAMS))])
def test_profile_fidelity_sets_number_of_true_hints(fidelity, hints):
    personas, _ = build_benchmark(**SMALL, profile_fidelity=fidelity)
    for p in personas:
        assert profile_hint_count(p.profile, p.preferences) == hints
        assert len(p.hinted) == hints
        assert 1 <= p.profile.count(".") <= 3


def test_general_replies_are_answerable_from_context():
    _, records = build_benchmark(**SMALL, personal_fraction=0.0, seed=1)
    for r in records:
        for user, reply in exchanges(r):
            assert parse_actions(reply)
            assert parse_actions(user) >= parse_actions(reply), (user, reply)


def test_personal_replies_use_the_persona_preferences_and_the_request_names_none():
    personas, records = build_benchmark(**SMALL, personal_fraction=1.0, seed=2)
    prefs = {p.persona_id: p.preferences for p in personas}
    for r in records:
        for user, reply in exchanges(r):
            actions = parse_actions(reply)
            assert actions and parse_actions(user) == set()
            assert all(prefs[r["persona_id"]][(d, p)] == v for d, p, v in actions)


def test_personal_replies_differ_between_personas_of_different_archetypes():
    personas, records = build_benchmark(**SMALL, personal_fraction=1.0, archetypes=2, archetype_noise=0.0)
    replies = {}
    for r in records:
        for user, reply in exchanges(r):
            replies.setdefault(user, {})[r["persona_id"]] = reply
    assert any(len(set(by_persona.values())) > 1 for by_persona in replies.values())


@pytest.mark.parametrize("knobs, message", [
    ({"personal_fraction": 1.5}, "personal_fraction must be in [0, 1], got 1.5"),
    ({"archetype_noise": -0.1}, "archetype_noise must be in [0, 1]"),
    ({"profile_fidelity": "high"}, "profile_fidelity must be in [0, 1]"),
    ({"personas": 0}, "personas must be an integer in [1, 10000], got 0"),
    ({"personas": 2.5}, "personas must be an integer"),
    ({"test_per_persona": 0}, "test_per_persona must be an integer in [1, 1000]"),
    ({"archetypes": True}, "archetypes must be an integer"),
    ({"seed": -1}, "seed must be an integer"),
])
def test_knob_validation(knobs, message):
    with pytest.raises(ValueError) as err:
        simulate(**knobs)
    assert message in str(err.value)


def test_parse_sim_spec():
    assert parse_sim_spec("sim") == SIMULATOR_DEFAULTS
    knobs = parse_sim_spec("sim:personas=8,train_per_persona=10,personal_fraction=0.5")
    assert knobs == SIMULATOR_DEFAULTS | {"personas": 8, "train_per_persona": 10, "personal_fraction": 0.5}
    assert parse_sim_spec(format_sim_spec(knobs)) == knobs
    with pytest.raises(ValueError, match="unknown simulator knob 'persona'.*known knobs: personas, train_per_persona"):
        parse_sim_spec("sim:persona=3")
    with pytest.raises(ValueError, match="personal_fraction must be in"):
        parse_sim_spec("sim:personal_fraction=2")
    with pytest.raises(ValueError, match="personas must be an integer"):
        parse_sim_spec("sim:personas=many")


def test_output_loads_through_the_data_contract(tmp_path):
    records = simulate(**SMALL)
    ds = dataset_from_records(records, format_sim_spec(SMALL))
    assert ds.task == "dialogue" and len(ds.personas) == 6
    n_targets = sum(len(r["messages"]) // 2 for r in records)
    assert len(ds.examples) == n_targets
    assert all(len(v) > 0 for v in ds.by_persona("test").values())
    path = tmp_path / "sim.jsonl"
    write_jsonl(records, path)
    from_file = load_jsonl(path)
    assert from_file.examples == ds.examples
    assert json.loads(path.read_text(encoding="utf-8").splitlines()[0]) == records[0]
