"""The Voila dashboards, served for real and driven in headless Chromium: the pages must show
the runs' numbers, follow a change of selection, open a saved comparison by its URL, and load
nothing from the network."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import quantlab as ql
from quantlab.dashboards.serve import ServeOptions, notebook_path, voila_argv
from quantlab.render.format import format_metric
from tests.support.analytics import RUN_SPECS, populated_home
from tests.support.procs import free_port, listening, wait_for

# where scripts/test.sh finds it (`command -v chromium`); Debian puts it in /usr/bin
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
PAGE_TIMEOUT_MS = 90_000  # a cold kernel on a busy 2-core machine; never a pass/fail threshold


# --------------------------------------------------------------------------- no browser


def test_voila_command_line() -> None:
    argv = voila_argv("compare", ServeOptions(port=9999, cull_idle_timeout=120))
    assert argv[0] == str(notebook_path("compare"))
    assert "--port=9999" in argv and "--no-browser" in argv
    assert "--preheat_kernel=True" in argv and "--pool_size=1" in argv
    assert "--MappingKernelManager.cull_idle_timeout=120" in argv
    assert "--template=quantlab" in argv
    cold = voila_argv("analytics", ServeOptions(preheat=False))
    assert not any(a.startswith("--preheat_kernel") for a in cold)


def test_serve_errors() -> None:
    with pytest.raises(ql.ConfigError, match="unknown dashboard 'comapre' — did you mean "
                                             "'compare'\\?; choose compare or analytics"):
        notebook_path("comapre")
    with pytest.raises(ql.ConfigError, match="port 70000 is not a TCP port"):
        voila_argv("compare", ServeOptions(port=70000))


def test_voila_env_drops_request_variables_and_adds_the_template() -> None:
    from quantlab.dashboards.serve import TEMPLATE_ROOT, voila_env

    env = voila_env({"QUERY_STRING": "comparison=old", "VOILA_PREHEAT": "True", "HOME": "/h",
                     "JUPYTER_PATH": "/extra"})
    assert "QUERY_STRING" not in env and "VOILA_PREHEAT" not in env and env["HOME"] == "/h"
    assert env["JUPYTER_PATH"] == os.pathsep.join([str(TEMPLATE_ROOT), "/extra"])


def test_dashboard_template_has_no_cdn_links() -> None:
    from quantlab.dashboards.serve import TEMPLATE_ROOT

    text = (TEMPLATE_ROOT / "voila" / "templates" / "quantlab" / "index.html.j2").read_text()
    assert "https://" not in text and "super.super()" in text


def test_query_parsing() -> None:
    from quantlab.dashboards.app import parse_query

    assert parse_query("comparison=abc&runs=a,b") == {"comparison": "abc", "runs": "a,b"}
    assert parse_query("?period=6M&period=1Y") == {"period": "1Y"}
    assert parse_query(None) == {}


def test_bad_analytics_filters_in_the_url_say_what_is_wrong(
        home: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    from quantlab.dashboards.app import AnalyticsDashboard

    monkeypatch.setenv("QUANTLAB_HOME", str(home[0]))
    board = AnalyticsDashboard("period=6m&strategy=sma_crosover")
    shown = board.status.value
    assert "period &#x27;6m&#x27; is not a period — did you mean &#x27;6M&#x27;?" in shown
    assert "30D, 3M, 6M, 1Y, YTD, all" in shown
    assert ("no run has strategy &#x27;sma_crosover&#x27; — did you mean "
            "&#x27;sma_crossover&#x27;?") in shown
    assert board.filters()["period"] == "1Y" and board.filters()["strategy"] is None
    assert "ql-dashboard-message" in shown and board.view.value  # the statistics still show
    # once the visitor picks a filter, the URL's problems are no longer said
    board.period.value = "6M"
    assert board.status.value == ""
    assert AnalyticsDashboard("period=all").status.value == ""


def test_preheated_kernel_keeps_asking_for_its_query_string(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Voila's helper gives up when the server's websocket is not there; the dashboard asks
    again until the visitor's request info arrives."""
    import json
    import threading

    from websockets.sync.server import serve

    from quantlab.dashboards.app import query_string

    port = free_port()
    for name, value in {"VOILA_PREHEAT": "True", "VOILA_APP_PORT": str(port),
                        "VOILA_KERNEL_ID": "k1", "VOILA_SERVER_URL": "/"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("QUERY_STRING", raising=False)
    monkeypatch.delenv("VOILA_WS_BASE_URL", raising=False)
    paths: list[str] = []

    def handler(ws: Any) -> None:
        paths.append(ws.request.path)
        ws.send(json.dumps({"QUERY_STRING": "comparison=abc"}))

    started = threading.Event()
    servers: list[Any] = []

    def late_server() -> None:
        time.sleep(1.0)  # the first attempts find no server, as with a busy Voila
        with serve(handler, "127.0.0.1", port) as server:
            servers.append(server)
            started.set()
            server.serve_forever()

    thread = threading.Thread(target=late_server, daemon=True)
    thread.start()
    try:
        assert query_string(retry_every=0.05) == "comparison=abc"
    finally:
        os.environ.pop("QUERY_STRING", None)  # set by Voila's helper, not by monkeypatch
        started.wait(10)
        for server in servers:
            server.shutdown()
        thread.join(10)
    assert paths == ["/voila/query/k1"]


def test_query_string_outside_a_preheated_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    from quantlab.dashboards.app import query_string

    monkeypatch.setenv("VOILA_PREHEAT", "False")
    monkeypatch.setenv("QUERY_STRING", "runs=a,b")
    assert query_string() == "runs=a,b"
    monkeypatch.delenv("QUERY_STRING")
    assert query_string() == ""


# --------------------------------------------------------------------------- the run picker


def picker_runs(n: int) -> list[dict[str, Any]]:
    """``n`` run documents as the registry lists them (newest last), with a few odd ones."""
    runs = []
    for i in range(n):
        runs.append({
            "id": f"01RUN{i:03d}", "name": f"run {i:03d}", "status": "completed",
            "strategy": "sma_crossover" if i % 2 else "rsi_reversion",
            "symbols": ["AAA"] if i % 3 else ["BBB", "CCC"], "tags": ["trend"] if i % 5 == 0 else [],
            "finished_at": 1_700_000_000 + i,
            "metrics": {"sharpe": (i * 37 % 11) / 10, "total_return_pct": i - 20.0,
                        "max_drawdown_pct": -float(i % 7)},
        })
    runs[4]["name"] = "Golden Cross on the whole universe"
    runs[6]["metrics"] = {"sharpe": float("nan")}  # a run without numbers sorts last
    return runs


def test_the_picker_filters_on_every_word_of_name_strategy_symbol_tag_and_id() -> None:
    from quantlab.dashboards.picker import filter_runs

    runs = picker_runs(12)
    ids = lambda found: [r["id"] for r in found]  # noqa: E731
    assert ids(filter_runs(runs, "golden")) == ["01RUN004"]
    assert ids(filter_runs(runs, "GOLDEN universe")) == ["01RUN004"]  # every word, any case
    assert ids(filter_runs(runs, "trend")) == ["01RUN000", "01RUN005", "01RUN010"]
    assert ids(filter_runs(runs, "ccc sma")) == ["01RUN003", "01RUN009"]
    assert ids(filter_runs(runs, "01run011")) == ["01RUN011"]
    assert filter_runs(runs, "  ") == runs
    assert filter_runs(runs, "nothing-like-this") == []


def test_the_picker_sorts_by_date_name_and_metrics_best_first() -> None:
    from quantlab.dashboards.picker import sort_options, sort_runs

    runs = picker_runs(12)
    labels = dict(sort_options())
    assert labels["Sharpe, best first"] == "-sharpe"
    assert labels["Max drawdown, best first"] == "-max_drawdown_pct"  # -1 % beats -6 %
    assert [r["id"] for r in sort_runs(runs, "-finished_at")][:2] == ["01RUN011", "01RUN010"]
    assert sort_runs(runs, "finished_at") == runs
    by_sharpe = sort_runs(runs, "-sharpe")
    sharpes = [r["metrics"]["sharpe"] for r in by_sharpe[:-1]]
    assert sharpes == sorted(sharpes, reverse=True)
    assert by_sharpe[-1]["id"] == "01RUN006"  # NaN: last in either direction
    assert sort_runs(runs, "sharpe")[-1]["id"] == "01RUN006"
    returns = [r["metrics"].get("total_return_pct") for r in sort_runs(runs, "-total_return_pct")]
    assert returns[:3] == [-9.0, -10.0, -11.0] and returns[-1] is None
    drawdowns = [r["metrics"]["max_drawdown_pct"] for r in sort_runs(runs, "-max_drawdown_pct")
                 if "max_drawdown_pct" in r["metrics"]]
    assert drawdowns[0] == 0.0 and drawdowns[-1] == -5.0
    assert sort_runs(runs, "name")[0]["name"] == "Golden Cross on the whole universe"


def test_the_picker_ticks_two_to_five_runs_and_refuses_a_sixth() -> None:
    from quantlab.dashboards.picker import PICKER_ROWS, RunPicker, selection_message

    picker = RunPicker()
    runs = picker_runs(80)
    picker.set_runs(runs)
    assert len(picker.rows.children) == PICKER_ROWS  # 80 offered, 30 drawn
    assert "80 of 80 runs match" in picker.summary.value
    assert "50 more not shown: narrow the filter" in picker.summary.value
    assert all(not box.value for box in picker.rows.children)
    assert selection_message(0) == "select 2 to 5 runs to compare (0 selected; tick more boxes)"
    assert selection_message(1) is not None and selection_message(2) is None

    # ticking a drawn check box is what a visitor does
    first = picker.rows.children[0]
    assert first.description.startswith("run 079 · sma_crossover on AAA · return +59.00 %")
    first.value = True
    assert picker.value == ("01RUN079",)
    for run_id in ("01RUN001", "01RUN002", "01RUN003", "01RUN004"):
        assert picker.tick(run_id)
    assert len(picker.value) == 5 and selection_message(5) is None
    # a sixth is refused: the selection stays, its box goes back to unticked, the page says why
    sixth = next(box for box in picker.rows.children if not box.value)
    sixth.value = True
    assert len(picker.value) == 5 and not sixth.value
    assert "at most 5 runs can be compared: untick one before adding another" in \
        picker.summary.value
    assert selection_message(6) == "select 2 to 5 runs to compare (6 selected; tick fewer boxes)"

    # ticked runs stay listed first whatever the filter; the filter narrows the rest
    picker.search.value = "golden"
    drawn = [box.description.rsplit(" · ", 1)[1] for box in picker.rows.children]
    assert drawn[:5] == list(picker.value) and drawn[5:] == []  # run 004 is ticked already
    picker.search.value = "rsi BBB"
    drawn = [box.description.rsplit(" · ", 1)[1] for box in picker.rows.children]
    assert drawn[5:] == [r["id"] for r in sorted(runs, key=lambda r: -r["finished_at"])
                         if r["strategy"] == "rsi_reversion" and "BBB" in r["symbols"]
                         and r["id"] not in picker.value]
    picker.tick("01RUN079", on=False)
    assert len(picker.value) == 4 and "at most" not in picker.summary.value
    # a run no longer offered is no longer ticked
    picker.set_runs(runs[:3])
    assert picker.value == ("01RUN001", "01RUN002")


def test_the_compare_dashboard_reads_the_pickers_ticks(
        home: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    from quantlab.dashboards.app import CompareDashboard

    monkeypatch.setenv("QUANTLAB_HOME", str(home[0]))
    _, ids = home
    board = CompareDashboard(f"runs={ids[0]}")
    assert board.picker.value == (ids[0],)
    assert "select 2 to 5 runs to compare (1 selected; tick more boxes)" in board.status.value
    board.picker.tick(ids[2])
    assert board.comparison is not None and list(board.comparison.run_ids) == [ids[0], ids[2]]
    assert not board.save_button.disabled


def test_a_comparison_saved_on_the_labs_page_links_there_and_for_stakeholders(
        home: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    from quantlab.dashboards.app import CompareDashboard

    monkeypatch.setenv("QUANTLAB_HOME", str(home[0]))
    monkeypatch.setenv("QUANTLAB_DASHBOARD_URL", "http://dash.example:8866")
    _, ids = home
    # what Voila gives a kernel of the Lab's server (the request's path)
    monkeypatch.setenv("SCRIPT_NAME", "/team/lab/quantlab/dashboards/compare/")
    board = CompareDashboard(f"runs={ids[0]},{ids[1]}")
    saved = board.save()
    assert (f'<a href="/team/lab/quantlab/dashboards/compare/?comparison={saved}" '
            f'target="_blank">open in the Lab</a>; for people without the Lab: '
            f'<a href="http://dash.example:8866/?comparison={saved}"') in board.status.value
    # standalone (quantlab dashboard): the one link, as before
    monkeypatch.setenv("SCRIPT_NAME", "/")
    board.save()
    assert "open in the Lab" not in board.status.value
    assert f'href="http://dash.example:8866/?comparison={saved}"' in board.status.value


# --------------------------------------------------------------------------- from the Lab's server

LAB_BASE = "/team/lab/"  # a base URL, as under JupyterHub: every link must carry it


@pytest.fixture(scope="module")
def lab_server(home: tuple[Path, list[str]], tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[Any]:
    """``jupyter server`` (the Lab's server, without the Lab's pages) over the test home, at a
    base URL, with the quantlab and Voila extensions as this install enables them."""
    from tests.support.server import JupyterProcess, quantlab_env

    base = tmp_path_factory.mktemp("labserver")
    (base / "root").mkdir()
    env = quantlab_env(home[0], base / "jupyter",
                       {"QUANTLAB_DASHBOARD_URL": "http://stakeholders.example:8866"})
    server = JupyterProcess(env, base / "root", base / "server.log",
                            extra_args=(f"--ServerApp.base_url={LAB_BASE}",))
    server.base += LAB_BASE.rstrip("/")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def test_the_labs_server_serves_the_compare_dashboard_offline_under_its_login(
        home: tuple[Path, list[str]], lab_server: Any) -> None:
    _, ids = home
    status, reply = lab_server.request("GET", f"/quantlab/api/compare?ids={ids[0]},{ids[2]}")
    assert status == 200, reply
    # the panel opens the dashboard on this server, under its base URL; the stakeholders' link
    # stays quantlab dashboard's
    assert reply["dashboard_url"] == (f"{LAB_BASE}quantlab/dashboards/compare/"
                                      f"?comparison={reply['id']}")
    assert reply["standalone_url"] == f"http://stakeholders.example:8866/?comparison={reply['id']}"

    path = reply["dashboard_url"][len(LAB_BASE) - 1:]
    status, page = lab_server.request("GET", path)
    assert status == 200, lab_server.log_text()[-3000:]
    # the notebook ran in a kernel of this server: its output is the dashboard's widget (what
    # the widget shows is read in a browser, below), with no error
    assert "application/vnd.jupyter.widget-view+json" in page
    assert '"output_type": "error"' not in page and "Traceback" not in page
    # QuantLab's template: no CDN stylesheet, page assets from this server's base URL
    assert "cdn.jsdelivr.net" not in page and "fontawesome" not in page.lower()
    assert f'src="{LAB_BASE}voila/static/voila.js"' in page
    assert '"name": "quantlab"' not in page  # the side panel's extension stays out
    assert '"fullMathjaxUrl": null' in page  # else the page would fetch MathJax from cdnjs
    status, script = lab_server.request("GET", "/voila/templates/quantlab/static/voila-style.js")
    assert status == 200 and script


@pytest.mark.slow
@pytest.mark.parametrize("name", ["compare", "analytics", "nonsense"])
def test_a_dashboard_without_login_is_refused_not_a_server_error(lab_server: Any,
                                                                 name: str) -> None:
    status, page = lab_server.request("GET", f"/quantlab/dashboards/{name}?comparison=x",
                                      token=False)
    assert status == 403, page
    assert "not logged in to Jupyter" in page and "token" in page
    status, page = lab_server.request("GET", "/quantlab/dashboards/comapre")
    assert status == 404 and "no dashboard &#x27;comapre&#x27; — did you mean " in page


@pytest.mark.slow
def test_without_voilas_extension_the_dashboard_says_how_to_enable_it(
        home: tuple[Path, list[str]], tmp_path: Path) -> None:
    from tests.support.server import JupyterProcess, quantlab_env

    (tmp_path / "root").mkdir()
    # the user's Jupyter config turns Voila's extension off (JUPYTER_PREFER_ENV_PATH=0: over
    # the environment's conf.d, which enables it)
    config = tmp_path / "jupyter" / "config"
    config.mkdir(parents=True)
    (config / "jupyter_server_config.json").write_text(
        '{"ServerApp": {"jpserver_extensions": {"voila.server_extension": false}}}')
    env = quantlab_env(home[0], tmp_path / "jupyter", {"JUPYTER_PREFER_ENV_PATH": "0"})
    server = JupyterProcess(env, tmp_path / "root", tmp_path / "server.log")
    try:
        server.wait_ready()
        status, page = server.request("GET", "/quantlab/dashboards/compare")
        assert status == 503, page
        assert "jupyter server extension enable voila.server_extension" in page
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.browser
def test_the_labs_server_shows_the_compare_dashboard_in_a_browser_offline(
        home: tuple[Path, list[str]], lab_server: Any, browser: Any) -> None:
    _, ids = home
    comparison_id = ql.compare([ids[1], ids[2]]).save()
    served = Server(lab_server.proc, lab_server.port, lab_server.log_path)
    view = Page(browser, served)
    view.page.goto(f"{lab_server.base}/quantlab/dashboards/compare/?comparison={comparison_id}"
                   f"&token={lab_server.token}")
    view.wait_for(".ql-compare-metrics")
    header = view.text(".ql-compare-metrics thead")
    names = [ql.get_run(i).record["name"] for i in ids]
    assert names[1] in header and names[2] in header and names[0] not in header
    view.wait_for(".ql-section-equity .js-plotly-plot .main-svg")
    assert view.outside == [], f"the page loaded from the network: {view.outside}"
    view.page.close()


# --------------------------------------------------------------------------- served


class Server:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log
        self.url = f"http://127.0.0.1:{port}/"


def start_dashboard(name: str, home: Path, *options: str) -> Server:
    port = free_port()
    log = home / f"voila-{name}.log"
    env = dict(os.environ, QUANTLAB_HOME=str(home), QUANTLAB_USER="tester",
               QUANTLAB_DASHBOARD_URL=f"http://127.0.0.1:{port}")
    with open(log, "wb") as out:
        # its own session, so that stopping it stops its kernels too
        proc = subprocess.Popen(
            [sys.executable, "-m", "quantlab.dashboards", name, "--port", str(port), *options],
            env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        wait_for(lambda: listening(port), 120, f"voila to listen on port {port}", interval=0.1,
                 give_up=lambda: (None if proc.poll() is None
                                  else f"voila exited with {proc.returncode}"),
                 detail=lambda: log.read_text()[-3000:])
    except AssertionError:
        stop(Server(proc, port, log))
        raise
    return Server(proc, port, log)



def wait_for_log(server: Server, text: str, seconds: float = 120) -> None:
    wait_for(lambda: text in server.log.read_text(errors="replace"), seconds,
             f"voila to log {text!r}", interval=0.2,
             give_up=lambda: None if server.proc.poll() is None else "voila exited",
             detail=lambda: server.log.read_text(errors="replace")[-3000:])


def stop(server: Server) -> None:
    try:
        os.killpg(server.proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        server.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[str]]]:
    with populated_home(tmp_path_factory.mktemp("dash"), RUN_SPECS) as found:
        yield found


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing; install it with: apt-get install chromium")
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture(scope="module")
def compare_server(home: tuple[Path, list[str]]) -> Iterator[Server]:
    server = start_dashboard("compare", home[0])
    # the pool's kernel has run the imports and waits for a visitor
    wait_for_log(server, "Kernel pool of compare.ipynb is filled")
    yield server
    stop(server)


@pytest.fixture(scope="module")
def analytics_server(home: tuple[Path, list[str]]) -> Iterator[Server]:
    # visitors' kernels idle for 15 s are shut down (checked every second)
    server = start_dashboard("analytics", home[0], "--cull-idle", "15", "--cull-interval", "1")
    yield server
    stop(server)


class Page:
    """A browser page that records every request leaving the dashboard's server."""

    def __init__(self, browser: Any, server: Server) -> None:
        self.server = server
        self.page = browser.new_page(viewport={"width": 1200, "height": 900})
        self.page.set_default_timeout(PAGE_TIMEOUT_MS)
        self.outside: list[str] = []
        local = (f"http://127.0.0.1:{server.port}", f"ws://127.0.0.1:{server.port}", "data:",
                 "blob:", "about:")
        self.page.on("request", lambda r: None if r.url.startswith(local)
                     else self.outside.append(r.url))

    def text(self, selector: str) -> str:
        return str(self.page.inner_text(selector))

    def wait_for(self, selector: str) -> Any:
        """The element, once shown; on a timeout the failure carries Voila's log."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        try:
            return self.page.wait_for_selector(selector)
        except PlaywrightTimeout:
            log = self.server.log.read_text(errors="replace")[-4000:]
            shown = self.page.inner_text("body")[-2000:]
            pytest.fail(f"{selector} never appeared on {self.page.url}; the page shows:\n"
                        f"{shown}\nvoila log:\n{log}")


def metric_row(page: Page, label: str) -> list[str]:
    row = page.page.locator(".ql-compare-metrics tr", has_text=label).first
    return [c.strip() for c in row.inner_text().split("\t")]


@pytest.mark.slow
@pytest.mark.browser
def test_compare_dashboard_opens_a_saved_comparison_and_follows_the_selection(
        home: tuple[Path, list[str]], compare_server: Server, browser: Any) -> None:
    _, ids = home
    saved = ql.compare(ids[:2])
    comparison_id = saved.save()
    records = [ql.get_run(i).record for i in ids]
    view = Page(browser, compare_server)
    view.page.goto(f"{compare_server.url}?comparison={comparison_id}")
    view.wait_for(".ql-compare-metrics")
    # the first visitor got the pre-heated kernel, which read the query string of the request
    assert "Using pre-heated kernel" in compare_server.log.read_text(errors="replace")
    header = view.text(".ql-compare-metrics thead")
    assert records[0]["name"] in header and records[1]["name"] in header
    assert records[2]["name"] not in header
    returns = metric_row(view, "Total return")
    assert returns[1:] == [format_metric("total_return_pct", r["metrics"]["total_return_pct"])
                           for r in records[:2]]
    sharpe = metric_row(view, "Sharpe")
    assert sharpe[1:] == [format_metric("sharpe", r["metrics"]["sharpe"]) for r in records[:2]]
    corr = view.text(".ql-compare-correlation")
    assert f"{saved.correlation.iloc[0, 1]:.2f}" in corr
    assert comparison_id in view.text(".ql-comparison")
    # the equity and drawdown figures are drawn by plotly.js, sent inline by the dashboard
    view.wait_for(".ql-section-equity .js-plotly-plot .main-svg")
    view.wait_for(".ql-section-drawdowns .js-plotly-plot .main-svg")
    legend = view.page.evaluate(
        "() => document.querySelector('.ql-section-equity .legend').textContent")
    assert records[0]["name"] in legend and records[1]["name"] in legend  # names not cut

    # a change of selection redraws the numbers: runs 1 and 2 instead of 0 and 1, ticked in
    # the picker's check boxes, the third found by its strategy in the picker's filter
    picker = view.page.locator(".ql-run-picker")

    def box(run_id: str) -> Any:
        return picker.locator(".ql-run-choice", has_text=run_id).locator("input")

    expect_checked = "el => el.checked"
    assert box(ids[0]).evaluate(expect_checked) and box(ids[1]).evaluate(expect_checked)
    box(ids[0]).uncheck()
    view.wait_for("text=select 2 to 5 runs to compare (1 selected; tick more boxes)")
    picker.locator(".ql-run-search input").fill("rsi_reversion")
    view.page.wait_for_function(
        "() => document.querySelectorAll('.ql-run-picker .ql-run-choice').length === 2")
    box(ids[2]).check()
    view.page.wait_for_function(
        "name => (document.querySelector('.ql-compare-metrics thead') || {innerText: ''})"
        ".innerText.includes(name)",
        arg=records[2]["name"])
    header = view.text(".ql-compare-metrics thead")
    assert records[0]["name"] not in header
    columns = [c.strip() for c in header.split("\t")][1:]  # the picker's order
    by_name = {r["name"]: r for r in records}
    assert sorted(columns) == sorted(r["name"] for r in records[1:])
    returns = metric_row(view, "Total return")
    assert returns[1:] == [format_metric("total_return_pct",
                                         by_name[c]["metrics"]["total_return_pct"])
                           for c in columns]
    diff = view.text(".ql-compare-config")
    assert "rsi_reversion" in diff and "params.fast" in diff

    # one run is not a comparison: the page says what to do
    box(ids[2]).uncheck()
    view.wait_for("text=select 2 to 5 runs to compare")
    assert view.page.locator(".ql-compare-metrics").count() == 0
    assert view.outside == [], f"the page loaded from the network: {view.outside}"
    # the JupyterLab side panel's extension is not loaded into dashboards
    assert "labextensions/quantlab/" not in compare_server.log.read_text(errors="replace")
    view.page.close()


@pytest.mark.slow
@pytest.mark.browser
def test_compare_dashboard_saves_a_comparison_that_opens_by_url(
        home: tuple[Path, list[str]], compare_server: Server, browser: Any) -> None:
    from quantlab.registry import open_registry

    _, ids = home
    view = Page(browser, compare_server)
    view.page.goto(f"{compare_server.url}?runs={ids[0]},{ids[2]}")
    view.wait_for(".ql-compare-metrics")
    view.page.locator(".ql-save button, button.ql-save").first.click()
    link = view.wait_for(".ql-saved a")
    url = link.get_attribute("href")
    assert url is not None and url.startswith(f"{compare_server.url}?comparison=")
    comparison_id = url.split("comparison=", 1)[1]
    assert open_registry().get_document("comparisons", comparison_id)["run_ids"] == [ids[0],
                                                                                    ids[2]]
    view.page.close()
    again = Page(browser, compare_server)
    again.page.goto(url)
    again.wait_for(".ql-compare-metrics")
    header = again.text(".ql-compare-metrics thead")
    names = [ql.get_run(i).record["name"] for i in ids]
    assert names[0] in header and names[2] in header and names[1] not in header
    again.page.close()


def stat(view: Page, label: str) -> str:
    return view.text(f'.ql-stat[data-stat="{label}"] .ql-stat-value').strip()


@pytest.mark.slow
@pytest.mark.browser
def test_analytics_dashboard_shows_statistics_and_follows_filters(
        home: tuple[Path, list[str]], analytics_server: Server, browser: Any) -> None:
    everything = ql.stats("1Y")
    rsi = ql.stats("1Y", strategy="rsi_reversion")
    view = Page(browser, analytics_server)
    view.page.goto(analytics_server.url)
    view.wait_for(".ql-stats-summary")
    assert stat(view, "runs") == str(everything.n_runs) == "3"
    assert stat(view, "success rate") == "100.00 %"
    assert stat(view, "mean return") == format_metric("mean_return_pct",
                                                      everything.mean_return_pct)
    best = view.text(".ql-stats-best")
    assert everything.best(1)["name"].iloc[0] in best

    view.page.locator(".ql-filter-strategy select").select_option(label="rsi_reversion")
    view.page.wait_for_function(
        "() => document.querySelector('.ql-stat[data-stat=\"runs\"] .ql-stat-value')"
        ".innerText.trim() === '1'")
    assert stat(view, "mean return") == format_metric("mean_return_pct", rsi.mean_return_pct)
    assert "strategy=rsi_reversion" in view.text(".ql-stats")
    assert view.outside == [], f"the page loaded from the network: {view.outside}"
    view.page.close()

    filtered = Page(browser, analytics_server)
    filtered.page.goto(f"{analytics_server.url}?tag=trend&period=all")
    filtered.wait_for(".ql-stats-summary")
    assert stat(filtered, "runs") == "2"
    filtered.page.close()


@pytest.mark.slow
@pytest.mark.browser
def test_idle_dashboard_kernels_are_culled(
        home: tuple[Path, list[str]], analytics_server: Server, browser: Any) -> None:
    view = Page(browser, analytics_server)
    view.page.goto(f"{analytics_server.url}?period=all")
    view.wait_for(".ql-stats-summary")
    view.page.close()
    wait_for_log(analytics_server, "due to 15 seconds of inactivity", seconds=120)
