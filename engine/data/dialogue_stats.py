"""What a dialogue data set looks like, in figures that compare across data sets: `engine synth --compare-to FILE`.

dialogue_stats(source) reads any dialogue data (a JSONL file, EdgeWisePersona's folder, a simulator spec such as
"sim" or "sim:personas=8", or records already in memory) and returns, over all its dialogues:

  turns           messages per dialogue (mean)
  words           words per message (mean; a word: a run of letters, digits or apostrophes)
  vocabulary      word types (lowercased) in VOCAB_DIALOGUES dialogues evenly spaced over the data (the first,
                  then every n/20-th), so data sets of different sizes compare: types grow with the text read
  asks_value      share of assistant turns with a question (a sentence ending in "?") that names a parameter
                  of the vocabulary ("What temperature would you like?", "how bright, and which colour?")
  no_setting      share of user turns that name no setting (parse_actions with proposals=True finds nothing):
                  vague requests ("Can you turn up the heat a bit?"), switching on or off, music, anything else
  outside         share of user turns that request something outside the five devices' settings: the turn
                  names no setting and no word of the vocabulary (no device, parameter, value or unit word,
                  where "music" alone does not name the speaker: asking for jazz sets none of its settings), and it
                  asks for something (a question, or a request word: please, can/could/would you, turn, play,
                  set, ...). "Play some jazz", "Close the blinds", "Remind me to ..." count; "Can you adjust the
                  lights?" and "Turn up the heat" do not (a device, a value word)
  usual           share of user turns that say "the usual", "as usual", "like always", "as always", "the way I
                  like", "how I like", "you know how I like": habits named instead of values
  user_ends       share of dialogues whose last message is the user's
  supplied        share of the assistant turns' settings (parse_actions) that the dialogue did not state before
                  (smarthome.stated_settings: the metric's own stated / supplied split, reused)
  device_<name>   share of the settings named anywhere in the dialogue (user turns read with proposals=True,
                  assistant turns as done) that are the device's

compare_rows(sim, real) gives, per statistic, the real value's band (RANGES) and whether the other value lies in it.
"""
from __future__ import annotations

import json
import os
import re

from engine.data.smarthome import DEVICES, _tokens, parse_actions, stated_settings

VOCAB_DIALOGUES = 20
_WORD = re.compile(r"[a-z0-9']+")
_USUAL = re.compile(r"\b(?:the usual|as usual|like usual|my usual|like always|as always|the way i like|"
                    r"how i (?:usually )?like|you know how i like)\b")
_REQUEST = re.compile(r"\?|\b(?:please|can you|could you|would you|will you|let's|turn|play|set|put|make|start|"
                      r"switch|remind|order|open|close|lock|unlock|check|tell me|i need|i want|i'd like)\b")

# statistic -> (label, how its band around the real value is drawn: ("rel", r) = ±r of the real value,
# ("abs", a) = ±a, absolute)
RANGES = {
    "turns": ("messages per dialogue", ("rel", 0.25)),
    "words": ("words per message", ("rel", 0.25)),
    "vocabulary": (f"word types in {VOCAB_DIALOGUES} dialogues", ("rel", 0.25)),
    "asks_value": ("assistant turns asking for a value", ("abs", 0.10)),
    "no_setting": ("user turns naming no setting", ("abs", 0.10)),
    "outside": ("user turns outside the five devices", ("abs", 0.05)),
    "usual": ('user turns saying "the usual"', ("abs", 0.02)),
    "user_ends": ("dialogues ending on the user", ("abs", 0.10)),
    "supplied": ("reply settings supplied (not stated)", ("abs", 0.10)),
    **{f"device_{d}": (f"settings of the {d}", ("abs", 0.10)) for d in DEVICES},
}


def load_dialogues(source) -> list[list[tuple[str, str]]]:
    """Every dialogue of `source` as (role, text) messages: records (dicts with "messages"), a JSONL path, an
    EdgeWisePersona folder (sessions.jsonl) or a simulator spec."""
    if isinstance(source, (list, tuple)):
        return [[(m["role"], m["text"]) for m in r["messages"]] for r in source]
    text = str(source)
    if text == "sim" or text.startswith("sim:"):
        from engine.data.simulator import parse_sim_spec, simulate
        return load_dialogues(simulate(**parse_sim_spec(text)))
    if os.path.isdir(text):
        from engine.data.edgewise import SESSIONS
        out = []
        with open(os.path.join(text, SESSIONS), encoding="utf-8") as f:
            for line in filter(str.strip, f):
                out += [[(m["role"], m["text"]) for m in s["messages"]] for s in json.loads(line)["sessions"]]
        return out
    with open(text, encoding="utf-8") as f:
        return load_dialogues([json.loads(line) for line in f if line.strip() and "messages" in json.loads(line)])


def _words(text):
    return _WORD.findall(text.lower().replace("\u2019", "'"))


def asks_for_value(text) -> bool:
    """An assistant turn with a question that names a parameter ("What temperature and fan speed?")."""
    for sentence in re.split(r"(?<=[.!?])\s+", text):
        if sentence.rstrip().endswith("?") and any(k == "param" for k, _ in _tokens(sentence)):
            return True
    return False


def outside_request(text) -> bool:
    """A user turn asking for something that is no setting of the five devices (see the module docstring)."""
    if parse_actions(text, proposals=True):
        return False
    if any(k in ("device", "param", "value", "unit") for k, _ in _tokens(re.sub(r"(?i)\bmusic\b", "tunes", text))):
        return False
    return bool(_REQUEST.search(text.lower()))


def says_usual(text) -> bool:
    return bool(_USUAL.search(text.lower().replace("\u2019", "'")))


def _share(hits, total):
    return hits / total if total else float("nan")


def dialogue_stats(source) -> dict:
    """The statistics of the module docstring, and `n_dialogues`."""
    dialogues = [d for d in load_dialogues(source) if d]
    n = len(dialogues)
    turns = [t for d in dialogues for t in d]
    users = [t for r, t in turns if r == "user"]
    assistants = [t for r, t in turns if r == "assistant"]
    k = min(VOCAB_DIALOGUES, n)
    sample = [dialogues[(i * n) // k] for i in range(k)]
    vocabulary = {w for d in sample for _, t in d for w in _words(t)}
    n_settings = n_supplied = 0
    devices = dict.fromkeys(DEVICES, 0)
    for d in dialogues:
        for i, (role, text) in enumerate(d):
            said = parse_actions(text, proposals=role == "user")
            for device, _, _ in said:
                devices[device] += 1
            if role == "assistant":
                n_settings += len(said)
                n_supplied += len(said - stated_settings(d[:i]))
    total = sum(devices.values())
    out = {
        "n_dialogues": n,
        "turns": _share(len(turns), n),
        "words": _share(sum(len(_words(t)) for _, t in turns), len(turns)),
        "vocabulary": float(len(vocabulary)),
        "asks_value": _share(sum(map(asks_for_value, assistants)), len(assistants)),
        "no_setting": _share(sum(not parse_actions(t, proposals=True) for t in users), len(users)),
        "outside": _share(sum(map(outside_request, users)), len(users)),
        "usual": _share(sum(map(says_usual, users)), len(users)),
        "user_ends": _share(sum(d[-1][0] == "user" for d in dialogues), n),
        "supplied": _share(n_supplied, n_settings),
    }
    out.update({f"device_{d}": _share(c, total) for d, c in devices.items()})
    return out


def band(stat, real):
    """(low, high) of a statistic's stated range around the real value."""
    how, width = RANGES[stat][1]
    half = abs(real) * width if how == "rel" else width
    top = real + half if how == "rel" else min(1.0, real + half)  # absolute bands are of shares
    return max(0.0, real - half), top


def compare_rows(sim: dict, real: dict) -> list[dict]:
    """Per statistic: label, the two values, the real value's band and whether sim's value is within it."""
    rows = []
    for stat, (label, _) in RANGES.items():
        low, high = band(stat, real[stat])
        rows.append({"stat": stat, "label": label, "sim": sim[stat], "real": real[stat], "low": low, "high": high,
                     "within": bool(low <= sim[stat] <= high)})
    return rows


def _fmt(stat, x):
    return f"{x:.1f}" if stat in ("turns", "words") else f"{x:.0f}" if stat == "vocabulary" else f"{x:.2f}"


def compare_table(sim: dict, real: dict, names=("simulator", "real")) -> str:
    """A Markdown table of compare_rows, with a last line counting the rows within range."""
    rows = compare_rows(sim, real)
    lines = [f"| statistic | {names[0]} | {names[1]} | range | within |", "|---|---:|---:|---|---|"]
    for r in rows:
        s = r["stat"]
        rng = f"{_fmt(s, r['low'])}–{_fmt(s, r['high'])}"
        lines.append(f"| {r['label']} | {_fmt(s, r['sim'])} | {_fmt(s, r['real'])} | {rng} | "
                     f"{'yes' if r['within'] else 'NO'} |")
    lines.append(f"{sum(r['within'] for r in rows)} of {len(rows)} statistics within range "
                 f"({sim['n_dialogues']} vs {real['n_dialogues']} dialogues)")
    return "\n".join(lines)
