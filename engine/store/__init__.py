"""TODO"""
from engine.store.db import *  # noqa: F401,F403
from engine.store.db import _insert, PROCESS_LOCK  # noqa: F401
