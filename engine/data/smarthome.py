"""The smart-home action vocabulary: devices, canonical replies, parsing and action metrics.

Everything that knows what a "device", "parameter" or "value" is lives here, so the simulator
that writes replies and the evaluator that scores generated replies can never disagree.

The vocabulary is EdgeWisePersona's (Bartkowiak & Podstawski, 2025; CC BY 4.0): the devices, parameter
names and value spellings of its routines. An action is a triple (device, parameter, value), with one
representation for values everywhere:
  - numeric parameters (a range in DEVICES): an int, e.g. ("ac", "temperature", 21), ("ac", "fan_speed", 2);
  - categorical parameters (a tuple in DEVICES): a lowercase string spelled as in EdgeWisePersona, e.g.
    ("tv", "input_source", "hdmi1"), ("speaker", "equalizer", "bass boost"), ("lights", "color", "neutral");
  - security "armed" is categorical too: the strings "true" / "false" (EdgeWisePersona's booleans,
    lowercased as JSON spells them), never Python bools (True == 1 would pass as a number).

parse_actions reads what a reply says is DONE: questions, offers ("I can set the lights to warm"),
suggestions and reports of the current state name no action (see its docstring for the rules).
"""
import json
import re

# device -> parameter -> value domain. A range is a numeric parameter (ints), a tuple is categorical.
# The first numeric parameter of a device is the one a bare number goes to ("set the TV to 30": volume).
DEVICES = {
    "lights": {
        "brightness": range(0, 101),
        "color": ("warm", "cool", "neutral"),
        "mode": ("static", "dynamic"),
    },
    "ac": {
        "temperature": range(16, 31),
        "mode": ("cool", "heat", "auto"),
        "fan_speed": range(0, 4),
    },
    "speaker": {
        "volume": range(0, 101),
        "equalizer": ("bass boost", "balanced", "treble boost"),
    },
    "tv": {
        "volume": range(0, 101),
        "brightness": range(0, 101),
        "input_source": ("hdmi1", "hdmi2", "av", "netflix", "youtube"),
    },
    "security": {
        "armed": ("true", "false"),
        "alarm_volume": range(0, 101),
    },
}


def is_numeric(device, param):
    return isinstance(DEVICES[device][param], range)


def _numeric_param(device):
    """The parameter a bare number goes to: the device's first numeric one."""
    return next((p for p in DEVICES[device] if is_numeric(device, p)), None)


def _accepts(device, param, value):
    domain = DEVICES[device][param]
    return isinstance(value, int) == isinstance(domain, range) and value in domain


def sort_actions(actions):
    """Triples in vocabulary order: devices, then parameters, as DEVICES lists them."""
    devices = list(DEVICES)
    return sorted(actions, key=lambda t: (devices.index(t[0]), list(DEVICES[t[0]]).index(t[1])))


# -----------------------------------------------------------------------------
# rendering: the canonical assistant reply

def render_actions(actions):
    """Canonical reply for a list of (device, parameter, value) triples.

    One fixed, terse shape ("Done: lights brightness 40, color warm; ac temperature 21, fan speed 2.") so that a
    135M model learns it from a few dozen examples and every value is spelled the way the parser reads it.
    Devices appear in order of first mention, parameters in the order given; "_" in a name is a space.
    """
    by_device = {}
    for device, param, value in actions:
        if device not in DEVICES or param not in DEVICES[device]:
            raise ValueError(f"unknown action ({device!r}, {param!r})")
        if isinstance(value, bool) or not _accepts(device, param, value):
            raise ValueError(f"value {value!r} is outside the domain of {device} {param}")
        by_device.setdefault(device, []).append(f"{param.replace('_', ' ')} {value}")
    if not by_device:
        return "Nothing to change."
    parts = [f"{device} " + ", ".join(settings) for device, settings in by_device.items()]
    return "Done: " + "; ".join(parts) + "."


# -----------------------------------------------------------------------------
# parsing: triples out of any reply text (canonical or free model text)

# Which sentences and clauses say something is done. A sentence ending in "?" is a question: its clauses
# count only up to the first one that asks ("Lights at 40%, anything else?" keeps "Lights at 40%"; "So 22
# degrees then?" keeps nothing). In any sentence, the clause with an offer, a suggestion, a refusal or a
# report of the current state, and everything after it in that sentence, is dropped.
_SENTENCES = re.compile(r"(?<=[.!?;])\s+|\n+")
_CLAUSE_STARTS = re.compile(r",|;|:\s|\s[-–—]+\s|\s(?:and|but|or|so|then)\s")
_ASKS = re.compile(r"\s*(?:what|which|who|whom|whose|where|when|why|how|would|will|do|does|did|shall|should|"
                   r"can|could|may|might|is|are|was|were|have|has|anything|any)\b")
_OFFER = re.compile(r"""
    \b(?:i|we)\s+(?:can|could|might|may|would)\b             # "I can set the lights to warm": an offer
  | \b(?:i|we)'d\b                                          # "I'd suggest", "I'd be happy to"
  | \bcan't\b | \bcannot\b | \bunable\b | \bnot\s+able\b     # refusals
  | \bif\s+you(?:'d|\s+would)?\s+(?:like|want|prefer|wish)\b
  | \b(?:shall|should)\s+(?:i|we)\b | \b(?:would|do)\s+you\b
  | \b(?:suggest|recommend)\w* | \bhow\s+about\b | \bwhat\s+about\b
  | \b(?:is|are)\s+currently\b | \bcurrently\s+(?:at|set|is|on)\b      # reports: nothing is changed
  | \bthe\s+current\s+\w+(?:\s+\w+)?\s+(?:is|of)\b
""", re.X)


def _statements(text, proposals):
    """The pieces of `text` that state what is done, sentence by sentence (all of it when proposals)."""
    text = text.replace("\u2019", "'")
    for sentence in _SENTENCES.split(text):
        sentence = sentence.strip()
        if not sentence or proposals:
            if sentence:
                yield sentence
            continue
        low = sentence.lower()
        question = bool(re.search(r"\?[\W_]*$", low))
        starts = [0] + [m.end() for m in _CLAUSE_STARTS.finditer(low)]
        cut = 0 if question else len(low)
        for k, start in enumerate(starts):
            clause = low[start:starts[k + 1] if k + 1 < len(starts) else len(low)]
            if _OFFER.search(clause) or (question and _ASKS.match(clause)):
                cut = start
                break
        kept = sentence[:cut].strip()
        if kept:
            yield kept


# Rewrites applied to the lowercased text before tokenising: multi-word names become one token.
_PHRASES = [
    (r"colou?r[\s-]?temperature", " color "),
    (r"alarm[\s-]?volume", " security alarm_volume "),
    (r"\bfan[\s-]?(?:speed|level)s?\b|\bfan\b", " fan_speed "),
    (r"\binput[\s-]?source\b|\binputs?\b|\bsources?\b", " input_source "),
    (r"\bbass[\s-]?boost(?:ed)?\b", " bass_boost "),
    (r"\btreble[\s-]?boost(?:ed)?\b", " treble_boost "),
    (r"\b(warm|cool|neutral)[\s-]?white\b", r" \1 "),
    (r"air[\s-]?conditioner(s)?|air[\s-]?conditioning|air[\s-]?con\b|aircon|\ba/c\b|thermostat|climate control",
     " ac "),
    (r"sound ?system|stereo|music player|\bradio\b", " speaker "),
    (r"television", " tv "),
    (r"alarm system|security system|\balarms?\b", " security "),
    (r"hdmi[\s-]?(?:1|one)\b", " hdmi1 "),
    (r"hdmi[\s-]?(?:2|two)\b", " hdmi2 "),
    (r"you ?tube", " youtube "),
    (r"[°º]\s*f(?![a-z])|\bfahrenheit\b", " fahrenheit "),
    (r"[°º]\s*c?(?![a-z])", " degrees "),
    (r"%|\bper ?cent\b", " percent "),
]

# single words -> (kind, canonical word); kinds: device, param, unit, value
_DEVICE_WORDS = {"light": "lights", "lights": "lights", "lamp": "lights", "lamps": "lights", "lighting": "lights",
                 "bulbs": "lights", "ac": "ac", "speaker": "speaker", "speakers": "speaker", "music": "speaker",
                 "tv": "tv", "telly": "tv", "security": "security"}
_PARAM_WORDS = {"brightness": "brightness", "color": "color", "colour": "color", "colors": "color",
                "colours": "color", "tone": "color", "hue": "color", "temperature": "temperature",
                "temp": "temperature", "mode": "mode", "volume": "volume", "vol": "volume",
                "equalizer": "equalizer", "equaliser": "equalizer", "eq": "equalizer", "fan_speed": "fan_speed",
                "speed": "fan_speed", "input_source": "input_source", "alarm_volume": "alarm_volume"}
_UNIT_WORDS = {"degrees": "degrees", "degree": "degrees", "deg": "degrees", "celsius": "degrees",
               "percent": "percent", "pct": "percent", "fahrenheit": "fahrenheit"}
# value words -> canonical value. STRONG ones name their device by themselves ("netflix" is the TV);
# the others are everyday words ("warm", "cool", "arm") that need a parameter or a device nearby.
_VALUE_WORDS = {"cooling": "cool", "heating": "heat", "automatic": "auto", "bass_boost": "bass boost",
                "bass": "bass boost", "treble_boost": "treble boost", "treble": "treble boost",
                "arm": "true", "arming": "true", "activate": "true", "activated": "true", "enable": "true",
                "enabled": "true", "disarm": "false", "disarming": "false", "deactivate": "false",
                "deactivated": "false", "disable": "false", "disabled": "false", "disarmed": "false",
                "armed": "true", "unarmed": "false"}
for _params in DEVICES.values():
    for _domain in _params.values():
        if not isinstance(_domain, range):
            _VALUE_WORDS.update({v.replace(" ", "_"): v for v in _domain})
_STRONG = {"hdmi1", "hdmi2", "av", "netflix", "youtube", "bass_boost", "treble_boost", "armed", "disarmed"}

# (device, parameter) of a categorical value only one device has: where a strong value word goes alone
_VALUE_OWNER = {}
for _d, _params in DEVICES.items():
    for _p, _domain in _params.items():
        if not isinstance(_domain, range):
            for _v in _domain:
                _VALUE_OWNER.setdefault(_v, []).append((_d, _p))
_VALUE_OWNER = {v: dp[0] for v, dp in _VALUE_OWNER.items() if len(dp) == 1}
# a parameter two devices share, named with neither in sight: "brightness" is the lights' (the room's);
# "volume" is not guessed (TV or speaker)
_DEFAULT_OWNER = {"brightness": "lights"}
# words that may stand between a parameter and its value: "fan speed to 2", "volume is now set to 30",
# "a temperature of 23", "mode: cool"
_CONNECTORS = {"to", "at", "of", "is", "are", "was", "now", "set", "on", "in", "a", "an", "the", "level", "be",
               "been", "has", "have", "being", "setting", "just", "already", "up", "down", "changed", "adjusted",
               "turned", "put", ":", "="}
_NEAR_DEVICE = {"of", "on", "the", "for", "your", "my", "in"}  # "brightness of the TV"

_TOKEN = re.compile(r"[a-z_]+[0-9]+|[0-9]+(?:\.[0-9]+)?|[a-z_']+|[,:;=]")


def _tokens(text):
    """(kind, word) pairs; kind is device / param / unit / value / number / conn / other."""
    text = text.lower()
    for pattern, replacement in _PHRASES:
        text = re.sub(pattern, replacement, text)
    raw = _TOKEN.findall(text)
    out = []
    for i, t in enumerate(raw):
        nxt = raw[i + 1] if i + 1 < len(raw) else ""
        if t[0].isdigit():
            out.append(("number", int(t)) if "." not in t else ("other", t))  # no fractional values anywhere
        elif t in _DEVICE_WORDS:
            out.append(("device", _DEVICE_WORDS[t]))
        elif t == "armed" and nxt in ("true", "false", ":", "=", "to"):
            out.append(("param", "armed"))  # "armed true", the canonical spelling
        elif t in _PARAM_WORDS:
            out.append(("param", _PARAM_WORDS[t]))
        elif t in _UNIT_WORDS:
            out.append(("unit", _UNIT_WORDS[t]))
        elif t in _VALUE_WORDS:
            out.append(("value", (_VALUE_WORDS[t], t in _STRONG)))
        else:
            out.append(("conn" if t in _CONNECTORS else "other", t))
    return out


def _resolve(param, value, device, tokens, i):
    """(device, parameter) that the parameter word tokens[i] names, given the current device and, when one
    is being bound, the value; None when it cannot be told (or the value fits none)."""
    if param == "volume" and device == "security":
        param = "alarm_volume"
    owners = [d for d in DEVICES if param in DEVICES[d]]
    ok = [d for d in owners if value is None or _accepts(d, param, value)]
    if device in ok:
        return device, param
    if len(owners) == 1:
        return (owners[0], param) if ok else None
    for j in range(i + 1, min(i + 5, len(tokens))):  # "brightness of the TV"
        kind, word = tokens[j]
        if kind == "device":
            return (word, param) if word in ok else None
        if word not in _NEAR_DEVICE:
            break
    if value is not None and len(ok) == 1:
        return ok[0], param  # "cool mode" is the AC's, "static mode" the lights'
    default = _DEFAULT_OWNER.get(param)
    return (default, param) if default in ok else None


def parse_actions(text, proposals=False):
    """Set of (device, parameter, value) triples a reply text says are applied.

    Sentence by sentence: a question, an offer ("I can set the lights to warm", "... if you like"), a
    suggestion, a refusal or a report of the current state ("The current brightness is 30") is no action
    (see _statements); proposals=True reads every sentence, e.g. for what a user's request asks for.
    Within the rest, left to right, keeping a "current device" (a device word or synonym sets it, so does
    a parameter or strong value only one device has: "fan speed", "Netflix", "21 degrees"), a value goes to
      1. the parameter just before it ("fan speed to 2", "color neutral", "a temperature of 23"), else
      2. the parameter just after it ("75% brightness", "cool color", "heat mode"), else
      3. its unit ("22 degrees": the AC's temperature; Fahrenheit values are dropped), else
      4. a parameter named earlier in the sentence that still waits for a value, else
      5. the current device (a number: its first numeric parameter; a word: its parameter that has it), else
      6. the one device that has it, for strong values ("netflix", "bass boost", "armed"), else
      7. the next device named in the sentence ("arm the alarm", "lights to 40% and disarm the alarm").
    A parameter two devices share follows the current device ("TV volume 30 and brightness 40"), else a
    device named right after it ("brightness of the TV"), else the one device whose domain has the value;
    a lone "brightness" is the lights'. Values outside a parameter's domain are ignored; when a parameter
    gets two values the last wins.
    """
    found = {}
    device = None
    for piece in _statements(text, proposals):
        tokens = _tokens(piece)
        waiting, pending = [], []  # parameters named without a value yet; values seen before any device

        def set_device(d):
            nonlocal device
            device = d
            for v in pending:
                params = [p for p in DEVICES[d] if _accepts(d, p, v)]
                p = _numeric_param(d) if isinstance(v, int) else (params[0] if len(params) == 1 else None)
                if p is not None and _accepts(d, p, v):
                    found.setdefault((d, p), v)
            pending.clear()

        for i, (kind, word) in enumerate(tokens):
            if kind == "device":
                set_device(word)
            elif kind == "param":
                target = _resolve(word, None, device, tokens, i)
                if target:
                    set_device(target[0])
                    waiting.append(target)
            elif kind in ("number", "value"):
                value, strong = (word, False) if kind == "number" else word
                target = _bind(tokens, i, value, strong, device, waiting)
                if target == "pending":
                    pending.append(value)
                elif target is not None:
                    found[target] = value
                    if target in waiting:
                        waiting.remove(target)
                    set_device(target[0])
    return {(d, p, v) for (d, p), v in found.items()}


def _bind(tokens, i, value, strong, device, waiting):
    """(device, parameter) the value tokens[i] goes to, "pending" (wait for the next device named), or None
    (dropped)."""
    numeric = isinstance(value, int)
    j = i - 1
    while j >= 0 and tokens[j][0] == "conn":
        j -= 1
    if j >= 0 and tokens[j][0] == "param":                                  # 1. "fan speed to 2"
        target = _resolve(tokens[j][1], value, device, tokens, j)
        if target:
            return target
    j = i + 1
    unit = None
    while numeric and j < len(tokens) and tokens[j][0] == "unit":
        unit = unit or tokens[j][1]
        j += 1
    if unit == "fahrenheit":
        return None
    if j < len(tokens) and tokens[j][0] == "param":                         # 2. "75% brightness", "cool color"
        target = _resolve(tokens[j][1], value, device, tokens, j)
        if target:
            return target
    if unit == "degrees":                                                   # 3. "22 degrees"
        return ("ac", "temperature") if _accepts("ac", "temperature", value) else None
    for d, p in reversed(waiting):                                          # 4. named earlier in the sentence
        if d == device and _accepts(d, p, value):
            return d, p
    if device is not None:                                                  # 5. the current device
        if numeric:
            p = _numeric_param(device)
            if _accepts(device, p, value):
                return device, p
        else:
            params = [p for p in DEVICES[device] if _accepts(device, p, value)]
            if len(params) == 1:
                return device, params[0]
    if strong and value in _VALUE_OWNER:                                    # 6. "netflix" is the TV's
        return _VALUE_OWNER[value]
    return "pending"                                                        # 7. wait for a device


def actions_main(lines):
    """`python -m engine actions`: for each input line (a reply text), one JSON list of
    [device, parameter, value] triples in vocabulary order, e.g. '[["ac", "temperature", 22]]'."""
    return [json.dumps([list(t) for t in sort_actions(parse_actions(line.rstrip("\n")))]) for line in lines]


# -----------------------------------------------------------------------------
# metrics

NAN = float("nan")


def _f1(pred: set, ref: set) -> float:
    """F1 of pred against a reference that names something (an empty reference has no F1: see action_metrics)."""
    return 2 * len(pred & ref) / (len(pred) + len(ref))


def _precision(hits, n_pred, n_ref):
    """hits / n_pred; a prediction with nothing of the kind scores 0 when the reference has some, and has no
    precision (NaN) when neither side has any: saying nothing earns nothing."""
    if n_pred == 0:
        return NAN if n_ref == 0 else 0.0
    return hits / n_pred


def action_metrics(prediction, reference):
    """Smart-home action metrics of a predicted reply against the reference reply.

    Both texts go through parse_actions. When the reference names at least one setting:
      action_f1           = F1 of the predicted (device, parameter, value) triples against the reference's:
                            the primary smart-home metric; a right value for the wrong persona scores 0, and so
                            does a reply that names nothing
      param_f1            = F1 over (device, parameter) pairs: the right settings touched, values aside
      device_precision    = |devices(pred) & devices(ref)| / |devices(pred)| (0 when pred names none)
      numerical_precision = |numeric triples(pred) & numeric triples(ref)| / |numeric triples(pred)|
                            (exact value match; numeric = the parameter's domain is a range); 0 when pred
                            names no number and the reference does, NaN when neither does
      refrained           = NaN
    When the reference names no setting (a question, a greeting, an offer) the four are NaN: such a target
    says nothing about settings, and scoring it 1.0 for an empty reply made a model that never acts look
    good (a silent reply scored 0.435 action_f1 on 100 real EdgeWisePersona dialogues). It gets its own
    figure instead: refrained = 1.0 when the prediction names no setting either, else 0.0.
    """
    pred, ref = parse_actions(prediction), parse_actions(reference)
    if not ref:
        return {"action_f1": NAN, "param_f1": NAN, "device_precision": NAN, "numerical_precision": NAN,
                "refrained": 0.0 if pred else 1.0}
    pred_devices, ref_devices = {d for d, _, _ in pred}, {d for d, _, _ in ref}
    pred_num = {t for t in pred if is_numeric(t[0], t[1])}
    ref_num = {t for t in ref if is_numeric(t[0], t[1])}
    return {
        "action_f1": _f1(pred, ref),
        "param_f1": _f1({(d, p) for d, p, _ in pred}, {(d, p) for d, p, _ in ref}),
        "device_precision": _precision(len(pred_devices & ref_devices), len(pred_devices), len(ref_devices)),
        "numerical_precision": _precision(len(pred_num & ref_num), len(pred_num), len(ref_num)),
        "refrained": NAN,
    }


# -----------------------------------------------------------------------------
# stated and supplied settings: copying from the dialogue vs knowing the persona

def stated_settings(context):
    """Every (device, parameter, value) the dialogue names before the target (context: its (role, text) turns).

    Every earlier turn, user or assistant, is read with proposals=True: a setting appears in the dialogue
    whether it was asked for ("Could you set the AC to 22?"), offered ("I can set the lights to warm") or done.
    Each turn alone (so a value given twice keeps both), and all turns read in order as one text, so that a
    device named in one turn carries into the next: "Setting the TV to YouTube. Volume or brightness?" then
    "Volume 35 and brightness 70" states the TV's (on the real EdgeWisePersona turns in tests/data, turn by turn
    alone left 30 such settings as not stated)."""
    out = parse_actions("\n".join(text for _, text in context), proposals=True)
    for _, text in context:
        out |= parse_actions(text, proposals=True)
    return out


def _part_f1(pred: set, part: set) -> float:
    """action F1 on one part of the reference: the prediction restricted to the part's (device, parameter)
    keys, so a value gets credit only when the model gives the right one for that setting; NaN for an empty part."""
    if not part:
        return NAN
    keys = {(d, p) for d, p, _ in part}
    return _f1({t for t in pred if (t[0], t[1]) in keys}, part)


def stated_supplied_metrics(prediction, reference, context):
    """The reference's settings split by where they come from, and action F1 on each part.

      stated   = reference triples the dialogue already named before the target (stated_settings): copying
      supplied = the others, values the assistant brings itself (the persona's habit, or a default): where
                 personalization shows
      stated_f1, supplied_f1 = _part_f1 of the prediction on each part (NaN when the part is empty)
      n_stated, n_supplied   = the number of reference settings in each part (their sum: n_settings)
    """
    pred, ref = parse_actions(prediction), parse_actions(reference)
    stated = ref & stated_settings(context)
    supplied = ref - stated
    return {"stated_f1": _part_f1(pred, stated), "supplied_f1": _part_f1(pred, supplied),
            "n_stated": len(stated), "n_supplied": len(supplied)}
