import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Whole files left out of the quick subset (`pytest -m "not slow"`); single slow tests carry @pytest.mark.slow.
FILE_MARKS = {"test_browser.py": ("slow", "browser"), "test_ray.py": ("slow", "ray"), "test_smollm2.py": ("slow",),
              "test_faults.py": ("slow",), "test_bench.py": ("slow",)}


def pytest_collection_modifyitems(items):
    for item in items:
        for mark in FILE_MARKS.get(item.path.name, ()):
            item.add_marker(getattr(pytest.mark, mark))


def wait_for(pred, timeout=120, every=0.2, what="condition"):
    """pred()'s first truthy value, polled every `every` s; AssertionError after `timeout` s."""
    import time
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        v = pred()
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def open_page(monkeypatch, store, jobs_dir, page: str, **query):
    """One page of the app (through app.py: navigation and sidebar) on this store and jobs folder, rendered
    once with the given query parameters; fails on any exception the page raised."""
    from streamlit.testing.v1 import AppTest
    monkeypatch.setenv("PLL_STORE", str(store))
    monkeypatch.setenv("PLL_JOBS", str(jobs_dir))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    for k, v in query.items():
        at.query_params[k] = v
    at.switch_page(f"pages/{page}.py")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at
