"""The built-in benchmark: a deterministic smart-home persona simulator.

Dialogues in the style of EdgeWisePersona: multi-turn, in varied natural language, with clarifying
questions and follow-ups, and the persona's habits showing through context (weather, time of day,
activity). Each persona has a preferred value per device parameter, copied from an archetype (night
owl, energy saver, ...) and changed per parameter with probability `archetype_noise`; what it asks for
in a given situation is drawn from a distribution around that preference (the usual value most of the
time, a neighbouring one otherwise), shifted by the situation (dimmer for a film, cooler on a hot day).

  - "general" requests name their values ("Set the AC to 22 degrees in cool mode"), or leave them out
    and the assistant asks; the right reply is answerable from the dialogue alone;
  - "personal" requests refer to habits ("It's sweltering, sort the air out the way I like it"): the
    right reply is the persona's own values, answerable only by knowing the persona.

For every target the simulator also writes the persona-blind answer (`persona_blind` on the assistant
message): what a good assistant that ignores the persona would do, i.e. the situation's shift applied
to the most common preference among the dataset's personas. For general targets it is the reply
itself. Scoring it against the references gives the ceiling of any persona-blind method.

No val or test target repeats (context and reply) a train target of its persona: such dialogues are
drawn again. Replies are written so that engine.data.smarthome.parse_actions recovers exactly their actions
(asserted in the tests on thousands of dialogues). Only numpy.random.default_rng(seed) is used: same
knobs, same bytes. The profile text mixes a biography (which may point at the wrong archetype) with
true preference hints; `profile_fidelity` sets the share of preferences that are hinted.
"""
import json
import math
from dataclasses import dataclass

import numpy as np

from engine.data.phrasing import (_FOLLOW_UPS, _VAGUE, REQUESTS, _answer_clause, _phrase, _pick, _sentence, hint_phrase,
                                  profile_hint_count, render_reply)  # noqa: F401 - profile_hint_count: part of the API
from engine.data.smarthome import DEVICES

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
    "train_spread": 0.0,
}
# knobs added after specs were first stored: written into a spec only when set, so older specs keep their spelling
LATE_KNOBS = ("train_spread",)

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
    "train_spread": (float, 0.0, 1.0),
}

CONSISTENCY = 0.8          # a persona asks for its usual value this often; otherwise a neighbouring one
SECOND_EXCHANGE = 0.4      # share of dialogues with a second exchange (clarification, follow-up, second scene)
CLARIFY_SHARE = 0.35       # of general two-exchange dialogues: the request leaves the values out, the assistant asks
MAX_REDRAWS = 200          # attempts to draw a val/test dialogue that repeats no train target

# The values preferences and requests are drawn from: a coarse grid per numeric parameter, so that
# preferences are distinct and a small model can learn them; categorical domains as they are.
VALUE_GRID = {
    ("lights", "brightness"): tuple(range(10, 101, 10)),
    ("lights", "color"): DEVICES["lights"]["color"],
    ("ac", "temperature"): tuple(range(17, 29)),
    ("ac", "mode"): DEVICES["ac"]["mode"],
    ("speaker", "volume"): tuple(range(10, 91, 5)),
    ("speaker", "equalizer"): DEVICES["speaker"]["equalizer"],
    ("tv", "volume"): tuple(range(5, 61, 5)),
    ("tv", "input_source"): DEVICES["tv"]["input_source"],
    ("security", "armed"): DEVICES["security"]["armed"],
}
# every (device, parameter) a persona has a preference for: a subset of smarthome.DEVICES (no lights mode,
# AC fan speed, TV brightness or alarm volume here), so requests and replies only ever name these
PARAMS = tuple(VALUE_GRID)

# name -> (preferences in PARAMS order, biography flavour). Beyond these, archetypes are drawn at random.
NAMED_ARCHETYPES = {
    "night owl": ((30, "warm", 22, "auto", 40, "balanced", 25, "netflix", "true"),
                  ("works night shifts", "plays chess online", "stargazes")),
    "energy saver": ((40, "neutral", 26, "auto", 20, "balanced", 15, "av", "true"),
                     ("cycles to work", "grows vegetables", "repairs old radios")),
    "cinephile": ((20, "cool", 21, "cool", 50, "bass boost", 45, "hdmi1", "true"),
                  ("collects film posters", "writes movie reviews", "loves noir films")),
    "fitness fan": ((100, "cool", 18, "cool", 80, "bass boost", 30, "youtube", "false"),
                    ("runs marathons", "lifts weights", "teaches spinning classes")),
    "early bird": ((80, "neutral", 23, "heat", 30, "treble boost", 20, "av", "true"),
                   ("bakes bread at dawn", "walks the dog at six", "does crosswords")),
    "party host": ((70, "warm", 19, "cool", 90, "bass boost", 40, "youtube", "false"),
                   ("hosts dinner parties", "DJs at weddings", "loves karaoke")),
    "bookworm": ((60, "warm", 24, "heat", 15, "balanced", 10, "netflix", "true"),
                 ("reads novels", "knits", "volunteers at the library")),
    "gamer": ((50, "neutral", 20, "auto", 60, "treble boost", 55, "hdmi2", "true"),
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
    preferences: dict   # (device, parameter) -> usual value, for every entry of PARAMS
    second: dict        # (device, parameter) -> the categorical value it picks when not the usual one
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
            ok_type = ok_type or (isinstance(value, float) and math.isfinite(value))
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
        if name in knobs:
            raise ValueError(f"simulator knob {name!r} given twice; give each knob once")
        kind = _KNOB_RANGES[name][0]
        try:
            knobs[name] = kind(text.strip())
        except ValueError:
            raise ValueError(f"{name} must be {'a number' if kind is float else 'an integer'}, got {text.strip()!r}") from None
    return validate_knobs(knobs)


def format_sim_spec(knobs):
    """The canonical spec string of a knob dict: every knob, in SIMULATOR_DEFAULTS order."""
    knobs = validate_knobs(knobs)
    return "sim:" + ",".join(f"{k}={knobs[k]}" for k in SIMULATOR_DEFAULTS
                             if k not in LATE_KNOBS or knobs[k] != SIMULATOR_DEFAULTS[k])


# -----------------------------------------------------------------------------
# personas: archetypes, preferences, profile text

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
        preferences, second = {}, {}
        for p in PARAMS:
            value = base[p]
            if rng.random() < noise:  # deviate: any other value of the grid
                value = _pick(rng, [v for v in VALUE_GRID[p] if v != value])
            preferences[p] = value
            second[p] = _pick(rng, [v for v in VALUE_GRID[p] if v != value])
        hinted = tuple(PARAMS[j] for j in sorted(rng.permutation(len(PARAMS))[:n_hints]))
        profile = _profile_text(rng, preferences, hinted, flavour_pool)
        personas.append(SimPersona(f"p{i:0{width}d}", name, preferences, second, hinted, profile))
    return personas


def population_preferences(personas):
    """The most common usual value of each parameter among the personas (ties: the one nearest the median
    for numbers, the first in the domain's order otherwise): what a persona-blind assistant should assume."""
    out = {}
    for p in PARAMS:
        values = [x.preferences[p] for x in personas]
        counts = {v: values.count(v) for v in VALUE_GRID[p]}
        top = max(counts.values())
        tied = [v for v in VALUE_GRID[p] if counts[v] == top]
        if isinstance(tied[0], int):
            median = float(np.median(values))
            tied.sort(key=lambda v: (abs(v - median), v))
        out[p] = tied[0]
    return out


# -----------------------------------------------------------------------------
# situations: what a personal request asks for, given the persona's usual values

def _snap(param, value):
    """The grid value nearest to `value` (situations shift numbers; the grid stays the vocabulary)."""
    grid = VALUE_GRID[param]
    return min(grid, key=lambda v: (abs(v - value), v))


def _shift(param, prefs, delta):
    return _snap(param, prefs[param] + delta)


L_B, L_C = ("lights", "brightness"), ("lights", "color")
AC_T, AC_M = ("ac", "temperature"), ("ac", "mode")
SP_V, SP_E = ("speaker", "volume"), ("speaker", "equalizer")
TV_V, TV_I = ("tv", "volume"), ("tv", "input_source")
SEC = ("security", "armed")

# A scene: the settings it asks for as a function of (usual values, cue), the cues that can come with it,
# the user's phrasings ({cue} is a phrase of the cue), and the settings that are the same for everyone
# ("fixed": not drawn around a persona's habit). Shifts are the same for everyone: only the usual values
# make a reply personal.
SCENES = {
    "evening": {
        "cues": {"evening": ("this evening", "tonight", "now that it's getting dark")},
        "settings": lambda u, cue: {L_B: u[L_B], L_C: u[L_C], AC_T: u[AC_T]},
        "asks": ("Make the living room cosy {cue}, the way I like it.",
                 "Evening mode please, like usual — it's {cue}.",
                 "Set the house up for a relaxed evening, my usual way.",
                 "I'm home for the night. Do my usual evening setup?",
                 "Can you get the place ready for {cue}? You know how I like it.",
                 "Time to wind down {cue}. Set things up as always."),
    },
    "movie": {
        "cues": {"film": ("a film", "a movie", "the new series", "a documentary")},
        "settings": lambda u, cue: {TV_I: u[TV_I], TV_V: u[TV_V], L_B: _shift(L_B, u, -20)},
        "asks": ("I'm about to watch {cue}, set things up how I like it.",
                 "Movie night! Get the TV ready for {cue}, the usual.",
                 "Put on my usual settings for {cue}, please.",
                 "Getting comfy for {cue}. You know what to do.",
                 "Can you sort the TV and lights for {cue}? As usual."),
    },
    "music": {
        "cues": {"cooking": ("while I cook", "while I'm making dinner"),
                 "relaxing": ("while I relax", "while I unwind on the sofa"),
                 "party": ("for the friends coming over", "for a little party tonight")},
        "settings": lambda u, cue: {SP_V: _shift(SP_V, u, {"cooking": -10, "relaxing": 0, "party": 20}[cue]),
                                    SP_E: u[SP_E]},
        "asks": ("Play some music {cue}, the way I like it.",
                 "Music please {cue} — my usual settings.",
                 "Could you put the speaker on {cue}? The usual way.",
                 "I'd like some tunes {cue}. Set it up like always.",
                 "Get the speaker going {cue}, as usual."),
    },
    "climate": {
        "cues": {"hot": ("it's boiling outside", "it's really hot today", "it's sweltering in here",
                         "this heatwave is brutal"),
                 "cold": ("it's freezing outside", "it's really chilly today", "it's icy cold in here",
                          "I'm frozen after that walk"),
                 "humid": ("it's so muggy today", "the air feels sticky", "it's really humid")},
        "fixed": (AC_M,),
        "settings": lambda u, cue: {
            AC_M: {"hot": "cool", "cold": "heat", "humid": "auto"}[cue],
            AC_T: _shift(AC_T, u, {"hot": -2, "cold": 2, "humid": 0}[cue])},
        "asks": ("{Cue}. Sort the air out the way I like it.",
                 "{Cue} — can you set the AC how I usually have it?",
                 "Ugh, {cue}. Make the room comfortable for me, as usual.",
                 "{Cue}, please fix the climate like always.",
                 "Could you adjust the air conditioning? {Cue}. My usual, please."),
    },
    "reading": {
        "cues": {"reading": ("read for a while", "finish my book", "go through some papers")},
        "settings": lambda u, cue: {L_B: _shift(L_B, u, 30), L_C: u[L_C]},
        "asks": ("I want to {cue}. Set the lights the way I like them for that.",
                 "Going to {cue} — my usual reading light, please.",
                 "Could you light the room so I can {cue}? As usual.",
                 "Time to {cue}. Lights like always, please."),
    },
    "bedtime": {
        "cues": {"night": ("I'm off to bed", "heading to sleep now", "time for bed"),
                 },
        "fixed": (L_B,),
        "settings": lambda u, cue: {SEC: u[SEC], AC_T: _shift(AC_T, u, -1), L_B: 10},
        "asks": ("{Cue}. Lock up and set the room like always.",
                 "Good night! {Cue}, do the usual.",
                 "{Cue} — night routine, please.",
                 "Can you get the house ready? {Cue}. The usual way."),
    },
    "workout": {
        "cues": {"workout": ("a workout", "my yoga session", "a quick HIIT session", "some stretching")},
        "settings": lambda u, cue: {SP_V: _shift(SP_V, u, 20), SP_E: u[SP_E], AC_T: _shift(AC_T, u, -3)},
        "asks": ("Starting {cue} at home. Set things up how I like.",
                 "Get the room ready for {cue}, my usual way.",
                 "About to do {cue} — music and air as usual, please.",
                 "Can you prep the living room for {cue}? Like always."),
    },
    "morning": {
        "cues": {"morning": ("Good morning", "Morning", "I'm up")},
        "fixed": (SEC,),
        "settings": lambda u, cue: {L_B: _shift(L_B, u, 20), L_C: u[L_C], SEC: "false"},
        "asks": ("{Cue}! Start my day the usual way.",
                 "{Cue}. Morning routine, please.",
                 "{Cue} — can you wake the house up like always?",
                 "{Cue}. Do my usual morning settings."),
    },
}


def actions_of(settings):
    """(device, parameter, value) triples of a settings dict {(device, param): value}, in its order."""
    return [(d, p, v) for (d, p), v in settings.items()]


# -----------------------------------------------------------------------------
# requests

def _random_settings(rng):
    """1-2 devices, 1-2 parameters each, random values from VALUE_GRID: {(device, param): value}."""
    devices = list(DEVICES)
    chosen = [devices[i] for i in rng.permutation(len(devices))[:int(rng.integers(1, 3))]]
    settings = {}
    for device in chosen:
        params = [p for p in DEVICES[device] if (device, p) in VALUE_GRID]
        if len(params) > 1 and rng.random() < 0.5:
            params = [_pick(rng, params)]
        for p in params:
            settings[(device, p)] = _pick(rng, VALUE_GRID[(device, p)])
    return settings


def _by_device(settings):
    out = {}
    for (d, p), v in settings.items():
        out.setdefault(d, {})[p] = v
    return out


# clarifying exchanges: a request that names a device but no value, the assistant's question
def _general_dialogue(rng, two):
    """Messages of a general dialogue: every value is in the dialogue itself."""
    kind = "plain"
    if two:
        kind = "clarify" if rng.random() < CLARIFY_SHARE else "follow_up"
    if kind == "clarify":
        device = _pick(rng, tuple(_VAGUE))
        asks, questions = _VAGUE[device]
        settings = {(device, p): _pick(rng, VALUE_GRID[(device, p)])
                    for p in DEVICES[device] if (device, p) in VALUE_GRID}
        question = _pick(rng, questions)
        answer = _answer_clause(rng, device, _by_device(settings)[device])
        answer = answer[0].upper() + answer[1:] + "."
        reply = render_reply(rng, actions_of(settings))
        return [_user(_pick(rng, asks)), _assistant(question, question),
                _user(answer), _assistant(reply, reply)]
    settings = _random_settings(rng)
    text = _sentence(rng, [_phrase(rng, REQUESTS, d, s) for d, s in _by_device(settings).items()])
    reply = render_reply(rng, actions_of(settings))
    messages = [_user(text), _assistant(reply, reply)]
    if kind == "follow_up":
        adjustable = [p for p in settings if p in _FOLLOW_UPS]
        if not adjustable:  # nothing numeric to nudge: a second, unrelated request instead
            settings = _random_settings(rng)
            text = _sentence(rng, [_phrase(rng, REQUESTS, d, s) for d, s in _by_device(settings).items()])
        else:
            param = _pick(rng, adjustable)
            grid = VALUE_GRID[param]
            (phrasings, step), = [_FOLLOW_UPS[param][int(rng.integers(2))]]
            i = grid.index(settings[param]) + step
            if not 0 <= i < len(grid):  # already at the end of the range: go the other way
                phrasings, step = _FOLLOW_UPS[param][0 if step < 0 else 1]
                i = grid.index(settings[param]) + step
            settings = {param: grid[i]}
            text = _pick(rng, phrasings)
        reply = render_reply(rng, actions_of(settings))
        messages += [_user(text), _assistant(reply, reply)]
    return messages


def _noisy(rng, persona, settings, fixed=()):
    """The persona's request in this situation: each value its usual one with probability CONSISTENCY,
    else a neighbour on the grid (numbers) or its second favourite (categories)."""
    out = {}
    for p, v in settings.items():
        if p not in fixed and rng.random() >= CONSISTENCY:
            grid = VALUE_GRID[p]
            if isinstance(v, int):
                i = grid.index(v)
                neighbours = [grid[j] for j in (i - 1, i + 1) if 0 <= j < len(grid)]
                v = _pick(rng, neighbours)
            else:
                v = persona.second[p] if persona.second[p] != v else _pick(rng, [x for x in grid if x != v])
        out[p] = v
    return out


def _personal_exchange(rng, persona, population, avoid=None):
    """(user text, reply, persona-blind reply, scene, cue): a situation in the user's words, answered with
    the persona's own values (and, blind, with the population's)."""
    scene_name = _pick(rng, [s for s in SCENES if s != avoid])
    scene = SCENES[scene_name]
    cue = _pick(rng, tuple(scene["cues"]))
    phrase = _pick(rng, scene["cues"][cue])
    template = _pick(rng, scene["asks"])
    text = template.replace("{Cue}", phrase[0].upper() + phrase[1:]).replace("{cue}", phrase)
    opener = _pick(rng, ("", "", "Hey, ", "Hi! ", "Okay, "))
    if opener:
        text = opener + text[0].lower() + text[1:] if not text.startswith("I") else opener + text
    settings = _noisy(rng, persona, scene["settings"](persona.preferences, cue), scene.get("fixed", ()))
    blind = scene["settings"](population, cue)
    state = rng.bit_generator.state  # the blind reply is phrased like the real one: same choices
    reply = render_reply(rng, actions_of(settings))
    rng.bit_generator.state = state
    blind_reply = render_reply(rng, actions_of(blind))
    return text, reply, blind_reply, scene_name, cue


def _personal_dialogue(rng, persona, population, two):
    messages, scene = [], None
    for _ in range(2 if two else 1):
        text, reply, blind, scene, _ = _personal_exchange(rng, persona, population, avoid=scene)
        messages += [_user(text), _assistant(reply, blind)]
    return messages


def _user(text):
    return {"role": "user", "text": text}


def _assistant(text, blind):
    return {"role": "assistant", "text": text, "persona_blind": blind}


def _dialogue(rng, persona, population, kind):
    two = rng.random() < SECOND_EXCHANGE
    if kind == "general":
        return _general_dialogue(rng, two)
    return _personal_dialogue(rng, persona, population, two)


def target_keys(messages):
    """(context, reply) of every assistant turn of a dialogue: what "the same target" means."""
    keys = []
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            keys.append((tuple((x["role"], x["text"]) for x in messages[:i]), m["text"]))
    return keys


# -----------------------------------------------------------------------------
# the benchmark

def build_benchmark(**knobs):
    """(personas with their ground truth, records): simulate() plus what the records came from."""
    k = validate_knobs(knobs)
    rng = np.random.default_rng(k["seed"])
    personas = _draw_personas(rng, k["personas"], k["archetypes"], k["archetype_noise"], k["profile_fidelity"])
    population = population_preferences(personas)
    train_sizes = _train_sizes(k)
    records = []
    for persona, n_train in zip(personas, train_sizes):
        seen = set()  # the persona's train targets
        for split in ("train", "val", "test"):
            n = n_train if split == "train" else k[f"{split}_per_persona"]
            n_personal = int(math.floor(n * k["personal_fraction"] + 0.5))
            kinds = ["personal"] * n_personal + ["general"] * (n - n_personal)
            kinds = [kinds[i] for i in rng.permutation(n)]
            for j, kind in enumerate(kinds):
                for _ in range(MAX_REDRAWS):
                    messages = _dialogue(rng, persona, population, kind)
                    keys = target_keys(messages)
                    if split == "train" or not seen.intersection(keys):
                        break
                else:
                    raise RuntimeError(f"{persona.persona_id}: no {kind} {split} dialogue unlike the train ones "
                                       f"after {MAX_REDRAWS} draws")
                if split == "train":
                    seen.update(keys)
                records.append({
                    "id": f"{persona.persona_id}-{split}-{j:03d}",
                    "persona_id": persona.persona_id,
                    "persona": persona.profile,
                    "split": split,
                    "kind": kind,
                    "messages": messages,
                })
    return personas, records


def _train_sizes(k) -> list[int]:
    """Train dialogues per persona: train_per_persona each, or with train_spread s > 0 drawn uniformly in
    [(1 - s) T, (1 + s) T] (at least 1), so a study can ask whether data-rich personas gain more. Drawn from
    a stream of their own: at s = 0 nothing is drawn and the data is what it always was."""
    T, s = k["train_per_persona"], k["train_spread"]
    if s == 0:
        return [T] * k["personas"]
    u = np.random.default_rng([k["seed"], 7919]).uniform(-1.0, 1.0, k["personas"])
    return [max(1, int(round(T * (1 + s * x)))) for x in u]


def simulate(personas=8, train_per_persona=30, val_per_persona=10, test_per_persona=10,
             personal_fraction=0.25, archetypes=5, archetype_noise=0.15, profile_fidelity=0.3, seed=0,
             train_spread=0.0):
    """Records of the built-in benchmark in the dialogue JSONL format, deterministic for a seed."""
    return build_benchmark(
        personas=personas, train_per_persona=train_per_persona, val_per_persona=val_per_persona,
        test_per_persona=test_per_persona, personal_fraction=personal_fraction, archetypes=archetypes,
        archetype_noise=archetype_noise, profile_fidelity=profile_fidelity, seed=seed, train_spread=train_spread)[1]


def write_jsonl(records, path):
    """One JSON object per line, UTF-8, keys in record order: same records, same bytes."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
