"""The simulator's value grid and its scenes: what a personal request asks for, given the persona's usual values.

A scene is a situation in the user's words ("It's sweltering in here. Could you sort out the AC for me?") that
names no value: the right reply is the persona's own values in that situation, which the assistant supplies.
No ask says "the usual" or "like always" (real users never do, engine.data.dialogue_stats): the habit shows only
in the values the assistant brings. SCENE_WEIGHTS make lights and AC dominate, as in the real dialogues.
"""
from engine.data.smarthome import DEVICES

# The values preferences and requests are drawn from: a coarse grid per numeric parameter, so that
# preferences are distinct and a small model can learn them; categorical domains as they are.
VALUE_GRID = {
    ("lights", "brightness"): tuple(range(10, 101, 10)),
    ("lights", "color"): DEVICES["lights"]["color"],
    ("ac", "temperature"): tuple(range(17, 29)),
    ("ac", "mode"): DEVICES["ac"]["mode"],
    ("speaker", "volume"): tuple(range(10, 91, 5)),
    ("speaker", "equalizer"): DEVICES["speaker"]["equalizer"],
    ("tv", "volume"): tuple(range(5, 61, 5)),
    ("tv", "input_source"): DEVICES["tv"]["input_source"],
    ("security", "armed"): DEVICES["security"]["armed"],
}
# every (device, parameter) a persona has a preference for: a subset of smarthome.DEVICES (no lights mode,
# AC fan speed, TV brightness or alarm volume here), so requests and replies only ever name these
PARAMS = tuple(VALUE_GRID)



def _snap(param, value):
    """The grid value nearest to `value` (situations shift numbers; the grid stays the vocabulary)."""
    grid = VALUE_GRID[param]
    return min(grid, key=lambda v: (abs(v - value), v))


def _shift(param, prefs, delta):
    return _snap(param, prefs[param] + delta)


L_B, L_C = ("lights", "brightness"), ("lights", "color")
AC_T, AC_M = ("ac", "temperature"), ("ac", "mode")
SP_V, SP_E = ("speaker", "volume"), ("speaker", "equalizer")
TV_V, TV_I = ("tv", "volume"), ("tv", "input_source")
SEC = ("security", "armed")

# A scene: the settings it asks for as a function of (usual values, cue), the cues that can come with it,
# the user's phrasings ({cue} is a phrase of the cue), and the settings that are the same for everyone
# ("fixed": not drawn around a persona's habit). Shifts are the same for everyone: only the usual values
# make a reply personal.
SCENES = {
    "evening": {
        "cues": {"evening": ("this evening", "tonight")},
        "settings": lambda u, cue: {L_B: u[L_B], L_C: u[L_C], AC_T: u[AC_T]},
        "asks": ("Could you make the living room cosy {cue}? Lights and AC, please.",
                 "I'm home for the night. Can you set the lights and the AC for a relaxed evening?",
                 "Can you get the place ready for {cue}? The lights and the thermostat, please.",
                 "Time to wind down {cue}. Could you sort out the lights and the air for me?",
                 "I'd love a calm evening {cue}. Can you adjust the lighting and the AC?"),
    },
    "movie": {
        "cues": {"film": ("a film", "a movie", "the new series", "a documentary")},
        "settings": lambda u, cue: {TV_I: u[TV_I], TV_V: u[TV_V], L_B: _shift(L_B, u, -20)},
        "asks": ("I'm about to watch {cue}. Can you set up the TV and the lights?",
                 "Movie night! Get the TV ready for {cue} and sort the lights, please.",
                 "Getting comfy on the sofa for {cue}. Could you prepare the TV and the lights?",
                 "Can you sort the TV and the lighting for {cue}?"),
    },
    "music": {
        "cues": {"cooking": ("while I cook", "while I'm making dinner"),
                 "relaxing": ("while I relax", "while I unwind on the sofa"),
                 "party": ("for the friends coming over", "for a little party tonight")},
        "settings": lambda u, cue: {SP_V: _shift(SP_V, u, {"cooking": -10, "relaxing": 0, "party": 20}[cue]),
                                    SP_E: u[SP_E]},
        "asks": ("Could you get the speaker going {cue}?",
                 "I'd like the speaker on {cue}. Can you set it up?",
                 "Can you switch on the speaker {cue}, please?",
                 "Set up the speaker {cue}, would you?"),
    },
    "climate": {
        "cues": {"hot": ("it's boiling outside", "it's really hot today", "it's sweltering in here",
                         "this heatwave is brutal"),
                 "cold": ("it's freezing outside", "it's really chilly today", "it's icy cold in here",
                          "I'm frozen after that walk"),
                 "humid": ("it's so muggy today", "the air feels sticky", "it's really humid")},
        "fixed": (AC_M,),
        "settings": lambda u, cue: {
            AC_M: {"hot": "cool", "cold": "heat", "humid": "auto"}[cue],
            AC_T: _shift(AC_T, u, {"hot": -2, "cold": 2, "humid": 0}[cue])},
        "asks": ("{Cue}. Could you sort out the AC for me?",
                 "{Cue}. Can you adjust the air conditioning, please?",
                 "Ugh, {cue}. Can you do something about the AC?",
                 "{Cue}. Could you make the room comfortable with the AC?",
                 "{Cue}, so can you turn on the AC for me?"),
    },
    "reading": {
        "cues": {"reading": ("read for a while", "finish my book", "go through some papers")},
        "settings": lambda u, cue: {L_B: _shift(L_B, u, 30), L_C: u[L_C]},
        "asks": ("I want to {cue}. Could you set the lights for that?",
                 "Going to {cue}. Can you adjust the lights, please?",
                 "Could you light the room so I can {cue}?",
                 "Time to {cue}. Can you do something about the lights?"),
    },
    "bedtime": {
        "cues": {"night": ("I'm off to bed", "heading to sleep now", "time for bed")},
        "fixed": (L_B,),
        "settings": lambda u, cue: {SEC: u[SEC], AC_T: _shift(AC_T, u, -1), L_B: 10},
        "asks": ("{Cue}. Could you see to the alarm, the AC and the lights?",
                 "Good night! {Cue}. Can you set the alarm, the lights and the AC for the night?",
                 "{Cue}. Can you get the lights, the AC and the alarm ready?"),
    },
    "workout": {
        "cues": {"workout": ("a workout", "my yoga session", "a quick HIIT session", "some stretching")},
        "settings": lambda u, cue: {SP_V: _shift(SP_V, u, 20), SP_E: u[SP_E], AC_T: _shift(AC_T, u, -3)},
        "asks": ("Starting {cue} at home. Can you set up the speaker and the AC?",
                 "Get the room ready for {cue}, please: the speaker and the air.",
                 "About to do {cue}. Could you sort the speaker and the AC?"),
    },
    "morning": {
        "cues": {"morning": ("Good morning", "Morning", "I'm up")},
        "fixed": (SEC,),
        "settings": lambda u, cue: {L_B: _shift(L_B, u, 20), L_C: u[L_C], SEC: "false"},
        "asks": ("{Cue}! Can you wake the house up? The lights and the alarm, please.",
                 "{Cue}. Could you set the lights for the day and see to the alarm?",
                 "{Cue}. Can you get the lights and the alarm ready for the day?"),
    },
}
# how often each scene is drawn: lights and the AC dominate, as in the real dialogues (every scene stays possible)
SCENE_WEIGHTS = {"evening": 0.2, "movie": 0.1, "music": 0.05, "climate": 0.3, "reading": 0.2, "bedtime": 0.03,
                 "workout": 0.04, "morning": 0.08}
