"""The figures in a real browser with the network cut off: a saved result page and a run report,
opened from files in the Debian chromium through Playwright. Every request that is not a file
or localhost is refused, so plotly.js must be in the pages; a trade marker is hovered and its
tooltip read, the time axis zoomed with a drag, and a heatmap cell clicked to show its
combination's equity."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import quantlab as ql
from tests.support.analytics import populated_home

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# as tests/test_lab_browser.py
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SWEEP = {"name": "sma sweep", "strategy": "sma_crossover", "symbols": ["AAA"],
         "start": "2019-01-01", "params": {"fast": [5, 10, 20], "slow": [50, 100]}}

# the pixel of point `point` of the trace called `name` in plot `gd`, in page coordinates
POINT_JS = """([selector, name, point]) => {
  const gd = document.querySelector(selector);
  gd.scrollIntoView();
  const i = gd._fullData.findIndex(t => t.name === name);
  const t = gd._fullData[i];
  const xa = gd._fullLayout[t.xaxis.replace('x', 'xaxis')];
  const ya = gd._fullLayout[t.yaxis.replace('y', 'yaxis')];
  const box = gd.getBoundingClientRect();
  const x = Array.isArray(t.x) || ArrayBuffer.isView(t.x) ? t.x[point] : t.x;
  const y = Array.isArray(t.y) || ArrayBuffer.isView(t.y) ? t.y[point] : t.y;
  return [box.left + xa._offset + xa.d2p(x), box.top + ya._offset + ya.d2p(y)];
}"""
CELL_JS = """([selector, x, y]) => {
  const gd = document.querySelector(selector);
  gd.scrollIntoView();
  const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
  const box = gd.getBoundingClientRect();
  // category axes: the position of a cell is its category's index
  return [box.left + xa._offset + xa.l2p(xa._categories.indexOf(x)),
          box.top + ya._offset + ya.l2p(ya._categories.indexOf(y))];
}"""


def _bars(n: int = 700) -> pd.DataFrame:
    rng = np.random.default_rng(11)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.012, n)))
    return pd.DataFrame({"open": close, "high": close * 1.01, "low": close * 0.99,
                         "close": close, "volume": 1e6},
                        index=pd.date_range("2019-01-01", periods=n, freq="B"))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing; install it with: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def offline_page(browser: Any) -> tuple[Any, list[str], list[str]]:
    """A page that refuses every request but files and localhost; returns it, the refused
    URLs and the page's errors."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    refused: list[str] = []
    errors: list[str] = []

    def route(request_route: Any) -> None:
        url = request_route.request.url
        # blob: URLs are made by the page itself (anywidget loads its module from one)
        if url.startswith(("file://", "data:", "blob:", "http://127.0.0.1", "http://localhost")):
            request_route.continue_()
        else:
            refused.append(url)
            request_route.abort()

    page.route("**/*", route)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return page, refused, errors


def hover_trade(page: Any, selector: str, trades: pd.DataFrame) -> str:
    """Move the mouse onto the first long entry marker; the hover box's text."""
    x, y = page.evaluate(POINT_JS, [selector, "Long entry", 0])
    page.mouse.move(x - 30, y - 30)
    page.mouse.move(x, y, steps=5)
    page.wait_for_selector(f"{selector} .hoverlayer text", timeout=10_000)
    return str(page.evaluate(
        f"() => [...document.querySelectorAll('{selector} .hoverlayer text')]"
        ".map(t => t.textContent).join('\\n')"))


def zoom_by_drag(page: Any, selector: str) -> tuple[list[Any], list[Any]]:
    before = page.evaluate(f"() => document.querySelector('{selector}')._fullLayout.xaxis.range")
    box = page.evaluate(f"""() => {{
        const gd = document.querySelector('{selector}');
        gd.scrollIntoView();
        const xa = gd._fullLayout.xaxis,
              ya = gd._fullLayout.yaxis3, r = gd.getBoundingClientRect();
        return [r.left + xa._offset, r.top + ya._offset, xa._length, ya._length];
    }}""")
    left, top, width, height = box
    page.mouse.move(left + 0.3 * width, top + 0.5 * height)
    page.mouse.down()
    page.mouse.move(left + 0.6 * width, top + 0.5 * height, steps=10)
    page.mouse.up()
    page.wait_for_function(
        f"() => document.querySelector('{selector}')._fullLayout.xaxis.range[0] !== "
        f"{before[0]!r}", timeout=10_000)
    after = page.evaluate(f"() => document.querySelector('{selector}')._fullLayout.xaxis.range")
    return before, after


def click_cell(page: Any, x: str, y: str) -> str:
    selector = ".ql-sweep-explorer .js-plotly-plot"
    px, py = page.evaluate(CELL_JS, [selector, x, y])
    page.mouse.click(px, py)
    page.wait_for_selector(".ql-cell-equity .main-svg", timeout=10_000)
    page.wait_for_function("() => document.querySelector('.ql-cell-detail').textContent"
                           ".includes('closed trades')", timeout=10_000)
    return str(page.evaluate("() => document.querySelector('.ql-cell-equity').data[0].y"
                             ".slice(-1)[0]"))


def test_a_saved_result_page_works_offline(browser: Any, tmp_path: Path) -> None:
    sweep = ql.backtest(_bars(), params={"fast": [5, 10, 20], "slow": [30, 60]})
    best = sweep.combination(**sweep.params)
    path = tmp_path / "result.html"
    sweep.to_html(str(path))
    page, refused, errors = offline_page(browser)
    page.goto(path.as_uri())
    selector = "#ql-result-figure"
    page.wait_for_selector(f"{selector} .main-svg", timeout=30_000)
    assert page.evaluate("() => typeof window.Plotly") == "object"

    tip = hover_trade(page, selector, best.trades)
    first = best.trades[best.trades["size"] > 0].iloc[0]
    assert f"{first['pnl']:+,.2f}" in tip and f"{first['return_pct']:+.2f} %" in tip
    assert f"long {abs(first['size']):,.0f}" in tip

    before, after = zoom_by_drag(page, selector)
    assert pd.Timestamp(after[0]) > pd.Timestamp(before[0])
    assert pd.Timestamp(after[1]) < pd.Timestamp(before[1])

    # the heatmap's labels are drawn whole, inside the figure (not clipped)
    outside = page.evaluate("""() => {
        const gd = document.querySelector('.ql-sweep-explorer .js-plotly-plot');
        const frame = gd.querySelector('.main-svg').getBoundingClientRect();
        return [...gd.querySelectorAll('.xtitle, .ytitle, .cbtitle text, .gtitle, .xtick text,'
                                       + ' .ytick text')]
          .map(t => [t.textContent, t.getBoundingClientRect()])
          .filter(([_, b]) => b.left < frame.left || b.right > frame.right
                              || b.top < frame.top || b.bottom > frame.bottom)
          .map(([text, _]) => text);
    }""")
    assert outside == []
    titles = page.evaluate("() => [...document.querySelectorAll("
                           "'.ql-sweep-explorer .xtitle, .ql-sweep-explorer .ytitle, "
                           ".ql-sweep-explorer .cbtitle text')].map(t => t.textContent)")
    assert sorted(titles) == ["Sharpe", "fast", "slow"]

    last = click_cell(page, "10", "60")
    combo = sweep.combination(fast=10, slow=60)
    assert float(last) == pytest.approx(combo.equity.iloc[-1], abs=1e-3)
    assert "fast=10, slow=60" in page.inner_text(".ql-sweep-explorer")

    # the trades table sorts and pages in the page itself
    page.click(".ql-trades-view th:nth-child(10)")  # P&L
    assert page.get_attribute(".ql-trades-view th:nth-child(10)", "data-sort") == "asc"
    lowest = page.inner_text(".ql-trades-view tbody tr:first-child td:nth-child(10)")
    assert lowest == f"{best.trades['pnl'].min():+,.2f}"
    assert refused == [] and errors == []


@pytest.fixture(scope="module")
def report_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    from quantlab.reports.runner import run_report

    with populated_home(tmp_path_factory.mktemp("figures"), [SWEEP]) as (_, ids):
        files = run_report(ids[0], output=tmp_path_factory.mktemp("out"))
        assert files.html is not None
        yield files.html, ids[0]


def test_a_report_file_works_offline(browser: Any, report_file: tuple[Path, str]) -> None:
    path, run_id = report_file
    result = ql.get_run(run_id).result()
    page, refused, errors = offline_page(browser)
    page.goto(path.as_uri())
    page.wait_for_selector(".ql-sweep-explorer .main-svg", timeout=30_000)
    figure = "#ql-result-figure"
    page.wait_for_selector(f"{figure} .main-svg", timeout=30_000)
    tip = hover_trade(page, figure, result.trades)
    first = result.trades[result.trades["size"] > 0].iloc[0]
    assert f"{first['pnl']:+,.2f}" in tip
    before, after = zoom_by_drag(page, figure)
    assert after != before
    fast, slow = int(result.params["fast"]), int(result.params["slow"])
    last = click_cell(page, str(fast), str(slow))
    assert float(last) == pytest.approx(result.equity.iloc[-1], abs=1e-3)
    # monthly returns are coloured by value
    colours = page.evaluate("() => [...document.querySelectorAll('.ql-monthly-returns td')]"
                            ".map(td => td.style.background).filter(c => c && c !== 'rgb(255, 255, "
                            "255)')")
    assert len(set(colours)) > 3
    assert refused == [] and errors == []


NOTEBOOK_CELL = """import numpy as np, pandas as pd, quantlab as ql
from quantlab.notebook.display import display_result
rng = np.random.default_rng(3); n = 600
c = 100 * np.exp(np.cumsum(rng.normal(0, 0.012, n)))
df = pd.DataFrame({"open": c, "high": c * 1.01, "low": c * 0.99, "close": c, "volume": 1e6},
                  index=pd.date_range("2019-01-01", periods=n, freq="B"))
view = display_result(ql.backtest(df, params={"fast": [5, 10], "slow": [30, 60]}))"""


# A saved notebook with a sweep view stays under this (as tests/test_notebook_widget.py): one
# copy of plotly.js (4.8 MB) in its widget state would be far over it.
SAVED_NOTEBOOK_BYTES = 1_000_000


def test_the_notebook_results_view_draws_in_jupyterlab(browser: Any, tmp_path: Path) -> None:
    """Run in a real JupyterLab: the figures draw through plotly's own renderer (installed with
    plotly), the heatmap draws and its clicks reach Python, and the trades table's script runs
    in its output. Saved with its widget state, the notebook is small: no plotly.js in it."""
    import json

    import nbformat

    from tests.support.procs import wait_for
    from tests.support.server import JupyterProcess, quantlab_env

    root, jupyter = tmp_path / "root", tmp_path / "jupyter"
    root.mkdir()
    (jupyter / "config" / "labconfig").mkdir(parents=True)
    (jupyter / "config" / "labconfig" / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(NOTEBOOK_CELL)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, root / "view.ipynb")
    # Lab saves the widget state with the notebook (as nbclient and papermill do)
    manager = jupyter / "config" / "lab" / "user-settings" / "@jupyter-widgets" / \
        "jupyterlab-manager"
    manager.mkdir(parents=True)
    (manager / "plugin.jupyterlab-settings").write_text(json.dumps({"saveState": True}))
    server = JupyterProcess(
        quantlab_env(tmp_path / "home", jupyter), root, tmp_path / "lab.log", app="jupyterlab",
        extra_args=("--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                    "--LabApp.expose_app_in_browser=True"))  # the save, by its command
    try:
        server.wait_ready()
        page, refused, _ = offline_page(browser)
        page.goto(f"{server.base}/lab/tree/view.ipynb?token={server.token}")
        editor = page.locator(".jp-Notebook .jp-Cell .cm-content").first
        editor.wait_for(timeout=120_000)
        # Ctrl+Enter runs the cell in place; pressed before the kernel is connected it is
        # lost, so press again until the cell has run
        for _ in range(12):
            editor.click()
            page.keyboard.press("Control+Enter")
            try:
                page.wait_for_selector(".ql-results", timeout=10_000)
                break
            except Exception:
                continue
        page.wait_for_selector(".ql-results", timeout=120_000)
        page.wait_for_function("() => document.querySelectorAll("
                               "'.ql-results .js-plotly-plot .main-svg').length >= 2",
                               timeout=60_000)
        # the sweep tab: the heatmap widget with its title; a click on a cell reaches Python,
        # which shows that combination's equity and trades
        heatmap = ".ql-results .js-plotly-plot"
        page.wait_for_function(f"() => document.querySelector('{heatmap}')._fullLayout")
        assert "Sharpe by fast × slow" in page.evaluate(
            f"() => document.querySelector('{heatmap}').textContent")
        x, y = page.evaluate(CELL_JS, [heatmap, "10", "60"])
        page.mouse.move(x, y)
        page.mouse.click(x, y)
        page.wait_for_function(
            "() => [...document.querySelectorAll('.ql-results .js-plotly-plot')].some(gd => "
            "gd.layout && gd.layout.title && gd.layout.title.text === "
            "'Equity of fast=10, slow=60')", timeout=60_000)
        assert "closed trades" in page.inner_text(".ql-results")
        page.locator(".ql-results .lm-TabBar-tab", has_text="Chart").click()
        page.wait_for_function(
            "() => [...document.querySelectorAll('.ql-results .js-plotly-plot')]"
            ".some(gd => gd.data && gd.data.some(t => t.name === 'Long entry'))",
            timeout=30_000)
        page.locator(".ql-results .lm-TabBar-tab", has_text="Trades").click()
        header = page.locator(".ql-results .ql-trades-view th:nth-child(10):visible").first
        header.click()
        assert header.get_attribute("data-sort") == "asc"  # set by the table's own script
        assert refused == []
        # saved with its widget state, the notebook holds the view but no copy of plotly.js
        before = (root / "view.ipynb").stat().st_mtime
        page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
        wait_for(lambda: (root / "view.ipynb").stat().st_mtime > before, 60, "the save")
        wait_for(lambda: "widget-state" in (root / "view.ipynb").read_text(), 60, "the state")
        saved = root / "view.ipynb"
        assert saved.stat().st_size < SAVED_NOTEBOOK_BYTES, saved.stat().st_size
        assert "ql-heatmap" in saved.read_text()
        page.close()
    finally:
        server.stop()
