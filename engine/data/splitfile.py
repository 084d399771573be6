"""The seed study's split files (`edgesplits.json`): which dialogues of each persona are train, val and test.

    {"persona_000": {"train": [0, 1, ...], "val": [...], "test": [...], "online": [...]}, ...}

What an index means: a dialogue's `dialogue_idx` when the records carry one, else its 0-based position among all
the data's dialogues (a JSONL file's records in order, blank lines not counted; EdgeWisePersona's folder: user
0's sessions, then user 1's, ...). That is how the study numbered them: its create_splits.py enumerated the lines
of its flattened file, every persona together, and its cold-start file kept that number as `dialogue_idx`
(persona_001's first test dialogue is 90, the 41st of its 50). Numbering each persona's dialogues from 0 instead
would read the study's own files wrongly, so it is not done.

Only train, val and test are read. Any other key (the study's "online", a micro-update batch taken from train) is
reported as ignored, and a dialogue that is in none of the three lists is left out of the run; notes say both.
A file that does not fit the data (an index that is not one of the persona's dialogues, a dialogue in two lists,
a persona on one side only, a persona without test dialogues) is refused whole, naming the file and persona.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from engine.data.contract import SPLITS, DataError, cap, is_int

SPLIT_FILE = "edgesplits.json"


@dataclass
class SplitFile:
    path: str
    lists: dict            # persona_id -> {"train": [...], "val": [...], "test": [...]} (absent lists: [])
    ignored: dict          # any other key -> how many personas have it
    raw: bytes             # the file's bytes: they go into the dataset's hash
    found: bool            # found beside the data rather than named


def beside(data_path) -> str:
    """Where a split file beside the data would be: edgesplits.json in the folder of a JSONL file, or among
    EdgeWisePersona's three files in theirs."""
    folder = str(data_path) if os.path.isdir(data_path) else os.path.dirname(str(data_path)) or "."
    return os.path.join(folder, SPLIT_FILE)


def locate(data_path, given=None) -> tuple[str | None, bool]:
    """(the split file to use, whether it was found rather than named): `given`, else the one beside the data when
    there is one, else None."""
    if given:
        return str(given), False
    path = beside(data_path)
    return (path, True) if os.path.isfile(path) else (None, False)


def read(path, found=False) -> SplitFile:
    """The split file's lists, checked for shape; DataError naming the file (and line or persona) otherwise."""
    raw = _read_bytes(path)
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise DataError([f"{path}: invalid UTF-8 at byte {e.start}"]) from None
    except json.JSONDecodeError as e:
        raise DataError([f"{path}:{e.lineno}: broken JSON: {e.msg} (column {e.colno})"]) from None
    except (RecursionError, ValueError) as e:
        raise DataError([f"{path}: unreadable JSON ({type(e).__name__})"]) from None
    if not isinstance(obj, dict) or not obj:
        raise DataError([f"{path}: a split file is a JSON object of persona ids, each "
                         '{"train": [...], "val": [...], "test": [...]} of dialogue indices'])
    problems, lists, ignored = [], {}, {}
    for pid, entry in obj.items():
        if not isinstance(entry, dict):
            problems.append(f"{path}: persona {pid!r}: its entry must be an object of split lists")
            continue
        for key in entry:
            if key not in SPLITS:
                ignored[key] = ignored.get(key, 0) + 1
        lists[pid] = {}
        for split in SPLITS:
            indices = entry.get(split, [])
            if not isinstance(indices, list) or not all(is_int(i) and i >= 0 for i in indices):
                problems.append(f"{path}: persona {pid!r}: '{split}' must be a list of dialogue indices "
                                "(integers >= 0)")
                indices = []
            lists[pid][split] = indices
    if problems:
        raise DataError(cap(problems))
    return SplitFile(str(path), lists, ignored, raw, found)


def _read_bytes(path) -> bytes:
    if os.path.isdir(path):
        raise DataError([f"{path}: is a folder, not a split file"])
    if not os.path.isfile(path):
        raise DataError([f"{path}: no such split file"])
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise DataError([f"{path}: cannot be read ({e.strerror})"]) from None


def assign(sf: SplitFile, dialogues: dict) -> tuple[dict, list[str]]:
    """({persona_id: {index: split}}, notes) for the data's dialogues ({persona_id: [index, ...]}, in data order);
    DataError listing every way the file and the data disagree."""
    owner = {i: pid for pid, indices in dialogues.items() for i in indices}
    problems = [f"{sf.path}: persona {pid!r} of the data has no entry (every persona needs its train, val and "
                "test lists)" for pid in dialogues if pid not in sf.lists]
    problems += [f"{sf.path}: persona {pid!r} is not in the data" for pid in sf.lists if pid not in dialogues]
    out = {}
    for pid, indices in dialogues.items():
        if pid in sf.lists:
            out[pid] = _persona_splits(sf.path, pid, sf.lists[pid], set(indices), owner, problems)
    if problems:
        raise DataError(cap(problems))
    return out, _notes(sf, dialogues, out)


def _persona_splits(path, pid, lists, mine, owner, problems) -> dict:
    """{index: split} of one persona's listed dialogues; every problem with its lists appended to `problems`."""
    where = {}
    for split in SPLITS:
        for i in lists[split]:
            if i not in mine:
                whose = f"; {i} is {owner[i]}'s" if i in owner else ""
                problems.append(f"{path}: persona {pid!r}: {split} index {i} is not one of its dialogues "
                                f"({_describe(mine)}{whose})")
            elif i in where:
                both = f"twice in {split}" if where[i] == split else f"in both {where[i]} and {split}"
                problems.append(f"{path}: persona {pid!r}: dialogue {i} is {both}")
            else:
                where[i] = split
    if not lists["test"]:
        problems.append(f"{path}: persona {pid!r} has no test dialogues (every persona needs one)")
    return where


def _describe(indices: set) -> str:
    """"its dialogues are 50..99" or "its dialogue indices: 3, 7, 40" (the first few)."""
    s = sorted(indices)
    if s and s[-1] - s[0] + 1 == len(s) and len(s) > 2:
        return f"its dialogues are {s[0]}..{s[-1]}"
    shown = ", ".join(map(str, s[:5])) + (f", ... ({len(s)} in all)" if len(s) > 5 else "")
    return f"its dialogue indices: {shown}"


def _notes(sf: SplitFile, dialogues: dict, assigned: dict) -> list[str]:
    notes = [f"splits from {sf.path}" + (" (found beside the data)" if sf.found else "")]
    for key, n in sorted(sf.ignored.items()):
        notes.append(f"{sf.path}: {key!r} ignored ({n} personas have it): the lab splits into train, val and test only")
    total = sum(len(v) for v in dialogues.values())
    left = total - sum(len(v) for v in assigned.values())
    if left:
        notes.append(f"{sf.path}: {left} of {total} dialogues are in no train, val or test list and are left out")
    return notes
