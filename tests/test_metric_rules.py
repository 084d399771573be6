"""The action metrics give no credit for saying nothing, and split every reference's settings into stated
(the dialogue named them before the target: copying) and supplied (the assistant's own values: where
personalization shows). Hand-made replies, the 100 real EdgeWisePersona dialogues in tests/data, and a run
whose persona has no target that names a setting, through the store, `engine runs`, Compare and Studies."""
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine.analysis import stats
from engine.data.smarthome import action_metrics, parse_actions, stated_settings, stated_supplied_metrics
from engine.training.evaluate import persona_means, persona_means_by_kind, score_dialogue

DATA = Path(__file__).parent / "data"
NAN = float("nan")

# ----------------------------------------------------------------------------- stated vs supplied, by hand

# The user states the AC's temperature and leaves the lights to the assistant ("the way I like them"): the
# reference (this persona's) copies 21 degrees and supplies 30% warm; the population's default is 70% neutral.
HOT = (("user", "It's hot. Set the AC to 21 degrees and do the lights the way I like them."),)
REFERENCE = "Setting the AC to 21 degrees; lights at 30% in warm."
# A device named in one turn carries into the next: the TV's volume and brightness are stated by the user.
TV = (("user", "Can you put the TV on YouTube?"),
      ("assistant", "Setting the TV input source to YouTube. Would you like the volume or brightness changed?"),
      ("user", "Yes, volume 35 and brightness 70."))


@pytest.mark.parametrize("context, prediction, reference, stated_f1, supplied_f1, n_stated, n_supplied", [
    # personalized: right on what it copies and on what it supplies
    (HOT, REFERENCE, REFERENCE, 1.0, 1.0, 1, 2),
    # persona-blind: copies the stated value, supplies the population's default: good on stated, 0 on supplied
    (HOT, "Setting the AC to 21 degrees; lights at 70% in neutral.", REFERENCE, 1.0, 0.0, 1, 2),
    # half of the supplied values right: F1 2*1/(2+2)
    (HOT, "Setting the AC to 21 degrees; lights at 30% in neutral.", REFERENCE, 1.0, 0.5, 1, 2),
    # supplied right, stated missed
    (HOT, "Lights at 30% in warm.", REFERENCE, 0.0, 1.0, 1, 2),
    # an extra setting outside the reference is no part's business (action_f1 pays for it)
    (HOT, "Setting the AC to 21 degrees; lights at 30% in warm; TV volume 20.", REFERENCE, 1.0, 1.0, 1, 2),
    # a supplied setting left out: 2*1/(1+2)
    (HOT, "Setting the AC to 21 degrees; lights at 30%.", REFERENCE, 1.0, 2 / 3, 1, 2),
    # saying nothing: 0 on both parts
    (HOT, "Okay.", REFERENCE, 0.0, 0.0, 1, 2),
    # no context: everything is supplied, no stated part
    ((), REFERENCE, REFERENCE, NAN, 1.0, 0, 3),
    # the TV's settings carried over from the turn that named the TV: all stated
    (TV, "TV volume set to 35 and brightness to 70.", "TV volume set to 35 and brightness to 70.", 1.0, NAN, 2, 0),
    # a reference that names no setting has neither part
    (HOT, "Okay.", "What colour would you like the lights?", NAN, NAN, 0, 0),
])
def test_stated_and_supplied_parts_by_hand(context, prediction, reference, stated_f1, supplied_f1, n_stated,
                                           n_supplied):
    m = stated_supplied_metrics(prediction, reference, context)
    assert (m["n_stated"], m["n_supplied"]) == (n_stated, n_supplied)
    assert (m["stated_f1"], m["supplied_f1"]) == pytest.approx((stated_f1, supplied_f1), nan_ok=True)


def test_a_device_carried_across_turns_is_what_makes_the_tv_settings_stated():
    """Each turn read alone loses the TV: "volume 35 and brightness 70" names no device."""
    alone = set().union(*(parse_actions(t, proposals=True) for _, t in TV))
    assert ("tv", "volume", 35) not in alone and ("tv", "brightness", 70) not in alone
    assert {("tv", "volume", 35), ("tv", "brightness", 70), ("tv", "input_source", "youtube")} <= stated_settings(TV)


def test_an_assistant_offer_earlier_in_the_dialogue_counts_as_stated():
    context = (("user", "Could you warm the lights up?"),
               ("assistant", "I can set the lights to a warm color. What brightness would you like?"),
               ("user", "50% please."))
    m = stated_supplied_metrics("Lights set to warm at 50%.", "Lights set to warm at 50%.", context)
    assert (m["n_stated"], m["n_supplied"]) == (2, 0)


# ----------------------------------------------------------------------------- no credit for saying nothing

@pytest.mark.parametrize("prediction, reference, action_f1, refrained", [
    ("Okay.", "Which brightness would you like?", NAN, 1.0),        # nothing asked, nothing done: excluded
    ("Okay.", "Lights set to 40%.", 0.0, NAN),                      # settings asked for, none done: 0
    ("Lights set to 40%.", "Which brightness would you like?", NAN, 0.0),  # acted where it should have asked
    ("Lights set to 40%.", "Lights set to 40%.", 1.0, NAN),
])
def test_a_silent_reply_is_excluded_or_zero(prediction, reference, action_f1, refrained):
    m = action_metrics(prediction, reference)
    assert (m["action_f1"], m["refrained"]) == pytest.approx((action_f1, refrained), nan_ok=True)
    if math.isnan(action_f1):
        assert all(math.isnan(m[k]) for k in ("param_f1", "device_precision", "numerical_precision"))


def _frame(rows):
    """A predictions frame as evaluate() makes it, from (persona, kind, context, prediction, reference) rows;
    embedding similarity left out (not what is tested here)."""
    out = []
    for persona_id, kind, context, prediction, reference in rows:
        m = {**action_metrics(prediction, reference), **stated_supplied_metrics(prediction, reference, context)}
        m["n_settings"] = m["n_stated"] + m["n_supplied"]
        out.append({"persona_id": persona_id, "kind": kind, **m, "score": m["action_f1"]})
    return pd.DataFrame(out)


ASKS = "Which brightness would you like?"


def test_persona_means_skip_targets_without_the_figure_and_count_them():
    preds = _frame([
        ("p1", "general", HOT, "Okay.", ASKS),                 # no setting named: refrained 1, no action_f1
        ("p1", "personal", HOT, REFERENCE, REFERENCE),        # 1.0
        ("p1", "personal", HOT, "Setting the AC to 21 degrees; lights at 70% in neutral.", REFERENCE),  # 1/3
        ("p2", "general", (), "Okay.", ASKS),                  # p2 never meets a setting: no score at all
        ("p2", "general", (), "Lights set to 40%.", ASKS),     # acted where it should have asked: refrained 0
    ])
    per = persona_means(preds).set_index("persona_id")
    assert per.loc["p1", "action_f1"] == pytest.approx((1.0 + 1 / 3) / 2)  # the silent point is not averaged in
    assert per.loc["p1", "refrained"] == 1.0
    assert (per.loc["p1", "n_test"], per.loc["p1", "n_with_settings"], per.loc["p1", "n_without_settings"],
            per.loc["p1", "n_settings"]) == (3, 2, 1, 6)
    assert math.isnan(per.loc["p2", "score"]) and per.loc["p2", "refrained"] == 0.5
    assert (per.loc["p2", "n_with_settings"], per.loc["p2", "n_without_settings"]) == (0, 2)
    kinds = persona_means_by_kind(preds).set_index(["persona_id", "kind"])
    assert kinds.loc[("p1", "stated"), "score"] == 1.0 and kinds.loc[("p1", "stated"), "n_settings"] == 2
    assert kinds.loc[("p1", "supplied"), "score"] == pytest.approx(0.5)   # (1 + 0) / 2 targets
    assert kinds.loc[("p1", "supplied"), "n_settings"] == 4 and kinds.loc[("p1", "supplied"), "n_test"] == 2
    assert ("p2", "supplied") not in kinds.index                        # no supplied setting: no row
    assert math.isnan(kinds.loc[("p2", "general"), "score"])
    # the part's figure is action F1: a run scored by another metric has no score there
    other = persona_means_by_kind(preds, "embedding_similarity").set_index(["persona_id", "kind"])
    assert math.isnan(other.loc[("p1", "supplied"), "score"]) and other.loc[("p1", "supplied"), "action_f1"] == 0.5


def test_statistics_over_personas_leave_out_a_persona_without_a_score_and_say_n():
    scores = pd.DataFrame({"run_id": "r", "method": ["m"] * 3 + ["unified"] * 3, "persona_id": ["a", "b", "c"] * 2,
                           "score": [0.5, 0.7, NAN, 0.4, 0.6, 0.9]})
    t = stats.method_table(scores).set_index("method")
    assert t.loc["m", "n_personas"] == 2 and t.loc["m", "mean"] == pytest.approx(0.6)
    assert t.loc["unified", "n_personas"] == 3
    assert t.loc["m", "delta"] == pytest.approx(0.1) and t.loc["m", "helped"] == 2  # paired over a and b only


# ----------------------------------------------------------------------------- the real dialogues

def _real_targets():
    """Every assistant turn of the 100 real dialogues as a target, the turns before it as its context."""
    rows = []
    for line in (DATA / "edgewise_cold_start_000-099.jsonl").read_text(encoding="utf-8").splitlines():
        d = json.loads(line)
        for i, m in enumerate(d["messages"]):
            if m["role"] == "assistant":
                rows.append((d["persona_id"], tuple((x["role"], x["text"]) for x in d["messages"][:i]), m["text"]))
    return rows


def _old_action_f1(prediction, reference):
    """The mutant: the convention before, where nothing asked and nothing done scored 1.0."""
    pred, ref = parse_actions(prediction), parse_actions(reference)
    return 1.0 if not pred and not ref else 2 * len(pred & ref) / (len(pred) + len(ref))


def test_a_model_that_always_says_okay_scores_zero_on_real_dialogues_and_scored_well_before():
    targets = _real_targets()
    assert len(targets) == 200
    scored = score_dialogue(["Okay."] * len(targets), [r for _, _, r in targets], [c for _, c, _ in targets])
    scored.insert(0, "persona_id", [p for p, _, _ in targets])
    scored["score"] = scored.action_f1
    per = persona_means(scored)
    has = per.dropna(subset=["score"])
    assert len(has) == 96 and (has.score == 0.0).all()                 # 4 personas never meet a setting
    assert per.n_with_settings.sum() == 113 and per.n_without_settings.sum() == 87
    assert per.refrained.dropna().eq(1.0).all() and per.refrained.notna().sum() == 83
    old = pd.Series([_old_action_f1("Okay.", r) for _, _, r in targets]).groupby([p for p, _, _ in targets]).mean()
    assert old.mean() > 0.4, old.mean()  # measured 0.435: the free points the old rule gave a silent model


def test_most_settings_of_real_replies_are_stated_earlier_in_the_dialogue():
    """Share over reference settings (pooled) and over personas; reading each turn alone (no device carried
    from one turn to the next) misses settings the user stated, as the hand labels' references show too."""
    labels = {(r["persona_id"], r["text"]): {tuple(a) for a in r["actions"]}
              for r in map(json.loads, (DATA / "edgewise_action_labels.jsonl").read_text().splitlines())}
    stated = supplied = alone = 0
    per_persona = {}
    for pid, context, reference in _real_targets():
        m = stated_supplied_metrics(reference, reference, context)
        stated, supplied = stated + m["n_stated"], supplied + m["n_supplied"]
        ref = labels[(pid, reference)]
        alone += len(ref & set().union(*(parse_actions(t, proposals=True) for _, t in context)))
        s = per_persona.setdefault(pid, [0, 0])
        s[0], s[1] = s[0] + m["n_stated"], s[1] + m["n_supplied"]
    share = stated / (stated + supplied)
    shares = [a / (a + b) for a, b in per_persona.values() if a + b]
    assert stated + supplied == 262 and 0.90 <= share <= 0.97, (stated, supplied)   # measured 245 / 17
    assert len(shares) == 96 and 0.90 <= np.mean(shares) <= 0.98                     # measured 0.954
    assert 0.78 <= alone / 262 <= 0.86                                               # turn by turn: 0.821


# ----------------------------------------------------------------------------- a run with a persona that never meets a setting

def _dialogue(pid, split, turns, kind="general"):
    messages = []
    for user, reply, blind in turns:
        messages += [{"role": "user", "text": user}, {"role": "assistant", "text": reply, "persona_blind": blind}]
    return {"persona_id": pid, "persona": f"Persona {pid}.", "split": split, "kind": kind, "messages": messages}


def _data(path):
    """Three personas; p3's every test reply asks a question (names no setting)."""
    lines = []
    for pid, warm in (("p1", "warm"), ("p2", "cool"), ("p3", "neutral")):
        for split in ("train", "train", "val"):
            lines.append(_dialogue(pid, split, [("Set the AC to 22 degrees.", "Done: ac temperature 22.",
                                                 "Done: ac temperature 22.")]))
        if pid == "p3":
            lines += [_dialogue(pid, "test", [("Can you change the lights?", "Which brightness would you like?",
                                               "Which brightness would you like?")]),
                      _dialogue(pid, "test", [("Music please.", "What volume would you like?",
                                               "What volume would you like?")])]
            continue
        lines += [_dialogue(pid, "test", [("Set the lights to 40%.", "Done: lights brightness 40.",
                                           "Done: lights brightness 40.")]),
                  _dialogue(pid, "test", [("Make it cosy, the way I like it.", f"Done: lights brightness 30, color {warm}.",
                                           "Done: lights brightness 70, color neutral.")], kind="personal")]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


@pytest.fixture(scope="module")
def silent_persona(tmp_path_factory):
    from engine.lab.study import StudySpec, run_study
    d = tmp_path_factory.mktemp("silent")
    db = str(d / "store.duckdb")
    study = run_study(StudySpec(data=str(_data(d / "data.jsonl")), vary={"r": [2, 4]}, seeds=[0],
                                methods=["base", "unified", "routed"], model="tiny-random",
                                train={"epochs": 1, "max_new_tokens": 8}, name="silent persona"), db)
    from engine.lab.study import study_runs
    return {"store": db, "jobs": d / "jobs", "study": study, "runs": list(study_runs(study, db).run_id)}


def test_the_store_holds_no_score_for_that_persona_and_the_parts_with_their_counts(silent_persona):
    from engine import store
    db, run = silent_persona["store"], silent_persona["runs"][0]
    pr = store.query("SELECT * FROM persona_results WHERE run_id = ? AND method = 'base'", [run], db)
    p3 = pr.set_index("persona_id").loc["p3"]
    assert pd.isna(p3.score) and pd.isna(p3.action_f1) and (p3.n_with_settings, p3.n_without_settings) == (0, 2)
    assert pr.set_index("persona_id").loc["p1", "n_settings"] == 3
    mr = store.query("SELECT n_personas FROM method_results WHERE run_id = ? AND method = 'base'", [run], db)
    assert mr.n_personas[0] == 2
    blind = store.query("SELECT * FROM persona_blind WHERE run_id = ?", [run], db).set_index(["persona_id", "kind"])
    assert blind.loc[("p1", "stated"), "score"] == 1.0 and blind.loc[("p1", "supplied"), "score"] == 0.0
    assert blind.loc[("p1", "supplied"), "n_settings"] == 2 and blind.loc[("p3", "all"), "refrained"] == 1.0
    assert ("p3", "supplied") not in blind.index


def test_views_and_engine_runs_say_n_and_show_supplied(silent_persona, capsys):
    from engine.analysis import report, views
    db, runs = silent_persona["store"], silent_persona["runs"]
    table = views.compare_table(runs[:1], path=db, kind="supplied").set_index("method")
    assert table.loc["base", "n_personas"] == 2 and table.loc["base", "n_settings"] == 4  # 2 personas x 2
    ceiling = views.blind_ceiling(runs[:1], path=db, kind="supplied")
    assert ceiling.ceiling[0] == 0.0 and ceiling.n_personas[0] == 2
    assert views.blind_ceiling(runs[:1], path=db, kind="all").n_personas[0] == 2
    study = views.study_view(silent_persona["study"], kind="supplied", path=db)["table"]
    assert set(study.n_personas) == {2} and set(study.n_settings) == {4}
    report.print_runs(db, runs[:1])
    out = capsys.readouterr().out
    assert "n=2)" in out and "supplied " in out and "(4 settings)" in out and "persona-blind ceiling" in out


@pytest.mark.parametrize("page, kind", [("compare", "supplied"), ("compare", "all"), ("studies", "supplied"),
                                        ("persona", None)])
def test_pages_render_it(silent_persona, monkeypatch, page, kind):
    from tests.conftest import open_page
    query = {"compare": {"runs": silent_persona["runs"][0]}, "studies": {"study": silent_persona["study"]},
             "persona": {"run": silent_persona["runs"][0], "persona": "p3"}}[page]
    at = open_page(monkeypatch, silent_persona["store"], silent_persona["jobs"], page, **query,
                   **({"kind": kind} if kind else {}))
    if page == "compare":
        table = at.dataframe[0].value
        assert {"n_targets", "n_settings"} <= set(table.columns)
        assert (table.n_personas == 2).all()
