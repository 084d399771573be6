"""How the simulator's people and assistant say things: profile hints, requests, replies.

Every reply is written so that engine.data.smarthome.parse_actions reads back exactly its actions (the tests
check each phrasing), and every request that states a value states it the same way.
"""
from __future__ import annotations

from engine.data.smarthome import DEVICES


def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]


def _level(value, low, high, words):
    return words[0] if value <= low else words[2] if value >= high else words[1]


def hint_phrase(device, param, value):
    """The profile-text phrase that truthfully hints one preference (qualitative, like people talk)."""
    if (device, param) == ("lights", "brightness"):
        return _level(value, 30, 70, ("dim lights", "softly lit rooms", "bright lights"))
    if (device, param) == ("lights", "color"):
        return f"{value}-coloured light"
    if (device, param) == ("ac", "temperature"):
        return _level(value, 20, 24, ("a cool room", "a mild room temperature", "a warm room"))
    if (device, param) == ("ac", "mode"):
        return f"the AC on {value} mode"
    if (device, param) == ("speaker", "volume"):
        return _level(value, 30, 70, ("quiet music", "music at a moderate volume", "loud music"))
    if (device, param) == ("speaker", "equalizer"):
        return {"bass boost": "bass-heavy sound", "treble boost": "crisp treble",
                "balanced": "a flat, balanced sound"}[value]
    if (device, param) == ("tv", "volume"):
        return _level(value, 20, 40, ("a quiet TV", "the TV at a medium volume", "a loud TV"))
    if (device, param) == ("tv", "input_source"):
        return {"hdmi1": "the console on HDMI 1", "hdmi2": "the PC on HDMI 2", "netflix": "Netflix",
                "youtube": "YouTube", "av": "the old DVD player on AV"}[value]
    if (device, param) == ("security", "armed"):
        return {"true": "the alarm always armed", "false": "the alarm switched off"}[value]
    raise KeyError((device, param))


def profile_hint_count(profile, preferences):
    """How many of a persona's preferences its profile text hints truthfully (hint_phrase found)."""
    return sum(hint_phrase(d, p, v) in profile for (d, p), v in preferences.items())


# -----------------------------------------------------------------------------
# replies: varied natural language that engine.data.smarthome.parse_actions reads back exactly

_INPUT_NAMES = {"hdmi1": ("HDMI 1", "HDMI one"), "hdmi2": ("HDMI 2", "HDMI two"), "netflix": ("Netflix",),
                "youtube": ("YouTube",), "av": ("AV", "the AV input")}
# device -> the settings a clause names -> phrasings; {param} is its value, {source} the TV input's spoken name
REPLIES = {
    "lights": {
        ("brightness", "color"): ("the lights are at {brightness}% in {color}",
                                  "lights set to {brightness} percent, {color} colour",
                                  "I've set the lights to {brightness}% with a {color} tone",
                                  "lighting at {brightness}%, {color}"),
        ("brightness",): ("the lights are at {brightness}%", "light brightness set to {brightness} percent",
                          "I've put the lights at {brightness}%", "lights at {brightness}%"),
        ("color",): ("the lights are now {color}", "light colour set to {color}",
                     "I've switched the lights to {color}"),
    },
    "ac": {
        ("temperature", "mode"): ("the AC is on {mode} mode at {temperature} degrees",
                                  "air conditioning set to {temperature}°C in {mode} mode",
                                  "I've put the AC in {mode} mode at {temperature} degrees",
                                  "AC: {mode} mode, {temperature} degrees"),
        ("temperature",): ("the AC is set to {temperature} degrees", "temperature set to {temperature}°C",
                           "I've set the thermostat to {temperature} degrees"),
        ("mode",): ("the AC is in {mode} mode", "I've switched the AC to {mode} mode", "air conditioner mode: {mode}"),
    },
    "speaker": {
        ("volume", "equalizer"): ("the speaker is playing at volume {volume} with the {equalizer} equalizer",
                                  "music at volume {volume}, {equalizer} EQ",
                                  "I've set the speaker to {volume} with a {equalizer} equaliser"),
        ("volume",): ("the speaker volume is {volume}", "music volume set to {volume}",
                      "I've turned the speaker to {volume}"),
        ("equalizer",): ("the speaker equalizer is on {equalizer}", "EQ set to {equalizer} on the speaker",
                         "I've switched the speaker to the {equalizer} equaliser"),
    },
    "tv": {
        ("volume", "input_source"): ("the TV is on {source} at volume {volume}",
                                     "TV switched to {source}, volume {volume}",
                                     "I've put {source} on the TV at volume {volume}"),
        ("volume",): ("the TV volume is {volume}", "TV volume set to {volume}", "I've turned the TV to volume {volume}"),
        ("input_source",): ("the TV is on {source}", "TV switched to {source}", "I've put the TV on {source}"),
    },
    "security": {  # by "armed": the phrasings differ per value
        "true": ("the alarm is armed", "I've armed the security system", "security armed"),
        "false": ("the alarm is disarmed", "I've disarmed the security system", "security disarmed"),
    },
}


def _phrase(rng, table, device, s):
    """One phrasing from `table` of the settings `s` (param -> value) of one device, filled in."""
    if device == "security":
        return _pick(rng, table["security"][s["armed"]])
    key = tuple(p for p in DEVICES[device] if p in s)
    values = dict(s)
    if "input_source" in s:
        values["source"] = _pick(rng, _INPUT_NAMES[s["input_source"]])
    if "brightness" in s:
        values["verb"] = "dim" if s["brightness"] < 50 else "brighten"
    return _pick(rng, table[device][key]).format(**values)


_OPENERS = ("Sure! ", "Done. ", "Okay, ", "All set: ", "Got it. ", "No problem. ", "")
_CLOSERS = ("", " Enjoy!", " Anything else?", " Let me know if you want changes.",
            " Let me know if you'd like anything else adjusted.", " Is there anything else I can do for you?",
            " That should make it more comfortable.", " Enjoy the rest of your day!")


def render_reply(rng, actions, ask=""):
    """A natural-language confirmation of the actions, devices in order of first mention; `ask`: a question that
    ends it instead of a closer (it names no setting done: "Would you like me to adjust the colour as well?")."""
    by_device = {}
    for device, param, value in actions:
        by_device.setdefault(device, {})[param] = value
    clauses = [_phrase(rng, REPLIES, d, s) for d, s in by_device.items()]
    body = clauses[0] if len(clauses) == 1 else ", ".join(clauses[:-1]) + " and " + clauses[-1]
    opener = _pick(rng, _OPENERS)
    body = body[0].upper() + body[1:] if opener in ("", "Sure! ", "Done. ", "Got it. ", "No problem. ") else body
    closer = _pick(rng, _CLOSERS)
    return f"{opener}{body}. {ask}" if ask else f"{opener}{body}.{closer}"


_POLITE = ("", "Please ", "Could you ", "Hey, ", "Hi, can you ")


# the same for requests that name every value
REQUESTS = {
    "lights": {
        ("brightness", "color"): ("set the lights to {brightness}% and {color}",
                                  "make the lights {color} at {brightness} percent"),
        ("brightness",): ("{verb} the lights to {brightness}%", "set the lights to {brightness} percent",
                          "put the light brightness at {brightness}"),
        ("color",): ("make the lights {color}", "change the light colour to {color}"),
    },
    "ac": {
        ("temperature", "mode"): ("set the AC to {temperature} degrees in {mode} mode",
                                  "put the air conditioner on {mode} at {temperature} degrees"),
        ("temperature",): ("set the AC to {temperature} degrees", "put the thermostat on {temperature}"),
        ("mode",): ("switch the AC to {mode} mode", "put the air conditioner in {mode} mode"),
    },
    "speaker": {
        ("volume", "equalizer"): ("play the speaker at volume {volume} with the {equalizer} equalizer",
                                  "put music on at {volume} with {equalizer} EQ"),
        ("volume",): ("set the speaker volume to {volume}", "turn the music to {volume}"),
        ("equalizer",): ("set the speaker equalizer to {equalizer}",),
    },
    "tv": {
        ("volume", "input_source"): ("put the TV on {source} at volume {volume}",
                                     "switch the TV to {source}, volume {volume}"),
        ("volume",): ("set the TV volume to {volume}", "turn the TV to {volume}"),
        ("input_source",): ("switch the TV to {source}", "put {source} on the TV"),
    },
    "security": {
        "true": ("arm the security system", "arm the alarm"),
        "false": ("disarm the alarm", "disarm the security system"),
    },
}


def _sentence(rng, clauses):
    opener = _pick(rng, _POLITE)
    text = opener + " and ".join(clauses)
    return text[0].upper() + text[1:] + ("?" if opener in ("Could you ", "Hi, can you ") else ".")


_VAGUE = {
    "lights": (("Can you change the lights?", "Do something about the lights.", "The lights need adjusting."),
               ("Sure, what brightness and which colour would you like?", "Of course. How bright, and what colour?")),
    "ac": (("Can you adjust the AC?", "Change the air conditioning, please.", "The AC needs changing."),
           ("Sure, what temperature and which mode?", "Happy to. Which temperature and mode should I use?")),
    "speaker": (("Put some music on.", "Can you set up the speaker?", "Music, please."),
                ("Sure, what volume and which equalizer setting?", "Okay. How loud, and which EQ?")),
    "tv": (("Turn the TV on.", "Can you set up the TV?", "TV, please."),
           ("Sure, which input and what volume?", "Which source should I use, and how loud?")),
}
_ANSWER_LEADS = ("", "Let's do ", "Go with ", "Hmm, ", "I'd say ")
_FOLLOW_UPS = {  # (device, numeric param) -> ((phrasings, step)...): a relative change of the value just set
    ("lights", "brightness"): ((("A bit brighter, please.", "Slightly brighter?", "Brighter, please."), 1),
          (("A bit dimmer, please.", "Can you dim it a little?", "Too bright, turn it down a notch."), -1)),
    ("ac", "temperature"): ((("A little warmer, please.", "Make it a degree warmer.", "Bit chilly, warmer please."), 1),
           (("A little cooler, please.", "Make it a degree cooler.", "Still too warm, cooler please."), -1)),
    ("speaker", "volume"): ((("Louder, please.", "Turn the music up a notch.", "A bit louder?"), 1),
           (("Quieter, please.", "Turn the music down a notch.", "A bit softer?"), -1)),
    ("tv", "volume"): ((("Turn the TV up a bit.", "TV louder, please.", "I can't hear it, louder."), 1),
           (("Turn the TV down a bit.", "TV quieter, please.", "Too loud, down a notch."), -1)),
}


def _answer_clause(rng, device, s):
    """The user's reply to a clarifying question: only the values."""
    parts = []
    for p, v in s.items():
        if device == "lights":
            parts.append(f"{v}%" if p == "brightness" else v)
        elif device == "ac":
            parts.append(f"{v} degrees" if p == "temperature" else f"{v} mode")
        elif device == "speaker":
            parts.append(f"volume {v}" if p == "volume" else f"{v} EQ")
        else:
            parts.append(f"volume {v}" if p == "volume" else _pick(rng, _INPUT_NAMES[v]))
    return _pick(rng, _ANSWER_LEADS) + " and ".join(parts) + _pick(rng, ("", ", please", ", thanks"))
