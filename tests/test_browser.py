"""End to end in headless Chromium: the empty store's welcome, a tiny run launched from the Launch page,
followed on Jobs until done, its Compare charts, a persona, the cluster map.

Starts `streamlit run app.py` on a free port with PLL_STORE / PLL_JOBS in a temp dir. Screenshots of each
page go to that temp dir, and to assets/ when PLL_SCREENSHOTS=1 (the README links assets/*.png).
Skipped when Chromium or Playwright is missing.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
playwright = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH")
T = 60_000  # ms: generous, the machine is shared


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(d):
    port = free_port()
    env = {**os.environ, "PLL_STORE": str(d / "store.duckdb"), "PLL_JOBS": str(d / "jobs")}
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
    return p, {"url": url, "dir": d, "env": env}, log


def stop_server(p, d, log):
    from engine import jobs
    for j in jobs.list_jobs(d / "jobs"):
        if j["status"] in jobs.ACTIVE:
            jobs.cancel(j["job_id"], d / "jobs", grace=1)
    os.killpg(p.pid, signal.SIGTERM)
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
    log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("browser")
    p, info, log = start_server(d)
    yield info
    stop_server(p, d, log)


@pytest.fixture(scope="module")
def page(server):
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update"])
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.set_default_timeout(T)
        yield pg
        browser.close()


def settle(pg, quiet_ms=600):
    """Wait until the script run has finished (no 'running' status widget) and the DOM is quiet."""
    pg.wait_for_timeout(300)
    try:
        pg.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=30_000)
    except playwright.TimeoutError:
        pass
    pg.wait_for_timeout(quiet_ms)


def shot(pg, server, name):
    path = server["dir"] / f"{name}.png"
    settle(pg)
    # Streamlit scrolls inside its main container: grow the viewport to the content for a whole-page shot
    height = pg.evaluate("() => { const m = document.querySelector('[data-testid=\"stMain\"]');"
                         " return m ? m.scrollHeight : document.body.scrollHeight; }")
    pg.set_viewport_size({"width": 1400, "height": max(1000, min(int(height) + 40, 5000))})
    pg.wait_for_timeout(500)
    pg.screenshot(path=str(path), full_page=True)
    pg.set_viewport_size({"width": 1400, "height": 1000})
    if os.environ.get("PLL_SCREENSHOTS") == "1":
        (ROOT / "assets").mkdir(exist_ok=True)
        shutil.copy(path, ROOT / "assets" / f"{name}.png")


def nav(pg, name):
    pg.get_by_test_id("stSidebarNav").get_by_role("link", name=re.compile(name)).click()


def set_number(pg, label, value):
    box = pg.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    settle(pg, 200)


def test_launch_follow_compare_persona(server, page):
    try:
        _flow(server, page)
    except BaseException:
        page.screenshot(path=str(server["dir"] / "failure.png"), full_page=True)
        raise


def _flow(server, pg):
    pg.goto(server["url"])
    pg.get_by_text("Welcome to Persona LoRA Lab").wait_for()
    pg.get_by_role("button", name=re.compile("Run the quick demo")).wait_for()
    shot(pg, server, "welcome")

    # ------------------------------------------------------------------ Launch a tiny run
    nav(pg, "Launch")
    pg.get_by_text("Dataset OK").wait_for()
    for label, value in (("personas", 3), ("train_per_persona", 3), ("val_per_persona", 1),
                         ("test_per_persona", 2)):
        set_number(pg, label, value)
    pg.get_by_text("Dataset OK: dialogue task, 3 personas").wait_for()
    pg.get_by_role("combobox", name=re.compile("Base model")).click()
    pg.get_by_role("option", name=re.compile("^tiny-random")).click()
    settle(pg)
    methods = pg.get_by_role("combobox", name=re.compile("Methods"))
    for m in ("cluster", "merge:exact"):
        methods.click()
        pg.get_by_role("option", name=m, exact=True).click()
        settle(pg, 200)
    pg.keyboard.press("Escape")
    pg.get_by_text("Hyperparameters (LoRA and training)").click()
    set_number(pg, "epochs", 1)
    set_number(pg, "max_new_tokens", 4)
    pg.get_by_text("Estimated time").wait_for()
    shot(pg, server, "launch")
    pg.get_by_role("button", name="Start", exact=True).click()

    # ------------------------------------------------------------------ Jobs: follow it to the end
    pg.get_by_text(re.compile(r"Started 1 job")).wait_for()
    pg.get_by_text(re.compile(r"· (queued|running) ·")).first.wait_for()
    try:
        pg.get_by_text(re.compile(r"ETA")).first.wait_for(timeout=30_000)
    except playwright.TimeoutError:
        pass
    shot(pg, server, "jobs")
    pg.get_by_text(re.compile(r"· done ·")).first.wait_for(timeout=180_000)
    settle(pg)
    assert not pg.get_by_text(re.compile(r"· failed ·")).count()

    # ------------------------------------------------------------------ Compare: the run's charts
    pg.get_by_role("button", name="Open results").first.click()
    pg.get_by_text("Compare methods").wait_for()
    pg.get_by_text("Mean with 95% CI").wait_for()
    charts = pg.get_by_test_id("stVegaLiteChart")
    pg.wait_for_function("() => document.querySelectorAll('[data-testid=\"stVegaLiteChart\"]').length >= 3",
                         timeout=T)
    for i in range(3):  # each chart drawn (scrolled into view: the page may render lazily)
        charts.nth(i).scroll_into_view_if_needed()
        charts.nth(i).locator("canvas, svg.marks").first.wait_for()
    assert "runs=" in pg.url
    for m in ("base", "unified", "per_persona", "cluster", "merge:exact"):
        assert pg.get_by_text(m, exact=True).count() or m in pg.content()
    shot(pg, server, "compare")

    # ------------------------------------------------------------------ Persona
    nav(pg, "Persona")
    pg.get_by_text("Scores across methods").wait_for()
    pg.get_by_text("Test examples").wait_for()
    pg.get_by_text(re.compile(r"^p000-test-000")).first.wait_for()
    assert "persona=p000" in pg.url
    shot(pg, server, "persona")

    # ------------------------------------------------------------------ Clusters
    nav(pg, "Clusters")
    pg.get_by_text("Overall silhouette").wait_for()
    shot(pg, server, "clusters")


def test_deep_link_on_a_fresh_server(tmp_path, page):
    """A shared link opened first on a freshly started server still gets app.py's navigation and sidebar
    (Streamlit would otherwise run the page file alone, in its legacy pages/ mode)."""
    p, info, log = start_server(tmp_path)
    try:
        page.goto(f"{info['url']}/launch?seeds=1")
        page.get_by_text("Dataset OK").wait_for()
        page.get_by_text("Store (DuckDB file)").wait_for()
        nav_text = page.get_by_test_id("stSidebarNav").inner_text()
        assert "Compare" in nav_text and "Clusters" in nav_text and "app" not in nav_text.split()
    finally:
        stop_server(p, tmp_path, log)


@pytest.mark.skipif(os.environ.get("PLL_SCREENSHOTS") != "1", reason="set PLL_SCREENSHOTS=1 to refresh assets/")
def test_showcase_screenshots(tmp_path, page):
    """Compare, Persona and Clusters on a synthetic store with spread-out scores (tiny-random scores are all 0):
    assets/*-synthetic.png. Data from bench/bench_pages.build_store, not a real model."""
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_pages import build_store
    run_ids = build_store(str(tmp_path / "store.duckdb"), n_personas=40, n_methods=8, n_runs=2,
                          work_dir=tmp_path / "results")
    p, info, log = start_server(tmp_path)
    try:
        pg = page
        pg.goto(f"{info['url']}/?runs={','.join(run_ids)}&ref=unified")
        pg.get_by_text("Mean with 95% CI").wait_for()
        shot(pg, info, "compare-synthetic")
        pg.goto(f"{info['url']}/persona?run={run_ids[0]}&persona=p007")
        pg.get_by_text("Merge neighbours").wait_for()
        shot(pg, info, "persona-synthetic")
        pg.goto(f"{info['url']}/clusters?run={run_ids[0]}&color=gain&gain=per_persona")
        pg.get_by_text("Overall silhouette").wait_for()
        shot(pg, info, "clusters-synthetic")
    finally:
        stop_server(p, tmp_path, log)
