"""What the simulator's people say around the settings: the situation they are in (weather, time of day,
activity), requests the five devices cannot serve, the assistant's questions for a value, and the last turn.

Calibrated on the 100 real EdgeWisePersona dialogues in tests/data (engine.data.dialogue_stats): real users open
with their situation ("It's freezing outside and I just got back from my evening run."), the assistant often asks
for a value before acting, and the dialogue ends on the user asking for something more. No phrase here names a
device setting: every context sentence and every outside request parses to nothing, and has no device, parameter
or value word of engine.data.smarthome (tested), so the stated / supplied split of a reply is decided by the
requests alone.
"""
from __future__ import annotations

from engine.data.phrasing import _pick

GREETINGS = ("", "", "", "Hey there! ", "Hi! ", "Good evening. ", "Hello. ", "Oh, ", "Hey, ", "Right, ")

# context sentences that shift no setting: the weather, the time, what the person is doing
WEATHER = ("The rain hasn't stopped all day", "It's pouring outside", "There's a thick fog out there this morning",
           "It's a grey, drizzly afternoon", "The sun is finally out", "It's blowing a gale outside",
           "Snow is piling up on the windowsill", "There's a thunderstorm rolling in", "It's a clear, starry night",
           "The sky is heavy with clouds")
ACTIVITY = ("I just got back from a long hike", "I've been gardening all afternoon", "I'm about to bake some bread",
            "My sister is coming over later", "I'm sorting through old family photos", "I just finished my shift",
            "I'm practising the violin for a recital", "The kids are finally asleep", "I'm working on my novel again",
            "I've got a video call with my team soon", "I'm repotting the plants on the balcony",
            "I'm trying out a new curry recipe", "I just came in from walking the dog", "I'm assembling a bookshelf",
            "I'm preparing slides for tomorrow's meeting", "I'm knitting a scarf for my nephew",
            "I'm doing my taxes, unfortunately", "I've been painting in the spare room", "We're playing board games",
            "I'm catching up on emails", "I'm getting ready for a job interview", "I'm studying for my exam",
            "Grandma is visiting this weekend", "I'm fixing the bike in the hallway", "I just woke up from a nap")
TIME = ("It's early and everyone else is still asleep", "It's late and I'm winding down", "Lunch break at last",
        "It's a lazy Sunday afternoon", "It's almost midnight", "The afternoon is dragging on",
        "It's the middle of the night and I can't sleep", "Dinner is nearly ready")


def situation(rng, n=None) -> str:
    """n (default: 1 or 2) sentences of the person's situation (none of them shifts a setting)."""
    n = int(rng.integers(1, 3)) if n is None else n
    pools = [WEATHER, ACTIVITY, TIME]
    picked = [pools[int(i)] for i in rng.permutation(3)[:n]]
    return " ".join(_pick(rng, pool) + "." for pool in picked)


def opening(rng, request: str, context: str | None = None) -> str:
    """A user's first turn: a greeting, the situation, then the request."""
    context = situation(rng) if context is None else context
    text = " ".join(x for x in (context, request) if x)
    greeting = "" if request.startswith(("Hi", "Hey")) else _pick(rng, GREETINGS)
    if greeting.endswith(", ") and not text.startswith(("I ", "I'")) and text[1:2].islower():
        text = text[0].lower() + text[1:]
    return (greeting + text).strip()


def with_reason(rng, text: str, share=0.6) -> str:
    """A later request, often followed by why (one sentence of the situation)."""
    return f"{text} {situation(rng, 1)}" if rng.random() < share else text


# requests the five devices' settings cannot serve, and the assistant's answer (no setting named)
OUTSIDE = (
    ("Could you play some jazz in the kitchen?", "Playing some jazz in the kitchen now."),
    ("Can you close the blinds halfway? The glare is terrible.", "Closing the blinds halfway for you."),
    ("Could you start the coffee machine?", "The coffee machine is on. Your coffee will be ready shortly."),
    ("Remind me to call my mum at six, please.", "Okay, I'll remind you to call your mum at six."),
    ("Can you turn on the garden sprinklers?", "The garden sprinklers are running now."),
    ("What's the weather going to be like tomorrow?", "Tomorrow looks cloudy, with some rain in the afternoon."),
    ("Can you add dog food to the shopping list?", "I've added dog food to your shopping list."),
    ("Start the robot vacuum in the hallway, please.", "The robot vacuum is cleaning the hallway now."),
    ("Could you open the garage door for me?", "The garage door is opening."),
    ("Can you read me my calendar for tomorrow?", "Tomorrow you have a dentist appointment in the morning and "
                                                   "dinner with Sam in the evening."),
    ("Play some calm piano in the background, please.", "Playing calm piano in the background."),
    ("Could you set a timer for the pasta?", "Timer started for your pasta. I'll let you know when it's done."),
    ("Can you check whether the back door is locked?", "The back door is locked."),
    ("Could you put on the news podcast?", "Starting the latest news podcast."),
    ("Turn off the TV, please.", "I've turned off the TV."),
    ("Could you turn the lights off in the hallway?", "The hallway lights are off now."),
)
THANKS = ("Thanks! ", "Perfect, thank you. ", "Great. ", "That's better. ", "Lovely. ", "", "", "Cheers. ", "Nice. ")
ALSO = ("Also, ", "Oh, and ", "And ", "One more thing: ", "", "Actually, ")

# what the assistant asks when a request leaves values out: the missing parameters, in words the parser
# knows as parameters ("What temperature ...?"), so the question names what it asks for
_ASK_WORD = {"brightness": "what brightness", "color": "which colour", "temperature": "what temperature",
             "mode": "which mode", "volume": "what volume", "equalizer": "which equalizer setting",
             "input_source": "which input"}
_DEVICE_NAME = {"lights": "the lights", "ac": "the AC", "speaker": "the speaker", "tv": "the TV",
                "security": "the alarm"}
_ASK_LEADS = ("Sure. ", "Of course! ", "Certainly. ", "Happy to help. ", "Okay. ", "")
_ASK_SHAPES = ("{what} would you like for {device}?", "{what} should I use for {device}?",
               "{what} would you prefer for {device}?")


def value_question(rng, device, params) -> str:
    """The assistant's question for the values of `params` of `device` ("Sure. What temperature and which mode
    would you like for the AC?"): no setting in it."""
    words = [_ASK_WORD[p] for p in params]
    what = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
    shape = _pick(rng, _ASK_SHAPES)
    return _pick(rng, _ASK_LEADS) + shape.format(what=what[0].upper() + what[1:], device=_DEVICE_NAME[device])


_MORE_SHAPES = ("Would you like me to adjust the {param} as well?", "Should I change the {param} too?",
                "Do you want a different {param} as well?")
_PARAM_NAME = {"brightness": "brightness", "color": "colour", "temperature": "temperature", "mode": "mode",
               "volume": "volume", "equalizer": "equalizer", "input_source": "input"}


def more_question(rng, param) -> str:
    """A question after acting, about a setting the reply left alone (it names the parameter, sets nothing)."""
    return _pick(rng, _MORE_SHAPES).format(param=_PARAM_NAME[param])
