"""The Backtests panel in a real JupyterLab, driven by the Debian chromium through Playwright.

JupyterLab runs with token auth on a free port over a temporary QUANTLAB_HOME, with a worker of
the test's own. The test opens the panel, watches a submitted sweep's progress bar move, cancels
a queued run with its Cancel button, and sees the completion toast. Never `playwright install`:
the browser is /usr/bin/chromium.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.procs import wait_for
from tests.support.server import JupyterProcess, Worker, quantlab_env

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
# Where the compare dashboard would be; the browser test answers it with a stub page.
DASHBOARD = "http://127.0.0.1:8866"


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
    env = quantlab_env(home, jupyter, {"QUANTLAB_DASHBOARD_URL": DASHBOARD})
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


def test_the_panel_follows_runs_live_cancels_and_toasts(lab: JupyterProcess) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
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

            # Compare selected: the comparison is saved and its dashboard opens in a new tab.
            page.context.route(f"{DASHBOARD}/**", lambda route: route.fulfill(
                status=200, content_type="text/html", body="<html><body>dashboard</body></html>"))
            compare = panel.locator(".jp-QuantlabPanel-compare")
            expect(compare).to_be_disabled()
            warm.locator(".jp-QuantlabRun-select").check()
            sweep_row.locator(".jp-QuantlabRun-select").check()
            expect(compare).to_be_enabled()
            with page.context.expect_page() as opened:
                compare.click()
            dashboard = opened.value
            dashboard.wait_for_url(f"{DASHBOARD}/?comparison=*", timeout=60_000)
            comparison_id = dashboard.url.split("comparison=")[1]
            assert sorted(saved_comparison(lab, comparison_id)["run_ids"]) == sorted(
                [warm_id, sweep["id"]])
            expect(page.get_by_text(f"Comparison of 2 runs saved ({comparison_id})")).to_be_visible()
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
            report.wait_for_url(f"**{API}/runs/{warm_id}/report", timeout=180_000)
            expect(report.locator("body")).to_contain_text(warm_id, timeout=30_000)
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
            assert errors == []
        finally:
            browser.close()
