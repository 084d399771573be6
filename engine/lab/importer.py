"""Import per-persona results of other tools as a run of the store (`task = imported`).

Researchers keep per-persona results from their own scripts: a CSV with a header, a JSON list of
per-persona objects (or an object holding one such list under any key), or JSON Lines — a persona
column plus one column per metric. Each file becomes one method of a run. Its rows go through the same
result files and `store.ingest` as a trained run's, so Compare and `engine runs` compute the same
statistics from the same per-persona rows; nothing here computes a statistic.

Columns: numeric columns whose values all lie in [0, 1] are metrics, kept per persona (`metrics_json`,
and the store's own column when the name is one of its metrics); one of them is the `score`. Other
numeric columns are kept per persona in the method's `details_json`. `n_test`, when present, is the
persona's number of test examples. Columns without numbers are named in `details_json` and not kept.

Everything is checked before anything is written. A bad file raises ImportProblems with one
`FILE:LINE: what` line per problem, LINE being the 1-based line where the offending record starts
(the header for problems of a whole column or file); the store is then left exactly as it was.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from engine import store
from engine.store import METRIC_COLUMNS as STORE_METRICS  # persona_results' own metric columns (Compare can switch to them)
from engine import settings
from engine.lab.import_formats import PARSERS, ImportProblems, file_format  # noqa: F401 - ImportProblems: the API

TASK = "imported"
PERSONA_COLUMN = "persona_id"
N_TEST_COLUMN = "n_test"
METHOD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,63}$")  # also a folder name (store.method_dirname)
NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")  # what float() takes, without "nan", "1_0"
MISSING = object()


@dataclass
class ResultsFile:
    """One file's per-persona results, checked. `numbers[column][persona]` holds every numeric column."""
    name: str
    sha256: str
    format: str
    persona_column: str
    personas: list[str]                   # file order
    lines: dict[str, int]                 # persona -> line of its record
    numbers: dict[str, dict[str, float]]
    metrics: list[str]                    # numeric columns with every value in [0, 1], file order
    others: list[str]                     # the other numeric columns
    texts: list[str]                      # columns without numbers
    score_column: str                     # the metric that becomes `score`
    head_line: int                        # where problems of a whole column are reported (the CSV header)

    def info(self) -> dict:
        """What the run's config and the method's details record about the file."""
        return {"file": self.name, "sha256": self.sha256, "format": self.format,
                "persona_column": self.persona_column, "score_column": self.score_column,
                "metrics": self.metrics, "other_columns": self.others, "text_columns": self.texts}


def _number(value):
    """A float for a number (or a text that is one), MISSING for no value, None for anything else."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return MISSING
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        value = value.strip()
        if not NUMBER.match(value):
            return None
    elif not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:  # an integer beyond float's range
        return math.inf


def _persona_id(value) -> str | None:
    """The persona id a record names (spaces around it dropped, as a CSV cell has them), None when it has none.
    An id with a control character or a lone surrogate is refused by read_results (bad_id)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


MAX_FILE_BYTES = 64 * 2**20  # a per-persona results file of 100,000 personas x 30 columns is ~30 MB


def read_file(path) -> bytes:
    """A results file's bytes: a regular file (not a FIFO, a device, a folder) of at most MAX_FILE_BYTES; otherwise
    ImportProblems with one line saying why, at once (a FIFO is never opened, so nothing blocks)."""
    import stat
    try:
        st = os.stat(path)
    except OSError as e:
        raise ImportProblems([f"{path}: cannot be read ({e.strerror})"]) from None
    if stat.S_ISDIR(st.st_mode):
        raise ImportProblems([f"{path}: is a folder, not a results file"])
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else "a device" if \
            stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else \
            "not a regular file"
        raise ImportProblems([f"{path}: {kind}; import reads regular files only"])
    too_big = f"{path}: larger than {MAX_FILE_BYTES // 2**20} MB; a per-persona results file is far smaller"
    if st.st_size > MAX_FILE_BYTES:
        raise ImportProblems([too_big])
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise ImportProblems([f"{path}: cannot be read ({e.strerror})"]) from None
    if len(raw) > MAX_FILE_BYTES:  # it grew while being read
        raise ImportProblems([too_big])
    return raw


def bad_id(pid: str) -> str | None:
    """Why a persona id cannot be one (a control character such as a newline or tab, a lone surrogate), or None."""
    if any(unicodedata.category(c) == "Cc" for c in pid):
        return "has a control character (a newline, a tab, ...)"
    try:
        pid.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode (a lone surrogate)"
    return None


def _show(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def read_results(name: str, raw: bytes, persona_column: str = PERSONA_COLUMN,
                 metric_column: str | None = None) -> ResultsFile:
    """One file of per-persona results, checked; ImportProblems lists every `FILE:LINE: what` found.

    The score is `metric_column` when given, else the column `score` when it is a metric, else the first metric.
    """
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ImportProblems([f"{name}:{line}: not UTF-8 text ({e.reason})"]) from None
    if not text.strip():
        raise ImportProblems([f"{name}:1: empty file: no header and no records"])
    fmt = file_format(name, text)
    records, columns, head, problems = PARSERS[fmt](name, text)
    if not records:
        raise ImportProblems(problems or [f"{name}:{head}: no records" + (" after the header" if fmt == "csv" else "")])
    if persona_column not in columns:
        raise ImportProblems([f"{name}:{head if fmt == 'csv' else records[0][0]}: no column '{persona_column}' "
                              f"(columns: {', '.join(columns[:12])}); name the persona column with --persona-column"])

    personas, lines, good = [], {}, []  # good: (line, values) of the records with a new persona id
    for line, values in records:
        pid = _persona_id(values.get(persona_column))
        if pid is None:
            problems.append(f"{name}:{line}: '{persona_column}' must be a non-empty text or an integer, got "
                            f"{_show(values.get(persona_column)) if persona_column in values else 'nothing'}")
        elif bad_id(pid):
            problems.append(f"{name}:{line}: persona {_show(pid)} {bad_id(pid)}; a persona id is one line of text")
        elif pid in lines:
            problems.append(f"{name}:{line}: persona '{pid}' again (first at line {lines[pid]})")
        else:
            personas.append(pid)
            lines[pid] = line
            good.append((line, values))

    numbers, metrics, others, texts = {}, [], [], []
    for column in columns:
        if column == persona_column:
            continue
        parsed = [(line, values.get(column), _number(values.get(column))) for line, values in good]
        if not any(isinstance(x, float) for _, _, x in parsed):
            odd = next(((line, v) for line, v, x in parsed if x is None), None)
            if odd and (column in STORE_METRICS or column == metric_column):  # named like a metric: never dropped
                problems.append(f"{name}:{odd[0]}: column '{column}': {_show(odd[1])} is not a number (a metric "
                                "holds a score in [0, 1] per persona, e.g. 0.82 rather than 82%)")
                continue
            texts.append(column)
            continue
        bad = next(((line, v) for line, v, x in parsed if x is None), None)
        if bad:
            problems.append(f"{name}:{bad[0]}: column '{column}': {_show(bad[1])} is not a number (the column's other "
                            "values are numbers)")
            continue
        missing = next((line for line, _, x in parsed if x is MISSING), None)
        if missing:
            problems.append(f"{name}:{missing}: column '{column}' has no value here (every record needs one)")
            continue
        infinite = next(((line, v) for line, v, x in parsed if not math.isfinite(x)), None)
        if infinite:
            problems.append(f"{name}:{infinite[0]}: column '{column}': {_show(infinite[1])} is not a finite number")
            continue
        by_persona = {p: x for p, (_, _, x) in zip(personas, parsed)}
        if column == N_TEST_COLUMN:
            odd = next((line for line, _, x in parsed if x < 0 or x != int(x)), None)
            if odd:
                problems.append(f"{name}:{odd}: column '{N_TEST_COLUMN}' (the persona's test examples) must be a "
                                "whole number >= 0")
                continue
            numbers[column] = by_persona
            continue
        outside = next(((line, x) for line, _, x in parsed if not 0.0 <= x <= 1.0), None)
        if outside is None:
            metrics.append(column)
        elif column in STORE_METRICS or column == metric_column:
            problems.append(f"{name}:{outside[0]}: column '{column}' = {outside[1]:g} is outside [0, 1] (a metric is "
                            "a score in [0, 1])")
            continue
        else:
            others.append(column)
        numbers[column] = by_persona

    score_column = metric_column
    if metric_column is not None and metric_column not in columns:
        problems.append(f"{name}:{head}: no column '{metric_column}' (columns: {', '.join(columns[:12])})")
    elif metric_column is not None and metric_column in texts:
        problems.append(f"{name}:{head}: column '{metric_column}' holds no numbers; a score column holds a number in "
                        "[0, 1] per persona")
    elif metric_column is not None and metric_column in (persona_column, N_TEST_COLUMN):
        problems.append(f"{name}:{head}: column '{metric_column}' cannot be the score")
    elif metric_column is None:
        if not metrics and not problems:
            problems.append(f"{name}:{head}: no metric column: no numeric column has all its values in [0, 1] "
                            f"(columns: {', '.join(columns[:12])})")
        score_column = "score" if "score" in metrics else (metrics[0] if metrics else None)
    if problems:
        raise ImportProblems(problems)
    return ResultsFile(name=name, sha256=hashlib.sha256(raw).hexdigest(), format=fmt, persona_column=persona_column,
                       personas=personas, lines=lines, numbers=numbers, metrics=metrics, others=others, texts=texts,
                       score_column=score_column, head_line=head)


# ----------------------------------------------------------------------------- a run from files

@dataclass
class ImportPlan:
    """What an import writes, all checked: the run's row, and per method its summary and per-persona rows."""
    run: dict
    new_run: bool
    methods: list[tuple[str, dict, pd.DataFrame]]
    personas: pd.DataFrame | None  # the personas rows of a new run


def default_method_name(file_name: str) -> str:
    """The file's name without its extension, made a method name ("per persona (2).csv" -> "per_persona_2")."""
    name = re.sub(r"[^A-Za-z0-9_.:+-]+", "_", Path(file_name).stem).strip("_.:+-")[:64]
    return name or "imported"


def method_names(files, methods) -> list[str]:
    """`--method` once per file in order, or none: each file's name without its extension."""
    if not methods:
        names = [default_method_name(f) for f in files]
    elif len(methods) != len(files):
        raise ImportProblems([f"import: {len(files)} file(s) but {len(methods)} --method; give --method once per file "
                              "(in the same order), or leave it out to name each method after its file"])
    else:
        names = list(methods)
    for n in names:
        if not METHOD_NAME.match(n):
            raise ImportProblems([f"import: method name {n!r}: use letters, digits and _ . : + - (at most 64, starting "
                                  "with a letter or digit)"])
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ImportProblems([f"import: method '{dup[0]}' named twice; one method per file"])
    return names


def persona_frame(rf: ResultsFile) -> pd.DataFrame:
    """persona_results rows of one file: score, the store's own metric columns it has, every metric as JSON."""
    known = [m for m in rf.metrics if m in STORE_METRICS and m != "score"]
    n_test = rf.numbers.get(N_TEST_COLUMN)
    rows = []
    for p in rf.personas:
        row = {"persona_id": p, "n_test": int(n_test[p]) if n_test else None, "score": rf.numbers[rf.score_column][p]}
        row.update({m: rf.numbers[m][p] for m in known})
        row["metrics_json"] = json.dumps({m: rf.numbers[m][p] for m in rf.metrics}, sort_keys=True)
        rows.append(row)
    df = pd.DataFrame(rows)
    df["n_test"] = df["n_test"].astype("Int64")
    return df


def _check_personas(rf: ResultsFile, want: set[str], where: str) -> list[str]:
    """Problems where this file's personas differ from `want` (another method of the same run)."""
    extra = [p for p in rf.personas if p not in want]
    missing = sorted(want - set(rf.personas))
    out = [f"{rf.name}:{rf.lines[p]}: persona '{p}' is not in {where} (every method of a run scores the same "
           "personas)" for p in extra]
    if missing:
        shown = ", ".join(f"'{p}'" for p in missing[:5]) + (f" ... ({len(missing)} in all)" if len(missing) > 5 else "")
        out.append(f"{rf.name}:{rf.head_line}: persona(s) {shown} of {where} missing here (every method of a run "
                   "scores the same personas)")
    return out


def _plain(v):
    """A store value as JSON can hold it (run.json): NULL as None, timestamps as text, numpy scalars as Python."""
    if v is None or (not isinstance(v, (str, bytes)) and pd.isna(v)):
        return None
    if isinstance(v, pd.Timestamp):
        return v.isoformat()
    return v.item() if hasattr(v, "item") else v


def _dataset_hash(hashes: list[str]) -> str:
    """One file: its sha256; several: the sha256 of their sorted hashes, one per line."""
    return hashes[0] if len(hashes) == 1 else hashlib.sha256("\n".join(sorted(hashes)).encode()).hexdigest()


def _existing_run(run_id: str, path) -> tuple[dict, set[str]]:
    """The imported run's row and personas; ImportProblems when there is no such imported run."""
    p = settings.store_path(path)
    if not os.path.exists(p):
        raise ImportProblems([f"import: no run '{run_id}': the store {p} does not exist"])
    row = store.queries.run_row(run_id, p)
    if row is None:
        raise ImportProblems([f"import: no run '{run_id}' in the store {p}"])
    run = {k: _plain(v) for k, v in row.items()}
    if run.get("task") != TASK:
        raise ImportProblems([f"import: run '{run_id}' is a {run.get('task')} run, not an imported one; imported "
                              "methods join imported runs only (--name starts a new one)"])
    return run, store.queries.persona_ids(run_id, p)


def plan_import(files: list[tuple[str, bytes]], methods: list[str] | None = None, metric_column: str | None = None,
                persona_column: str = PERSONA_COLUMN, run_id: str | None = None, name: str | None = None,
                path=None) -> ImportPlan:
    """Read and check every file (and, with run_id, the run they join); writes nothing.

    files: (name shown in messages, bytes). One run has one score: every file's score is the same column (with
    run_id, the run's own unless metric_column says otherwise), and every method scores the same personas.
    """
    if run_id and name:
        raise ImportProblems(["import: give --run (add to an imported run) or --name (a new run), not both"])
    if not files:
        raise ImportProblems(["import: give at least one results file"])
    names = method_names([f for f, _ in files], methods)
    run, have = (_existing_run(run_id, path) if run_id else (None, None))
    if run is not None:
        taken = [m for m in names if m in str(run.get("methods") or "").split(",")]
        if taken:
            raise ImportProblems([f"import: run '{run_id}' already has method '{taken[0]}'; choose another --method"])
        metric_column = metric_column or run.get("metric")

    problems, read = [], []
    for fname, raw in files:
        try:
            read.append(read_results(fname, raw, persona_column, metric_column))
        except ImportProblems as e:
            problems += e.problems
    if problems:
        raise ImportProblems(problems)
    if run is not None and read[0].score_column != run.get("metric"):
        raise ImportProblems([f"{read[0].name}:{read[0].head_line}: run '{run_id}' scores '{run.get('metric')}'; one "
                              f"run has one score, so '{read[0].score_column}' cannot be this method's score"])
    first = read[0]
    for rf in read[1:]:
        if rf.score_column != first.score_column:
            problems.append(f"{rf.name}:{rf.head_line}: the score would be column '{rf.score_column}' here but "
                            f"'{first.score_column}' in {first.name} (one run has one score); choose it with "
                            "--metric-column")
    want, where = (have, f"run '{run_id}'") if run is not None else (set(first.personas), first.name)
    for rf in (read if run is not None else read[1:]):
        problems += _check_personas(rf, want, where)
    if problems:
        raise ImportProblems(problems)

    now = datetime.now(timezone.utc).isoformat()
    imported = {m: rf.info() for m, rf in zip(names, read)}
    if run is None:
        run = {"run_id": settings.new_id(), "created_at": now, "name": name or f"imported · {', '.join(names)}",
               "status": "done", "task": TASK, "n_personas": len(first.personas), "model": None, "device": None,
               "seed": None, "methods": "", "metric": first.score_column, "error": None, "job_id": None,
               "artifacts_dir": None, "dataset": "", "config_json": "{}"}
    config = json.loads(run.get("config_json") or "{}")
    config.setdefault("imported", {}).update(imported)
    config.update(task=TASK, metric=run["metric"])
    every = config["imported"]
    run.update(finished_at=now, methods=",".join(every), dataset=", ".join(v["file"] for v in every.values()),
               dataset_hash=_dataset_hash([v["sha256"] for v in every.values()]),
               config_json=json.dumps(config, sort_keys=True))
    planned = []
    for method, rf in zip(names, read):
        per_persona = persona_frame(rf)
        details = {"imported": {**rf.info(), "other_columns": {c: rf.numbers[c] for c in rf.others}}}
        planned.append((method, store.method_summary(method, per_persona, details_json=json.dumps(details)),
                        per_persona))
    personas = None
    if not run_id:
        n_test = first.numbers.get(N_TEST_COLUMN)
        personas = pd.DataFrame({"persona_id": first.personas,
                                 "n_test": pd.array([int(n_test[p]) if n_test else None for p in first.personas],
                                                    dtype="Int64")})
    return ImportPlan(run=run, new_run=not run_id, methods=planned, personas=personas)


def write_import(plan: ImportPlan, path=None) -> str:
    """Write the plan's result files to a temporary folder and ingest them (one transaction); returns the run id."""
    with tempfile.TemporaryDirectory(prefix="pll-import-") as tmp:
        results = Path(tmp)
        store.write_run_file(results, plan.run)
        if plan.personas is not None:
            store.write_run_table(results, "personas", plan.personas)
        for method, summary, per_persona in plan.methods:
            store.write_method_files(results, method, summary, {"persona_results": per_persona})
        store.ingest(results, path)
    return plan.run["run_id"]


def import_results(files: list[tuple[str, bytes]], methods: list[str] | None = None, metric_column: str | None = None,
                   persona_column: str = PERSONA_COLUMN, run_id: str | None = None, name: str | None = None,
                   path=None) -> str:
    """Check everything, then write: a new imported run (or new methods of `run_id`). Returns the run id."""
    return write_import(plan_import(files, methods, metric_column, persona_column, run_id, name, path), path)
