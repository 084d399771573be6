"""Reading other tools' per-persona results files: CSV with a header, a JSON list of records (or an object
holding one such list), JSON Lines. Each reader returns records with the 1-based line each starts on, so every
problem is reported as `FILE:LINE: what`.
"""
from __future__ import annotations

import bisect
import csv
import io
import json
import re
from pathlib import Path

MAX_PROBLEMS = 50
FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl"}


class ImportProblems(ValueError):
    """Files that cannot be imported; .problems holds one `FILE:LINE: what is wrong` line each."""

    def __init__(self, problems):
        self.problems = list(problems)[:MAX_PROBLEMS]
        super().__init__("\n".join(self.problems))


def file_format(name: str, text: str) -> str:
    """csv, json or jsonl: from the extension, else from the content (a '[' or one object: JSON; an object per
    line: JSONL; anything else: CSV)."""
    fmt = FORMATS.get(Path(name).suffix.lower())
    if fmt:
        return fmt
    start = text.lstrip()
    if start.startswith("["):
        return "json"
    if start.startswith("{"):
        first = start.split("\n", 1)[0]
        try:
            json.loads(first)
        except ValueError:
            return "json"  # an object spread over several lines
        return "jsonl" if start[len(first):].strip() else "json"
    return "csv"


class _Lines:
    """Offset -> 1-based line number of a text, by bisection (records of big files are many)."""

    def __init__(self, text: str):
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def __call__(self, offset: int) -> int:
        return bisect.bisect_right(self.starts, offset)


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _csv_records(name: str, text: str):
    """(records [(line, {column: text})], columns, head line, problems); a broken CSV raises ImportProblems."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header, head_line, records, problems = None, 1, [], []
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise ImportProblems([f"{name}:{start}: malformed CSV ({e})"]) from None
        if not any(cell.strip() for cell in row):
            continue  # a blank line
        if header is None:
            header, head_line = [cell.strip() for cell in row], start
            empty = [i + 1 for i, c in enumerate(header) if not c]
            dup = sorted({c for c in header if c and header.count(c) > 1})
            if empty or dup:
                raise ImportProblems([f"{name}:{start}: header " + (f"column {empty[0]} has no name" if empty else
                                                                    f"names column '{dup[0]}' twice")])
            continue
        if len(row) != len(header):
            problems.append(f"{name}:{start}: {len(row)} fields, the header (line {head_line}) has {len(header)}")
            continue
        records.append((start, dict(zip(header, row))))
    return records, header or [], head_line, problems


def _json_value(name: str, text: str, i: int, line_of):
    """The JSON value starting at offset i and the offset after it."""
    try:
        return json.JSONDecoder().raw_decode(text, i)
    except json.JSONDecodeError as e:
        raise ImportProblems([f"{name}:{e.lineno}: malformed JSON ({e.msg}, column {e.colno})"]) from None
    except (ValueError, RecursionError) as e:  # a number of more than 4300 digits, nesting too deep
        raise ImportProblems([f"{name}:{line_of(i)}: malformed JSON ({_first_line(e) or 'nested too deeply'})"]) \
            from None


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def _json_list(name: str, text: str, i: int, line_of):
    """The items of the JSON array at text[i] == '[', each with the line where it starts; and the end offset."""
    items = []
    i = _skip_space(text, i + 1)
    if text.startswith("]", i):
        return items, i + 1
    while True:
        value, end = _json_value(name, text, i, line_of)
        items.append((line_of(i), value))
        i = _skip_space(text, end)
        if text.startswith(",", i):
            i = _skip_space(text, i + 1)
        elif text.startswith("]", i):
            return items, i + 1
        else:
            raise ImportProblems([f"{name}:{line_of(i)}: malformed JSON (expected ',' or ']' after a record)"])


def _json_object_lists(name: str, text: str, i: int, line_of):
    """The top-level object at text[i] == '{': [(key, line, items)] for its array values; and the end offset."""
    lists = []
    i = _skip_space(text, i + 1)
    if text.startswith("}", i):
        return lists, i + 1
    while True:
        if not text.startswith('"', i):
            raise ImportProblems([f"{name}:{line_of(i)}: malformed JSON (expected a key in double quotes)"])
        key, i = _json_value(name, text, i, line_of)
        i = _skip_space(text, i)
        if not text.startswith(":", i):
            raise ImportProblems([f"{name}:{line_of(i)}: malformed JSON (expected ':' after key '{key}')"])
        i = _skip_space(text, i + 1)
        if text.startswith("[", i):
            line = line_of(i)
            items, i = _json_list(name, text, i, line_of)
            lists.append((key, line, items))
        else:
            _, i = _json_value(name, text, i, line_of)
        i = _skip_space(text, i)
        if text.startswith(",", i):
            i = _skip_space(text, i + 1)
        elif text.startswith("}", i):
            return lists, i + 1
        else:
            raise ImportProblems([f"{name}:{line_of(i)}: malformed JSON (expected ',' or '}}' after key '{key}')"])


def _json_records(name: str, text: str):
    """A JSON list of records, or an object holding exactly one list of records under any key."""
    line_of = _Lines(text)
    i = _skip_space(text, 0)
    if text.startswith("[", i):
        items, end = _json_list(name, text, i, line_of)
    elif text.startswith("{", i):
        lists, end = _json_object_lists(name, text, i, line_of)
        of_records = [x for x in lists if all(isinstance(v, dict) for _, v in x[2])]
        if not of_records:
            raise ImportProblems([f"{name}:{line_of(i)}: no list of per-persona records in this object "
                                  f"({'its lists hold no objects' if lists else 'it holds no list'})"])
        if len(of_records) > 1:
            (k1, l1, _), (k2, l2, _) = of_records[:2]
            raise ImportProblems([f"{name}:{l2}: a second list of records (under '{k2}'; the first is under '{k1}' "
                                  f"at line {l1}); keep one"])
        items = of_records[0][2]
    else:
        raise ImportProblems([f"{name}:{line_of(i)}: a JSON results file holds a list of per-persona records or an "
                              "object holding one such list"])
    rest = _skip_space(text, end)
    if rest < len(text):
        raise ImportProblems([f"{name}:{line_of(rest)}: extra data after the JSON document (one record per line is "
                              "JSON Lines: name the file .jsonl)"])
    return _objects(name, items)


def _jsonl_records(name: str, text: str):
    items, problems = [], []
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            items.append((n, json.loads(line)))
        except json.JSONDecodeError as e:
            problems.append(f"{name}:{n}: malformed JSON ({e.msg}, column {e.colno})")
        except (ValueError, RecursionError) as e:
            problems.append(f"{name}:{n}: malformed JSON ({_first_line(e) or 'nested too deeply'})")
    records, columns, head, more = _objects(name, items)
    return records, columns, head, problems + more


def _objects(name: str, items):
    """(records, columns in order of first appearance, head line, problems) from decoded (line, value) items."""
    records, columns, problems = [], {}, []
    for line, value in items:
        if not isinstance(value, dict):
            problems.append(f"{name}:{line}: a record must be a JSON object, got {type(value).__name__}")
            continue
        records.append((line, value))
        columns.update(dict.fromkeys(value))
    return records, list(columns), 1, problems


PARSERS = {"csv": _csv_records, "json": _json_records, "jsonl": _jsonl_records}
