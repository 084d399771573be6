"""The smart-home action vocabulary: devices, canonical replies, parsing and action metrics.

Everything that knows what a "device", "parameter" or "value" is lives here, so the simulator
that writes replies and the evaluator that scores generated replies can never disagree.

An action is a triple (device, parameter, value): value is an int for numeric parameters and a
lowercase string for categorical ones, e.g. ("ac", "temperature", 21) or ("tv", "input", "netflix").
"""
import re

# device -> parameter -> value domain. A range is a numeric parameter (ints), a tuple is categorical.
# Every device has exactly one numeric parameter, which is what lets the parser give a bare number
# ("set the AC to 22") to the right parameter.
DEVICES = {
    "lights": {
        "brightness": range(0, 101),
        "colour": ("warm", "cool", "daylight", "red", "blue", "purple", "green"),
    },
    "ac": {
        "temperature": range(16, 31),
        "mode": ("cool", "heat", "fan", "auto", "dry"),
    },
    "speaker": {
        "volume": range(0, 101),
        "equalizer": ("bass", "treble", "flat", "vocal"),
    },
    "tv": {
        "volume": range(0, 101),
        "input": ("hdmi1", "hdmi2", "netflix", "youtube", "antenna"),
    },
    "security": {
        "mode": ("armed", "home", "disarmed"),
    },
}


def is_numeric(device, param):
    return isinstance(DEVICES[device][param], range)


def _numeric_param(device):
    return next((p for p in DEVICES[device] if is_numeric(device, p)), None)


# -----------------------------------------------------------------------------
# rendering: the canonical assistant reply

def render_actions(actions):
    """Canonical reply for a list of (device, parameter, value) triples.

    One fixed, terse shape ("Done: lights brightness 40, colour warm; ac temperature 21.") so that a
    135M model learns it from a few dozen examples and every value is spelled the way the parser reads it.
    Devices appear in order of first mention, parameters in the order given.
    """
    by_device = {}
    for device, param, value in actions:
        if device not in DEVICES or param not in DEVICES[device]:
            raise ValueError(f"unknown action ({device!r}, {param!r})")
        if value not in DEVICES[device][param]:
            raise ValueError(f"value {value!r} is outside the domain of {device} {param}")
        by_device.setdefault(device, []).append(f"{param} {value}")
    if not by_device:
        return "Nothing to change."
    parts = [f"{device} " + ", ".join(settings) for device, settings in by_device.items()]
    return "Done: " + "; ".join(parts) + "."


# -----------------------------------------------------------------------------
# parsing: triples out of any reply text (canonical or free model text)

# Rewrites applied to the lowercased text before tokenising: multi-word synonyms become one token.
_PHRASES = [
    (r"air[\s-]?conditioner(s)?|air[\s-]?conditioning|air[\s-]?con\b|aircon|a/c|thermostat|climate control", " ac "),
    (r"sound ?system|stereo|music player", " speaker "),
    (r"television", " tv "),
    (r"alarm system|security system|alarm", " security "),
    (r"hdmi[\s-]?(1|one)\b", " hdmi1 "),
    (r"hdmi[\s-]?(2|two)\b", " hdmi2 "),
    (r"you ?tube", " youtube "),
    (r"°\s*c?\b|º\s*c?\b", " degrees "),
    (r"%", " percent "),
]

# single-word synonyms -> canonical word (device, parameter, value or unit)
_WORDS = {
    # devices
    "light": "lights", "lights": "lights", "lamp": "lights", "lamps": "lights", "lighting": "lights",
    "ac": "ac", "speaker": "speaker", "speakers": "speaker", "music": "speaker",
    "tv": "tv", "telly": "tv", "security": "security",
    # parameters
    "brightness": "brightness", "colour": "colour", "color": "colour", "colours": "colour",
    "temperature": "temperature", "temp": "temperature", "mode": "mode",
    "volume": "volume", "vol": "volume", "equalizer": "equalizer", "equaliser": "equalizer",
    "eq": "equalizer", "input": "input", "source": "input",
    # units
    "degrees": "degrees", "degree": "degrees", "deg": "degrees", "celsius": "degrees",
    "percent": "percent", "pct": "percent",
    # values
    "cooling": "cool", "heating": "heat", "violet": "purple", "vocals": "vocal", "voice": "vocal",
    "aerial": "antenna", "arm": "armed", "disarm": "disarmed", "unarmed": "disarmed",
}

_DEVICE_WORDS = set(DEVICES)
# parameters that name exactly one device ("brightness" means lights) switch the current device
_PARAM_OWNER = {}
for _d, _params in DEVICES.items():
    for _p in _params:
        _PARAM_OWNER.setdefault(_p, set()).add(_d)
_PARAM_OWNER = {p: next(iter(ds)) for p, ds in _PARAM_OWNER.items() if len(ds) == 1}
# categorical values that name exactly one device and are not everyday words ("netflix" means tv;
# "home" or "fan" do not mean anything on their own) also switch the current device
_EVERYDAY = {"home", "fan", "dry", "flat", "auto", "heat", "cool", "warm"}
_VALUE_OWNER = {}
for _d, _params in DEVICES.items():
    for _p, _domain in _params.items():
        if not isinstance(_domain, range):
            for _v in _domain:
                _VALUE_OWNER.setdefault(_v, set()).add((_d, _p))
_VALUE_OWNER = {v: next(iter(dp)) for v, dp in _VALUE_OWNER.items() if len(dp) == 1 and v not in _EVERYDAY}

_TOKEN = re.compile(r"[a-z]+[0-9]+|[0-9]+(?:\.[0-9]+)?|[a-z]+")


def _tokens(text):
    text = text.lower()
    for pattern, replacement in _PHRASES:
        text = re.sub(pattern, replacement, text)
    return [_WORDS.get(t, t) for t in _TOKEN.findall(text)]


def parse_actions(text):
    """Set of (device, parameter, value) triples a reply text mentions.

    Reads left to right keeping a "current device": a device word (or a synonym: "air conditioner",
    "lamp", "alarm"...) sets it, so do words that only one device has ("brightness", "netflix",
    "21 degrees"). A number goes to the current device's numeric parameter, a categorical word to the
    current device's parameter that has it. Values outside a parameter's domain are ignored; when a
    parameter is mentioned twice the last value wins. A number seen before any device waits for one.
    """
    found = {}
    device = None
    pending_number = None
    tokens = _tokens(text)
    for i, tok in enumerate(tokens):
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if tok in _DEVICE_WORDS:
            device = tok
        elif tok in _PARAM_OWNER and (device is None or tok not in DEVICES[device]):
            device = _PARAM_OWNER[tok]
        elif tok[0].isdigit():
            if "." in tok:
                continue  # no fractional values anywhere in the vocabulary
            number = int(tok)
            if nxt == "degrees":
                device = "ac"
            if device is None:
                pending_number = number
                continue
            param = _numeric_param(device)
            if param is not None and number in DEVICES[device][param]:
                found[(device, param)] = number
            continue
        else:
            for param, domain in (DEVICES[device].items() if device else ()):
                if not isinstance(domain, range) and tok in domain:
                    found[(device, param)] = tok
                    break
            else:
                if tok in _VALUE_OWNER:
                    device, param = _VALUE_OWNER[tok]
                    found[(device, param)] = tok
            continue
        # a device was just set: give it a number that came before any device
        if pending_number is not None:
            param = _numeric_param(device)
            if param is not None and pending_number in DEVICES[device][param]:
                found.setdefault((device, param), pending_number)
            pending_number = None
    return {(d, p, v) for (d, p), v in found.items()}


# -----------------------------------------------------------------------------
# metrics

def _ratio(hits, n_pred, n_ref):
    """hits / n_pred, with the empty-side conventions of action_metrics."""
    if n_pred == 0:
        return 1.0 if n_ref == 0 else 0.0
    return hits / n_pred


def _f1(pred: set, ref: set) -> float:
    if not pred and not ref:
        return 1.0  # nothing to do, nothing done
    return 2 * len(pred & ref) / (len(pred) + len(ref))


def action_metrics(prediction, reference):
    """Smart-home action metrics of a predicted reply against the reference reply (DESIGN §7).

    Both texts go through parse_actions, then:
      action_f1           = F1 of the predicted (device, parameter, value) triples against the reference's:
                            the primary smart-home metric; a right value for the wrong persona scores 0
      param_f1            = F1 over (device, parameter) pairs: the right settings touched, values aside
      device_precision    = |devices(pred) & devices(ref)| / |devices(pred)|
      numerical_precision = |numeric triples(pred) & numeric triples(ref)| / |numeric triples(pred)|
                            (exact value match; numeric = the parameter's domain is a range)
    Conventions when a side mentions nothing: F1 is 1.0 when both are empty (nothing to do, nothing done)
    and 0.0 when only one is. For the precisions, a prediction with nothing of that kind scores 1.0 if the
    reference has nothing of that kind either, else 0.0.
    """
    pred, ref = parse_actions(prediction), parse_actions(reference)
    pred_devices, ref_devices = {d for d, _, _ in pred}, {d for d, _, _ in ref}
    pred_num = {t for t in pred if is_numeric(t[0], t[1])}
    ref_num = {t for t in ref if is_numeric(t[0], t[1])}
    return {
        "action_f1": _f1(pred, ref),
        "param_f1": _f1({(d, p) for d, p, _ in pred}, {(d, p) for d, p, _ in ref}),
        "device_precision": _ratio(len(pred_devices & ref_devices), len(pred_devices), len(ref_devices)),
        "numerical_precision": _ratio(len(pred_num & ref_num), len(pred_num), len(ref_num)),
    }
