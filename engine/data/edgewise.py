"""EdgeWisePersona's own release, loaded as it is: a folder of three line-aligned JSONL files, one line per user.

    characters.jsonl  {"character": "<personality sketch>"}                  -> the persona's profile text
    routines.jsonl    {"routines": [{"triggers": {...}, "actions": {...}}]}   -> what applied_routines points into
    sessions.jsonl    {"sessions": [{"session_id", "meta", "messages", "applied_routines", ...}, ...]}

Line i is persona `persona_NNN` (i, three digits: the seed study's names). Each session is one dialogue: every
assistant turn is a target, as in the JSONL format, and the session's `meta` (time_of_day, day_of_week,
sun_phase, weather, outdoor_temp) is kept with each of its examples. A session that applied one of its user's
routines is `personal`, a spontaneous one `general`. Splits: 60/20/20 per persona in session order (time
order, the study's rule), unless a split file decides (edgesplits.json beside the three files, or one named;
engine.data.splitfile: an index is the session's position among all users' sessions, user 0's first, as the
study's flattened file numbered them). Example ids are `persona_NNN:D<that index>#<turn>`.

Files that disagree are refused whole with FILE:LINE problems, since a shifted line would give one user's
sessions another's profile: different line counts, a blank or non-JSON line, a session without messages, a
bad role, applied_routines pointing outside that user's routines.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from engine.data import splitfile
from engine.data.contract import (AUTO_SPLIT, MAX_PROBLEMS, DataError, Dataset, auto_splits, check_context_window,
                                  check_messages, check_meta, dialogue_examples, nonempty_str, parse_jsonl,
                                  routine_kind)

FILES = ("characters.jsonl", "routines.jsonl", "sessions.jsonl")
CHARACTERS, ROUTINES, SESSIONS = FILES
META_FIELDS = ("time_of_day", "day_of_week", "sun_phase", "weather", "outdoor_temp")
ALIGNED = "the three files hold one line per user, in the same order"


def is_folder(path) -> bool:
    """A folder holding the three files."""
    return os.path.isdir(path) and all(os.path.isfile(os.path.join(path, f)) for f in FILES)


def folder_problem(path) -> str:
    """One line on why a folder is not EdgeWisePersona's release (what the lab reads from a folder)."""
    present = [f for f in FILES if os.path.isfile(os.path.join(path, f))]
    missing = [f for f in FILES if f not in present]
    if not present:
        return f"{path}: is a folder, not a JSONL file nor EdgeWisePersona's release ({', '.join(FILES)})"
    return f"{path}: is a folder without EdgeWisePersona's {', '.join(missing)} (it has {', '.join(present)}; " \
           f"the release is the three files {', '.join(FILES)})"


def describe_meta(meta) -> str:
    """"evening · weekday · after sunset · rainy · cold": a session's meta in the trigger fields' order (others
    after them as key: value), for a reader beside the dialogue; "" when there is none."""
    if not isinstance(meta, dict):
        return ""
    parts = [str(meta[k]).replace("_", " ") for k in META_FIELDS if meta.get(k) not in (None, "")]
    parts += [f"{k}: {v}" for k, v in meta.items() if k not in META_FIELDS and v not in (None, "")]
    return " · ".join(parts)


@dataclass
class _Session:
    index: int            # position among all users' sessions (what a split file names)
    pairs: list           # check_messages' (role, text, kind, persona_blind)
    kind: str
    meta: dict | None


class _Problems:
    """(file, line, message) problems of the three files, formatted FILE:LINE: what, in file then line order."""

    def __init__(self, folder):
        self.folder, self.items = folder, []

    def add(self, name, line, msg):
        self.items.append((FILES.index(name), line, msg))

    def at(self, name, line):
        return lambda msg: self.add(name, line, msg)

    def raise_any(self):
        if not self.items:
            return
        items = sorted(self.items, key=lambda p: p[:2])
        out = [f"{os.path.join(self.folder, FILES[f])}:{n}: {msg}" for f, n, msg in items[:MAX_PROBLEMS]]
        if len(items) > MAX_PROBLEMS:
            out.append(f"... and {len(items) - MAX_PROBLEMS} more problems")
        raise DataError(out)


def load_folder(folder, context_window=4, splits=None) -> Dataset:
    """Dataset from EdgeWisePersona's three files; DataError listing every problem when they break the format or
    disagree."""
    check_context_window(context_window)
    folder = str(folder)
    if not is_folder(folder):
        raise DataError([folder_problem(folder)])
    raws = {name: _read(os.path.join(folder, name)) for name in FILES}
    problems = _Problems(folder)
    users = _users(raws, problems)
    problems.raise_any()
    digest = hashlib.sha256(b"".join(n.encode() + b"\0" + hashlib.sha256(raws[n]).digest() for n in FILES))
    split_path, found = splitfile.locate(folder, splits)
    notes, rule, assigned = [], AUTO_SPLIT, None
    if split_path is not None:
        sf = splitfile.read(split_path, found)
        assigned, notes = splitfile.assign(sf, {pid: [s.index for s in sessions] for pid, _, sessions in users})
        digest.update(b"\0" + sf.raw)
        rule = f"split file {sf.path}"
    examples = []
    for pid, _, sessions in users:
        splits_of = assigned[pid] if assigned is not None else \
            {s.index: split for s, split in zip(sessions, auto_splits(len(sessions)))}
        for s in sessions:
            if s.index in splits_of:
                examples += dialogue_examples(s.pairs, pid, splits_of[s.index], s.kind,
                                              lambda turn, _n, pid=pid, i=s.index: f"{pid}:D{i}#{turn}",
                                              context_window, s.meta)
    return Dataset(task="dialogue", personas={pid: character for pid, character, _ in users}, examples=examples,
                   source=folder, hash=digest.hexdigest(), notes=notes, split_rule=rule)


def _read(path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise DataError([f"{path}: cannot be read ({e.strerror})"]) from None


def _users(raws, problems) -> list[tuple[str, str, list[_Session]]]:
    """(persona_id, character, sessions) per line of the three files; problems of every line collected."""
    parsed = {}
    for name in FILES:
        objects, bad, numbers = parse_jsonl(raws[name])
        for line, msg in bad:
            problems.add(name, line, msg)
        parsed[name] = (dict(objects), numbers)
    _check_alignment(parsed, problems)
    n_users = min(len(numbers) for _, numbers in parsed.values())
    users, next_index = [], 0
    for i in range(n_users):
        lines = {name: parsed[name][1][i] for name in FILES}
        objs = {name: parsed[name][0].get(lines[name]) for name in FILES}
        character = _character(objs[CHARACTERS], problems.at(CHARACTERS, lines[CHARACTERS]))
        n_routines = _routines(objs[ROUTINES], problems.at(ROUTINES, lines[ROUTINES]))
        sessions, n_sessions = _sessions(objs[SESSIONS], n_routines, next_index, problems.at(SESSIONS, lines[SESSIONS]))
        next_index += n_sessions
        users.append((f"persona_{i:03d}", character, sessions))
    return users


def _check_alignment(parsed, problems) -> None:
    """Every file has as many user lines as the others, and no blank line between them."""
    counts = {name: len(numbers) for name, (_, numbers) in parsed.items()}
    longest = max(counts, key=counts.get)
    if not counts[longest]:
        for name in FILES:
            problems.add(name, 1, "file is empty (the release has one line per user)")
        return
    for name, (_, numbers) in parsed.items():
        for blank in sorted(set(range(1, numbers[-1] + 1)) - set(numbers)) if numbers else []:
            problems.add(name, blank, f"blank line: {ALIGNED}")
        if counts[name] < counts[longest]:
            problems.add(name, (numbers[-1] if numbers else 0) + 1,
                         f"ends after {counts[name]} user lines, but {longest} has {counts[longest]}: {ALIGNED}")


def _not_object(obj, problem) -> bool:
    if obj is None:
        return True  # an unreadable line: already reported
    if not isinstance(obj, dict):
        problem(f"line is not a JSON object (got {type(obj).__name__})")
        return True
    return False


def _character(obj, problem) -> str | None:
    if _not_object(obj, problem):
        return None
    if not nonempty_str(obj.get("character")):
        problem("'character' must be a non-empty string (the persona's profile text)")
        return None
    return obj["character"]


def _routines(obj, problem) -> int | None:
    """How many routines the user has (what applied_routines may point to); None when the line is bad."""
    if _not_object(obj, problem):
        return None
    routines = obj.get("routines")
    if not isinstance(routines, list):
        problem("'routines' must be a list of routines ({\"triggers\": {...}, \"actions\": {...}})")
        return None
    bad = [i for i, r in enumerate(routines) if not isinstance(r, dict)]
    if bad:
        problem(f"routine {bad[0]} is not an object")
        return None
    return len(routines)


def _sessions(obj, n_routines, first_index, problem) -> tuple[list[_Session], int]:
    """(the user's good sessions, numbered from first_index; how many it has); every bad one reported as
    `session N: ...`."""
    if _not_object(obj, problem):
        return [], 0
    sessions = obj.get("sessions")
    if not isinstance(sessions, list) or not sessions:
        problem("'sessions' must be a non-empty list (every persona needs a test dialogue)")
        return [], 0
    out = []
    for j, session in enumerate(sessions):
        def in_session(msg, j=j):
            problem(f"session {j + 1}: {msg}")
        if not isinstance(session, dict):
            in_session(f"not an object (got {type(session).__name__})")
            continue
        pairs = check_messages(session.get("messages"), in_session)
        meta = check_meta(session.get("meta"), in_session)
        kind = routine_kind(session.get("applied_routines", []), n_routines, in_session)
        if pairs is not None and kind is not None:
            out.append(_Session(first_index + j, pairs, kind, meta))
    return out, len(sessions)
