"""Screenshots of the dashboard on a store with real results, for the README (assets/*.png).

    python bench/screenshots.py --store store.duckdb                  # newest run, its first persona
    python bench/screenshots.py --store store.duckdb --run RUN_ID --persona p003 --out assets

Starts `streamlit run app.py` on a free port with PLL_STORE pointing at the store (read only: no job is
started), drives Debian's Chromium headless through Playwright, and writes compare.png, persona.png and
clusters.png. The browser helpers here are also what tests/test_browser.py drives the app with.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update"]
WIDTH = 1400


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(d: Path, store_file=None):
    """`streamlit run app.py` with its store (default d/store.duckdb) and jobs under d; returns (process, info)."""
    port = free_port()
    env = {**os.environ, "PLL_STORE": str(store_file or d / "store.duckdb"), "PLL_JOBS": str(d / "jobs")}
    log = open(d / "server.log", "w")
    p = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                          "--server.port", str(port), "--browser.gatherUsageStats", "false",
                          "--server.fileWatcherType", "none"],
                         cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if urllib.request.urlopen(url + "/_stcore/health", timeout=2).status == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline or p.poll() is not None:
            raise RuntimeError("streamlit did not start:\n" + (d / "server.log").read_text())
        time.sleep(0.3)
    return p, {"url": url, "dir": d, "env": env, "log": log}


def stop_server(p, info) -> None:
    """Cancel the server's active jobs, then end its process group."""
    sys.path.insert(0, str(ROOT))
    from engine.lab import jobs
    jobs_dir = info["dir"] / "jobs"
    for j in jobs.list_jobs(jobs_dir):
        if j["status"] in jobs.ACTIVE:
            jobs.cancel(j["job_id"], jobs_dir, grace=1)
    os.killpg(p.pid, signal.SIGTERM)
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
    info["log"].close()


@contextlib.contextmanager
def browser_page(timeout_ms: int = 60_000):
    """A headless Chromium page (Debian's chromium through Playwright's executable_path)."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": WIDTH, "height": 1000})
        page.set_default_timeout(timeout_ms)
        try:
            yield page
        finally:
            browser.close()


def settle(pg, quiet_ms: int = 600) -> None:
    """Wait until the script run has finished (no 'running' status widget) and the DOM is quiet."""
    from playwright.sync_api import TimeoutError
    pg.wait_for_timeout(300)
    try:
        pg.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=30_000)
    except TimeoutError:
        pass
    pg.wait_for_timeout(quiet_ms)


def shot(pg, path: Path) -> None:
    """A whole-page screenshot: Streamlit scrolls inside its main container, so the viewport grows to it."""
    settle(pg)
    height = pg.evaluate("() => { const m = document.querySelector('[data-testid=\"stMain\"]');"
                         " return m ? m.scrollHeight : document.body.scrollHeight; }")
    pg.set_viewport_size({"width": WIDTH, "height": max(1000, min(int(height) + 40, 5000))})
    pg.wait_for_timeout(500)
    pg.screenshot(path=str(path), full_page=True)
    pg.set_viewport_size({"width": WIDTH, "height": 1000})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True, help="a DuckDB store with finished runs")
    ap.add_argument("--run", help="run id (default: the newest run with results)")
    ap.add_argument("--persona", help="persona id for persona.png (default: the run's first)")
    ap.add_argument("--out", default=str(ROOT / "assets"))
    ap.add_argument("--study", help="only studies.png: this study's page (Δ vs --ref, on --kind targets)")
    ap.add_argument("--ref", default="unified")
    ap.add_argument("--kind", default="all", choices=["all", "personal", "general"])
    args = ap.parse_args(argv)
    if chromium_path() is None:
        print("no chromium on PATH (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    if args.study:
        return study_shot(args)
    sys.path.insert(0, str(ROOT))
    from engine import store
    from engine.analysis import views
    runs = views.runs(args.store)
    runs = runs[runs.n_methods_done > 0]
    if runs.empty:
        print(f"{args.store}: no run with results", file=sys.stderr)
        return 2
    run_id = args.run or runs.run_id.iloc[0]
    persona = args.persona or store.queries.first_persona(run_id, args.store)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pll-shots-") as tmp:
        p, info = start_server(Path(tmp), Path(args.store).resolve())
        try:
            with browser_page() as pg:
                pg.goto(f"{info['url']}/?runs={run_id}")
                pg.get_by_text("Mean with 95% CI").wait_for()
                shot(pg, out / "compare.png")
                pg.goto(f"{info['url']}/persona?run={run_id}&persona={persona}")
                pg.get_by_text("Test examples").wait_for()
                shot(pg, out / "persona.png")
                pg.goto(f"{info['url']}/clusters?run={run_id}&color=gain&gain=per_persona")
                pg.get_by_text("Overall silhouette").wait_for()
                shot(pg, out / "clusters.png")
        finally:
            stop_server(p, info)
    print(f"wrote compare.png, persona.png, clusters.png to {out} (run {run_id}, persona {persona})")
    return 0


def study_shot(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "studies.png" if args.kind == "all" else f"studies-{args.kind}.png"
    with tempfile.TemporaryDirectory(prefix="pll-shots-") as tmp:
        p, info = start_server(Path(tmp), Path(args.store).resolve())
        try:
            with browser_page() as pg:
                pg.goto(f"{info['url']}/studies?study={args.study}&ref={args.ref}&kind={args.kind}")
                pg.get_by_test_id("stVegaLiteChart").first.locator("svg.marks, canvas").first.wait_for()
                settle(pg, 1500)
                shot(pg, out / name)
        finally:
            stop_server(p, info)
    print(f"wrote {name} to {out} (study {args.study})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
