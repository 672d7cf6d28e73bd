"""``Simulation``: a backtest (or sweep) that advances in chunks and can checkpoint.

Workers drive it: ``prepare()`` (indicators/signals), then ``run(max_units)`` repeatedly,
reporting progress and checking for cancellation between calls, ``state_bytes()`` for a
checkpoint, ``result()`` at the end. The unit of progress is a bar for a single run and a
parameter combination for a sweep. ``ql.backtest`` is exactly this with one big chunk.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Unpack

import numba
import numpy as np
import pandas as pd

from quantlab import indicators as I
from quantlab import metrics as M
from quantlab.bars import Bars, as_bars
from quantlab.engine import kernel as K
from quantlab.engine import validate as V
from quantlab.engine.options import (
    OPTION_NAMES,
    SWEEPABLE,
    BacktestOptions,
    EngineOptions,
    reject_unknown,
    swept_options,
)
from quantlab.engine.result import RESIMULATION, Result
from quantlab.engine.version import ENGINE_VERSION
from quantlab.errors import ConfigError, RunError, StrategyError
from quantlab.settings import env_number
from quantlab.strategies import Indicators, Strategy, check_signals, get_strategy

# a sweep batch holds at most this many signal bytes (k x symbols x bars int8)
_BATCH_BYTES = 8 << 20


class Simulation:
    """One backtest or sweep over ``bars``; keyword options as :func:`quantlab.backtest` (declared
    in :mod:`quantlab.engine.options`)."""

    def __init__(
        self,
        bars: Bars | Any,
        strategy: str | Strategy = "sma_crossover",
        params: Mapping[str, Any] | list[Mapping[str, Any]] | None = None,
        **options: Unpack[BacktestOptions],
    ) -> None:
        reject_unknown(options)  # a misspelt option first, as a signature would
        self.bars = bars if isinstance(bars, Bars) else as_bars(bars)
        if self.bars.n_bars == 0:
            raise ConfigError("the data has no bars in the requested range; widen start/end",
                              field="start")
        self.strategy = get_strategy(strategy)
        # options given as lists (or ranges) are sweep dimensions: the grid is params x them
        swept = swept_options(options)
        if isinstance(params, Mapping):
            # an option that params carry is theirs (a sweep's best combination reruns alone)
            own = V.carried_options(self.strategy, params)[1]
            swept = {name: values for name, values in swept.items() if name not in own}
        fixed: dict[str, Any] = {k: v for k, v in options.items() if k not in swept}
        self.is_sweep = V.is_sweep(params) or bool(swept)
        carried: dict[str, Any] = {}
        if self.is_sweep:
            # a built-in grid stays columns of values (V.Combinations): no dict per combination
            self.combos, self.skipped = V.sweep_grid(self.strategy, params or {},
                                                     options=options)
            self.params: dict[str, Any] = {}
        else:
            # a single combination may carry option values (a sweep's best one does): they
            # take precedence over the keywords
            own, carried = V.carried_options(self.strategy, params)  # type: ignore[arg-type]
            carried = {name: values[0] for name, values in
                       swept_options({k: [v] for k, v in carried.items()}).items()}
            self.params = {**V.check_params(self.strategy, own), **carried}
            self.combos, self.skipped = [self.params], 0
        self.options = opts = EngineOptions.checked({**fixed, **carried}, self.bars.symbols)
        self.select = opts.select
        self.threads = opts.threads
        self.weights_given = None if opts.weights is None else dict(opts.weights)
        # the swept options the combinations carry, in the options' order (table columns)
        self.swept = _carried_names(self.combos) if self.is_sweep else []

        cfg = np.zeros(K.C_N)
        cfg[K.C_CASH] = opts.cash
        cfg[K.C_COMM] = opts.commission
        cfg[K.C_FIXED] = opts.commission_fixed
        cfg[K.C_SLIP] = opts.slippage / 10_000.0
        cfg[K.C_SIZE] = opts.size
        cfg[K.C_FILL_CLOSE] = opts.fill == "close"
        cfg[K.C_WHOLE] = opts.units == "whole"
        cfg[K.C_SHORT] = opts.allow_short
        cfg[K.C_SL] = opts.stop_loss or 0.0
        cfg[K.C_TP] = opts.take_profit or 0.0
        cfg[K.C_CLOSE_AT_END] = opts.close_at_end
        cfg[K.C_N_TOTAL] = self.bars.n_bars
        self.cfg = cfg
        # one config row per distinct combination of swept option values, and each
        # combination's row (all rows the one cfg when nothing is swept)
        self.cfgs, self.cfg_rows = _option_configs(cfg, self.combos, self.swept, opts)
        self.ppy = M.periods_per_year(self.bars.interval, self.bars.index)
        self.config: dict[str, Any] = {
            "strategy": self.strategy.name,
            "params": _jsonable_params(params or {}) if self.is_sweep else dict(self.params),
            "symbols": list(self.bars.symbols),
            "start": _iso(self.bars.index, 0),
            "end": _iso(self.bars.index, -1),
            "interval": self.bars.interval,
            "n_bars": self.bars.n_bars,
            "cash": opts.cash, "commission": opts.commission,
            "commission_fixed": opts.commission_fixed, "slippage": opts.slippage,
            "fill": opts.fill, "units": opts.units, "allow_short": opts.allow_short,
            "size": opts.size, "weights": self.weights_given, "stop_loss": opts.stop_loss,
            "take_profit": opts.take_profit, "close_at_end": opts.close_at_end,
            **swept,  # a swept option's values
            "select": self.select,
            "periods_per_year": self.ppy,
            "engine_version": ENGINE_VERSION,
            "strategy_source_hash": self.strategy.source_hash,
        }
        self.total_units = len(self.combos) if self.is_sweep else self.bars.n_bars
        self.done_units = 0
        self._prepared = False
        # the scope of this run's @ql.indicator memo (quantlab.indicators.open_scope)
        self._memo_owner = object()
        # the single-symbol kernels (simulate1, sweep_cross1); False forces the general ones
        # (tests compare the two)
        self.fast_path = True
        # a finished sweep whose every combination raised fails (False: a shard of a split
        # sweep, whose merge judges the sweep whole)
        self.all_failed_raises = True
        self._arrays = tuple(np.ascontiguousarray(getattr(self.bars, f))
                             for f in ("open", "high", "low", "close"))

    # -- shared helpers ---------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.done_units >= self.total_units

    def _own(self, combo: Mapping[str, Any]) -> dict[str, Any]:
        """A combination's strategy parameters (without the option values it carries)."""
        return V.carried_options(self.strategy, combo)[0]

    def _weights(self, params: Mapping[str, Any]) -> np.ndarray:
        syms = self.bars.symbols
        if self.weights_given is not None:
            return np.array([self.weights_given.get(s, 0.0) for s in syms])
        slots = self.strategy.slots(self._own(params), len(syms))
        return np.full(len(syms), 1.0 / slots)

    def _buy_hold(self) -> float:
        return M.buy_hold_return_pct(self.bars.close)

    @contextlib.contextmanager
    def _threads(self) -> Iterator[None]:
        """Numba's thread count for the duration of a sweep step (``threads=`` or
        ``QUANTLAB_THREADS``), then back to what it was: the setting is per process, and
        one run's choice must not stay with the runs after it."""
        threads = self.threads
        if threads is None:
            threads = int(env_number("QUANTLAB_THREADS", 0, integer=True, minimum=1,
                                     example="2")) or None
        if threads is None:
            yield
            return
        before = numba.get_num_threads()
        numba.set_num_threads(min(threads, int(numba.config.NUMBA_NUM_THREADS)))  # type: ignore[attr-defined]
        try:
            yield
        finally:
            numba.set_num_threads(before)

    # -- lifecycle --------------------------------------------------------------------------
    def prepare(self, indicators: Indicators | None = None,
                progress: Callable[[int, int], None] | None = None) -> None:
        """Compute indicators and signals (a single run) or set up the sweep's table and
        compute the averages a crossover sweep crosses (:meth:`_sweep_lines`).

        ``indicators``: a memo of indicators over these same bars shared between runs (a worker
        keeps one per cached data set, so a run reuses the averages an earlier run computed);
        a fresh one when not given. Results never depend on it.
        ``progress``: called as ``progress(done, total)`` first with ``done == 0`` and then as
        the indicators are computed (per distinct look-back of a sweep; a single run counts
        its indicators and signals as one); a worker tells it as its "computing indicators"
        step. A sweep whose indicators are computed chunk by chunk tells ``(0, 0)``.
        """
        if indicators is not None and indicators.bars is not self.bars:
            raise ConfigError("prepare(indicators=...) was given indicators over other bars; "
                              "pass the Indicators built on this simulation's bars, or none",
                              field="indicators")
        self.ind = indicators if indicators is not None else Indicators(self.bars)
        if self.is_sweep:
            self.rows = np.full((len(self.combos), len(M.METRICS)), np.nan)
            # combinations whose signals raised: index -> the error (skipped, not in the table)
            self.failed: dict[int, str] = {}
            self._sweep_lines(progress)
        else:
            if progress is not None:
                progress(0, 1)
            own = self._own(self.params)
            if self.strategy.prefetch is not None:
                self.strategy.prefetch(self.ind, own)
            # a one-symbol crossover crosses its two lines inside the kernel: no signal array
            self.lines = self._single_lines()
            # @ql.indicator results are memoised for this run's signals only (a sweep's best
            # combination, re-run by result(), still reads the sweep's memo)
            I.open_scope(self._memo_owner)
            try:
                self.sig = (None if self.lines else
                            self.strategy.signals(self.bars, own, self.ind))
            finally:
                I.close_scope(self._memo_owner)
            self.acct, self.pos, self.acc = K.new_state(self.bars.n_symbols, self.cfg[K.C_CASH])
            self.equity = np.empty(self.bars.n_bars)
            # room for a typical run's trades; the log grows if a run needs more
            self.log = np.empty((3 * self.bars.n_symbols + 8 + max(1024, self.bars.n_bars // 32),
                                 K.L_N))
            self.weights = self._weights(self.params)
            if progress is not None:
                progress(1, 1)
        self._prepared = True

    def _sweep_lines(self, progress: Callable[[int, int], None] | None) -> None:
        """Compute into the memo, before the first chunk, every average a crossover sweep
        crosses, a pair of look-backs at a time (``progress`` after each), when they all fit in
        the memo's budget for lines (the one the sweep's chunks group their combinations by):
        the chunks then find them computed. Otherwise (too many to hold at once, or a strategy
        that is not a crossover) the chunks compute what they need as they go."""
        kind = self.strategy.crossover_of
        per_params = self.weights_given is None and self.strategy.weights_follow_params
        windows: list[int] = []
        if kind is not None and not per_params and len(self.combos):
            windows = sorted({int(w) for name in ("fast", "slow")
                              for w in V.column(self.combos, name)})
            line_bytes = self.bars.n_symbols * self.bars.n_bars * 8
            if len(windows) > max(2, (self.ind.max_bytes // 2) // max(1, line_bytes)):
                windows = []  # as _line_groups splits them: computed group by group
        if progress is not None:
            progress(0, len(windows))
        for k in range(0, len(windows), 2):  # simple averages are computed two in one pass
            self.ind.many(kind, windows[k:k + 2])  # type: ignore[arg-type]
            if progress is not None:
                progress(min(k + 2, len(windows)), len(windows))

    def run(self, max_units: int) -> int:
        """Advance by up to ``max_units`` bars (or combinations); returns how many were done."""
        if not self._prepared:
            raise RunError("call prepare() before run()")
        if max_units < 1:
            raise ConfigError(f"max_units must be at least 1, got {max_units}",
                              field="max_units")
        stop = min(self.total_units, self.done_units + int(max_units))
        start = self.done_units
        if self.is_sweep:
            # a sweep's @ql.indicator memo lives from its first chunk to its result
            I.open_scope(self._memo_owner)
            try:
                self._run_sweep(start, stop)
                self.done_units = stop
                self._raise_if_all_failed()
            except BaseException:
                I.close_scope(self._memo_owner)
                raise
        else:
            self._run_bars(start, stop)
        self.done_units = stop
        return stop - start

    def _raise_if_all_failed(self) -> None:
        """A finished sweep whose every combination raised has nothing to show: say why
        (unless ``all_failed_raises`` is off: a shard of a split sweep, judged whole)."""
        if not (self.all_failed_raises and self.finished and self.failed
                and len(self.failed) == len(self.combos)):
            return
        raise all_failed_error(self.strategy.name, self.combos, self.failed) \
            from getattr(self, "_first_failure", None)

    def _run_bars(self, start: int, stop: int) -> None:
        o, h, lo, c = self._arrays
        one = self.fast_path and K.one_symbol_kernel(self.cfg, self.bars.n_symbols)
        fast, slow = self.lines or (None, None)
        sig = None if self.sig is None else self.sig[0]
        # the bars' high and low only for a run with stops (one without compiles no stop code)
        high, low = (h[0], lo[0]) if K.has_stops(self.cfg) else (None, None)
        i = start
        while i < stop:
            if one:
                i = K.simulate1(o[0], high, low, c[0], sig, fast, slow, i, stop, self.cfg,
                                self.weights[0], self.acct, self.pos, self.acc, True,
                                self.equity, self.log)
            else:
                i = K.simulate(o, h, lo, c, self.sig, i, stop, self.cfg, self.weights,
                               self.acct, self.pos, self.acc, True, self.equity, self.log)
            if i < stop:  # the trade log is full: grow it and carry on
                bigger = np.empty((2 * len(self.log), K.L_N))
                bigger[: len(self.log)] = self.log
                self.log = bigger

    def _fused_crossover(self) -> bool:
        """Whether a crossover can cross its lines inside ``simulate1``: one symbol with a bar
        at every timestamp (stops or not). (``simulate1`` reads a cross from bars ``t-1`` and ``t``
        alone, which needs lines NaN only in their warm-up: an average of a close without
        gaps is; see quantlab.indicators.)"""
        if not (self.fast_path and K.one_symbol_kernel(self.cfg, self.bars.n_symbols)):
            return False
        return not bool(np.isnan(self._arrays[3]).any())

    def _single_lines(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The fast and slow line of a single crossover run that ``simulate1`` crosses by
        itself (see :meth:`_fused_crossover`), else None."""
        kind = self.strategy.crossover_of
        if kind is None or not self._fused_crossover():
            return None
        fast, slow = self.ind.many(kind, [int(self.params["fast"]), int(self.params["slow"])])
        return fast[0], slow[0]

    def _signals_batch(self, combos: Sequence[dict[str, Any]], first: int) -> np.ndarray:
        """The signals of ``combos`` (combinations ``first``, ``first + 1``, ...). One that
        raises is recorded in ``self.failed`` and trades nothing here (its row is dropped from
        the table): a bad corner of the grid must not cost the rest of the sweep."""
        bars, ind, strategy = self.bars, self.ind, self.strategy
        out = np.empty((len(combos), bars.n_symbols, bars.n_bars), np.int8)
        # a sweep that carries no option: a combination is the strategy's params as it is
        own = self._own if self.swept else _as_is
        shapes = (out.shape[1:], out.shape[2:] if bars.n_symbols == 1 else None)
        copied: list[int] = []  # rows copied as they are (int8): their values checked below
        for j, combo in enumerate(combos):
            try:
                raw = strategy.raw_signals(bars, own(combo), ind)
                if type(raw) is np.ndarray and raw.dtype.char in "b?" and raw.shape in shapes:
                    # the usual answer: a plain copy (bool is 0/1; int8 checked for the batch
                    # at once below, where a per-combination check costs ~1 us a call)
                    out[j] = raw
                    if raw.dtype.char == "b":
                        copied.append(j)
                else:
                    V.store_signals(raw, bars, strategy.name, out[j])
            except StrategyError as exc:
                self._record_failure(first + j, exc)
                out[j] = 0
        if copied:
            self._check_copied(out, copied, first)
        return out

    def _check_copied(self, out: np.ndarray, copied: list[int], first: int) -> None:
        """The int8 rows ``copied`` as they were returned: each value must be -1, 0 or +1. One
        pass over the batch; a row that fails is judged by ``check_signals`` (its message)."""
        if int(out.min()) >= -1 and int(out.max()) <= 1:
            return
        flat = out.reshape(len(out), -1)
        for j in copied:
            if int(flat[j].min()) >= -1 and int(flat[j].max()) <= 1:
                continue
            try:
                check_signals(out[j], self.bars, self.strategy.name)
            except StrategyError as exc:
                self._record_failure(first + j, exc)
                out[j] = 0

    def _record_failure(self, index: int, exc: StrategyError) -> None:
        """Combination ``index`` raised: skipped; the lowest such index's error is the cause
        shown if every combination fails (a batch's bad values are found after its calls)."""
        if not self.failed or index < getattr(self, "_first_failure_at", -1):
            self._first_failure, self._first_failure_at = exc, index
        self.failed[index] = str(exc)

    def _run_sweep(self, start: int, stop: int) -> None:
        with self._threads():
            self._run_sweep_steps(start, stop)

    def _run_sweep_steps(self, start: int, stop: int) -> None:
        o, h, lo, c = self._arrays
        per_combo = self.bars.n_symbols * self.bars.n_bars
        batch = max(1, _BATCH_BYTES // per_combo)
        bh = self._buy_hold()
        kind = self.strategy.crossover_of
        per_params = self.weights_given is None and self.strategy.weights_follow_params
        cfgs, cfg_rows = self.cfgs, self.cfg_rows
        high, low, one, many = K.sweep_kind(h, lo, cfgs)  # only the code it runs compiled
        if kind is not None and not per_params:
            weights = self._weights(self.combos[start])
            fused = self._fused_crossover()
            for g0, g1 in _line_groups(self.combos, start, stop, per_combo * 8,
                                       self.ind.max_bytes // 2):
                lines, fast, slow = _crossover_grid(self.ind, kind, self.combos[g0:g1])
                rows = cfg_rows[g0:g1]
                if fused:
                    # the bars' high and low only when a combination here has a stop
                    stops = K.has_stops(cfgs[np.unique(rows)])
                    K.sweep_cross1(o[0], h[0] if stops else None, lo[0] if stops else None, c[0],
                                   np.ascontiguousarray(lines[:, 0, :]), fast, slow, cfgs, rows,
                                   weights[0], self.ppy, self.rows[g0:g1])
                else:
                    K.sweep_crossover(o, high, low, c, lines, fast, slow, cfgs, rows, weights,
                                      self.ppy, self.rows[g0:g1], one, many)
            self.rows[start:stop, M.METRIC_INDEX["buy_hold_return_pct"]] = bh
            return
        for b0 in range(start, stop, batch):
            b1 = min(stop, b0 + batch)
            combos = self.combos[b0:b1]
            sigs = self._signals_batch(combos, b0)
            if per_params:
                # weights depend on the params: run combination by combination
                for j, combo in enumerate(combos):
                    K.sweep_batch(o, high, low, c, sigs[j:j + 1], cfgs,
                                  cfg_rows[b0 + j:b0 + j + 1],
                                  self._weights(combo), self.ppy, self.rows[b0 + j:b0 + j + 1],
                                  one, many)
            else:
                K.sweep_batch(o, high, low, c, sigs, cfgs, cfg_rows[b0:b1],
                              self._weights(combos[0]), self.ppy, self.rows[b0:b1], one, many)
            self.rows[b0:b1, M.METRIC_INDEX["buy_hold_return_pct"]] = bh

    # -- checkpoints ------------------------------------------------------------------------
    def _fingerprint(self) -> np.ndarray:
        # the shape of the run and what decides its results (options, strategy code, engine
        # rules): a checkpoint must not resume under other rules
        rules = hashlib.sha256(self.cfgs.tobytes() + self.cfg_rows.tobytes()
                               + self.strategy.source_hash.encode()
                               + ENGINE_VERSION.encode()).digest()
        return np.array([self.bars.n_bars, self.bars.n_symbols, len(self.combos),
                         int(self.is_sweep), int.from_bytes(rules[:7], "big")], dtype=np.int64)

    def state_bytes(self) -> bytes:
        """A checkpoint of everything done so far (load it with :meth:`load_state`)."""
        if not self._prepared:
            raise RunError("call prepare() before state_bytes()")
        done = self.done_units
        arrays: dict[str, np.ndarray] = {"fingerprint": self._fingerprint(),
                                         "done": np.array([done])}
        if self.is_sweep:
            arrays["rows"] = self.rows[:done]
            # the failed combinations and their errors (a resumed sweep still skips them)
            arrays["failed"] = np.array(sorted(self.failed), dtype=np.int64)
            arrays["failed_errors"] = np.array([self.failed[k] for k in sorted(self.failed)],
                                               dtype=str)
        else:
            rows = int(self.acct[K.A_LOG_ROWS])
            arrays.update(acct=self.acct, pos=self.pos, acc=self.acc,
                          equity=self.equity[:done], log=self.log[:rows])
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # type: ignore[arg-type]
        return buf.getvalue()

    def load_state(self, data: bytes) -> None:
        """Resume from :meth:`state_bytes` output (after :meth:`prepare`)."""
        if not self._prepared:
            raise RunError("call prepare() before load_state()")
        try:
            z = np.load(io.BytesIO(data), allow_pickle=False)
            fingerprint = z["fingerprint"]
        except Exception as exc:
            raise RunError(f"the checkpoint is not a QuantLab engine state ({exc})") from exc
        if not np.array_equal(fingerprint, self._fingerprint()):
            raise RunError(
                "the checkpoint belongs to a different run (bars, symbols or combinations "
                "differ); start the run from the beginning")
        done = int(z["done"][0])
        if self.is_sweep:
            self.rows[:done] = z["rows"]
            if "failed" in z.files:
                self.failed = dict(zip((int(k) for k in z["failed"]),
                                       (str(e) for e in z["failed_errors"]), strict=True))
        else:
            self.acct[:] = z["acct"]
            self.pos[:] = z["pos"]
            self.acc[:] = z["acc"]
            self.equity[:done] = z["equity"]
            log = z["log"]
            if len(log) + 3 * self.bars.n_symbols > len(self.log):
                self.log = np.empty((2 * len(log) + 3 * self.bars.n_symbols + 8, K.L_N))
            self.log[: len(log)] = log
        self.done_units = done

    # -- results ----------------------------------------------------------------------------
    def _metrics_row(self) -> np.ndarray:
        row = np.empty(len(M.METRICS))
        open_count = float(np.count_nonzero(self.pos[:, K.P_UNITS]))
        M.finalize.py_func(self.acc, self.acct, self.cfg[K.C_CASH], open_count, self.ppy, row)
        row[M.METRIC_INDEX["buy_hold_return_pct"]] = self._buy_hold()
        return row

    def result(self, partial: bool = False) -> Result:
        """The Result; ``partial=True`` accepts an unfinished sweep (finished rows only)."""
        if not self._prepared:
            raise RunError("call prepare() and run() before result()")
        if not self.finished and not (partial and self.is_sweep):
            raise RunError(
                f"the simulation is not finished ({self.done_units}/{self.total_units} "
                f"{'combinations' if self.is_sweep else 'bars'}); call run() until finished, "
                f"or result(partial=True) for a cancelled sweep")
        if self.is_sweep:
            try:
                return self._sweep_result(partial=not self.finished)
            finally:
                I.close_scope(self._memo_owner)
        rows = int(self.acct[K.A_LOG_ROWS])
        res = Result(
            metrics=M.as_dict(self._metrics_row()), params=self.params, config=self.config,
            index=self.bars.index, symbols=self.bars.symbols, equity=self.equity,
            log=self.log[:rows].copy(), positions=self.pos.copy(),
        )
        res._total_return_at = self._total_return_at()
        return res

    def _total_return_at(self) -> Callable[[float], float]:
        """This single run re-simulated at another proportional commission (its total return,
        percent), on the same bars and indicators: ``Result.break_even_cost``."""
        options = {name: getattr(self.options, name) for name in OPTION_NAMES}
        options["weights"] = self.weights_given
        return total_return_at(self.bars, self.strategy, self.params, options, self.ind)

    def _sweep_result(self, partial: bool) -> Result:
        done = self.done_units
        names = list(self.strategy.params)
        chosen = self.combos[:done]
        # one constructor call for every column (inserting them one by one costs ~0.3 ms each)
        columns: dict[str, Any] = {name: V.column(chosen, name) for name in names}
        if isinstance(chosen, V.Combinations):
            # plain numbers (ints -> int64, floats or a mix -> float64, as pandas would infer):
            # one array each instead of pandas inspecting thousands of Python objects
            columns = {name: np.asarray(values) for name, values in columns.items()}
        # a column per swept option (a stop of None, "no stop", is NaN)
        for name in self.swept:
            columns[name] = np.array([np.nan if v is None else v for v in
                                      _option_column(chosen, name, getattr(self.options, name))],
                                     dtype=float)
        rows = self.rows[:done]
        # the table's rows: every combination done but those that failed (skipped, counted)
        kept = np.ones(done, bool)
        kept[[k for k in self.failed if k < done]] = False
        if not kept.all():
            rows = rows[kept]
            columns = {name: np.asarray(values)[kept] if isinstance(values, np.ndarray)
                       else [v for v, keep in zip(values, kept, strict=True) if keep]
                       for name, values in columns.items()}
        for k, name in enumerate(M.METRICS):
            column = rows[:, k]
            columns[name] = column.astype(np.int64) if name in _INT_METRICS else column.copy()
        table = pd.DataFrame(columns, columns=[*names, *self.swept, *M.METRICS])
        config = {**self.config, "n_combinations": len(self.combos), "skipped": self.skipped,
                  **self._failures()}
        if not kept.any():
            return Result(metrics={}, params={}, config=config, index=self.bars.index[:0],
                          symbols=self.bars.symbols, table=table, partial=partial)
        best = int(np.flatnonzero(kept)[_best(rows[:, M.METRIC_INDEX[self.select]],
                                              self.select)])
        params = self.combos[best]
        single = Simulation.__new__(Simulation)
        single.__dict__.update(self.__dict__)
        single.is_sweep = False
        single.params = params
        # the combination's own options (a sweep over options: its config row)
        single.cfg = self.cfgs[self.cfg_rows[best]].copy()
        single.total_units = self.bars.n_bars
        single.done_units = 0
        single.prepare()
        single.run(single.total_units)
        res = single.result()
        best_res = Result(
            metrics=res.metrics, params=params, config=config, index=self.bars.index,
            symbols=self.bars.symbols, equity=single.equity,
            log=single.log[: int(single.acct[K.A_LOG_ROWS])].copy(),
            positions=single.pos.copy(), table=table, partial=partial,
        )
        best_res._total_return_at = res._total_return_at
        best_res._source = self  # res.overfitting() re-simulates the combinations with it
        return best_res

    def _failures(self) -> dict[str, Any]:
        """The config's account of combinations that raised (see :func:`failure_summary`)."""
        return failure_summary(self.combos, self.failed, len(self.failed))


def failure_summary(combos: Sequence[Mapping[str, Any]], failed: Mapping[int, str],
                    count: int) -> dict[str, Any]:
    """A sweep config's account of the combinations that raised: ``failed``, how many
    (``count``), and ``failures``, the first ``FAILURES_SHOWN`` by position with their error
    (``failed`` maps a position in ``combos`` to its error and holds at least those first
    ones); empty when none did. A split sweep's merge builds it from its shards' parts."""
    if not count:
        return {}
    shown = sorted(failed)[:FAILURES_SHOWN]
    return {"failed": count,
            "failures": [{"params": _jsonable_combo(combos[k]), "error": failed[k]}
                         for k in shown]}


def all_failed_error(strategy: str, combos: Sequence[Mapping[str, Any]],
                     failed: Mapping[int, str]) -> StrategyError:
    """The error of a finished sweep whose every combination raised: the first one's."""
    first = min(failed)
    return StrategyError(
        f"every one of the {len(combos)} combinations of strategy '{strategy}' failed, so "
        f"the sweep has no result; the first ({_jsonable_combo(combos[first])}): "
        f"{failed[first]}", strategy=strategy)


def total_return_at(bars: Bars, strategy: str | Strategy, params: Mapping[str, Any],
                    options: Mapping[str, Any], indicators: Indicators | None = None
                    ) -> Callable[[float], float]:
    """A function of a proportional commission: the total return (percent) of the single run
    of ``strategy`` with ``params`` and ``options`` on ``bars`` at that commission. A
    commission the params carry (a swept one) gives way to the argument."""
    fixed = {k: v for k, v in params.items() if k != "commission"}
    seen: dict[float, float] = {}

    def total_return(commission: float) -> float:
        if commission not in seen:
            sim = Simulation(bars, strategy, fixed, **{**options, "commission": commission})
            sim.prepare(indicators)
            sim.run(sim.total_units)
            seen[commission] = float(sim._metrics_row()[M.METRIC_INDEX["total_return_pct"]])
        return seen[commission]

    return total_return


def _carried_names(combos: Sequence[Mapping[str, Any]]) -> list[str]:
    """The swept options that a sweep's combinations carry, in the options' order."""
    if isinstance(combos, V.Combinations):
        present = set(combos.names)
    else:
        present = {name for combo in combos for name in combo}
    return [name for name in SWEEPABLE if name in present]


def _option_column(combos: Sequence[Mapping[str, Any]], name: str, default: Any) -> list[Any]:
    """Swept option ``name`` of every combination (``default``, the keyword's value, for a
    combination of a list that does not carry it)."""
    if isinstance(combos, V.Combinations):
        return combos.column(name)
    return [combo.get(name, default) for combo in combos]


# where each swept option goes in a config row, and how its value is stored there
_CFG_SLOT: dict[str, tuple[int, float]] = {
    "commission": (K.C_COMM, 1.0), "commission_fixed": (K.C_FIXED, 1.0),
    "slippage": (K.C_SLIP, 10_000.0), "size": (K.C_SIZE, 1.0), "stop_loss": (K.C_SL, 1.0),
    "take_profit": (K.C_TP, 1.0),
}


def _option_configs(cfg: np.ndarray, combos: Sequence[Mapping[str, Any]], swept: list[str],
                    opts: EngineOptions) -> tuple[np.ndarray, np.ndarray]:
    """The config rows of a sweep over options: one per distinct combination of the swept
    values (``cfg`` with those values in their slots, stored by the same float operations as
    a single run's, so that a row equals the single run exactly), and each combination's row.
    Nothing swept: ``cfg`` alone, row 0 for every combination."""
    if not swept:
        return cfg[None, :].copy(), np.zeros(len(combos), np.int64)
    values = np.column_stack([
        np.array([0.0 if v is None else float(v)
                  for v in _option_column(combos, name, getattr(opts, name))], dtype=float)
        for name in swept])
    distinct, rows = np.unique(values, axis=0, return_inverse=True)
    cfgs = np.repeat(cfg[None, :], len(distinct), axis=0)
    for a, name in enumerate(swept):
        slot, scale = _CFG_SLOT[name]
        # slippage is given in basis points: the same division as the single run's
        cfgs[:, slot] = distinct[:, a] / scale if scale != 1.0 else distinct[:, a]
    return cfgs, np.ascontiguousarray(rows.reshape(-1), dtype=np.int64)


# the failed combinations listed (with their error) in a sweep's config; all are counted
FAILURES_SHOWN = 10


def _as_is(combo: Mapping[str, Any]) -> Mapping[str, Any]:
    return combo


def _jsonable_combo(combo: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v.item() if isinstance(v, np.generic) else v for k, v in combo.items()}


def _line_groups(combos: Sequence[dict[str, Any]], start: int, stop: int, line_bytes: int,
                 budget: int) -> list[tuple[int, int]]:
    """Split combinations ``start:stop`` into consecutive groups whose distinct windows fit in
    ``budget`` bytes of lines: memory stays bounded however long the data (short data: one
    group)."""
    max_lines = max(2, budget // max(1, line_bytes))
    chosen = combos[start:stop]
    if len(set(V.column(chosen, "fast")) | set(V.column(chosen, "slow"))) <= max_lines:
        return [(start, stop)]  # the usual case: every line fits at once
    groups = []
    g0 = start
    windows: set[int] = set()
    for j in range(start, stop):
        new = {int(combos[j]["fast"]), int(combos[j]["slow"])} - windows
        if len(windows) + len(new) > max_lines and j > g0:
            groups.append((g0, j))
            g0, windows = j, set()
            new = {int(combos[j]["fast"]), int(combos[j]["slow"])}
        windows |= new
    groups.append((g0, stop))
    return groups


def _crossover_grid(ind: Indicators, kind: str, combos: Sequence[Mapping[str, Any]]
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For a crossover sweep: the averages (``kind``) of every window the combinations use,
    computed once each, stacked; and for each combination the rows of its fast and slow one."""
    # built-in grids come as columns (no dict per combination)
    fasts = np.asarray(V.column(combos, "fast"), np.int64)
    slows = np.asarray(V.column(combos, "slow"), np.int64)
    windows, rows = np.unique(np.concatenate([fasts, slows]), return_inverse=True)
    lines = np.stack(ind.many(kind, [int(w) for w in windows]))
    fast = np.ascontiguousarray(rows[: len(fasts)], dtype=np.int64)
    slow = np.ascontiguousarray(rows[len(fasts):], dtype=np.int64)
    return lines, fast, slow


def _iso(index: pd.DatetimeIndex, i: int) -> str:
    # numpy's ISO 8601 string is much cheaper than building a Timestamp
    if index.tz is not None:
        return index[i].isoformat()
    return str(np.datetime_as_string(index.values[i], unit="s"))


_INT_METRICS = ("n_trades", "open_trades", "rejected_orders", "max_drawdown_duration")


def _best(values: np.ndarray, metric: str) -> int:
    """Index of the best finite value (first one on ties); the first row if none is finite."""
    finite = np.where(np.isnan(values), -np.inf if metric not in M.LOWER_IS_BETTER else np.inf,
                      values)
    if metric in M.LOWER_IS_BETTER:
        return int(np.argmin(finite))
    return int(np.argmax(finite))


def _jsonable_params(params: Any) -> Any:
    if isinstance(params, Mapping):
        return {k: list(v) if isinstance(v, range | tuple | np.ndarray) else v
                for k, v in params.items()}
    return [dict(p) for p in params]


# a stored Result re-simulates through this module (Result.break_even_cost)
RESIMULATION.total_return_at = total_return_at

__all__ = ["FAILURES_SHOWN", "Simulation", "all_failed_error", "failure_summary",
           "total_return_at"]
