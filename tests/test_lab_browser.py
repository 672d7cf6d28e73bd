"""The Backtests panel in a real JupyterLab, driven by the Debian chromium through Playwright.

JupyterLab runs with token auth on a free port over a temporary QUANTLAB_HOME, with a worker of
the test's own. The test opens the panel, watches a submitted sweep's progress bar move, cancels
a queued run with its Cancel button, and sees the completion toast. Never `playwright install`:
the browser is /usr/bin/chromium.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.procs import wait_for
from tests.support.server import ROOT, JupyterProcess, Worker, quantlab_env

pytestmark = [pytest.mark.slow, pytest.mark.browser]

# where scripts/test.sh finds it (`command -v chromium`); Debian puts it in /usr/bin
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
API = "/quantlab/api"
SYMBOLS = ["AAA", "BBB", "CCC", "DDD", "EEE", "FFF", "GGG", "HHH", "III", "JJJ"]
# Long enough (a few seconds of simulation in ~100 chunks) to watch the bar move.
SWEEP = {"strategy": "sma_crossover", "symbols": SYMBOLS,
         "params": {"fast": list(range(2, 50)), "slow": list(range(50, 400, 5))}}
SMALL = {"strategy": "sma_crossover", "symbols": ["AAA"], "params": {"fast": 10, "slow": 50}}
TAB = '.jp-SideBar .lm-TabBar-tab[data-id="quantlab-backtests"]'
# `quantlab dashboard compare`'s address for stakeholders, where nothing runs in this test: the
# panel must open the dashboard on the Lab's own server instead.
DASHBOARD = "http://127.0.0.1:8866"
LOCAL_HOSTS = ("127.0.0.1", "localhost")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterProcess]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing; install it with: apt-get install chromium")
    base = tmp_path_factory.mktemp("lab")
    home, root, jupyter = base / "home", base / "root", base / "jupyter"
    root.mkdir()
    # No "get Jupyter news?" toast in a test browser (it would sit on top of ours).
    labconfig = jupyter / "config" / "labconfig"
    labconfig.mkdir(parents=True)
    (labconfig / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    # The registry's notifications are read at page load and then only hourly: a toast that
    # comes at once while the panel is hidden can only have come from the live stream.
    settings = jupyter / "config" / "lab" / "user-settings" / "quantlab"
    settings.mkdir(parents=True)
    (settings / "plugin.jupyterlab-settings").write_text(json.dumps(
        {"notificationPollSeconds": 3600}))
    # This checkout's build of the extension, ahead of any installed copy.
    build = ROOT / "quantlab" / "labextension"
    if (build / "package.json").exists():
        shutil.copytree(build, jupyter / "data" / "labextensions" / "quantlab")
    # JUPYTER_PREFER_ENV_PATH=0: the private data dir (this checkout's build) comes first
    env = quantlab_env(home, jupyter, {"QUANTLAB_DASHBOARD_URL": DASHBOARD,
                                       "JUPYTER_PREFER_ENV_PATH": "0"})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QUANTLAB_HOME", str(home))
        import quantlab as ql

        ql.data.sample()
    # Every chunk of a run pauses 0.1 s on this worker: the sweep (~100 chunks) then runs for
    # seconds on any machine, so the run queued behind it is still queued when Cancel is clicked.
    worker = Worker({**env, "QUANTLAB_JOBS_CHUNK_DELAY": "0.1"}, base / "worker.log")
    server = JupyterProcess(
        env, root, base / "lab.log", app="jupyterlab",
        extra_args=("--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",))
    try:
        worker.wait_alive(home)
        server.wait_ready()
        # One small run end to end first: the worker is warm and consuming before the browser.
        status, record = server.request("POST", f"{API}/runs", {"config": SMALL,
                                                                "name": "warm-up"})
        assert status == 201, record
        wait_status(server, record["id"], ("completed",))
        yield server
    finally:
        server.stop()
        worker.stop()
        shutil.rmtree(jupyter, ignore_errors=True)


def wait_status(server: JupyterProcess, run_id: str, statuses: tuple[str, ...],
                timeout: float = 240) -> dict[str, Any]:
    def record_if_there() -> dict[str, Any] | None:
        _status, record = server.request("GET", f"{API}/runs/{run_id}")
        return record if record.get("status") in statuses else None

    return dict(wait_for(record_if_there, timeout, f"run {run_id} to be {statuses}",
                         interval=0.2))


def add_notification(server: JupyterProcess, doc: dict[str, Any]) -> str:
    from quantlab.registry import open_registry

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QUANTLAB_HOME", server.env["QUANTLAB_HOME"])
        return str(open_registry().add_notification(doc))


def unread(server: JupyterProcess) -> list[str]:
    status, reply = server.request("GET", f"{API}/notifications?unread_only=true")
    assert status == 200, reply
    return [n["id"] for n in reply["notifications"]]


def saved_comparison(server: JupyterProcess, comparison_id: str) -> dict[str, Any]:
    """The comparison document the panel's "Compare selected" saved in the registry."""
    from quantlab.registry import open_registry

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QUANTLAB_HOME", server.env["QUANTLAB_HOME"])
        return dict(open_registry().get_document("comparisons", comparison_id))


RECORDER = """
() => {
  window.__qlSeen = [];
  const record = row => {
    const bar = row.querySelector('.jp-QuantlabRun-progress');
    window.__qlSeen.push({id: row.dataset.runId, status: row.dataset.status,
                          percent: Number(bar && bar.getAttribute('aria-valuenow'))});
  };
  const list = document.querySelector('.jp-QuantlabPanel-list');
  new MutationObserver(changes => {
    for (const change of changes) {
      const row = change.target.closest ? change.target.closest('.jp-QuantlabRun')
                                        : change.target.parentElement.closest('.jp-QuantlabRun');
      if (row) record(row);
    }
  }).observe(list, {subtree: true, attributes: true, childList: true, characterData: true});
}
"""


def offline(context: Any) -> list[str]:
    """Cut ``context`` off from everything but this machine; returns the list of what its pages
    asked for elsewhere (refused)."""
    from urllib.parse import urlsplit

    refused: list[str] = []

    def route(route: Any) -> None:
        url = route.request.url
        if urlsplit(url).hostname in LOCAL_HOSTS or not url.startswith("http"):
            route.continue_()
        else:
            refused.append(url)
            route.abort("internetdisconnected")

    context.route("**/*", route)
    return refused


def test_the_panel_follows_runs_live_cancels_and_toasts(lab: JupyterProcess) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            elsewhere = offline(context)
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            # Stored while no browser was open: shown as a toast when the page comes, then read.
            waiting = add_notification(lab, {
                "user": "tester", "run_id": "01OFFLINE", "kind": "completed",
                "title": "Backtest \"overnight sweep\" completed", "body": "Sharpe 1.42"})
            page.goto(f"{lab.base}/lab?token={lab.token}")
            expect(page.get_by_text('Backtest "overnight sweep" completed: Sharpe 1.42')
                   ).to_be_visible(timeout=60_000)
            wait_for(lambda: waiting not in unread(lab), 30, "the toast to be marked read",
                     interval=0.1)
            page.wait_for_selector(TAB, timeout=90_000)
            panel = page.locator("#quantlab-backtests")
            if not panel.is_visible():
                page.click(TAB)
            expect(panel).to_be_visible()

            # The run made before the browser came is listed, with its metrics.
            warm = panel.locator(".jp-QuantlabRun", has_text="warm-up")
            expect(warm).to_have_attribute("data-status", "completed", timeout=30_000)
            expect(warm.locator('[data-metric="sharpe"]')).to_contain_text("Sharpe")
            warm_id = str(warm.get_attribute("data-run-id"))
            expect(panel.locator(".jp-QuantlabPanel-live")).to_have_attribute(
                "data-state", "live", timeout=30_000)
            page.evaluate(RECORDER)

            # A long sweep, and a run queued behind it (one worker thread) to cancel.
            status, sweep = lab.request("POST", f"{API}/runs", {
                "config": SWEEP, "name": "browser sweep", "cache": False})
            assert status == 201, sweep
            status, victim = lab.request("POST", f"{API}/runs", {
                "config": {**SMALL, "symbols": ["BBB"]}, "name": "to be cancelled",
                "cache": False})
            assert status == 201, victim

            victim_row = panel.locator(f'.jp-QuantlabRun[data-run-id="{victim["id"]}"]')
            expect(victim_row).to_have_attribute("data-status", "queued", timeout=30_000)
            victim_row.locator(".jp-QuantlabRun-cancel").click()
            expect(victim_row).to_have_attribute("data-status", "cancelled", timeout=30_000)
            assert lab.request("GET", f"{API}/runs/{victim['id']}")[1]["status"] == "cancelled"
            expect(victim_row.locator(".jp-QuantlabRun-rerun")).to_be_visible()

            sweep_row = panel.locator(f'.jp-QuantlabRun[data-run-id="{sweep["id"]}"]')
            expect(sweep_row).to_have_attribute("data-status", "completed", timeout=240_000)
            toast = page.get_by_text('Backtest "browser sweep" completed')
            expect(toast.first).to_be_visible(timeout=30_000)

            seen = page.evaluate("window.__qlSeen")
            running = sorted({s["percent"] for s in seen
                              if s["id"] == sweep["id"] and s["status"] == "running"})
            inside = [p for p in running if 0 < p < 100]
            assert len(inside) >= 3, f"the bar did not move while running: {running}"
            done = wait_status(lab, sweep["id"], ("completed",))
            expect(sweep_row.locator('[data-metric="sharpe"]')).to_contain_text(
                f"{done['metrics']['sharpe']:.2f}")

            # Compare selected: the comparison is saved and its dashboard opens in a new tab,
            # served by the Lab's own server (nothing else runs), showing both runs, offline.
            compare = panel.locator(".jp-QuantlabPanel-compare")
            expect(compare).to_be_disabled()
            warm.locator(".jp-QuantlabRun-select").check()
            sweep_row.locator(".jp-QuantlabRun-select").check()
            expect(compare).to_be_enabled()
            with page.context.expect_page() as opened:
                compare.click()
            dashboard = opened.value
            dashboard.wait_for_url(f"{lab.base}/quantlab/dashboards/compare/?comparison=*",
                                   timeout=60_000)
            comparison_id = dashboard.url.split("comparison=")[1]
            assert sorted(saved_comparison(lab, comparison_id)["run_ids"]) == sorted(
                [warm_id, sweep["id"]])
            expect(page.get_by_text(f"Comparison of 2 runs saved ({comparison_id})")).to_be_visible()
            header = dashboard.locator(".ql-compare-metrics thead")
            expect(header).to_contain_text("warm-up", timeout=180_000)
            expect(header).to_contain_text("browser sweep")
            expect(dashboard.locator(".ql-run-picker .ql-run-choice input:checked")).to_have_count(2)
            expect(dashboard.locator(".ql-section-equity .js-plotly-plot .main-svg").first).to_be_visible()
            assert elsewhere == [], f"pages asked for more than this machine: {elsewhere}"
            dashboard.close()

            # Diff (exactly two selected): the run diff, older run first, as text in a dialog.
            diff_button = panel.locator(".jp-QuantlabPanel-diff-button")
            expect(diff_button).to_be_enabled()
            diff_button.click()
            dialog = page.locator(".jp-Dialog")
            expect(dialog.locator(".jp-QuantlabPanel-diff")).to_contain_text(
                f"diff {warm_id} -> {sweep['id']}", timeout=60_000)
            page.keyboard.press("Escape")
            expect(dialog).to_be_hidden()

            # Report: executed on the server, its page opens in a new tab.
            with page.context.expect_page() as opened:
                warm.locator(".jp-QuantlabRun-report").click()
            report = opened.value
            refused: list[str] = []
            report.on("console", lambda message: refused.append(message.text)
                      if "Content Security Policy" in message.text else None)
            report.wait_for_url(f"**{API}/runs/{warm_id}/report", timeout=180_000)
            expect(report.locator("body")).to_contain_text(warm_id, timeout=30_000)
            report.wait_for_load_state("load")
            # the report's own CSS and scripts (inline plotly.js) all pass its policy
            assert refused == [], refused
            report.close()

            # Hidden, the panel stops streaming; shown again, it reloads and streams again.
            page.click(TAB)
            expect(panel).to_be_hidden()
            live = panel.locator(".jp-QuantlabPanel-live")
            expect(live).to_have_attribute("data-state", "stopped")
            status, hidden_run = lab.request("POST", f"{API}/runs", {
                "config": {**SMALL, "symbols": ["CCC"]}, "name": "while hidden"})
            wait_status(lab, hidden_run["id"], ("completed",))
            page.click(TAB)
            expect(panel.locator(".jp-QuantlabRun", has_text="while hidden")).to_have_attribute(
                "data-status", "completed", timeout=30_000)
            expect(live).to_have_attribute("data-state", "live", timeout=30_000)

            # The server restarts: the panel reconnects by itself and resumes the stream.
            lab.restart()
            expect(live).to_have_attribute("data-state", "live", timeout=60_000)
            status, after_restart = lab.request("POST", f"{API}/runs", {
                "config": {**SMALL, "symbols": ["DDD"]}, "name": "after restart",
                "cache": False})
            assert status == 201, after_restart
            row = panel.locator(f'.jp-QuantlabRun[data-run-id="{after_restart["id"]}"]')
            expect(row).to_have_attribute("data-status", "completed", timeout=120_000)
            assert elsewhere == [], f"pages asked for more than this machine: {elsewhere}"
            assert errors == []
        finally:
            browser.close()


STATUS_RECORDER = """
() => {
  window.__qlStatusText = [];
  const list = document.querySelector('.jp-QuantlabPanel-list');
  new MutationObserver(() => {
    for (const row of list.querySelectorAll('.jp-QuantlabRun')) {
      const text = row.querySelector('.jp-QuantlabRun-status').textContent;
      const seen = window.__qlStatusText.filter(s => s.id === row.dataset.runId);
      if (!seen.length || seen[seen.length - 1].text !== text) {
        window.__qlStatusText.push({id: row.dataset.runId, text, status: row.dataset.status});
      }
    }
  }).observe(list, {subtree: true, attributes: true, childList: true, characterData: true});
}
"""

TRACEBACK = ('Traceback (most recent call last):\n  File "<strategy boom>", line 3, in boom\n'
             "ValueError: the edges test's own traceback")


def insert_failed_run(server: JupyterProcess) -> str:
    from quantlab.jobs.orchestrator import new_run_id
    from quantlab.registry import open_registry

    run_id = new_run_id()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QUANTLAB_HOME", server.env["QUANTLAB_HOME"])
        open_registry().insert_run({
            "id": run_id, "name": "failed on purpose", "user": "tester", "status": "failed",
            "strategy": "sma_crossover", "symbols": ["AAA"], "config": dict(SMALL),
            "queued_at": time.time(), "finished_at": time.time(), "error": "ValueError: boom",
            "traceback": TRACEBACK})
    return run_id


LONG_NAME = ("momentum with a volatility filter on the whole universe, rebalanced weekly, "
             "costs of 5 bp, walk-forward 2015-2024, second try after the data fix")


def insert_long_named_run(server: JupyterProcess) -> str:
    from quantlab.jobs.orchestrator import new_run_id
    from quantlab.registry import open_registry

    run_id = new_run_id()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QUANTLAB_HOME", server.env["QUANTLAB_HOME"])
        open_registry().insert_run({
            "id": run_id, "name": LONG_NAME, "user": "tester", "status": "completed",
            "strategy": "sma_crossover", "symbols": ["AAA"], "config": dict(SMALL),
            "queued_at": time.time(), "finished_at": time.time()})
    return run_id


def test_the_panels_rough_edges(lab: JupyterProcess) -> None:
    from playwright.sync_api import expect, sync_playwright

    notebook = {"cells": [], "nbformat": 4, "nbformat_minor": 5, "metadata": {"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}}}
    for name in ("edges.ipynb", "second.ipynb"):
        status, _ = lab.request("PUT", f"/api/contents/{name}", {
            "type": "notebook", "format": "json", "content": notebook})
        assert status in (200, 201)
    failed_id = insert_failed_run(lab)
    long_id = insert_long_named_run(lab)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            context.grant_permissions(["clipboard-read", "clipboard-write"],
                                      origin=lab.base)
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{lab.base}/lab/tree/edges.ipynb?token={lab.token}")
            page.wait_for_selector(".jp-Notebook", timeout=90_000)
            page.wait_for_selector(TAB, timeout=90_000)
            panel = page.locator("#quantlab-backtests")
            if not panel.is_visible():
                page.click(TAB)
            expect(panel).to_be_visible()
            expect(panel.locator(".jp-QuantlabPanel-live")).to_have_attribute(
                "data-state", "live", timeout=30_000)

            # 8. Bad filters say what is wrong, with did-you-mean (the server's 400 message).
            message = panel.locator(".jp-QuantlabPanel-message")
            box = panel.locator(".jp-QuantlabPanel-filter")
            box.fill("strategy:sma_crosover")
            box.press("Enter")
            expect(message).to_contain_text(
                "no run has strategy 'sma_crosover' — did you mean 'sma_crossover'?")
            box.fill("sharpe>>1")
            box.press("Enter")
            expect(message).to_contain_text("unknown comparison '>>'")
            expect(message).to_contain_text("did you mean '>'?")
            box.fill("stratgy:sma_crossover")
            box.press("Enter")
            expect(message).to_contain_text("did you mean 'strategy:'?")
            box.fill("")
            box.press("Enter")
            expect(message).to_be_hidden()

            # 7. A long name ends in an ellipsis, the status stays in view, and the name's
            # tooltip holds the whole name and the id.
            long_row = panel.locator(f'.jp-QuantlabRun[data-run-id="{long_id}"]')
            name = long_row.locator(".jp-QuantlabRun-name")
            expect(name).to_have_attribute(
                "title", f"{LONG_NAME}\nid {long_id}\nsma_crossover on AAA", timeout=30_000)
            assert name.evaluate("el => getComputedStyle(el).textOverflow") == "ellipsis"
            assert name.evaluate("el => el.scrollWidth > el.clientWidth")  # it is cut short
            badge = long_row.locator(".jp-QuantlabRun-status").bounding_box()
            row_box = long_row.bounding_box()
            assert badge and row_box and badge["x"] + badge["width"] <= row_box["x"] + row_box[
                "width"], (badge, row_box)

            # 6. A failed run shows its traceback (folded, fetched when unfolded).
            failed = panel.locator(f'.jp-QuantlabRun[data-run-id="{failed_id}"]')
            expect(failed).to_have_attribute("data-status", "failed", timeout=30_000)
            traceback = failed.locator(".jp-QuantlabRun-traceback")
            expect(traceback).to_be_visible()
            traceback.locator("summary").click()
            expect(traceback.locator("pre")).to_contain_text("the edges test's own traceback")

            # 3. "n s ago" moves on by itself.
            meta = failed.locator(".jp-QuantlabRun-meta")
            before = meta.text_content()
            expect(meta).not_to_have_text(str(before), timeout=60_000)

            # 11. Open in notebook inserts ql.get_run(id); Copy id copies it.
            failed.locator(".jp-QuantlabRun-open").click()
            expect(page.locator(".jp-Notebook .jp-Cell",
                                has_text=f'ql.get_run("{failed_id}")')).to_be_visible()
            # with another kind of tab in front, it goes to the notebook last in focus (here
            # the second one opened, not the first tab)
            page.locator('.jp-SideBar .lm-TabBar-tab[data-id="filebrowser"]').click()
            page.locator(".jp-DirListing-item", has_text="second.ipynb").dblclick()
            current = page.locator("#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current")
            expect(current).to_contain_text("second.ipynb", timeout=60_000)
            page.wait_for_selector(".jp-NotebookPanel:visible .jp-Notebook", timeout=60_000)
            page.locator(".lm-MenuBar-itemLabel", has_text="File").click()
            page.locator(".lm-Menu-itemLabel", has_text="New").first.hover()
            page.locator(".lm-Menu-itemLabel", has_text="Text File").first.click()
            expect(page.locator(".jp-FileEditor").first).to_be_visible(timeout=30_000)
            page.click(TAB)  # the Backtests panel again, in place of the file browser
            expect(panel).to_be_visible()
            failed.locator(".jp-QuantlabRun-open").click()
            expect(current).to_contain_text("second.ipynb")
            expect(page.locator(".jp-NotebookPanel:visible .jp-Cell",
                                has_text=f'ql.get_run("{failed_id}")')).to_have_count(1)
            expect(page.locator(".jp-Notebook .jp-Cell",
                                has_text=f'ql.get_run("{failed_id}")')).to_have_count(2)
            failed.locator(".jp-QuantlabRun-copy").click()
            wait_for(lambda: page.evaluate("navigator.clipboard.readText()") == failed_id, 30,
                     "the run id on the clipboard", interval=0.2)

            # 9. Cancel says "cancelling…" at once, before the run has stopped.
            page.evaluate(STATUS_RECORDER)
            status, sweep = lab.request("POST", f"{API}/runs", {
                "config": SWEEP, "name": "sweep to cancel", "cache": False})
            assert status == 201, sweep
            row = panel.locator(f'.jp-QuantlabRun[data-run-id="{sweep["id"]}"]')
            expect(row).to_have_attribute("data-status", "running", timeout=120_000)
            row.locator(".jp-QuantlabRun-cancel").click()
            expect(row).to_have_attribute("data-status", "cancelled", timeout=120_000)
            texts = [s["text"] for s in page.evaluate("window.__qlStatusText")
                     if s["id"] == sweep["id"]]
            assert "cancelling…" in texts, texts
            assert texts.index("cancelling…") < len(texts) - 1 and texts[-1].startswith(
                "cancelled"), texts

            # 1. With the panel closed, a run's toast comes at once, in one wording.
            page.click(TAB)
            expect(panel).to_be_hidden()
            status, hidden = lab.request("POST", f"{API}/runs", {
                "config": {**SMALL, "symbols": ["EEE"]}, "name": "toast while hidden",
                "cache": False})
            assert status == 201, hidden
            done = wait_status(lab, hidden["id"], ("completed",))
            sharpe = f"Sharpe {done['metrics']['sharpe']:.2f}"
            toast = page.get_by_text('Backtest "toast while hidden" completed: Return ')
            expect(toast.first).to_be_visible(timeout=30_000)
            expect(toast.first).to_contain_text(sharpe)
            expect(toast.first).to_contain_text("Max DD")
            assert page.get_by_text("completed: Backtest").count() == 0
            assert errors == []
        finally:
            browser.close()


# A report page as the plotly helper's figures make it: inline CSS, an inline script, a style
# attribute, and a script that adds a <style> element of its own (as plotly.js does for its
# modebar), plus a script from a CDN that must stay blocked.
STYLED_REPORT = """<!DOCTYPE html><html><head><meta charset="utf-8">
<style>#css { color: rgb(0, 128, 0); }</style>
<script src="https://cdn.example.com/never.js"></script></head><body>
<p id="css">inline CSS</p><p id="attr" style="color: rgb(0, 0, 255)">style attribute</p>
<p id="js">not run</p><p id="dynamic">dynamic style</p>
<script>
document.getElementById('js').textContent = 'ran';
var style = document.createElement('style');
style.textContent = '#dynamic { color: rgb(255, 0, 0); }';
document.head.appendChild(style);
</script></body></html>"""


def test_the_report_page_is_styled_and_runs_its_own_scripts_only(lab: JupyterProcess) -> None:
    from playwright.sync_api import sync_playwright

    from quantlab.jobs.orchestrator import new_run_id
    from quantlab.registry import open_registry

    run_id = new_run_id()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QUANTLAB_HOME", lab.env["QUANTLAB_HOME"])
        registry = open_registry()
        registry.put_blob(f"runs/{run_id}/report.html", STYLED_REPORT.encode())
        registry.insert_run({"id": run_id, "name": "styled report", "user": "tester",
                             "status": "completed", "strategy": "sma_crossover",
                             "symbols": ["AAA"], "config": dict(SMALL), "queued_at": time.time(),
                             "report_ref": f"runs/{run_id}/report.html"})
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            console: list[str] = []
            page.on("console", lambda message: console.append(message.text))
            page.goto(f"{lab.base}{API}/runs/{run_id}/report?token={lab.token}")
            page.wait_for_load_state("load")
            color = "el => getComputedStyle(el).color"
            assert page.locator("#css").evaluate(color) == "rgb(0, 128, 0)"
            assert page.locator("#attr").evaluate(color) == "rgb(0, 0, 255)"
            assert page.locator("#js").text_content() == "ran"
            assert page.locator("#dynamic").evaluate(color) == "rgb(255, 0, 0)"
            blocked = [m for m in console if "Content Security Policy" in m]
            # the one refusal is the CDN script: nothing from elsewhere
            assert len(blocked) == 1 and "cdn.example.com" in blocked[0], blocked
        finally:
            browser.close()
