"""The built-in benchmark: a deterministic smart-home persona simulator.

Dialogues shaped like the real EdgeWisePersona ones (calibrated on the 100 in tests/data with
engine.data.dialogue_stats; `engine synth --compare-to FILE` prints the comparison): five messages, user first and
last (one in ten has three), the user's situation in their words (weather, time of day, activity), the assistant
often asking for a value before acting, now and then a request the five devices cannot serve (answered without a
setting), lights and AC most of the settings, and nobody saying "the usual". Each persona has a preferred value per
device parameter, copied from an archetype (night owl, energy saver, ...) and changed per parameter with
probability `archetype_noise`; what the assistant supplies for it in a situation is drawn around that preference
(the usual value most of the time, a neighbouring one otherwise), shifted by the situation (dimmer for a film,
cooler on a hot day).

  - "general" dialogues state every value a reply sets ("Set the AC to 22 degrees in cool mode"), or leave some
    out and the assistant asks for them: every reply setting is stated (smarthome.stated_settings);
  - "personal" dialogues describe a situation and name no value ("It's sweltering in here. Could you sort out the
    AC for me?"): the assistant SUPPLIES the persona's own values, answerable only by knowing the persona.
`personal_fraction` is the share of personal dialogues, so it sets the share of reply settings the assistant
supplies (measured: 0.44 at 0.25, 0.15 at 0.05; the real dialogues: 0.06).

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

from engine.data.phrasing import (_VAGUE, REQUESTS, _answer_clause, _phrase, _pick, _sentence, hint_phrase,
                                  profile_hint_count, render_reply)  # noqa: F401 - profile_hint_count: part of the API
from engine.data.scenes import PARAMS, SCENE_WEIGHTS, SCENES, VALUE_GRID  # noqa: F401 - SCENES: part of the API
from engine.data.smarthome import DEVICES
from engine.data.talk import ALSO, OUTSIDE, THANKS, more_question, opening, situation, value_question, with_reason

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
SHORT_DIALOGUE = 0.1       # share of dialogues of one exchange and the user's last turn (3 messages); others have 5
ASK_SHARE = 0.65           # of general dialogues: the request leaves values out and the assistant asks for them
MORE_SHARE = 0.35          # acting replies that end asking about a setting of the device they left alone
OUTSIDE_SHARE = 0.1        # second requests that ask for something the five devices' settings cannot do
ONE_PARAM = 0.35           # general requests for one parameter of a device that has two on the grid
# the devices general requests are for: lights and AC dominate, as in the real dialogues
DEVICE_WEIGHTS = {"lights": 0.42, "ac": 0.38, "tv": 0.13, "speaker": 0.06, "security": 0.01}
MAX_REDRAWS = 200          # attempts to draw a val/test dialogue that repeats no train target

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

def actions_of(settings):
    """(device, parameter, value) triples of a settings dict {(device, param): value}, in its order."""
    return [(d, p, v) for (d, p), v in settings.items()]


def _weighted(rng, weights):
    """One key of `weights` (key -> weight), drawn with probability proportional to its weight."""
    keys = list(weights)
    cum = np.cumsum([weights[k] for k in keys])
    return keys[min(int(np.searchsorted(cum, rng.random() * cum[-1], side="right")), len(keys) - 1)]


def _by_device(settings):
    out = {}
    for (d, p), v in settings.items():
        out.setdefault(d, {})[p] = v
    return out


def _more(rng, settings):
    """With probability MORE_SHARE, a question about a setting of a device the reply set but left alone ("" else)."""
    if rng.random() >= MORE_SHARE:
        return ""
    left = [p for d, p in PARAMS if d in {d for d, _ in settings} and (d, p) not in settings]
    return more_question(rng, _pick(rng, left)) if left else ""


def _reply(rng, settings):
    return render_reply(rng, actions_of(settings), _more(rng, settings))


# -----------------------------------------------------------------------------
# requests: general ones state their values (or the assistant asks for them); the user's last turn

def _device_settings(rng, device):
    """Random values of one device's settings: all its parameters on the grid, or one of them."""
    params = [p for p in DEVICES[device] if (device, p) in VALUE_GRID]
    if len(params) > 1 and rng.random() < ONE_PARAM:
        params = [_pick(rng, params)]
    return {(device, p): _pick(rng, VALUE_GRID[(device, p)]) for p in params}


def _request(rng, settings):
    """A request that states every value of `settings`."""
    return _sentence(rng, [_phrase(rng, REQUESTS, d, s) for d, s in _by_device(settings).items()])


def _vague(rng, device, stated):
    """A request for `device` stating only `stated` (param -> value): a partial or a value-less request."""
    if stated:
        return _sentence(rng, [_phrase(rng, REQUESTS, device, stated)])
    return _pick(rng, _VAGUE[device][0])


def _last_turn(rng):
    """The user's last turn, which the dialogue leaves unanswered: a new request, often with its values."""
    r = rng.random()
    if r < 0.75:
        text = _request(rng, _device_settings(rng, _weighted(rng, DEVICE_WEIGHTS)))
    elif r < 0.92:
        text = _pick(rng, _VAGUE[_pick(rng, tuple(_VAGUE))][0])
    else:
        text = _pick(rng, OUTSIDE)[0]
    also = _pick(rng, ALSO)
    if also:
        text = also + (text[0].lower() + text[1:] if text[1:2].islower() and not text.startswith("I ") else text)
    return with_reason(rng, (_pick(rng, THANKS) + text).strip())


def _general_dialogue(rng, short):
    """Messages of a general dialogue: every value of a reply is stated in the dialogue before it."""
    device = _weighted(rng, DEVICE_WEIGHTS)
    settings = _device_settings(rng, device)
    if not short and device in _VAGUE and rng.random() < ASK_SHARE:  # values left out: the assistant asks
        keys = list(settings)
        n_stated = int(len(keys) > 1 and rng.random() < 0.7)  # often one value stated, the other asked for
        stated = [keys[i] for i in sorted(rng.permutation(len(keys))[:n_stated])]
        missing = {p: v for (_, p), v in settings.items() if (device, p) not in stated}
        question = value_question(rng, device, list(missing))
        answer = _answer_clause(rng, device, missing)
        reply = _reply(rng, settings)
        return [_user(opening(rng, _vague(rng, device, {p: settings[(device, p)] for _, p in stated}))),
                _assistant(question, question), _user(answer[0].upper() + answer[1:] + "."),
                _assistant(reply, reply), _user(_last_turn(rng))]
    reply = _reply(rng, settings)
    messages = [_user(opening(rng, _request(rng, settings))), _assistant(reply, reply)]
    if not short:
        if rng.random() < OUTSIDE_SHARE:
            text, reply = _pick(rng, OUTSIDE)
        else:
            second = _device_settings(rng, _weighted(rng, DEVICE_WEIGHTS))
            text, reply = _request(rng, second), _reply(rng, second)
        messages += [_user(with_reason(rng, (_pick(rng, THANKS) + text).strip())), _assistant(reply, reply)]
    return messages + [_user(_last_turn(rng))]


# -----------------------------------------------------------------------------
# personal requests: a situation, no value named; the assistant supplies the persona's

def _noisy(rng, persona, settings, fixed=()):
    """The persona's values in this situation: each its usual one with probability CONSISTENCY, else a neighbour
    on the grid (numbers) or its second favourite (categories)."""
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


def _personal_exchange(rng, persona, population, avoid=None, first=True):
    """(user text, reply, persona-blind reply, scene, cue): a situation in the user's words (no value named; the
    first turn of a dialogue opens with more of the situation), answered with the persona's own values (and,
    blind, with the population's)."""
    scene_name = _weighted(rng, {s: w for s, w in SCENE_WEIGHTS.items() if s != avoid})
    scene = SCENES[scene_name]
    cue = _pick(rng, tuple(scene["cues"]))
    phrase = _pick(rng, scene["cues"][cue])
    template = _pick(rng, scene["asks"])
    text = template.replace("{Cue}", phrase[0].upper() + phrase[1:]).replace("{cue}", phrase)
    text = opening(rng, text, situation(rng, int(rng.integers(1, 3)))) if first else \
        with_reason(rng, (_pick(rng, THANKS) + text).strip(), 0.4)
    settings = _noisy(rng, persona, scene["settings"](persona.preferences, cue), scene.get("fixed", ()))
    blind = scene["settings"](population, cue)
    ask = _more(rng, settings)
    state = rng.bit_generator.state  # the blind reply is phrased like the real one: same choices
    reply = render_reply(rng, actions_of(settings), ask)
    rng.bit_generator.state = state
    blind_reply = render_reply(rng, actions_of(blind), ask)
    return text, reply, blind_reply, scene_name, cue


def _personal_dialogue(rng, persona, population, short):
    text, reply, blind, scene, _ = _personal_exchange(rng, persona, population)
    messages = [_user(text), _assistant(reply, blind)]
    if not short:
        if rng.random() < OUTSIDE_SHARE:
            text, reply = _pick(rng, OUTSIDE)
            messages += [_user((_pick(rng, THANKS) + text).strip()), _assistant(reply, reply)]
        else:
            text, reply, blind, _, _ = _personal_exchange(rng, persona, population, avoid=scene, first=False)
            messages += [_user(text), _assistant(reply, blind)]
    return messages + [_user(_last_turn(rng))]


def _user(text):
    return {"role": "user", "text": text}


def _assistant(text, blind):
    return {"role": "assistant", "text": text, "persona_blind": blind}


def _dialogue(rng, persona, population, kind):
    short = rng.random() < SHORT_DIALOGUE
    if kind == "general":
        return _general_dialogue(rng, short)
    return _personal_dialogue(rng, persona, population, short)


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
