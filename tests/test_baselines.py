"""The field's first baselines (profile in the prompt, retrieval of the persona's own dialogues) and routing
chosen on validation: what each puts in the prompt, what retrieval may read, what routing may read."""
import dataclasses
import json
import random

import numpy as np
import pandas as pd
import pytest

from engine.methods import prompting
from engine.data.dataset import Example, load_dataset
from engine.methods.context import Context, MethodOutput
from engine.methods.routing import route, routed
from engine.models.loading import load_model
from engine.training.config import ConfigError, TrainConfig
from engine.training.encode import encode_example


@pytest.fixture(scope="module")
def tok():
    return load_model("tiny-random", precision="fp32").tokenizer


def test_prompted_differs_from_base_only_by_the_profile_in_the_prompt(tok):
    """Token for token: the base prompt with the profile's tokens inserted after the system prompt; the
    dialogue and the target are untouched."""
    cfg = TrainConfig()
    ex = Example("e1", "p1", "test", "personal", context=(("user", "Make it cosy in here, please."),),
                 target="I've set the lights to 30.")
    profile = "Ana, 41, a night-shift nurse. Likes dim warm lights and a cool bedroom."
    (with_profile,) = prompting.with_profiles([ex], {"p1": profile}, cfg.system_prompt)
    base, prompted = encode_example(tok, ex, cfg), encode_example(tok, with_profile, cfg)
    inserted = tok(f"\n\n{prompting.PROFILE_HEADER} {profile}", add_special_tokens=False)["input_ids"]
    assert len(prompted.ids) == len(base.ids) + len(inserted)
    # find where they part: everything before is shared, everything after the inserted span is the base's rest
    cut = next(i for i, (a, b) in enumerate(zip(base.ids, prompted.ids)) if a != b)
    assert prompted.ids[cut + len(inserted):] == base.ids[cut:]
    assert tok.decode(prompted.ids[cut:cut + len(inserted)]).strip() == f"{prompting.PROFILE_HEADER} {profile}"
    assert prompted.ids[prompted.n_prompt:] == base.ids[base.n_prompt:]
    assert cfg.system_prompt in tok.decode(prompted.ids[:cut + len(inserted)])


def test_a_long_profile_never_pushes_the_dialogue_out(tok):
    """max_length is the dialogue's budget: a method's system text gets its tokens on top."""
    cfg = TrainConfig(max_length=48)
    ex = Example("e1", "p1", "train", None, context=(("user", "Lights to 20 please."),), target="Lights at 20.")
    (long,) = prompting.with_profiles([ex], {"p1": "word " * 200}, cfg.system_prompt)
    enc = encode_example(tok, long, cfg)
    text = tok.decode(enc.ids)
    assert "Lights to 20 please." in text and text.count("word") == 200
    assert tok.decode(enc.ids[enc.n_prompt:]).startswith("Lights at 20.")


@pytest.mark.parametrize("seed", range(6))
def test_retrieval_reads_only_the_personas_own_train_dialogues(seed):
    """Property over random simulator data sets and pools salted with other personas' and val/test
    dialogues: every retrieved id is one of the query's own persona's TRAIN examples, k of them at most,
    most similar first."""
    rng = random.Random(seed)
    ds = load_dataset(f"sim:personas={rng.randint(2, 5)},train_per_persona={rng.randint(1, 6)},"
                      f"val_per_persona=2,test_per_persona=2,seed={seed}")
    own_train = {p: {e.example_id for e in ex} for p, ex in ds.by_persona("train").items()}
    pools = {p: list(ex) for p, ex in ds.by_persona("train").items()}
    everyone = list(ds.examples)
    for p in pools:  # a careless caller: the pool holds everything
        pools[p] = pools[p] + rng.sample(everyone, min(6, len(everyone)))
    queries = ds.split("val") + ds.split("test")
    k = rng.randint(1, 5)
    got = prompting.retrieve(queries, pools, k)
    assert set(got) == {q.example_id for q in queries}
    by_id = {e.example_id: e for e in everyone}
    for q in queries:
        ids = got[q.example_id]
        assert set(ids) <= own_train[q.persona_id], (q.example_id, ids)
        assert len(ids) == min(k, len(own_train[q.persona_id])) and len(set(ids)) == len(ids)
        assert all(by_id[i].split == "train" for i in ids)
    prepared, _ = prompting.with_retrieved(queries, pools, k, TrainConfig().system_prompt)
    for q, e in zip(queries, prepared):
        assert e.target == q.target and e.context == q.context  # only the system prompt changes
        for other in everyone:
            if other.split != "train" or other.persona_id != q.persona_id:
                assert prompting.dialogue_text(other) not in e.system


def test_retrieval_puts_the_most_similar_dialogue_first():
    mk = lambda i, text, split="train": Example(f"e{i}", "p", split, None, context=(("user", text),), target="ok")
    pool = [mk(1, "Play some jazz on the speaker."), mk(2, "Set the thermostat to 21 degrees."),
            mk(3, "Lock the front door.")]
    q = mk(9, "Could you set the thermostat to 19 degrees?", "test")
    assert prompting.retrieve([q], {"p": pool}, 1) == {"e9": ["e2"]}
    with pytest.raises(ValueError, match="rag_k"):
        prompting.retrieve([q], {"p": pool}, 0)


ROUTE_CASES = [
    # (val means per persona over methods [a, b, c], expected choice)
    ({"p1": [0.2, 0.5, 0.1], "p2": [0.9, 0.1, 0.3]}, {"p1": "b", "p2": "a"}),
    ({"p1": [0.4, 0.4, 0.4]}, {"p1": "a"}),                                 # ties: the first in run order
    ({"p1": [np.nan, 0.3, 0.6]}, {"p1": "c"}),                              # a method without a val score
    ({"p1": [0.1, 0.8, 0.2], "p2": [np.nan] * 3}, {"p1": "b", "p2": "b"}),  # no val at all: best on average
]


@pytest.mark.parametrize("table,expected", ROUTE_CASES)
def test_route_picks_the_argmax_of_validation_means(table, expected):
    scores = pd.DataFrame.from_dict(table, orient="index", columns=["a", "b", "c"])
    assert route(scores, ["a", "b", "c"]) == expected


def _ctx_with(val: dict, test: dict):
    """A Context whose finished methods answered val/test with the given per-persona scores (one row each)."""
    ds = load_dataset("sim:personas=3,train_per_persona=1,val_per_persona=1,test_per_persona=1")
    pids = list(ds.personas)

    def frame(split, scores):
        ex = {e.persona_id: e for e in ds.split(split)}
        return pd.DataFrame({"persona_id": pids, "example_id": [ex[p].example_id for p in pids],
                             "kind": "personal", "prediction": "x", "reference": "y", "score": scores})
    ctx = Context(lm=None, dataset=ds, cfg=TrainConfig(), seed=0)
    for m in val:
        ctx.finished[m] = MethodOutput(frame("test", test[m]), 1.0, 1.0, 0, 1, details={"stages": {"train": 1.0}})
        ctx.validation[m] = (frame("val", val[m]), 0.5)
    return ctx, pids


def test_routed_never_reads_test_labels():
    """Val prefers a for everyone, test prefers b: routed follows val; shuffling the test scores (the test
    references' outcome) between personas and methods leaves its choices unchanged; the optimistic figure
    is the test-chosen one."""
    val = {"a": [0.9, 0.8, 0.7], "b": [0.1, 0.2, 0.3]}
    test = {"a": [0.2, 0.1, 0.0], "b": [1.0, 0.9, 0.8]}
    ctx, pids = _ctx_with(val, test)
    out = routed(ctx)
    assert out.details["routing"] == {p: "a" for p in pids}
    assert out.details["routing_on_test"] == {p: "b" for p in pids}
    assert out.predictions.score.tolist() == test["a"]
    assert out.details["test_routed_score"] == pytest.approx(0.9)
    rng = np.random.default_rng(0)
    for _ in range(5):
        flat = rng.permutation(test["a"] + test["b"])
        ctx2, _ = _ctx_with(val, {"a": list(flat[:3]), "b": list(flat[3:])})
        assert routed(ctx2).details["routing"] == out.details["routing"]


def test_routed_alone_fails_before_any_work():
    from engine.lab.spec import RunSpec
    with pytest.raises(ConfigError, match="routed"):
        RunSpec(data="sim", methods=["routed"]).check()
    ctx, _ = _ctx_with({}, {})
    with pytest.raises(ConfigError, match="none has finished"):
        routed(ctx)


def test_routed_needs_val_examples():
    from engine.lab import checks
    ds = load_dataset("sim:personas=2,train_per_persona=2,val_per_persona=1,test_per_persona=1")
    no_val = dataclasses.replace(ds, examples=[e for e in ds.examples if e.split != "val"])
    with pytest.raises(ConfigError, match="routed chooses each persona's method on val"):
        checks.check_data(["base", "routed"], no_val)
    checks.check_data(["base", "routed"], ds)


# ----------------------------------------------------------------------------- copy-the-nearest-reply baselines

def _dialogues(records):
    from engine.data.dataset import dataset_from_records
    return dataset_from_records(records, "hand-made")


def _rec(pid, split, user, reply, profile="someone"):
    return {"persona_id": pid, "persona": profile, "split": split,
            "messages": [{"role": "user", "text": user}, {"role": "assistant", "text": reply}]}


HAND = [
    _rec("p1", "train", "Dim the lights for reading, please.", "Lights at 20%, warm."),
    _rec("p1", "train", "Turn the TV on.", "TV on HDMI 1 at volume 15."),
    _rec("p2", "train", "Dim the lights for reading, please.", "Lights at 60%, cool."),
    _rec("p2", "train", "Start some music.", "Speaker at volume 70 with bass boost."),
    _rec("p1", "val", "Music?", "Speaker at volume 10."),
    _rec("p2", "val", "TV please.", "TV on Netflix at volume 40."),
    _rec("p1", "test", "Could you dim the lights, I want to read.", "Lights at 20%, warm."),
    _rec("p2", "test", "Could you dim the lights, I want to read.", "Lights at 60%, cool."),
]


def test_nearest_replies_copy_the_most_similar_context():
    from engine.methods.baselines import nearest_replies
    ds = _dialogues(HAND)
    train = ds.split("train")
    queries = ds.split("test")
    assert nearest_replies(queries, [e for e in train if e.persona_id == "p1"]) == ["Lights at 20%, warm."] * 2
    with pytest.raises(ValueError, match="no train examples"):
        nearest_replies(queries, [])


def test_nearest_reply_copies_the_personas_own_reply_and_the_control_copies_anyones(tmp_path):
    """Both personas ask the same thing in test: nearest_reply answers each with its own habit (right for both),
    the persona-blind control copies one reply for everyone (right for one of them)."""
    import json as _json
    from engine.lab.runner import execute_run
    from engine.lab.spec import RunSpec
    data = tmp_path / "hand.jsonl"
    data.write_text("\n".join(_json.dumps(r) for r in HAND) + "\n")
    execute_run(RunSpec(data=str(data), model="tiny-random", methods=["nearest_reply", "nearest_reply_blind"],
                        train={"max_new_tokens": 2}), tmp_path / "r")
    own = pd.read_parquet(tmp_path / "r" / "methods" / "nearest_reply" / "predictions.parquet").set_index("persona_id")
    blind = pd.read_parquet(tmp_path / "r" / "methods" / "nearest_reply_blind" / "predictions.parquet")
    assert own.loc["p1", "prediction"] == "Lights at 20%, warm." and own.loc["p2", "prediction"] == "Lights at 60%, cool."
    assert (own.action_f1 == 1.0).all()
    assert blind.prediction.nunique() == 1 and sorted(blind.action_f1) == [0.0, 1.0]
    summary = _json.loads((tmp_path / "r" / "methods" / "nearest_reply" / "method.json").read_text())
    assert summary["trainable_params"] == 0 and summary["train_seconds"] == 0


def test_nearest_reply_only_ever_copies_train_replies_of_its_persona(tmp_path):
    from engine.lab.runner import execute_run
    from engine.lab.spec import RunSpec
    from engine.data.dataset import load_dataset
    sim = "sim:personas=4,train_per_persona=6,val_per_persona=2,test_per_persona=3,personal_fraction=0.75"
    execute_run(RunSpec(data=sim, model="tiny-random", methods=["nearest_reply", "routed"],
                        train={"max_new_tokens": 2}), tmp_path / "r")
    train = load_dataset(sim).by_persona("train")
    preds = pd.read_parquet(tmp_path / "r" / "methods" / "nearest_reply" / "predictions.parquet")
    assert all(row.prediction in {e.target for e in train[row.persona_id]} for row in preds.itertuples())
    assert (tmp_path / "r" / "methods" / "routed").exists()  # it answered val too, for routed


def test_the_baselines_run_on_edgewise_files_and_refuse_choice_data(tmp_path):
    from engine.lab.runner import execute_run
    from engine.lab.spec import RunSpec
    from engine.training.config import ConfigError
    from tests.edgewise_data import write_release
    folder = write_release(tmp_path / "edgewise")
    execute_run(RunSpec(data=str(folder), model="tiny-random", methods=["nearest_reply", "nearest_reply_blind"],
                        train={"max_new_tokens": 2}), tmp_path / "r")
    assert (tmp_path / "r" / "methods" / "nearest_reply_blind" / "persona_results.parquet").exists()
    choice = tmp_path / "choice.jsonl"
    choice.write_text("\n".join(json.dumps({"persona_id": f"p{i % 2}", "persona": "x", "prompt": f"q{i}",
                                            "choices": ["a", "b"], "answer": i % 2,
                                            "split": ["train", "train", "test", "test"][i]}) for i in range(4)) + "\n")
    with pytest.raises(ConfigError, match="dialogue data only"):
        RunSpec(data=str(choice), model="tiny-random", methods=["nearest_reply"]).validate()
