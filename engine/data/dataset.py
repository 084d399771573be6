"""Load and validate persona datasets.

A file that breaks the contract is rejected whole, before any work: validation walks every line,
collects every problem as "FILE:LINE: what is wrong" (the first 50, then a count) and raises one
DataError. Only a clean file becomes a Dataset.

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
ceiling of persona-blind methods).

Split: a file gives "split" on every line or on none (mixing is an error, since a half-split file
is almost certainly a mistake). Without it each persona's lines are split 60/20/20 in file order:
n_val = round(0.2 n) for n >= 3 (else 0), n_test = max(1, round(0.2 n)), the rest train, so a
persona with 5 lines gets 3/1/1 and every persona gets a test line.
"""
import hashlib
import json
import math
import os
from dataclasses import dataclass

SPLITS = ("train", "val", "test")
KINDS = ("personal", "general")
ROLES = ("user", "assistant", "system")
MAX_PROBLEMS = 50


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


@dataclass
class Dataset:
    task: str                  # "dialogue" | "choice"
    personas: dict[str, str | None]   # persona_id -> profile text (None: none given), in first-seen order
    examples: list[Example]
    source: str                # file path or simulator spec
    hash: str                  # sha256 hex of the file bytes (or of the canonical JSON of records)

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


# -----------------------------------------------------------------------------
# entry points

def load_jsonl(path, context_window=4):
    """Dataset from a JSONL file; DataError listing every problem if it breaks the contract."""
    source = str(path)
    if os.path.isdir(path):
        raise DataError([f"{source}: is a folder, not a JSONL file"])
    if not os.path.isfile(path):
        raise DataError([f"{source}: no such file"])
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError([f"{source}: cannot be read ({e.strerror})"]) from None
    lines, problems = [], []
    for number, line_bytes in enumerate(raw.split(b"\n"), start=1):
        try:
            text = line_bytes.decode("utf-8")
        except UnicodeDecodeError as e:
            problems.append((number, f"invalid UTF-8 at byte {e.start}"))
            continue
        if not text.strip():
            continue  # blank lines are allowed
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
        lines.append((number, obj))
    if not lines and not problems:
        problems.append((1, "file is empty"))
    return _build(lines, problems, source, hashlib.sha256(raw).hexdigest(), context_window)


def dataset_from_records(records, source, context_window=4):
    """Dataset from in-memory records (simulator output), validated like a file; line = 1-based index."""
    canonical = json.dumps(records, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=repr)
    lines = list(enumerate(records, start=1))
    problems = [] if lines else [(1, "file is empty")]
    return _build(lines, problems, source, hashlib.sha256(canonical.encode("utf-8")).hexdigest(), context_window)


def load_dataset(source, context_window=4):
    """A JSONL path, or a simulator spec ("sim", "sim:personas=8,..."): the one loader the CLI needs."""
    if str(source) == "sim" or str(source).startswith("sim:"):
        from engine.data.simulator import build_benchmark, format_sim_spec, parse_sim_spec
        knobs = parse_sim_spec(str(source))
        return dataset_from_records(build_benchmark(**knobs)[1], format_sim_spec(knobs), context_window)
    return load_jsonl(source, context_window)


# -----------------------------------------------------------------------------
# validation

def _line_task(obj):
    if "messages" in obj:
        return "dialogue"
    if "choices" in obj or "prompt" in obj:
        return "choice"
    return None


def _nonempty_str(value):
    return isinstance(value, str) and value.strip() != ""


def _check_messages(obj, problem):
    """The (role, text) pairs of a dialogue line, reporting every bad message."""
    messages = obj.get("messages")
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
        if not _nonempty_str(text):
            problem(f"message {i}: empty or missing 'text'")
            ok = False
        for key in ("kind", "persona_blind"):
            if key in m and role != "assistant":
                problem(f"message {i}: '{key}' is only allowed on assistant messages")
                ok = False
        if "kind" in m and m["kind"] not in KINDS:
            problem(f"message {i}: unknown kind {m['kind']!r} (expected one of {', '.join(KINDS)})")
            ok = False
        if "persona_blind" in m and not _nonempty_str(m["persona_blind"]):
            problem(f"message {i}: 'persona_blind' must be a non-empty string")
            ok = False
        pairs.append((role, text, m.get("kind"), m.get("persona_blind")))
    if ok and not any(p[0] == "assistant" for p in pairs):
        problem("dialogue has no assistant turn")
        ok = False
    return pairs if ok else None


def _check_choice(obj, problem):
    """(prompt, choices, answer) of a choice line, reporting every bad field."""
    ok = True
    prompt, choices, answer = obj.get("prompt"), obj.get("choices"), obj.get("answer")
    if not _nonempty_str(prompt):
        problem("'prompt' must be a non-empty string")
        ok = False
    if not isinstance(choices, list) or len(choices) < 2:
        problem("'choices' must be a list of at least 2 strings")
        return None
    if not all(_nonempty_str(c) for c in choices):
        problem("every choice must be a non-empty string")
        return None
    if len(set(choices)) != len(choices):
        dup = next(c for i, c in enumerate(choices) if c in choices[:i])
        problem(f"duplicate choice {dup!r}")
        ok = False
    if not isinstance(answer, int) or isinstance(answer, bool):
        problem(f"'answer' must be an integer index, got {answer!r}")
        ok = False
    elif not 0 <= answer < len(choices):
        problem(f"'answer' {answer} is out of range for {len(choices)} choices (0..{len(choices) - 1})")
        ok = False
    return (prompt, tuple(choices), answer) if ok else None


def _round_half_up(x):
    return int(math.floor(x + 0.5))


def _auto_splits(n):
    """60/20/20 in order for n lines of one persona; every persona gets a test line."""
    n_test = max(1, _round_half_up(0.2 * n))
    n_val = _round_half_up(0.2 * n) if n >= 3 else 0
    n_train = n - n_val - n_test
    return ["train"] * n_train + ["val"] * n_val + ["test"] * n_test


def _build(lines, problems, source, digest, context_window):
    if isinstance(context_window, bool) or not isinstance(context_window, int) or context_window < 1:
        raise ValueError(f"context_window must be an integer >= 1, got {context_window!r}")
    task, task_line = None, None
    split_given, split_line = None, None
    first_seen = {}      # persona_id -> its first line, in file order
    profiles = {}        # persona_id -> (profile, line it was first given on)
    test_personas = set()  # personas with at least one line whose split is "test"
    troubled = set()       # personas with a bad line: "no test examples" would only be an echo
    ids = {}             # id -> first line
    parsed = []          # (line, persona_id, split or None, kind, id, payload)

    for number, obj in lines:
        def problem(msg, number=number):
            problems.append((number, msg))

        if not isinstance(obj, dict):
            problem(f"line is not a JSON object (got {type(obj).__name__})")
            continue
        n_before = len(problems)

        line_task = _line_task(obj)
        if line_task is None:
            problem("line has neither 'messages' (dialogue task) nor 'prompt'/'choices' (choice task)")
        elif task is None:
            task, task_line = line_task, number
        elif line_task != task:
            problem(f"a {line_task} line in a {task} file (the task was set by line {task_line})")
            line_task = None

        persona_id = obj.get("persona_id")
        if not _nonempty_str(persona_id):
            problem("'persona_id' must be a non-empty string")
            persona_id = None
        profile = obj.get("persona", obj.get("character"))
        if profile is not None and not _nonempty_str(profile):
            problem("'persona' (or 'character') must be a non-empty string when given")
            profile = None
        if persona_id is not None:
            first_seen.setdefault(persona_id, number)
            if profile is not None and persona_id not in profiles:
                profiles[persona_id] = (profile, number)
            elif profile is not None and profiles[persona_id][0] != profile:
                problem(f"persona {persona_id!r} has a different profile text than on line {profiles[persona_id][1]}")

        split = obj.get("split")
        has_split = "split" in obj
        if split_given is None:
            split_given, split_line = has_split, number
        elif has_split != split_given:
            problem(f"'split' is {'given' if has_split else 'missing'} here but {'given' if split_given else 'missing'} "
                    f"on line {split_line} (give it on every line or on none)")
        if has_split and split not in SPLITS:
            problem(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")
        if split == "test" and persona_id is not None:
            test_personas.add(persona_id)

        kind = obj.get("kind")
        if kind is not None and kind not in KINDS:
            problem(f"unknown kind {kind!r} (expected one of {', '.join(KINDS)})")

        line_id = obj.get("id")
        if "id" in obj:
            if not _nonempty_str(line_id):
                problem("'id' must be a non-empty string")
            elif line_id in ids:
                problem(f"duplicate id {line_id!r} (first on line {ids[line_id]})")
            else:
                ids[line_id] = number

        payload = None
        if line_task == "dialogue":
            payload = _check_messages(obj, problem)
        elif line_task == "choice":
            payload = _check_choice(obj, problem)

        if len(problems) > n_before and persona_id is not None:
            troubled.add(persona_id)
        if len(problems) == n_before:
            parsed.append((number, persona_id, split if has_split else None, kind, line_id, payload))

    # splits: given, or 60/20/20 per persona in file order
    if not split_given:
        per_persona = {}
        for item in parsed:
            per_persona.setdefault(item[1], []).append(item)
        assigned = {}
        for items in per_persona.values():
            for item, split in zip(items, _auto_splits(len(items))):
                assigned[item[0]] = split
        parsed = [(n, pid, assigned[n], kind, lid, payload) for n, pid, _, kind, lid, payload in parsed]
    else:
        for pid, first_line in first_seen.items():
            if pid not in test_personas and pid not in troubled:
                problems.append((first_line, f"persona {pid!r} has no test examples"))

    if problems:
        problems.sort(key=lambda p: p[0])  # stable: a line's problems stay in the order found
        out = [f"{source}:{n}: {msg}" for n, msg in problems[:MAX_PROBLEMS]]
        if len(problems) > MAX_PROBLEMS:
            out.append(f"... and {len(problems) - MAX_PROBLEMS} more problems")
        raise DataError(out)

    examples = []
    for number, persona_id, split, kind, line_id, payload in parsed:
        if task == "choice":
            prompt, choices, answer = payload
            eid = line_id if line_id is not None else f"{persona_id}:L{number}"
            examples.append(Example(eid, persona_id, split, kind, prompt=prompt, choices=choices, answer=answer))
            continue
        n_targets = sum(m[0] == "assistant" for m in payload)
        turn = 0
        for i, (role, text, turn_kind, blind) in enumerate(payload):
            if role != "assistant":
                continue
            turn += 1
            if line_id is None:
                eid = f"{persona_id}:L{number}#{turn}"
            else:
                eid = line_id if n_targets == 1 else f"{line_id}#{turn}"
            context = tuple((r, t) for r, t, _, _ in payload[max(0, i - context_window):i])
            examples.append(Example(eid, persona_id, split, turn_kind or kind, context=context, target=text,
                                    blind=blind))

    # an explicit id may equal one generated for another line ("p1:L7#1"): example ids must stay unique
    first_line = {}
    for (number, *_), eid in _example_lines(parsed, examples, task):
        if eid in first_line and first_line[eid] != number:
            problems.append((max(number, first_line[eid]), f"example id {eid!r} is also the id of an example on "
                                                          f"line {min(number, first_line[eid])}; give another 'id'"))
        first_line.setdefault(eid, number)
    if problems:
        raise DataError([f"{source}:{n}: {msg}" for n, msg in sorted(problems, key=lambda p: p[0])[:MAX_PROBLEMS]])

    personas = {pid: profiles[pid][0] if pid in profiles else None for pid in first_seen}
    return Dataset(task=task, personas=personas, examples=examples, source=source, hash=digest)


def repeated_targets(dataset, split: str = "test") -> tuple[int, int]:
    """(how many `split` targets repeat, context and reply, a train target of their own persona; how many
    `split` targets there are). A test split should hold 0: a repeat rewards memorising, not generalising."""
    seen = {(e.persona_id, e.context, e.target, e.prompt, e.choices, e.answer) for e in dataset.split("train")}
    items = dataset.split(split)
    return sum((e.persona_id, e.context, e.target, e.prompt, e.choices, e.answer) in seen for e in items), len(items)


def _example_lines(parsed, examples, task):
    """(parsed line, example id) pairs: the examples were made from the parsed lines in order."""
    i = 0
    for item in parsed:
        payload = item[5]
        n = 1 if task == "choice" else sum(m[0] == "assistant" for m in payload)
        for e in examples[i:i + n]:
            yield item, e.example_id
        i += n
