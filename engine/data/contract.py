"""What every loader produces (Example, Dataset, DataError) and the checks the loaders share.

The JSONL loader (engine.data.dataset), the EdgeWisePersona folder loader (engine.data.edgewise) and the split
files (engine.data.splitfile) all check messages, metadata and splits the same way and report problems the
same way ("FILE:LINE: what is wrong", the first 50, then a count), so a file means the same in every layout.
This module imports nothing of the engine: the loaders import it, never each other's internals.
"""
from __future__ import annotations

import json
import math
import unicodedata
from dataclasses import dataclass, field

SPLITS = ("train", "val", "test")
KINDS = ("personal", "general")
ROLES = ("user", "assistant", "system")
MAX_PROBLEMS = 50
# how a dataset's splits were made (Dataset.split_rule); checks explain an empty train split with it
AUTO_SPLIT = "60/20/20 per persona, in order"
GIVEN_SPLIT = "each line's 'split'"


@dataclass(frozen=True)
class Example:
    example_id: str
    persona_id: str
    split: str                 # "train" | "val" | "test"
    kind: str | None           # "personal" | "general" | None
    context: tuple[tuple[str, str], ...] = ()   # dialogue: (role, text) messages before the target
    target: str | None = None                   # dialogue: the assistant reply to produce
    prompt: str | None = None                   # choice task
    choices: tuple[str, ...] | None = None
    answer: int | None = None
    blind: str | None = None                    # dialogue: the persona-blind reply, when the data has one
    system: str | None = None                   # a method's own system prompt (profile, retrieved dialogues);
                                                # None: the run's (TrainConfig.system_prompt)
    meta: dict | None = field(default=None, hash=False)  # the dialogue's situation (EdgeWisePersona's session
                                                         # meta: time_of_day, weather, ...), shown beside it


@dataclass
class Dataset:
    task: str                  # "dialogue" | "choice"
    personas: dict[str, str | None]   # persona_id -> profile text (None: none given), in first-seen order
    examples: list[Example]
    source: str                # file or folder path, or simulator spec
    hash: str                  # sha256 hex of the data's bytes (and its split file's), or of the records' JSON
    notes: list[str] = field(default_factory=list)   # what the loader decided that the user should know (a
                                                     # split file found, keys of it ignored, dialogues left out)
    split_rule: str = AUTO_SPLIT  # AUTO_SPLIT, GIVEN_SPLIT, or "split file PATH"

    def split(self, name):
        if name not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {name!r}")
        return [e for e in self.examples if e.split == name]

    def by_persona(self, split):
        """persona_id -> its examples of that split; every persona is a key (maybe with []), in persona order."""
        groups = {pid: [] for pid in self.personas}
        for e in self.split(split):
            groups[e.persona_id].append(e)
        return groups


class DataError(Exception):
    """A dataset broke the contract; .problems holds every "FILE:LINE: what is wrong" line."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def raise_problems(problems, source) -> None:
    """DataError for (line, message) problems of one file, in line order, capped; nothing when there are none."""
    if not problems:
        return
    problems = sorted(problems, key=lambda p: p[0])  # stable: a line's problems stay in the order found
    out = [f"{source}:{n}: {msg}" for n, msg in problems[:MAX_PROBLEMS]]
    if len(problems) > MAX_PROBLEMS:
        out.append(f"... and {len(problems) - MAX_PROBLEMS} more problems")
    raise DataError(out)


def cap(lines: list[str]) -> list[str]:
    """Already formatted problem lines, at most MAX_PROBLEMS of them and a count of the rest."""
    if len(lines) <= MAX_PROBLEMS:
        return lines
    return lines[:MAX_PROBLEMS] + [f"... and {len(lines) - MAX_PROBLEMS} more problems"]


def parse_jsonl(raw):
    """(objects, problems, numbers) of JSONL bytes, or of an iterable of byte lines (a file opened in binary mode,
    read line by line, so a big file is never held whole): (line, object) of every readable line, (line, message)
    of every unreadable one, and the numbers of all non-blank lines (line-aligned files compare them)."""
    lines, problems, numbers = [], [], []
    for number, line_bytes in enumerate(raw.split(b"\n") if isinstance(raw, (bytes, bytearray)) else raw, start=1):
        if not line_bytes.strip():
            continue  # blank lines are allowed
        numbers.append(number)
        try:
            text = line_bytes.decode("utf-8")
        except UnicodeDecodeError as e:
            problems.append((number, f"invalid UTF-8 at byte {e.start}"))
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            problems.append((number, f"broken JSON: {e.msg} (column {e.colno})"))
            continue
        except RecursionError:
            problems.append((number, "JSON nested too deeply"))
            continue
        except ValueError as e:  # e.g. an integer of more digits than Python converts
            problems.append((number, f"unreadable JSON value: {e}"))
            continue
        if "\\u" in text and lone_surrogate(obj):  # "\\ud800": valid JSON, but no UTF-8 file or store holds it
            problems.append((number, f"a text holds {lone_surrogate(obj)}, half of a UTF-16 surrogate pair (not a "
                                     "character); write the character itself"))
            continue
        lines.append((number, obj))
    return lines, problems, numbers


def lone_surrogate(obj) -> str | None:
    """The first lone surrogate (as an escape, e.g. '\\ud800') in any key or text of a decoded JSON value, or None."""
    if isinstance(obj, str):
        try:
            obj.encode("utf-8")
        except UnicodeEncodeError as e:
            return obj[e.start].encode("unicode_escape").decode()
        return None
    items = obj.items() if isinstance(obj, dict) else obj if isinstance(obj, list) else ()
    for item in items:
        for part in (item if isinstance(obj, dict) else (item,)):
            found = lone_surrogate(part)
            if found:
                return found
    return None


def visible(text: str) -> bool:
    """Whether a text has a character one can see: not only spaces, line breaks, control or format characters."""
    return any(unicodedata.category(c) not in ("Cc", "Cf", "Cs", "Zs", "Zl", "Zp") for c in text)


def persona_id_problem(persona_id: str) -> str | None:
    """Why a persona id (a non-empty text) cannot be one, or None: spaces around it (' p1' and 'p1' would be two
    personas that read the same), or a control character (a newline, a tab) that no table or page shows."""
    if persona_id != persona_id.strip():
        return f"'persona_id' {persona_id!r} has spaces around it ({persona_id.strip()!r} would be another persona)"
    if any(unicodedata.category(c) == "Cc" for c in persona_id):
        return f"'persona_id' {persona_id!r} has a control character (a newline, a tab, ...)"
    return None


def nonempty_str(value) -> bool:
    return isinstance(value, str) and value.strip() != ""


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_messages(messages, problem):
    """(role, text, kind, persona_blind) of each message of a dialogue, or None after reporting every bad one."""
    if not isinstance(messages, list) or not messages:
        problem("'messages' must be a non-empty list")
        return None
    pairs, ok = [], True
    for i, m in enumerate(messages, start=1):
        if not isinstance(m, dict):
            problem(f"message {i} is not an object")
            ok = False
            continue
        role = m.get("role")
        text = m.get("text", m.get("content"))
        if role not in ROLES:
            problem(f"message {i}: unknown role {role!r} (expected one of {', '.join(ROLES)})")
            ok = False
        if not nonempty_str(text):
            problem(f"message {i}: empty or missing 'text'")
            ok = False
        elif not visible(text):
            problem(f"message {i}: 'text' has no visible character (only control, format or space characters: "
                    f"{text[:20]!r})")
            ok = False
        for key in ("kind", "persona_blind"):
            if key in m and role != "assistant":
                problem(f"message {i}: '{key}' is only allowed on assistant messages")
                ok = False
        if "kind" in m and m["kind"] not in KINDS:
            problem(f"message {i}: unknown kind {m['kind']!r} (expected one of {', '.join(KINDS)})")
            ok = False
        if "persona_blind" in m and not (nonempty_str(m["persona_blind"]) and visible(m["persona_blind"])):
            problem(f"message {i}: 'persona_blind' must be a non-empty string with a visible character")
            ok = False
        pairs.append((role, text, m.get("kind"), m.get("persona_blind")))
    if ok and not any(p[0] == "assistant" for p in pairs):
        problem("dialogue has no assistant turn")
        ok = False
    return pairs if ok else None


def check_meta(meta, problem):
    """A dialogue's `meta` (its situation: time of day, weather, ...) as a dict of text or number values, or None
    when absent or bad (reported): it is shown beside the dialogue, so it must be flat."""
    if meta is None:
        return None
    if not isinstance(meta, dict):
        problem(f"'meta' must be an object, got {type(meta).__name__}")
        return None
    flat = all(isinstance(v, (str, int, float, bool)) or v is None for v in meta.values())
    if not flat:
        problem("'meta' values must be text or numbers (no lists or objects)")
        return None
    return dict(meta)


def routine_kind(applied, n_routines, problem):
    """'personal' when a dialogue applied one of its user's routines, 'general' when it applied none; None after
    reporting a bad list: not integers, or an index outside the user's n_routines routines (None: not known)."""
    if not isinstance(applied, list) or not all(is_int(i) for i in applied):
        problem(f"'applied_routines' must be a list of routine indices, got {applied!r}")
        return None
    limit = n_routines if n_routines is not None else float("inf")
    outside = [i for i in applied if not 0 <= i < limit]
    if outside and n_routines is not None:
        have = f"0..{n_routines - 1}" if n_routines else "it has none"
        problem(f"'applied_routines' {outside} point outside this user's {n_routines} routines ({have})")
        return None
    if outside:
        problem(f"'applied_routines' {outside}: routine indices are integers >= 0")
        return None
    return "personal" if applied else "general"


def round_half_up(x):
    return int(math.floor(x + 0.5))


def auto_splits(n):
    """60/20/20 in order for n dialogues of one persona; every persona gets a test dialogue."""
    n_test = max(1, round_half_up(0.2 * n))
    n_val = round_half_up(0.2 * n) if n >= 3 else 0
    n_train = n - n_val - n_test
    return ["train"] * n_train + ["val"] * n_val + ["test"] * n_test


def dialogue_examples(pairs, persona_id, split, kind, name, context_window, meta=None) -> list[Example]:
    """One Example per assistant turn of a checked dialogue (check_messages' pairs); name(turn, n_targets) gives
    each its id; the messages before a turn (up to context_window) are its context."""
    n_targets = sum(p[0] == "assistant" for p in pairs)
    out, turn = [], 0
    for i, (role, text, turn_kind, blind) in enumerate(pairs):
        if role != "assistant":
            continue
        turn += 1
        context = tuple((r, t) for r, t, _, _ in pairs[max(0, i - context_window):i])
        out.append(Example(name(turn, n_targets), persona_id, split, turn_kind or kind, context=context, target=text,
                           blind=blind, meta=meta))
    return out


def check_context_window(context_window) -> None:
    if isinstance(context_window, bool) or not isinstance(context_window, int) or context_window < 1:
        raise ValueError(f"context_window must be an integer >= 1, got {context_window!r}")
