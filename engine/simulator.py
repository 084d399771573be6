"""The built-in benchmark: a deterministic smart-home persona simulator (DESIGN §4).

Each persona has one latent preferred value per device parameter, copied from an archetype
(night owl, energy saver, ...) and changed per parameter with probability `archetype_noise`.
Its dialogues are requests to the assistant:
  - "general": the user names the values ("Set the AC to 22 degrees in cool mode"), so the right
    reply is answerable from the context alone;
  - "personal": the user refers to their habits ("Movie time, set things up as usual"), so the right
    reply is the persona's preferred values, answerable only by knowing the persona.
The profile text mixes a biography (which may point at the wrong archetype) with true preference
hints; `profile_fidelity` sets the share of preferences that are hinted.

The knobs are the study's open questions; every one of them is validated and has a test showing
that it changes what it claims. Only numpy.random.default_rng(seed) is used: same knobs, same bytes.
"""
import json
import math
from dataclasses import dataclass

import numpy as np

from engine.smarthome import DEVICES, render_actions

SIMULATOR_DEFAULTS = {
    "personas": 8,
    "train_per_persona": 30,
    "val_per_persona": 10,
    "test_per_persona": 10,
    "personal_fraction": 0.25,
    "archetypes": 5,
    "archetype_noise": 0.15,
    "profile_fidelity": 0.3,
    "seed": 0,
}

# knob -> (type, low, high): the allowed values, also quoted in the error messages
_KNOB_RANGES = {
    "personas": (int, 1, 10_000),
    "train_per_persona": (int, 1, 1_000),
    "val_per_persona": (int, 0, 1_000),
    "test_per_persona": (int, 1, 1_000),
    "personal_fraction": (float, 0.0, 1.0),
    "archetypes": (int, 1, 100),
    "archetype_noise": (float, 0.0, 1.0),
    "profile_fidelity": (float, 0.0, 1.0),
    "seed": (int, 0, 2**63 - 1),
}

TWO_EXCHANGE_SHARE = 0.25  # share of dialogues with two user/assistant exchanges

# The values preferences and requests are drawn from: a coarse grid per numeric parameter, so that
# preferences are distinct and a small model can memorise them; categorical domains as they are.
VALUE_GRID = {
    ("lights", "brightness"): tuple(range(10, 101, 10)),
    ("lights", "colour"): DEVICES["lights"]["colour"],
    ("ac", "temperature"): tuple(range(17, 29)),
    ("ac", "mode"): DEVICES["ac"]["mode"],
    ("speaker", "volume"): tuple(range(10, 91, 5)),
    ("speaker", "equalizer"): DEVICES["speaker"]["equalizer"],
    ("tv", "volume"): tuple(range(5, 61, 5)),
    ("tv", "input"): DEVICES["tv"]["input"],
    ("security", "mode"): DEVICES["security"]["mode"],
}
PARAMS = tuple(VALUE_GRID)  # every (device, parameter) a persona has a preference for

# name -> (preferences in PARAMS order, biography flavour). Beyond these, archetypes are drawn at random.
NAMED_ARCHETYPES = {
    "night owl": ((30, "warm", 22, "fan", 40, "vocal", 25, "netflix", "home"),
                  ("works night shifts", "plays chess online", "stargazes")),
    "energy saver": ((40, "daylight", 26, "auto", 20, "flat", 15, "antenna", "armed"),
                     ("cycles to work", "grows vegetables", "repairs old radios")),
    "cinephile": ((20, "blue", 21, "cool", 50, "bass", 45, "hdmi1", "home"),
                  ("collects film posters", "writes movie reviews", "loves noir films")),
    "fitness fan": ((100, "cool", 18, "cool", 80, "bass", 30, "youtube", "disarmed"),
                    ("runs marathons", "lifts weights", "teaches spinning classes")),
    "early bird": ((80, "daylight", 23, "heat", 30, "treble", 20, "antenna", "armed"),
                   ("bakes bread at dawn", "walks the dog at six", "does crosswords")),
    "party host": ((70, "purple", 19, "cool", 90, "bass", 40, "youtube", "disarmed"),
                   ("hosts dinner parties", "DJs at weddings", "loves karaoke")),
    "bookworm": ((60, "warm", 24, "heat", 15, "vocal", 10, "netflix", "home"),
                 ("reads novels", "knits", "volunteers at the library")),
    "gamer": ((50, "red", 20, "dry", 60, "treble", 55, "hdmi2", "home"),
              ("streams video games", "builds PCs", "plays in an esports team")),
}

JOBS = ("nurse", "teacher", "software developer", "accountant", "chef", "architect", "student",
        "retired engineer", "graphic designer", "lawyer", "electrician", "journalist", "pharmacist",
        "bus driver", "photographer", "farmer")
FIRST_NAMES = ("Ana", "Ben", "Chloe", "David", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas",
               "Kemi", "Liam", "Maya", "Noah", "Olga", "Pedro", "Rosa", "Sam", "Tara", "Yusuf")


@dataclass
class SimPersona:
    """The ground truth behind one persona: what the records are generated from."""
    persona_id: str
    archetype: str
    preferences: dict   # (device, parameter) -> preferred value, for every entry of PARAMS
    hinted: tuple       # the (device, parameter)s the profile text hints truthfully
    profile: str


# -----------------------------------------------------------------------------
# knobs

def validate_knobs(knobs):
    """Knob dict (defaults filled in) checked against _KNOB_RANGES; ValueError names the knob and range."""
    unknown = [k for k in knobs if k not in SIMULATOR_DEFAULTS]
    if unknown:
        raise ValueError(f"unknown simulator knob {unknown[0]!r}; known knobs: {', '.join(SIMULATOR_DEFAULTS)}")
    checked = dict(SIMULATOR_DEFAULTS)
    for name, value in knobs.items():
        kind, low, high = _KNOB_RANGES[name]
        ok_type = isinstance(value, int) and not isinstance(value, bool)
        if kind is float:
            ok_type = ok_type or isinstance(value, float)
        where = f"in [{low:g}, {high:g}]" if kind is float else f"an integer in [{low}, {high}]"
        if not ok_type or not (low <= value <= high):
            raise ValueError(f"{name} must be {where}, got {value!r}")
        checked[name] = kind(value)
    return checked


def parse_sim_spec(spec):
    """Knobs from the CLI spelling "sim" or "sim:personas=8,personal_fraction=0.5" (defaults filled in)."""
    spec = spec.strip()
    head, _, rest = spec.partition(":")
    if head != "sim":
        raise ValueError(f"a simulator spec starts with 'sim', got {spec!r}")
    knobs = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        name, eq, text = item.partition("=")
        name = name.strip()
        if name not in SIMULATOR_DEFAULTS:
            raise ValueError(f"unknown simulator knob {name!r}; known knobs: {', '.join(SIMULATOR_DEFAULTS)}")
        if not eq:
            raise ValueError(f"simulator knob {name!r} needs a value: {name}=...")
        kind = _KNOB_RANGES[name][0]
        try:
            knobs[name] = kind(text.strip())
        except ValueError:
            raise ValueError(f"{name} must be {'a number' if kind is float else 'an integer'}, got {text.strip()!r}") from None
    return validate_knobs(knobs)


def format_sim_spec(knobs):
    """The canonical spec string of a knob dict: every knob, in SIMULATOR_DEFAULTS order."""
    knobs = validate_knobs(knobs)
    return "sim:" + ",".join(f"{k}={knobs[k]}" for k in SIMULATOR_DEFAULTS)


# -----------------------------------------------------------------------------
# personas: archetypes, preferences, profile text

def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]


def _draw_archetypes(rng, n):
    """n (name, preferences, flavour) triples: the named ones first, then random distinct ones."""
    archetypes = [(name, dict(zip(PARAMS, prefs)), flavour)
                  for name, (prefs, flavour) in list(NAMED_ARCHETYPES.items())[:n]]
    all_flavour = [f for _, flavour in NAMED_ARCHETYPES.values() for f in flavour]
    while len(archetypes) < n:
        prefs = {p: _pick(rng, VALUE_GRID[p]) for p in PARAMS}
        if any(prefs == a[1] for a in archetypes):
            continue
        flavour = tuple(_pick(rng, all_flavour) for _ in range(3))
        archetypes.append((f"archetype {len(archetypes) + 1}", prefs, flavour))
    return archetypes


def _level(value, low, high, words):
    return words[0] if value <= low else words[2] if value >= high else words[1]


def hint_phrase(device, param, value):
    """The profile-text phrase that truthfully hints one preference (qualitative, like people talk)."""
    if (device, param) == ("lights", "brightness"):
        return _level(value, 30, 70, ("dim lights", "softly lit rooms", "bright lights"))
    if (device, param) == ("lights", "colour"):
        return f"{value}-coloured light"
    if (device, param) == ("ac", "temperature"):
        return _level(value, 20, 24, ("a cool room", "a mild room temperature", "a warm room"))
    if (device, param) == ("ac", "mode"):
        return f"the AC on {value} mode"
    if (device, param) == ("speaker", "volume"):
        return _level(value, 30, 70, ("quiet music", "music at a moderate volume", "loud music"))
    if (device, param) == ("speaker", "equalizer"):
        return {"bass": "bass-heavy sound", "treble": "crisp treble", "flat": "a flat, neutral sound",
                "vocal": "clear vocals"}[value]
    if (device, param) == ("tv", "volume"):
        return _level(value, 20, 40, ("a quiet TV", "the TV at a medium volume", "a loud TV"))
    if (device, param) == ("tv", "input"):
        return {"hdmi1": "the console on HDMI 1", "hdmi2": "the PC on HDMI 2", "netflix": "Netflix",
                "youtube": "YouTube", "antenna": "broadcast TV"}[value]
    if (device, param) == ("security", "mode"):
        return {"armed": "the alarm always armed", "home": "the alarm in home mode",
                "disarmed": "the alarm switched off"}[value]
    raise KeyError((device, param))


def profile_hint_count(profile, preferences):
    """How many of a persona's preferences its profile text hints truthfully (hint_phrase found)."""
    return sum(hint_phrase(d, p, v) in profile for (d, p), v in preferences.items())


def _profile_text(rng, preferences, hinted, flavour_pool):
    """1-3 sentences: a biography (hobbies from a random archetype: may mislead), then the true hints."""
    name, job = _pick(rng, FIRST_NAMES), _pick(rng, JOBS)
    age = int(rng.integers(22, 80))
    hobbies = _pick(rng, flavour_pool)
    hobby_a, hobby_b = (hobbies[i] for i in rng.permutation(len(hobbies))[:2])
    article = "an" if job[0] in "aeiou" else "a"
    text = f"{name}, {age}, is {article} {job} who {hobby_a} and {hobby_b}."
    phrases = [hint_phrase(d, p, preferences[(d, p)]) for d, p in hinted]
    if phrases:
        half = (len(phrases) + 1) // 2 if len(phrases) > 4 else len(phrases)
        for chunk, lead in ((phrases[:half], "Likes"), (phrases[half:], "Also prefers")):
            if chunk:
                listed = chunk[0] if len(chunk) == 1 else ", ".join(chunk[:-1]) + " and " + chunk[-1]
                text += f" {lead} {listed}."
    return text


def _draw_personas(rng, n_personas, n_archetypes, noise, fidelity):
    archetypes = _draw_archetypes(rng, n_archetypes)
    flavour_pool = [a[2] for a in archetypes]
    # round-robin then shuffle: every archetype is used once there are at least as many personas
    assignment = [i % n_archetypes for i in range(n_personas)]
    assignment = [assignment[i] for i in rng.permutation(n_personas)]
    n_hints = int(math.floor(fidelity * len(PARAMS) + 0.5))
    width = max(3, len(str(n_personas - 1)))
    personas = []
    for i, a in enumerate(assignment):
        name, base, _ = archetypes[a]
        preferences = {}
        for p in PARAMS:
            value = base[p]
            if rng.random() < noise:  # deviate: any other value of the grid
                others = [v for v in VALUE_GRID[p] if v != value]
                value = _pick(rng, others)
            preferences[p] = value
        hinted = tuple(PARAMS[j] for j in sorted(rng.permutation(len(PARAMS))[:n_hints]))
        profile = _profile_text(rng, preferences, hinted, flavour_pool)
        personas.append(SimPersona(f"p{i:0{width}d}", name, preferences, hinted, profile))
    return personas


# -----------------------------------------------------------------------------
# requests and replies

# personal scenes: user phrasings that name no value, and the preferences the right reply uses
SCENES = {
    "evening": ([("lights", "brightness"), ("lights", "colour"), ("ac", "temperature")],
                ["Make the living room cosy for the evening, the way I like it.",
                 "Evening mode please, like usual.",
                 "Set up the house for a relaxed evening, my usual way."]),
    "movie": ([("tv", "input"), ("tv", "volume"), ("lights", "brightness")],
              ["Movie time, set things up as usual.",
               "I'm about to watch something, you know how I like it.",
               "Get the TV ready for me, the usual."]),
    "music": ([("speaker", "volume"), ("speaker", "equalizer")],
              ["Play some music the way I like it.",
               "Put the speaker on my usual settings.",
               "Music please, the way I always have it."]),
    "climate": ([("ac", "temperature"), ("ac", "mode")],
                ["It's stuffy in here, set the AC how I like it.",
                 "Make the air comfortable for me, as usual."]),
    "lights": ([("lights", "brightness"), ("lights", "colour")],
               ["Set the lights the way I like them.",
                "Lights please, my usual."]),
    "bedtime": ([("security", "mode"), ("ac", "temperature")],
                ["I'm off to bed, lock up and set the room like always.",
                 "Good night, do the usual for the night."]),
}

_OPENERS = ("", "Please ", "Could you ", "Hey, ")
_INPUT_NAMES = {"hdmi1": "HDMI 1", "hdmi2": "HDMI 2", "netflix": "Netflix", "youtube": "YouTube",
                "antenna": "antenna"}


def _clause(rng, device, settings):
    """An explicit request for one device, naming every value (settings: param -> value)."""
    s = settings
    if device == "lights":
        if len(s) == 2:
            return f"set the lights to {s['brightness']}% and {s['colour']}"
        if "brightness" in s:
            verb = "dim" if s["brightness"] < 50 else "brighten"
            return _pick(rng, [f"{verb} the lights to {s['brightness']}%", f"set the lights to {s['brightness']} percent"])
        return _pick(rng, [f"make the lights {s['colour']}", f"change the light colour to {s['colour']}"])
    if device == "ac":
        if len(s) == 2:
            return f"set the AC to {s['temperature']} degrees in {s['mode']} mode"
        if "temperature" in s:
            return _pick(rng, [f"set the AC to {s['temperature']} degrees", f"put the air conditioner on {s['temperature']} degrees"])
        return _pick(rng, [f"switch the AC to {s['mode']} mode", f"put the air conditioner in {s['mode']} mode"])
    if device == "speaker":
        if len(s) == 2:
            return f"play the speaker at volume {s['volume']} with the {s['equalizer']} equalizer"
        if "volume" in s:
            return f"set the speaker volume to {s['volume']}"
        return f"set the speaker equalizer to {s['equalizer']}"
    if device == "tv":
        if len(s) == 2:
            return f"put the TV on {_INPUT_NAMES[s['input']]} at volume {s['volume']}"
        if "volume" in s:
            return _pick(rng, [f"set the TV volume to {s['volume']}", f"turn the TV volume to {s['volume']}"])
        return f"switch the TV to {_INPUT_NAMES[s['input']]}"
    if device == "security":
        return {"armed": "arm the security system", "disarmed": "disarm the alarm",
                "home": "set the alarm to home mode"}[s["mode"]]
    raise KeyError(device)


def _general_exchange(rng):
    """(user text, actions): 1-2 devices, 1-2 parameters each, random values from VALUE_GRID."""
    devices = list(DEVICES)
    chosen = [devices[i] for i in rng.permutation(len(devices))[:int(rng.integers(1, 3))]]
    actions, clauses = [], []
    for device in chosen:
        params = list(DEVICES[device])
        if len(params) > 1 and rng.random() < 0.5:
            params = [_pick(rng, params)]
        settings = {p: _pick(rng, VALUE_GRID[(device, p)]) for p in params}
        actions += [(device, p, v) for p, v in settings.items()]
        clauses.append(_clause(rng, device, settings))
    opener = _pick(rng, _OPENERS)
    text = opener + " and ".join(clauses)
    text = text[0].upper() + text[1:] + ("?" if opener == "Could you " else ".")
    return text, actions


def _personal_exchange(rng, persona, avoid=None):
    """(user text, actions): a scene in the user's words, answered with the persona's preferences."""
    names = [s for s in SCENES if s != avoid]
    scene = _pick(rng, names)
    params, phrasings = SCENES[scene]
    actions = [(d, p, persona.preferences[(d, p)]) for d, p in params]
    return _pick(rng, phrasings), actions, scene


def _dialogue(rng, persona, kind):
    n_exchanges = 2 if rng.random() < TWO_EXCHANGE_SHARE else 1
    messages, scene = [], None
    for _ in range(n_exchanges):
        if kind == "general":
            text, actions = _general_exchange(rng)
        else:
            text, actions, scene = _personal_exchange(rng, persona, avoid=scene)
        messages.append({"role": "user", "text": text})
        messages.append({"role": "assistant", "text": render_actions(actions)})
    return messages


# -----------------------------------------------------------------------------
# the benchmark

def build_benchmark(**knobs):
    """(personas with their ground truth, records): simulate() plus what the records came from."""
    k = validate_knobs(knobs)
    rng = np.random.default_rng(k["seed"])
    personas = _draw_personas(rng, k["personas"], k["archetypes"], k["archetype_noise"], k["profile_fidelity"])
    records = []
    for persona in personas:
        for split in ("train", "val", "test"):
            n = k[f"{split}_per_persona"]
            n_personal = int(math.floor(n * k["personal_fraction"] + 0.5))
            kinds = ["personal"] * n_personal + ["general"] * (n - n_personal)
            kinds = [kinds[i] for i in rng.permutation(n)]
            for j, kind in enumerate(kinds):
                records.append({
                    "id": f"{persona.persona_id}-{split}-{j:03d}",
                    "persona_id": persona.persona_id,
                    "persona": persona.profile,
                    "split": split,
                    "kind": kind,
                    "messages": _dialogue(rng, persona, kind),
                })
    return personas, records


def simulate(personas=8, train_per_persona=30, val_per_persona=10, test_per_persona=10,
             personal_fraction=0.25, archetypes=5, archetype_noise=0.15, profile_fidelity=0.3, seed=0):
    """Records of the built-in benchmark in the dialogue JSONL format (DESIGN §3), deterministic for a seed."""
    return build_benchmark(
        personas=personas, train_per_persona=train_per_persona, val_per_persona=val_per_persona,
        test_per_persona=test_per_persona, personal_fraction=personal_fraction, archetypes=archetypes,
        archetype_noise=archetype_noise, profile_fidelity=profile_fidelity, seed=seed)[1]


def write_jsonl(records, path):
    """One JSON object per line, UTF-8, keys in record order: same records, same bytes."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
