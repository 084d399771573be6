"""The simulator: deterministic, and every knob changes what it claims to."""
import json

import pytest

import re

import numpy as np
import pandas as pd

from engine.data.dataset import dataset_from_records, load_jsonl, repeated_targets
from engine.data.simulator import (CONSISTENCY, PARAMS, SCENES, SIMULATOR_DEFAULTS, VALUE_GRID, build_benchmark, format_sim_spec,
                              parse_sim_spec, population_preferences, profile_hint_count, simulate, write_jsonl)
from engine.data.dialogue_stats import says_usual
from engine.data.smarthome import parse_actions, stated_settings

SMALL = dict(personas=6, train_per_persona=8, val_per_persona=4, test_per_persona=4)


def asked(user_text):
    """What a user's turn asks for: requests are often questions ("Could you set ...?"), which
    parse_actions leaves out of a reply's actions unless told to read proposals too."""
    return parse_actions(user_text, proposals=True)


def exchanges(record):
    """(user text, assistant text) pairs of a dialogue record."""
    m = record["messages"]
    return [(m[i]["text"], m[i + 1]["text"]) for i in range(0, len(m) - 1, 2)]


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
        assert len(r["messages"]) in (3, 5)  # like the real dialogues: ending on the user's request
        assert [m["role"] for m in r["messages"]] == ["user", "assistant"] * (len(r["messages"]) // 2) + ["user"]
        for m in r["messages"]:
            assert set(m) == ({"role", "text", "persona_blind"} if m["role"] == "assistant" else {"role", "text"})
        for user, _ in exchanges(r):
            assert len(user.split()) < 60
    profiles = {}
    for r in records:
        assert profiles.setdefault(r["persona_id"], r["persona"]) == r["persona"]  # same text on every line
    assert list(profiles) == [f"p{i:03d}" for i in range(6)]
    for text in profiles.values():
        assert 1 <= text.count(".") <= 3


def test_dialogues_are_varied_multi_turn_and_ask_when_values_are_missing():
    records = simulate(personas=8, personal_fraction=0.5)
    shapes = {re.sub(r"\d+", "#", m["text"]) for r in records for m in r["messages"] if m["role"] == "assistant"}
    asks = {re.sub(r"\d+", "#", r["messages"][0]["text"]) for r in records if r["kind"] == "personal"}
    assert len(shapes) > 150 and len(asks) > 60, (len(shapes), len(asks))
    two = [r for r in records if len(r["messages"]) == 5]
    assert 0.8 < len(two) / len(records) < 0.97
    questions = [r for r in two if r["messages"][1]["text"].endswith("?") and not parse_actions(r["messages"][1]["text"])]
    assert len(questions) > 0.2 * len(records)
    assert all(r["kind"] == "general" and parse_actions(r["messages"][3]["text"]) for r in questions)
    assert not any(says_usual(m["text"]) for r in records for m in r["messages"])  # no "the usual": real users never


def test_every_reply_says_exactly_its_actions(monkeypatch):
    from engine.data import simulator
    said = []
    real = simulator.render_reply

    def checked(rng, actions, ask=""):
        text = real(rng, actions, ask)
        said.append((text, set(actions)))
        return text
    monkeypatch.setattr(simulator, "render_reply", checked)
    for seed in range(8):
        build_benchmark(**SMALL, personal_fraction=0.5, archetypes=8, seed=seed)
    assert len(said) > 1000
    wrong = [(t, a, parse_actions(t)) for t, a in said if parse_actions(t) != a]
    assert not wrong, wrong[:5]


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


def test_general_replies_are_answerable_from_the_dialogue():
    """Every setting of a general reply was stated before it (the metric's own split: smarthome.stated_settings), so
    the persona-blind reply is the reply; the assistant asks when the request leaves values out, and answers
    requests outside the five devices without a setting."""
    _, records = build_benchmark(**SMALL, personal_fraction=0.0, seed=1)
    kinds = set()
    for r in records:
        m = r["messages"]
        assert all(x["persona_blind"] == x["text"] for x in m if x["role"] == "assistant")
        for i, x in enumerate(m):
            if x["role"] != "assistant":
                continue
            said = parse_actions(x["text"])
            context = [(y["role"], y["text"]) for y in m[:i]]
            assert said <= stated_settings(context), (said - stated_settings(context), m)
            if not said:
                kinds.add("question" if x["text"].endswith("?") else "outside")
            else:
                kinds.add("acts after a question" if i == 3 and not parse_actions(m[1]["text"]) else "acts")
    assert kinds == {"question", "outside", "acts after a question", "acts"}


def test_what_people_say_around_the_settings_names_no_setting():
    """Situations, outside requests and their answers, and the assistant's questions name no setting and no word
    of the vocabulary that could bind to one, so the stated / supplied split is decided by the requests alone."""
    from engine.data import talk
    from engine.data.smarthome import _tokens
    for text in talk.WEATHER + talk.ACTIVITY + talk.TIME + tuple(t for pair in talk.OUTSIDE for t in pair):
        assert not parse_actions(text, proposals=True), text
        assert not any(k in ("param", "value", "unit", "number") for k, _ in _tokens(text)), text
    rng = np.random.default_rng(0)
    for d, p in PARAMS[:-1]:  # the alarm is armed or not: never asked about
        assert not parse_actions(talk.value_question(rng, d, [p]))
        assert not parse_actions(talk.more_question(rng, p))


def _personal_exchanges(records):
    for r in records:
        if r["kind"] == "personal":
            m = r["messages"]
            for i in range(0, len(m) - 1, 2):
                yield r, m[i]["text"], m[i + 1]


def test_personal_replies_follow_the_persona_and_the_blind_reply_the_population():
    from engine.data.simulator import _personal_exchange
    personas, _ = build_benchmark(**SMALL | {"personas": 12}, seed=2)
    population = population_preferences(personas)
    rng = np.random.default_rng(0)
    usual, total, scenes = 0, 0, set()
    for i in range(1500):
        persona = personas[i % len(personas)]
        user, reply, blind, scene, cue = _personal_exchange(rng, persona, population)
        scenes.add(scene)
        assert not asked(user), user  # the request names no value
        assert not says_usual(user), user  # nor "the usual": the habit shows only in the values supplied
        expected = SCENES[scene]["settings"](persona.preferences, cue)
        assert parse_actions(blind) == {(d, p, v) for (d, p), v in SCENES[scene]["settings"](population, cue).items()}
        got = parse_actions(reply)
        assert {(d, p) for d, p, _ in got} == set(expected)
        for d, p, v in got:
            if (d, p) in SCENES[scene].get("fixed", ()):
                assert v == expected[(d, p)]
                continue
            total += 1
            usual += v == expected[(d, p)]
            if v != expected[(d, p)]:  # a neighbour on the grid, or the persona's second favourite
                grid = VALUE_GRID[(d, p)]
                assert (abs(grid.index(v) - grid.index(expected[(d, p)])) == 1 if isinstance(v, int)
                        else v == persona.second[(d, p)]), (user, reply)
    assert scenes == set(SCENES)
    assert abs(usual / total - CONSISTENCY) < 0.03, usual / total


def test_personal_replies_differ_between_personas_of_different_archetypes():
    personas, records = build_benchmark(**SMALL, personal_fraction=1.0, archetypes=2, archetype_noise=0.0)
    replies = {}
    for r, user, reply in _personal_exchanges(records):
        replies.setdefault(user, {})[r["persona_id"]] = frozenset(parse_actions(reply["text"]))
    assert any(len(set(by_persona.values())) > 1 for by_persona in replies.values())


@pytest.mark.parametrize("knobs", [
    SIMULATOR_DEFAULTS,
    {**SMALL, "personal_fraction": 1.0},
    {**SMALL, "personal_fraction": 0.0},
    {"personas": 2, "train_per_persona": 300, "val_per_persona": 50, "test_per_persona": 300, "personal_fraction": 1.0},
    {"personas": 1, "train_per_persona": 1000, "val_per_persona": 0, "test_per_persona": 1000, "personal_fraction": 0.5},
    {"personas": 30, "train_per_persona": 5, "test_per_persona": 5, "archetypes": 1, "archetype_noise": 0.0},
])
def test_no_val_or_test_target_repeats_a_train_target_of_its_persona(knobs):
    ds = dataset_from_records(simulate(**knobs), "sim")
    assert repeated_targets(ds, "test") == (0, len(ds.split("test")))
    assert repeated_targets(ds, "val") == (0, len(ds.split("val")))


def test_without_the_redraw_the_test_split_would_repeat_train_targets(monkeypatch):
    """The check above can fail: with redraws switched off the same knobs do repeat train targets. (Dialogues that open
    with the user's situation, as real ones do, rarely repeat by chance: here the openings are the bare requests.)"""
    from engine.data import simulator
    knobs = {"personas": 2, "train_per_persona": 300, "val_per_persona": 0, "test_per_persona": 300,
             "personal_fraction": 1.0}
    monkeypatch.setattr(simulator, "target_keys", lambda messages: [])
    monkeypatch.setattr(simulator, "opening", lambda rng, request, context=None: request)
    monkeypatch.setattr(simulator, "with_reason", lambda rng, text, share=0.6: text)
    n, total = repeated_targets(dataset_from_records(simulate(**knobs), "sim"), "test")
    assert n > 0, (n, total)


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


def test_persona_blind_ceiling_is_far_below_a_personalized_reply_on_personal_targets():
    """On the default benchmark the persona-blind replies, scored like a method, leave personal targets far
    from 1 on the primary metric (a perfect personalized reply is the reference: 1), and lose nothing on
    general ones."""
    from engine.training.evaluate import persona_blind_scores, primary_metric
    ds = dataset_from_records(simulate(**SIMULATOR_DEFAULTS), "sim")
    assert primary_metric(ds) == "action_f1"
    blind = persona_blind_scores(ds, "action_f1")
    per_kind = blind.groupby(["kind", "persona_id"]).score.mean().groupby("kind").mean()
    assert per_kind["general"] == 1.0
    assert per_kind["personal"] < 0.7, per_kind  # >= 0.3 below a perfect personalized reply
    assert blind.embedding_similarity[blind.kind == "personal"].mean() > 0.9  # what the old headline metric saw


def test_persona_blind_replies_copy_what_is_stated_and_miss_what_the_persona_supplies():
    """Under the rule that gives no credit for empty references, the blind replies still tell apart: perfect on
    the settings the dialogue stated (copying), far below 1 on the ones the assistant supplies; a personalized
    reply (the reference itself) scores 1 on every part. Clarifying questions (no setting named) drop out of
    action_f1 and are counted apart."""
    from engine.training.evaluate import persona_blind_scores, persona_means, persona_means_by_kind, score_dialogue
    ds = dataset_from_records(simulate(**SIMULATOR_DEFAULTS), "sim")
    blind = persona_blind_scores(ds, "action_f1")
    per = persona_means_by_kind(blind, "action_f1").groupby("kind").score.mean()
    # stated: 1 on general targets; a personal dialogue's second reply may repeat a value the assistant supplied in
    # its first (stated by then), where the blind reply repeats the population's
    assert per["general"] == 1.0 and per["stated"] > 0.95, per
    assert per["supplied"] < 0.5 and per["personal"] < 0.5, per  # measured 0.322 and 0.322
    assert blind.action_f1.isna().sum() == (blind.n_settings == 0).sum() > 0  # the assistant's questions
    assert blind.refrained.dropna().eq(1.0).all()
    tests = ds.split("test")
    perfect = score_dialogue([e.target for e in tests], [e.target for e in tests], [e.context for e in tests])
    perfect = pd.concat([blind[["persona_id", "kind"]], perfect], axis=1).assign(score=perfect.action_f1)
    assert persona_means_by_kind(perfect, "action_f1").score.eq(1.0).all()
    assert persona_means(perfect).score.eq(1.0).all()


REAL = "tests/data/edgewise_cold_start_000-099.jsonl"
# what the simulator does not match at its defaults, and why: the real dialogues supply few values (0.06 of the
# assistant's settings), the default benchmark makes a quarter of its dialogues personal so that there is
# personalization to measure; sim:personal_fraction=0.05 matches it (below)
UNMATCHED_AT_DEFAULTS = {"supplied"}


@pytest.mark.parametrize("seed", [0, 1])
def test_the_default_simulator_looks_like_the_real_dialogues(seed):
    from engine.data.dialogue_stats import RANGES, compare_rows, dialogue_stats
    real = dialogue_stats(REAL)
    assert real["n_dialogues"] == 100 and real["turns"] == 5.0 and real["user_ends"] == 1.0 and real["usual"] == 0.0
    rows = {r["stat"]: r for r in compare_rows(dialogue_stats(simulate(**SIMULATOR_DEFAULTS | {"seed": seed})), real)}
    assert set(rows) == set(RANGES)
    outside = {s for s, r in rows.items() if not r["within"]}
    assert outside == UNMATCHED_AT_DEFAULTS, {s: rows[s] for s in outside ^ UNMATCHED_AT_DEFAULTS}


def test_supplied_share_tracks_personal_fraction_and_matches_the_real_data_when_low():
    from engine.data.dialogue_stats import compare_rows, dialogue_stats
    real = dialogue_stats(REAL)
    shares = [dialogue_stats(simulate(**SMALL, personal_fraction=f))["supplied"] for f in (0.0, 0.25, 0.5, 1.0)]
    # all-personal data: every setting supplied but those a second reply repeats from the first
    assert shares[0] == 0.0 and shares[-1] > 0.9 and shares == sorted(shares), shares
    low = {r["stat"]: r["within"] for r in compare_rows(dialogue_stats(simulate(personal_fraction=0.05)), real)}
    assert low["supplied"], low


def test_engine_synth_compare_to_prints_the_table():
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "engine", "synth", "--compare-to", REAL], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "| statistic | simulator | edgewise_cold_start_000-099.jsonl | range | within |"
    assert any(line.startswith("| messages per dialogue | 4.8 | 5.0 | 3.8–6.2 | yes |") for line in lines), out.stdout
    assert "13 of 14 statistics within range (400 vs 100 dialogues)" in out.stdout
    assert "| reply settings supplied (not stated) |" in out.stdout and "| NO |" in out.stdout
