"""Load and validate persona datasets: the one loader (`load_dataset`) the CLI, the jobs and Launch call.

A file that breaks the contract is rejected whole, before any work: validation walks every line,
collects every problem as "FILE:LINE: what is wrong" (the first 50, then a count) and raises one
DataError. Only a clean file becomes a Dataset.

Three sources:
  a JSONL file            the contract below (also the seed study's flattened EdgeWisePersona files)
  a folder                EdgeWisePersona's own release: characters.jsonl, routines.jsonl, sessions.jsonl
                          (engine.data.edgewise)
  "sim" / "sim:knob=..."  the built-in simulator (engine.data.simulator)

Two tasks:
  dialogue  {"persona_id", "persona", "messages": [{"role", "text"}, ...], "split"?}
            every assistant turn is a target; the messages before it are its context
  choice    {"persona_id", "persona", "prompt", "choices": [...], "answer": index, "split"?}
The task is the first line's (the first line that looks like either); a line of the other task is
an error. Optional on both: "id" (unique, also against the ids generated for lines without one), "kind" ("personal" |
"general"), and the profile text "persona" (or "character"): when given, a persona keeps one text; methods
that read profiles (cluster, merge) check that every persona has one before a run starts (engine.lab.checks).
Optional on an assistant message: "kind" (overrides the line's for that target) and "persona_blind" (the reply
a good assistant that ignores the persona would give: the simulator writes it, and the lab scores it as the
ceiling of persona-blind methods). Also read, as the study's flattened files carry them: "meta" (the
dialogue's situation, kept with its examples and shown on the Persona page) and "applied_routines" (a
non-empty list makes the line "personal", an empty one "general", unless "kind" says otherwise).

Split: a file gives "split" on every line or on none (mixing is an error, since a half-split file
is almost certainly a mistake). Without it each persona's lines are split 60/20/20 in file order:
n_val = round(0.2 n) for n >= 3 (else 0), n_test = max(1, round(0.2 n)), the rest train, so a
persona with 5 lines gets 3/1/1 and every persona gets a test line. A split file (the study's
edgesplits.json beside the data, or one named with `splits=`) decides instead: see engine.data.splitfile for
what its indices mean.
"""
import hashlib
import json
import os
from dataclasses import dataclass

from engine.data import edgewise, splitfile
from engine.data.contract import (AUTO_SPLIT, GIVEN_SPLIT, KINDS, MAX_PROBLEMS, ROLES, SPLITS,  # noqa: F401
                                  DataError, Dataset, Example, auto_splits, check_context_window, check_messages,
                                  check_meta, dialogue_examples, is_int, nonempty_str, parse_jsonl, persona_id_problem,
                                  raise_problems, routine_kind)


# -----------------------------------------------------------------------------
# entry points

def load_dataset(source, context_window=4, splits=None):
    """A JSONL path, an EdgeWisePersona folder, or a simulator spec ("sim", "sim:personas=8,..."): the one loader
    the CLI, the jobs and Launch use. `splits`: a split file that decides train/val/test (engine.data.splitfile);
    without it, an edgesplits.json beside the data does."""
    text = str(source)
    if text == "sim" or text.startswith("sim:"):
        if splits:
            raise DataError([f"{splits}: a split file applies to data files, not to the simulator ({text})"])
        from engine.data.simulator import build_benchmark, format_sim_spec, parse_sim_spec
        knobs = parse_sim_spec(text)
        return dataset_from_records(build_benchmark(**knobs)[1], format_sim_spec(knobs), context_window)
    if os.path.isdir(source):
        return edgewise.load_folder(source, context_window, splits)
    return load_jsonl(source, context_window, splits)


def load_jsonl(path, context_window=4, splits=None):
    """Dataset from a JSONL file; DataError listing every problem if it breaks the contract."""
    source = str(path)
    if os.path.isdir(path):
        raise DataError([f"{source}: is a folder, not a JSONL file"])
    if not os.path.isfile(path):
        raise DataError([f"{source}: no such file"])
    digest = hashlib.sha256()

    def hashed(f):  # line by line: a big file is never held whole beside its parsed records
        for line in f:
            digest.update(line)
            yield line
    try:
        with open(path, "rb") as f:
            lines, problems, _ = parse_jsonl(hashed(f))
    except OSError as e:
        raise DataError([f"{source}: cannot be read ({e.strerror})"]) from None
    if not lines and not problems:
        problems.append((1, "file is empty"))
    return _build(lines, problems, source, digest.hexdigest(), context_window, splitfile.locate(path, splits))


def dataset_from_records(records, source, context_window=4):
    """Dataset from in-memory records (simulator output), validated like a file; line = 1-based index."""
    canonical = json.dumps(records, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=repr)
    lines = list(enumerate(records, start=1))
    problems = [] if lines else [(1, "file is empty")]
    return _build(lines, problems, source, hashlib.sha256(canonical.encode("utf-8")).hexdigest(), context_window)


def source_stamp(source, splits=None):
    """What changes when the data a source names changes (modification times of its files and split file), so a
    cache of the loaded dataset knows when to load again; None for the simulator."""
    text = str(source)
    if text == "sim" or text.startswith("sim:"):
        return None
    files = [os.path.join(text, f) for f in edgewise.FILES] if os.path.isdir(text) else [text]
    files.append(str(splits) if splits else splitfile.beside(text))
    out = []
    for f in files:
        try:
            out.append(os.stat(f).st_mtime_ns)
        except OSError:
            out.append(None)
    return tuple(out)


# -----------------------------------------------------------------------------
# validation, line by line

def _line_task(obj):
    if "messages" in obj:
        return "dialogue"
    if "choices" in obj or "prompt" in obj:
        return "choice"
    return None


def _check_choice(obj, problem):
    """(prompt, choices, answer) of a choice line, reporting every bad field."""
    ok = True
    prompt, choices, answer = obj.get("prompt"), obj.get("choices"), obj.get("answer")
    if not nonempty_str(prompt):
        problem("'prompt' must be a non-empty string")
        ok = False
    if not isinstance(choices, list) or len(choices) < 2:
        problem("'choices' must be a list of at least 2 strings")
        return None
    if not all(nonempty_str(c) for c in choices):
        problem("every choice must be a non-empty string")
        return None
    if len(set(choices)) != len(choices):
        dup = next(c for i, c in enumerate(choices) if c in choices[:i])
        problem(f"duplicate choice {dup!r}")
        ok = False
    if not is_int(answer):
        problem(f"'answer' must be an integer index, got {answer!r}")
        ok = False
    elif not 0 <= answer < len(choices):
        problem(f"'answer' {answer} is out of range for {len(choices)} choices (0..{len(choices) - 1})")
        ok = False
    return (prompt, tuple(choices), answer) if ok else None


@dataclass
class _Line:
    """A line that passed every check."""
    number: int
    persona_id: str
    split: str | None
    kind: str | None
    line_id: str | None
    payload: object       # dialogue: check_messages' pairs; choice: (prompt, choices, answer)
    meta: dict | None
    index: int            # the dialogue's index for a split file: dialogue_idx, else its position among the records


class _Lines:
    """Checks lines one by one, keeping what later lines are checked against (task, split given or not,
    profiles, ids); every problem goes to `problems` as (line, message)."""

    def __init__(self, problems):
        self.problems = problems
        self.task = self.task_line = None
        self.split_given = self.split_line = None
        self.first_seen = {}      # persona_id -> its first line, in file order
        self.profiles = {}        # persona_id -> (profile, line it was first given on)
        self.test_personas = set()  # personas with at least one line whose split is "test"
        self.troubled = set()     # personas with a bad line: "no test examples" would only be an echo
        self.ids = {}             # id -> first line
        self.idx_seen = {}        # dialogue_idx -> first line
        self.with_idx = None      # whether the first line carried dialogue_idx (a split file reads it)

    def check(self, number, obj, position, indexed=False):
        """The line as a _Line, or None after reporting its problems; `indexed`: a split file will read its index."""
        def problem(msg):
            self.problems.append((number, msg))

        if not isinstance(obj, dict):
            problem(f"line is not a JSON object (got {type(obj).__name__})")
            return None
        n_before = len(self.problems)
        line_task = self._task(number, obj, problem)
        persona_id = self._persona(number, obj, problem)
        split = self._split(number, obj, problem, persona_id)
        kind = self._kind(obj, problem)
        line_id = self._id(number, obj, problem)
        meta = check_meta(obj.get("meta"), problem)
        index = self._index(number, obj, position, problem) if indexed else position
        payload = None
        if line_task == "dialogue":
            payload = check_messages(obj.get("messages"), problem)
        elif line_task == "choice":
            payload = _check_choice(obj, problem)
        if len(self.problems) > n_before:
            if persona_id is not None:
                self.troubled.add(persona_id)
            return None
        return _Line(number, persona_id, split, kind, line_id, payload, meta, index)

    def _task(self, number, obj, problem):
        line_task = _line_task(obj)
        if line_task is None:
            problem("line has neither 'messages' (dialogue task) nor 'prompt'/'choices' (choice task)")
        elif self.task is None:
            self.task, self.task_line = line_task, number
        elif line_task != self.task:
            problem(f"a {line_task} line in a {self.task} file (the task was set by line {self.task_line})")
            return None
        return line_task

    def _persona(self, number, obj, problem):
        persona_id = obj.get("persona_id")
        if not nonempty_str(persona_id):
            problem("'persona_id' must be a non-empty string")
            persona_id = None
        elif persona_id_problem(persona_id):
            problem(persona_id_problem(persona_id))
            persona_id = None
        profile = obj.get("persona", obj.get("character"))
        if profile is not None and not nonempty_str(profile):
            problem("'persona' (or 'character') must be a non-empty string when given")
            profile = None
        if persona_id is not None:
            self.first_seen.setdefault(persona_id, number)
            if profile is not None and persona_id not in self.profiles:
                self.profiles[persona_id] = (profile, number)
            elif profile is not None and self.profiles[persona_id][0] != profile:
                problem(f"persona {persona_id!r} has a different profile text than on line "
                        f"{self.profiles[persona_id][1]}")
        return persona_id

    def _split(self, number, obj, problem, persona_id):
        split, has_split = obj.get("split"), "split" in obj
        if self.split_given is None:
            self.split_given, self.split_line = has_split, number
        elif has_split != self.split_given:
            problem(f"'split' is {'given' if has_split else 'missing'} here but "
                    f"{'given' if self.split_given else 'missing'} on line {self.split_line} (give it on every line "
                    "or on none)")
        if has_split and split not in SPLITS:
            problem(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")
        if split == "test" and persona_id is not None:
            self.test_personas.add(persona_id)
        return split if has_split else None

    @staticmethod
    def _kind(obj, problem):
        kind = obj.get("kind")
        if kind is not None and kind not in KINDS:
            problem(f"unknown kind {kind!r} (expected one of {', '.join(KINDS)})")
        if "applied_routines" in obj:
            routines = obj.get("routines")
            from_routines = routine_kind(obj["applied_routines"], len(routines) if isinstance(routines, list)
                                         else None, problem)
            return kind if kind is not None else from_routines
        return kind

    def _id(self, number, obj, problem):
        line_id = obj.get("id")
        if "id" in obj:
            if not nonempty_str(line_id):
                problem("'id' must be a non-empty string")
            elif line_id in self.ids:
                problem(f"duplicate id {line_id!r} (first on line {self.ids[line_id]})")
            else:
                self.ids[line_id] = number
        return line_id

    def _index(self, number, obj, position, problem):
        """dialogue_idx when the lines carry it (all of them, distinct integers >= 0), else the line's position."""
        has = "dialogue_idx" in obj
        if self.with_idx is None:
            self.with_idx = has
        elif has != self.with_idx:
            problem("'dialogue_idx' is given on some lines and not on others: a split file reads it on every line, "
                    "or the lines' positions when no line has it")
            return position
        if not has:
            return position
        idx = obj["dialogue_idx"]
        if not is_int(idx) or idx < 0:
            problem(f"'dialogue_idx' must be an integer >= 0, got {idx!r}")
        elif idx in self.idx_seen:
            problem(f"dialogue_idx {idx} is also on line {self.idx_seen[idx]}: a split file could not tell them apart")
        else:
            self.idx_seen[idx] = number
        return idx


# -----------------------------------------------------------------------------
# the whole file

def _build(lines, problems, source, digest, context_window, split_file=(None, False)):
    check_context_window(context_window)
    split_path, found = split_file
    checker = _Lines(problems)
    parsed = [p for position, (number, obj) in enumerate(lines)
              if (p := checker.check(number, obj, position, indexed=split_path is not None)) is not None]
    lines.clear()  # the decoded objects (what is kept lives on in `parsed`): a big file's peak memory is lower
    notes, rule = [], GIVEN_SPLIT
    if split_path is not None and checker.split_given:
        problems.append((checker.split_line, f"'split' is given on the lines and the split file {split_path} gives "
                                             "the splits too: use one of them"))
    elif split_path is None and not checker.split_given:
        parsed, rule = _auto_split(parsed), AUTO_SPLIT
    elif split_path is None:
        for pid, first_line in checker.first_seen.items():
            if pid not in checker.test_personas and pid not in checker.troubled:
                problems.append((first_line, f"persona {pid!r} has no test examples"))
    raise_problems(problems, source)
    if split_path is not None:
        sf = splitfile.read(split_path, found)
        parsed, notes = _from_split_file(parsed, sf)
        digest, rule = hashlib.sha256(digest.encode() + b"\0" + sf.raw).hexdigest(), f"split file {sf.path}"
    examples = _examples(parsed, checker.task, context_window)
    _check_unique_ids(parsed, examples, checker.task, source)
    personas = {pid: checker.profiles[pid][0] if pid in checker.profiles else None for pid in checker.first_seen}
    return Dataset(task=checker.task, personas=personas, examples=examples, source=source, hash=digest, notes=notes,
                   split_rule=rule)


def _auto_split(parsed):
    """60/20/20 per persona in file order (contract.auto_splits)."""
    per_persona = {}
    for line in parsed:
        per_persona.setdefault(line.persona_id, []).append(line)
    for items in per_persona.values():
        for line, split in zip(items, auto_splits(len(items))):
            line.split = split
    return parsed


def _from_split_file(parsed, sf):
    """The lines the split file lists, each with its split; the others are left out (the notes say so)."""
    dialogues = {}
    for line in parsed:
        dialogues.setdefault(line.persona_id, []).append(line.index)
    assigned, notes = splitfile.assign(sf, dialogues)
    kept = [line for line in parsed if line.index in assigned[line.persona_id]]
    for line in kept:
        line.split = assigned[line.persona_id][line.index]
    return kept, notes


def _examples(parsed, task, context_window):
    examples = []
    for line in parsed:
        pid, number, line_id = line.persona_id, line.number, line.line_id
        if task == "choice":
            prompt, choices, answer = line.payload
            eid = line_id if line_id is not None else f"{pid}:L{number}"
            examples.append(Example(eid, pid, line.split, line.kind, prompt=prompt, choices=choices, answer=answer,
                                    meta=line.meta))
            continue

        def name(turn, n_targets, pid=pid, number=number, line_id=line_id):
            if line_id is None:
                return f"{pid}:L{number}#{turn}"
            return line_id if n_targets == 1 else f"{line_id}#{turn}"
        examples += dialogue_examples(line.payload, pid, line.split, line.kind, name, context_window, line.meta)
    return examples


def _check_unique_ids(parsed, examples, task, source):
    """An explicit id may equal one generated for another line ("p1:L7#1"): example ids must stay unique."""
    problems, first_line = [], {}
    for line, eid in _example_lines(parsed, examples, task):
        number = line.number
        if eid in first_line and first_line[eid] != number:
            problems.append((max(number, first_line[eid]), f"example id {eid!r} is also the id of an example on "
                                                          f"line {min(number, first_line[eid])}; give another 'id'"))
        first_line.setdefault(eid, number)
    raise_problems(problems, source)


def _example_lines(parsed, examples, task):
    """(parsed line, example id) pairs: the examples were made from the parsed lines in order."""
    i = 0
    for line in parsed:
        n = 1 if task == "choice" else sum(m[0] == "assistant" for m in line.payload)
        for e in examples[i:i + n]:
            yield line, e.example_id
        i += n


def repeated_targets(dataset, split: str = "test") -> tuple[int, int]:
    """(how many `split` targets repeat, context and reply, a train target of their own persona; how many
    `split` targets there are). A test split should hold 0: a repeat rewards memorising, not generalising."""
    seen = {(e.persona_id, e.context, e.target, e.prompt, e.choices, e.answer) for e in dataset.split("train")}
    items = dataset.split(split)
    return sum((e.persona_id, e.context, e.target, e.prompt, e.choices, e.answer) in seen for e in items), len(items)
