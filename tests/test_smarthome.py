"""The action vocabulary: canonical replies round-trip, free text parses, metrics match hand counts."""
import itertools

import pytest

from engine.data.smarthome import DEVICES, action_metrics, is_numeric, parse_actions, render_actions


def test_render_is_short_and_canonical():
    actions = [("lights", "brightness", 40), ("lights", "color", "warm"), ("ac", "temperature", 21),
               ("ac", "fan_speed", 2)]
    assert render_actions(actions) == "Done: lights brightness 40, color warm; ac temperature 21, fan speed 2."
    assert render_actions([]) == "Nothing to change."


def test_round_trip_every_value_of_every_parameter():
    for device, params in DEVICES.items():
        for param, domain in params.items():
            for value in domain:
                assert parse_actions(render_actions([(device, param, value)])) == {(device, param, value)}


def test_round_trip_one_setting_of_every_parameter_at_once():
    actions = [(d, p, dom[len(dom) // 2]) for d, params in DEVICES.items() for p, dom in params.items()]
    text = render_actions(actions)
    assert parse_actions(text) == set(actions)
    assert len(text.split()) < 40


def test_round_trip_all_pairs_of_devices():
    for a, b in itertools.permutations(DEVICES, 2):
        actions = [(a, p, dom[0]) for p, dom in DEVICES[a].items()] + [(b, p, dom[-1]) for p, dom in DEVICES[b].items()]
        assert parse_actions(render_actions(actions)) == set(actions)


def test_render_rejects_unknown_actions():
    with pytest.raises(ValueError):
        render_actions([("oven", "temperature", 200)])
    with pytest.raises(ValueError):
        render_actions([("ac", "temperature", 45)])


@pytest.mark.parametrize("text, expected", [
    ("Set the AC to 22 degrees in cool mode", {("ac", "temperature", 22), ("ac", "mode", "cool")}),
    ("I set the air conditioner to 22°C and dimmed the lamp to 30%.",
     {("ac", "temperature", 22), ("lights", "brightness", 30)}),
    ("Sure! Netflix is on, volume 25.", {("tv", "input_source", "netflix"), ("tv", "volume", 25)}),
    ("Lights at 40%, 21 degrees on the AC", {("lights", "brightness", 40), ("ac", "temperature", 21)}),
    ("Turning BRIGHTNESS to 70 and color to Neutral", {("lights", "brightness", 70), ("lights", "color", "neutral")}),
    ("Alarm armed. Speakers at 30 with bass EQ.",
     {("security", "armed", "true"), ("speaker", "volume", 30), ("speaker", "equalizer", "bass boost")}),
    ("Put the television on HDMI 2", {("tv", "input_source", "hdmi2")}),
    ("set temp to 19", {("ac", "temperature", 19)}),
    ("OK, the light is now warm and the AC is heating", {("lights", "color", "warm"), ("ac", "mode", "heat")}),
    ("Disarmed the security system.", {("security", "armed", "false")}),
    ("Welcome home! Enjoy your evening.", set()),
    ("Set volume to 30", set()),                             # which device? not guessed
    ("Set the AC to 45 degrees", set()),                     # outside the domain
    ("lights brightness 20 ... actually lights brightness 60", {("lights", "brightness", 60)}),  # last wins
])
def test_parse_free_text(text, expected):
    assert parse_actions(text) == expected


def test_parse_types():
    triples = parse_actions("Done: lights brightness 40, color warm; security armed true.")
    for device, param, value in triples:
        assert isinstance(value, int) if is_numeric(device, param) else value == value.lower()


REF = "Done: lights brightness 40, colour warm; ac temperature 21."
NAN = float("nan")


@pytest.mark.parametrize("prediction, reference, expected", [
    # (device_precision, numerical_precision, param_f1, action_f1, refrained)
    (REF, REF, (1.0, 1.0, 1.0, 1.0, NAN)),                                              # exact match
    ("Done: ac temperature 21; lights colour warm, brightness 40.", REF, (1.0, 1.0, 1.0, 1.0, NAN)),   # reordered
    ("Sure! The AC is set to 21 degrees, and the lights are at 40% in a warm tone.", REF,
     (1.0, 1.0, 1.0, 1.0, NAN)),                                                        # paraphrased
    # one value wrong: pred {l.b 50, l.c warm, ac.t 21}; same settings, 2 of 3 triples shared
    ("Done: lights brightness 50, colour warm; ac temperature 21.", REF, (1.0, 1 / 2, 1.0, 2 / 3, NAN)),
    # every value wrong, right devices and settings (a persona-blind answer): only param_f1 is fooled
    ("Done: lights brightness 70, colour neutral; ac temperature 24.", REF, (1.0, 0.0, 1.0, 0.0, NAN)),
    # a device missing: pred {l.b 40}: F1 = 2*1/(1+3) = 0.5 on both
    ("Done: lights brightness 40.", REF, (1.0, 1.0, 0.5, 0.5, NAN)),
    # an extra action: devices {lights, ac, tv} -> 2/3; numeric {40, 21, tv 30} -> 2/3; F1 = 2*3/(4+3)
    ("Done: lights brightness 40, colour warm; ac temperature 21; tv volume 30.", REF,
     (2 / 3, 2 / 3, 6 / 7, 6 / 7, NAN)),
    ("Done: tv input netflix.", REF, (0.0, 0.0, 0.0, 0.0, NAN)),                         # wrong device entirely
    ("Sorry, I can't do that.", REF, (0.0, 0.0, 0.0, 0.0, NAN)),                         # nothing done: no credit
    ("Okay.", REF, (0.0, 0.0, 0.0, 0.0, NAN)),                                           # saying nothing: no credit
    # the reference names no setting: no action metric at all (once 1.0 each), refrained instead
    ("Nothing to change.", "Hello!", (NAN, NAN, NAN, NAN, 1.0)),                        # nothing to do, nothing done
    (REF, "Nothing to change.", (NAN, NAN, NAN, NAN, 0.0)),                             # done what was not asked
    ("What brightness would you like?", "Which colour would you like?", (NAN, NAN, NAN, NAN, 1.0)),
    ("Done: lights colour warm.", REF, (1.0, 0.0, 0.5, 0.5, NAN)),                       # no numeric triple predicted
    # no number on either side: no numerical precision (once 1.0: a free point for naming no number)
    ("Done: tv input netflix.", "Done: tv input youtube.", (1.0, NAN, 1.0, 0.0, NAN)),
    ("Okay.", "Done: tv input youtube.", (0.0, NAN, 0.0, 0.0, NAN)),
])
def test_action_metrics_hand_computed(prediction, reference, expected):
    m = action_metrics(prediction, reference)
    assert set(m) == {"device_precision", "numerical_precision", "param_f1", "action_f1", "refrained"}
    got = (m["device_precision"], m["numerical_precision"], m["param_f1"], m["action_f1"], m["refrained"])
    assert got == pytest.approx(expected, nan_ok=True)
    assert all(0.0 <= v <= 1.0 for v in got if v == v)
