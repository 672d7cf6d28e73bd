"""The ``%%backtest`` family of IPython magics.

``%load_ext quantlab`` (or ``quantlab`` in IPython's ``extensions`` config) calls
:func:`register`, which adds the magics and teaches IPython to display a ``Run`` as the live
widget and a ``Result`` as the results view.

A bad cell never reaches the queue: the config is parsed and validated here, and the error is
shown as one short error output (``ConfigError: unknown key 'comission' — did you mean
'commission'?``) instead of a traceback through QuantLab's internals. The exception is still
raised, so a headless run of the notebook (nbclient, papermill) stops at that cell.
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Callable
from typing import Any, NoReturn

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from quantlab.configtext import expand_param_ranges, parse_body
from quantlab.errors import QuantlabError
from quantlab.jobs.lifecycle import TERMINAL
from quantlab.notebook.reportview import ReportView
from quantlab.reports.runner import run_report

# The run API, the registry search, comparisons and the widgets are imported by the magics that
# use them, not here: each takes half a second to a second to import (pandas, Numba, Huey,
# ipywidgets), and ``%load_ext quantlab`` should not pay for what a notebook may never call.

RUN_CLASS = ("quantlab.jobs.api", "Run")
RESULT_CLASSES = (("quantlab.engine.api", "Result"), ("quantlab.engine.result", "Result"))


def fail_in_cell(exc: QuantlabError) -> NoReturn:
    """Raise ``exc`` so that IPython shows only ``Type: message`` (no traceback).

    IPython asks an exception for ``_render_traceback_`` before formatting a traceback; the
    error output keeps the exception's type name (``ename``) and message (``evalue``).
    """
    lines = [f"\x1b[0;31m{type(exc).__name__}\x1b[0m: {exc}"]
    exc._render_traceback_ = lambda: lines  # type: ignore[attr-defined]
    raise exc.with_traceback(None) from None


def _short_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """QuantLab's own errors (bad config, full queue, unknown run) as short cell errors."""
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except QuantlabError as exc:
            fail_in_cell(exc)
    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    wrapper.__wrapped__ = func  # type: ignore[attr-defined]
    return wrapper


def build_config(body: str, *, tags: list[str] | None = None) -> dict[str, Any]:
    """The config dict a ``%%backtest`` cell asks for: parsed, ranges expanded, the source of a
    notebook strategy attached. Validation proper is ``BacktestConfig``'s, in ``ql.submit``."""
    from quantlab.strategies.usercode import attach_strategy_source

    config = parse_body(body)
    if "params" in config:
        config["params"] = expand_param_ranges(config["params"])
    if tags:
        existing = config.get("tags") or []
        existing = [existing] if isinstance(existing, str) else list(existing)
        config["tags"] = list(dict.fromkeys([*existing, *tags]))
    return attach_strategy_source(config)


@magics_class
class BacktestMagics(Magics):
    """``%%backtest``, ``%backtests``, ``%backtest_status``, ``%backtest_cancel``,
    ``%backtest_compare``, ``%backtest_report``."""

    @magic_arguments()
    @argument("--name", help="a name for the run (searchable with %%backtests)")
    @argument("--tag", action="append", default=[], help="a tag (repeat for several)")
    @argument("--wait", action="store_true",
              help="block the cell until the run ends (needed for headless execution)")
    @argument("--timeout", type=float, default=None,
              help="with --wait: give up waiting after this many seconds (the run goes on)")
    @argument("--out", help="also bind the Run to this variable")
    @argument("--priority", type=int, default=0, help="higher runs first (default 0)")
    @argument("--no-cache", action="store_true",
              help="run again even if an identical run already completed")
    @line_cell_magic
    def backtest(self, line: str, cell: str | None = None) -> Any:
        """Validate the YAML (or JSON) config in the cell body and queue the backtest.

        The cell's value is the Run, shown as a live widget (progress, log tail, Cancel), which
        becomes the results view when the run ends. Params given as lists or ranges
        (``"5..50"``, ``"5..50:5"``, ``{start: 5, stop: 51, step: 5}``) make a sweep.
        """
        if cell is None:
            raise UsageError(
                "%backtest is a cell magic: write %%backtest on the first line of a cell and the "
                "config below it, e.g.\n%%backtest\nstrategy: sma_crossover\nsymbols: [AAA]")
        args = _parse_options(self.backtest, line)
        if args.out is not None and not args.out.isidentifier():
            raise UsageError(f"--out {args.out!r} is not a valid variable name; e.g. --out run1")
        if args.timeout is not None and not args.wait:
            raise UsageError("--timeout only applies with --wait; add --wait or drop --timeout")
        return self._submit_cell(args, cell)

    @_short_errors
    def _submit_cell(self, args: Any, cell: str) -> Any:
        from quantlab.jobs.api import submit

        # a cell with walk_forward: or cross_validate: is queued too (fold by fold on a worker);
        # ql.walk_forward / ql.cross_validate run in the kernel
        config = build_config(cell, tags=args.tag)
        if config.get("strategy_source") and (config.get("walk_forward") is not None
                                              or config.get("cross_validate") is not None):
            return self._analyse_here(args, config)
        run = submit(config, cache=not args.no_cache, priority=args.priority, name=args.name)
        if args.out and self.shell is not None:
            self.shell.user_ns[args.out] = run
        if args.wait:
            # Ctrl-C or --timeout stop the waiting, not the run: the widget still follows it
            # (and can cancel it).
            with contextlib.suppress(KeyboardInterrupt, TimeoutError):
                run.wait(timeout=args.timeout)
        return run

    def _analyse_here(self, args: Any, config: dict[str, Any]) -> Any:
        """A walk-forward or cross-validation of a strategy defined in this notebook runs here,
        in the kernel, as ``ql.walk_forward`` / ``ql.cross_validate`` would (a worker would need
        a sandbox per fold: such runs are not queued); the value is the analysis itself."""
        from quantlab.config import BacktestConfig
        from quantlab.jobs.validation import run_here

        found = run_here(BacktestConfig.from_any(config))  # every key checked, as when queued
        if args.out and self.shell is not None:
            self.shell.user_ns[args.out] = found
        return found

    @line_magic
    @_short_errors
    def backtests(self, line: str = "") -> Any:
        """Runs in the registry as a table: ``%backtests status=completed tag=trend sharpe>1
        sort=-sharpe limit=10``; other words search run names."""
        from quantlab.notebook.runlist import find_runs, parse_filters

        return find_runs(parse_filters(line))

    @line_magic
    @_short_errors
    def backtest_status(self, line: str) -> Any:
        """``%backtest_status ID``: the run's present state, followed live if it still runs."""
        from quantlab.jobs.api import get_run

        return get_run(_one_id(line, "backtest_status"))

    @line_magic
    @_short_errors
    def backtest_cancel(self, line: str) -> Any:
        """``%backtest_cancel ID``: cancel a queued or running run (a sweep keeps what finished)."""
        from quantlab.jobs.api import get_run

        run = get_run(_one_id(line, "backtest_cancel"))
        before = run.status
        run.cancel()
        after = run.status
        if before in TERMINAL:
            print(f"run {run.id} had already ended ({before}); nothing to cancel")
        elif after == "cancelled":
            print(f"run {run.id} cancelled (it was {before})")
        else:
            print(f"run {run.id}: cancel requested; it stops at its next chunk and keeps what "
                  f"was finished")
        return None

    @line_magic
    @_short_errors
    def backtest_compare(self, line: str) -> Any:
        """``%backtest_compare ID ID [ID ...]``: 2 to 5 completed runs side by side (``ql.compare``):
        metrics with the best in bold, equity rebased to 100, drawdowns, the correlation of daily
        returns and what differs in their configs. The value is the ``Comparison``."""
        from quantlab.analytics import compare
        from quantlab.render import html  # noqa: F401  (gives the Comparison its HTML view)

        return compare(line.replace(",", " ").split())

    @line_magic
    @_short_errors
    def backtest_diff(self, line: str) -> Any:
        """``%backtest_diff A B``: why two runs differ (``ql.diff``): changed settings, code,
        data from which bar, engine, metrics, divergence, trades. The value is the RunDiff."""
        from quantlab.jobs.rundiff import diff

        ids = line.replace(",", " ").split()
        if len(ids) != 2:
            raise UsageError(f"%backtest_diff takes two run ids, got {len(ids)}: "
                             f"%backtest_diff 01J... 01K...")
        return diff(ids[0], ids[1])

    @magic_arguments()
    @argument("run_id", nargs="*", help="the id of a completed run")
    @argument("--output", default=None,
              help="a .ipynb file or a folder for the executed notebook (default "
                   "QUANTLAB_HOME/reports/<id>.ipynb); the HTML goes next to it")
    @argument("--no-html", action="store_true", help="keep only the executed notebook")
    @line_magic
    def backtest_report(self, line: str) -> Any:
        """``%backtest_report ID [--output PATH] [--no-html]``: execute the run's report notebook
        (papermill) and keep it; shows where the notebook and its HTML page went."""
        args = _parse_options(self.backtest_report, line, "backtest_report")
        run_id = _one_id(" ".join(args.run_id), "backtest_report")
        return self._make_report(run_id, args.output, not args.no_html)

    @_short_errors
    def _make_report(self, run_id: str, output: str | None, html: bool) -> Any:
        return ReportView.of(run_report(run_id, output, html))


def _parse_options(magic: Any, line: str, name: str = "%backtest") -> Any:
    """The magic's options; quotes group words as in a shell (``--name "golden cross"``), which
    IPython's own ``parse_argstring`` would keep as part of the value."""
    try:
        tokens = shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"%{name} options: {exc}; close the quotes around the value") from None
    return magic.parser.parse_args(tokens)


def _one_id(line: str, magic: str) -> str:
    parts = line.split()
    if len(parts) != 1:
        raise UsageError(f"%{magic} takes one run id, e.g. %{magic} 01J8ZQ4...; list runs with "
                         f"%backtests")
    return parts[0]


def register(ipython: Any) -> None:
    """Add the magics to ``ipython`` and display Runs/Results with the notebook views."""
    ipython.register_magics(BacktestMagics)
    formatter = ipython.display_formatter.ipython_display_formatter
    from quantlab.notebook.display import display_result, display_run  # ipywidgets: see above

    formatter.for_type_by_name(*RUN_CLASS, display_run)
    for module, name in RESULT_CLASSES:
        formatter.for_type_by_name(module, name, display_result)
