"""End to end in headless Chromium: the empty store's welcome, a tiny run launched from the Launch page,
followed on Jobs until done, its Compare charts, a persona opened by clicking its row, the cluster map —
on an idle machine, and with another run training beside it (the usual case: the CPU is busy).

Starts `streamlit run app.py` on a free port with PLL_STORE / PLL_JOBS in a temp dir (helpers shared with
bench/screenshots.py). Screenshots of each page go to that temp dir; with PLL_SCREENSHOTS=1 the welcome,
launch and jobs ones also go to assets/ (compare, persona and clusters come from a store with real results:
bench/screenshots.py).
"""
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
from screenshots import browser_page, chromium_path, settle, start_server, stop_server  # noqa: E402
from screenshots import shot as page_shot  # noqa: E402

playwright = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(chromium_path() is None, reason="no chromium on PATH")
ASSETS = ("welcome", "launch", "jobs")  # refreshed in assets/ with PLL_SCREENSHOTS=1
T = 60_000  # ms: generous, the machine is shared


@pytest.fixture
def server(tmp_path):
    p, info = start_server(tmp_path)
    yield info
    stop_server(p, info)


@pytest.fixture(scope="module")
def page():
    with browser_page() as pg:
        yield pg


@contextlib.contextmanager
def nothing_beside(d):
    yield None


@contextlib.contextmanager
def training_beside(d):
    """Another run training on this machine for the whole test (its own store; SIGTERM ends it cleanly)."""
    log = open(d / "beside.log", "w")
    p = subprocess.Popen([sys.executable, "-m", "engine", "run", "--model", "tiny-random", "--methods", "per_persona",
                          "--data", "sim:personas=8,train_per_persona=30,val_per_persona=1,test_per_persona=1",
                          "--epochs", "500", "--patience", "0", "--store", str(d / "beside.duckdb")],
                         cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not list((d / "runs").glob("*/run.json")):  # written once the model is loaded, before training
            assert p.poll() is None and time.monotonic() < deadline, (d / "beside.log").read_text()
            time.sleep(0.5)
        yield p
        assert p.poll() is None, "the run beside stopped early: the machine was not busy all along"
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
        log.close()


def shot(pg, server, name):
    path = server["dir"] / f"{name}.png"
    page_shot(pg, path)
    if os.environ.get("PLL_SCREENSHOTS") == "1" and name in ASSETS:
        shutil.copy(path, ROOT / "assets" / f"{name}.png")


def nav(pg, name):
    pg.get_by_test_id("stSidebarNav").get_by_role("link", name=re.compile(name)).click()


def set_number(pg, label, value):
    box = pg.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    settle(pg, 200)


@pytest.mark.parametrize("beside", [nothing_beside, training_beside], ids=["idle", "a run training beside"])
def test_launch_follow_compare_persona(server, page, beside):
    with beside(server["dir"]):
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
    progress = pg.get_by_test_id("stProgress").filter(has_text="ETA")
    seen = set()
    while len(seen) < 2 and not pg.get_by_text(re.compile(r"· done ·")).count():  # the progress moves on screen
        with contextlib.suppress(playwright.TimeoutError):
            seen.add(progress.first.inner_text(timeout=2_000))
        pg.wait_for_timeout(500)
    assert len(seen) >= 2, seen
    shot(pg, server, "jobs")
    pg.get_by_text(re.compile(r"· done ·")).first.wait_for(timeout=300_000)
    settle(pg)
    assert not pg.get_by_text(re.compile(r"· failed ·")).count()

    # ------------------------------------------------------------------ Compare: the run's charts
    pg.get_by_role("link", name=re.compile("Open results")).first.click()
    pg.get_by_text("Compare methods").wait_for()
    pg.get_by_text("Mean with 95% CI").wait_for()
    charts = pg.get_by_test_id("stVegaLiteChart")
    pg.wait_for_function("() => document.querySelectorAll('[data-testid=\"stVegaLiteChart\"]').length >= 3",
                         timeout=T)
    for i in range(3):  # each chart drawn (scrolled into view: the page may render lazily)
        charts.nth(i).scroll_into_view_if_needed()
        charts.nth(i).locator("canvas, svg.marks").first.wait_for()
    assert "runs=" in pg.url
    chosen = pg.get_by_role("combobox", name=re.compile("^Methods"))
    chosen.click()  # focused, the multiselect shows every chip (unfocused, chips that do not fit collapse to "+N")
    settle(pg, 300)
    for m in ("base", "unified", "per_persona", "cluster", "merge:exact"):
        assert pg.get_by_text(m, exact=True).count() or m in pg.content(), m
    pg.keyboard.press("Escape")
    shot(pg, server, "compare")

    # ------------------------------------------------------------------ Persona: click its row on Compare
    grid = pg.locator(".st-key-persona_rows [data-testid='stDataFrame']")
    grid.scroll_into_view_if_needed()
    grid.locator("canvas").first.wait_for()
    settle(pg)
    grid.click(position={"x": 18, "y": 35 + 17})  # the first row's selection box (rows are 35 px, under the header)
    pg.get_by_text("Scores across methods").wait_for()
    persona = re.search(r"persona=(p\d+)", pg.url).group(1)
    pg.get_by_text("Test examples").wait_for()
    pg.get_by_text(re.compile(rf"^{persona}-test-000")).first.wait_for()
    shot(pg, server, "persona")

    # ------------------------------------------------------------------ Clusters
    nav(pg, "Clusters")
    pg.get_by_text("Overall silhouette").wait_for()
    shot(pg, server, "clusters")


def test_deep_link_on_a_fresh_server(tmp_path, page):
    """A shared link opened first on a freshly started server still gets app.py's navigation and sidebar
    (Streamlit would otherwise run the page file alone, in its legacy pages/ mode)."""
    p, info = start_server(tmp_path)
    try:
        page.goto(f"{info['url']}/launch?seeds=1")
        page.get_by_text("Dataset OK").wait_for()
        page.get_by_text("Store (DuckDB file)").wait_for()
        nav_text = page.get_by_test_id("stSidebarNav").inner_text()
        assert "Compare" in nav_text and "Clusters" in nav_text and "app" not in nav_text.split()
    finally:
        stop_server(p, info)


class HeldStream:
    """Holds the server's websocket messages to the browser for a while, then delivers them in order.

    A busy machine does this by itself (the browser reads the new page's first message late); holding makes
    the window in which the browser's fragment timers still tick for the old page long enough to be sure.
    """

    def __init__(self, pg):
        self.held, self.holding, self.sent_while_holding = [], False, 0
        pg.route_web_socket(re.compile(r".*/_stcore/stream"), self._route)

    def _route(self, ws):
        server = ws.connect_to_server()

        def up(msg):
            if self.holding:
                self.sent_while_holding += 1
            server.send(msg)

        def down(msg):
            if self.holding:
                self.held.append((ws, msg))
            else:
                ws.send(msg)
        ws.on_message(up)
        server.on_message(down)

    def hold(self):
        self.holding, self.sent_while_holding = True, 0

    def release(self):
        self.holding = False
        for ws, msg in self.held:
            ws.send(msg)
        self.held.clear()


def test_page_switch_with_ticking_fragments_draws_the_new_page(tmp_path, page):
    """Open results (Jobs, whose list refreshes every 2 s) and a persona row click (Compare; the sidebar refreshes
    every 3 s) while the browser receives nothing for 3.5 s: the new page is drawn, not left blank."""
    from engine.lab import jobs
    from engine.lab.spec import RunSpec
    p, info = start_server(tmp_path)
    try:
        jd = Path(info["env"]["PLL_JOBS"])
        j = jobs.submit(RunSpec(data="sim:personas=3,train_per_persona=2,val_per_persona=1,test_per_persona=1",
                                model="tiny-random", methods=["base", "unified"], device="cpu",
                                train={"epochs": 1, "max_new_tokens": 2}),
                        jobs_dir=jd, store_file=info["env"]["PLL_STORE"])
        pg = page.context.browser.new_page(viewport={"width": 1400, "height": 1000})  # its own: the route stays with it
        pg.set_default_timeout(60_000)
        try:
            stream = HeldStream(pg)
            pg.goto(f"{info['url']}/jobs")
            pg.get_by_text(re.compile(r"· done ·")).first.wait_for(timeout=180_000)
            assert jobs.job_info(j, jd)["status"] == "done"
            link = pg.get_by_text("Open results", exact=True)
            settle(pg)
            stream.hold()
            link.first.click()
            pg.wait_for_timeout(3500)
            stream.release()
            pg.get_by_text("Mean with 95% CI").wait_for(timeout=30_000)
            pg.wait_for_function("() => document.querySelectorAll('[data-testid=\"stVegaLiteChart\"]').length >= 3",
                                 timeout=30_000)
            settle(pg, 4000)  # a late tick would blank the page now: it must still be there
            assert pg.get_by_test_id("stVegaLiteChart").count() >= 3

            grid = pg.locator(".st-key-persona_rows [data-testid='stDataFrame']")
            grid.scroll_into_view_if_needed()
            grid.locator("canvas").first.wait_for()
            settle(pg)
            stream.hold()
            grid.click(position={"x": 18, "y": 35 + 17})
            pg.wait_for_timeout(3500)
            assert stream.sent_while_holding > 0  # the browser did send messages (ticks) for the old page
            stream.release()
            pg.get_by_text("Scores across methods").wait_for(timeout=30_000)
            settle(pg, 4000)
            assert pg.get_by_text("Scores across methods").count()
        finally:
            pg.close()
    finally:
        stop_server(p, info)


def _listening(port: int) -> set[str]:
    """Local addresses listening on `port` (from /proc/net/tcp and tcp6)."""
    out = set()
    for f in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(f) as fh:
            for row in fh.read().splitlines()[1:]:
                local, state = row.split()[1], row.split()[3]
                addr, p = local.split(":")
                if state == "0A" and int(p, 16) == port:  # LISTEN
                    out.add(addr)
    return out


def test_server_is_reachable_from_this_machine_only(tmp_path):
    """The shipped .streamlit/config.toml: bound to 127.0.0.1, no error details, no usage statistics."""
    p, info = start_server(tmp_path)
    try:
        port = int(info["url"].rsplit(":", 1)[1])
        assert _listening(port) == {"0100007F"}  # 127.0.0.1, and nothing on 0.0.0.0 or ::
    finally:
        stop_server(p, info)
    code = ("from streamlit import config; config.get_config_options(force_reparse=True); "
            "print(*(config.get_option(o) for o in ('server.address', 'client.showErrorDetails', "
            "'browser.gatherUsageStats')))")
    shown = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                           timeout=60).stdout.split()
    assert shown == ["127.0.0.1", "none", "False"]


def test_a_click_on_a_studies_point_opens_its_runs_on_compare(tmp_path, page):
    from engine.lab.study import StudySpec, run_study
    store_file = tmp_path / "store.duckdb"
    study_id = run_study(StudySpec(data="sim:personas=3,train_per_persona=2,val_per_persona=1,test_per_persona=1",
                                   vary={"personal_fraction": [0.0, 0.5]}, seeds=[0], methods=["base"],
                                   model="tiny-random", train={"max_new_tokens": 4}, name="click"), store_file)
    p, info = start_server(tmp_path, store_file)
    try:
        page.goto(f"{info['url']}/studies?study={study_id}")
        point = page.get_by_test_id("stVegaLiteChart").first.locator("g.mark-symbol path").first  # vega's SVG
        point.wait_for()
        settle(page)
        point.click(force=True)  # a point of the score line: the first grid point's base
        page.get_by_text("Compare methods").wait_for()
        assert re.search(rf"runs={study_id}-00[01]", page.url), page.url
    except BaseException:
        page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
        raise
    finally:
        stop_server(p, info)
