"""Small EdgeWisePersona-layout folders for tests, written from Python into a temp folder.

The dialogues are the 100 real ones in tests/data/edgewise_cold_start_000-099.jsonl (EdgeWisePersona, CC BY 4.0),
dealt out to a few users. The `character` texts, routines, session meta and applied_routines are TEST FIXTURES
invented here (each character says so): they are not EdgeWisePersona's.
"""
import json
from pathlib import Path

REAL = Path(__file__).resolve().parent / "data" / "edgewise_cold_start_000-099.jsonl"
FILES = ("characters.jsonl", "routines.jsonl", "sessions.jsonl")
TIMES = ("morning", "afternoon", "evening", "night")
WEATHER = ("sunny", "cloudy", "rainy", "snowy")
TEMPS = ("very cold", "cold", "mild", "warm", "hot")
CHARACTERS = (
    "TEST FIXTURE, invented: a night-shift nurse who sleeps by day and wants dim, warm light and a quiet house.",
    "TEST FIXTURE, invented: a retired teacher who reads in the evening and keeps the heating high.",
    "TEST FIXTURE, invented: a student who games late, loud speakers with bass boost, TV on HDMI1.",
    "TEST FIXTURE, invented: a runner up before sunrise who wants cool bright light and the alarm armed at night.",
    "TEST FIXTURE, invented: a home worker who keeps the AC on auto at 22 and the lights neutral.",
    "TEST FIXTURE, invented: a film lover who dims everything and turns Netflix on after sunset.",
)
ROUTINES = [
    {"triggers": {"time_of_day": "evening"}, "actions": {"lights": {"brightness": 40, "color": "warm"}}},
    {"triggers": {"weather": "rainy", "outdoor_temp": "cold"}, "actions": {"ac": {"temperature": 23, "mode": "heat"}}},
]


def real_dialogues() -> list[list[dict]]:
    return [json.loads(line)["messages"] for line in REAL.read_text().splitlines() if line.strip()]


def meta_of(s: int) -> dict:
    return {"time_of_day": TIMES[s % 4], "day_of_week": ("weekday", "weekend")[s % 2],
            "sun_phase": ("before_sunrise", "daylight", "after_sunset")[s % 3], "weather": WEATHER[s % 4],
            "outdoor_temp": TEMPS[s % 5]}


def spontaneous(s: int) -> bool:
    """Sessions 1, 5, 9, ...: of 10, one in the test split (8, 9) and one in val (6, 7) is general."""
    return s % 4 == 1


def release(users: int = 4, sessions: int = 10) -> dict[str, list[dict]]:
    """The three files' lines: user u's session s is real dialogue u * sessions + s; a quarter of the sessions
    (spontaneous(s)) applied no routine, the others routine s % 2."""
    dialogues = real_dialogues()
    assert users * sessions <= len(dialogues) and users <= len(CHARACTERS)
    out = {"characters.jsonl": [], "routines.jsonl": [], "sessions.jsonl": []}
    for u in range(users):
        out["characters.jsonl"].append({"character": CHARACTERS[u]})
        out["routines.jsonl"].append({"routines": ROUTINES})
        out["sessions.jsonl"].append({"sessions": [
            {"session_id": s, "meta": meta_of(s), "messages": dialogues[u * sessions + s],
             "applied_routines": [] if spontaneous(s) else [s % 2], "session_summarization": "test fixture"}
            for s in range(sessions)]})
    return out


def write_release(folder: Path, users: int = 4, sessions: int = 10, lines: dict | None = None) -> Path:
    """The folder with the three files (`lines`: the files' lines as release() makes them, maybe edited; a str
    line is written as it is)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, objs in (lines or release(users, sessions)).items():
        text = "\n".join(o if isinstance(o, str) else json.dumps(o) for o in objs) + "\n"
        (folder / name).write_text(text)
    return folder


def study_splits(users: int = 4, sessions: int = 10) -> dict:
    """A split file as the study's create_splits.py writes it: global dialogue indices (user u's sessions are
    u * sessions ...), int(0.6 n) train, int(0.2 n) val, the rest test, and "online" = the last few of train."""
    out = {}
    for u in range(users):
        idx = list(range(u * sessions, (u + 1) * sessions))
        n_train, n_val = int(sessions * 0.6), int(sessions * 0.2)
        out[f"persona_{u:03d}"] = {"train": idx[:n_train], "val": idx[n_train:n_train + n_val],
                                   "test": idx[n_train + n_val:], "online": idx[:n_train][-2:]}
    return out
