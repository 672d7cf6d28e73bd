"""Memoised indicators (``ql.indicator``, ``ql.ind``) and sweeps that survive a failing
combination.

The built-in indicators are checked against pandas reference implementations written here from
their definitions (not by calling QuantLab).
"""

from __future__ import annotations

import linecache
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
import pytest

import quantlab as ql
from quantlab import indicators as I
from quantlab.bars import as_bars
from quantlab.engine import Simulation
from quantlab.errors import ConfigError, StrategyError
from quantlab.strategies.usercode import load_shipped_strategy, shippable_source
from tests.support.engine import random_walk

DATA = random_walk(400, seed=11)
BARS = as_bars(DATA)
CALLS: Counter[Any] = Counter()


def _zscore_pandas(x: np.ndarray, n: int) -> np.ndarray:
    s = pd.Series(x)
    return ((s - s.rolling(n).mean()) / s.rolling(n).std()).to_numpy()


@ql.indicator
def counted_zscore(x: np.ndarray, n: int) -> np.ndarray:
    CALLS[("zscore", n)] += 1
    return _zscore_pandas(x, n)


def plain_zscore(x: np.ndarray, n: int) -> np.ndarray:
    return _zscore_pandas(x, n)


@ql.strategy(name="memo_zrev")
def memo_zrev(bars: Any, lookback: int = 20, entry: float = 1.5) -> Any:
    z = counted_zscore(bars.close[0], lookback)
    return np.where(z < -entry, 1, np.where(z > entry, -1, 0))


@ql.strategy(name="plain_zrev")
def plain_zrev(bars: Any, lookback: int = 20, entry: float = 1.5) -> Any:
    z = plain_zscore(bars.close[0], lookback)
    return np.where(z < -entry, 1, np.where(z > entry, -1, 0))


@pytest.fixture(autouse=True)
def _fresh_counts() -> None:
    CALLS.clear()


# -- the memo --------------------------------------------------------------------------------


def test_a_fresh_view_of_the_same_bars_hits() -> None:
    with I.memo_scope() as memo:
        first = counted_zscore(BARS.close[0], 20)
        again = counted_zscore(BARS.close[0], 20)  # another view object, same data
        by_keyword = counted_zscore(BARS.close[0], n=20)
    assert CALLS[("zscore", 20)] == 2  # positional and keyword are different calls
    assert again is first and by_keyword is not first
    np.testing.assert_array_equal(by_keyword, first)
    assert memo.hits == 1 and memo.computed == 2


def test_other_data_or_arguments_miss() -> None:
    close = BARS.close[0]
    with I.memo_scope():
        counted_zscore(close, 20)
        counted_zscore(close, 21)  # other argument
        counted_zscore(close.copy(), 20)  # equal values, other buffer
        counted_zscore(close[1:], 20)  # same buffer, other offset
        counted_zscore(close, np.int64(20))  # np.int64(20) is 20: a hit
    assert CALLS[("zscore", 20)] == 3 and CALLS[("zscore", 21)] == 1

    @ql.indicator
    def scaled(x: np.ndarray, k: Any) -> np.ndarray:
        CALLS[("scaled", type(k))] += 1
        return x * k

    with I.memo_scope():
        for k in (2, 2.0, True, 2, np.float64(2.0)):
            scaled(close, k)
    # an int, a float and a bool are different arguments even where they compare equal
    assert CALLS[("scaled", int)] == CALLS[("scaled", float)] == CALLS[("scaled", bool)] == 1


def test_data_changed_in_place_is_recomputed() -> None:
    close = BARS.close[0].copy()
    with I.memo_scope():
        before = counted_zscore(close, 10)
        close[-1] *= 2  # the last value is always among those sampled
        after = counted_zscore(close, 10)
    assert CALLS[("zscore", 10)] == 2
    assert after[-1] != before[-1]


def test_any_value_changed_in_place_or_moved_is_recomputed() -> None:
    # the usual arrays (8-byte numbers, contiguous) are guarded by a checksum of every value,
    # not a sample: a change anywhere misses, and so do two values that trade places
    close = BARS.close[0].copy()
    rows = np.ascontiguousarray(BARS.close.repeat(2, axis=0))  # (2, n): a 2-d input too

    @ql.indicator
    def total(x: np.ndarray) -> float:
        CALLS["total"] += 1
        return float(np.nansum(x * np.arange(x.shape[-1])))

    with I.memo_scope() as memo:
        before = counted_zscore(close, 10)
        close[123] += 1.0  # a value the old 16-value sample never read
        changed = counted_zscore(close, 10)
        close[200], close[201] = close[201], close[200]
        swapped = counted_zscore(close, 10)
        counted_zscore(close, 10)  # unchanged since: a hit
        assert total(rows) == total(rows)
        rows[1, 7] = 0.0
        total(rows)
        assert memo.hits == 2
    assert CALLS[("zscore", 10)] == 3 and CALLS["total"] == 2
    assert changed[123] != before[123] and swapped[200] != changed[200]


def test_views_the_checksum_does_not_read_are_keyed_and_guarded_too() -> None:
    # a strided view, a float32 copy and a bool mask: keyed by address, guarded by a sample
    @ql.indicator
    def mean(x: np.ndarray) -> float:
        CALLS[("mean", x.dtype.name, x.strides)] += 1
        return float(np.mean(x))

    with I.memo_scope() as memo:
        for _ in range(2):
            mean(BARS.close[0][::2])  # a fresh strided view each time: a hit
            mean(BARS.close[:, 1:])  # not C-contiguous
        small = BARS.close[0].astype(np.float32)
        assert mean(small) == mean(small)
        mask = BARS.close[0] > np.nanmedian(BARS.close[0])
        assert mean(mask) == mean(mask)
        mask[-1] = not mask[-1]  # the last value is sampled
        mean(mask)
        assert memo.hits == 4
    assert sum(CALLS.values()) == 5


def test_positional_calls_take_the_short_path_with_the_general_path_s_keys() -> None:
    # counted_zscore(x, n) is looked up by call_positional, which must key and guard exactly as
    # call() does: an entry stored by one is found by the other; what it cannot key (a
    # strided view, a float32 array, a list, a Series) goes the general way
    close = BARS.close[0]
    general = counted_zscore.__wrapped__  # type: ignore[attr-defined]
    with I.memo_scope() as memo:
        stored = memo.call(general, (close, 20), {})
        assert counted_zscore(BARS.close[0], 20) is stored
        assert memo.call(general, (BARS.close[0], 20), {}) is stored
        assert memo.hits == 2 and CALLS[("zscore", 20)] == 1
        for other in (close[::2], close.astype(np.float32), list(close), pd.Series(close)):
            counted_zscore(other, 20)
            counted_zscore(other, 20)  # a hit, but for the Series (not keyed)
        assert memo.hits == 5 and memo.bypassed == 2
        changed = close.copy()
        first = counted_zscore(changed, 20)
        changed[5] += 1.0  # in place: the short path's guard misses too
        assert counted_zscore(changed, 20) is not first
    assert CALLS[("zscore", 20)] == 1 + 3 + 2 + 2


def test_results_are_read_only_and_arguments_it_cannot_key_bypass_the_memo() -> None:
    with I.memo_scope() as memo:
        z = counted_zscore(BARS.close[0], 20)
        with pytest.raises(ValueError, match="read-only"):
            z[0] = 1.0
        counted_zscore(BARS.close[0], 20)
        assert memo.hits == 1

        @ql.indicator
        def takes_a_frame(df: pd.DataFrame, n: int) -> float:
            CALLS["frame"] += 1
            return float(df["x"].iloc[-n:].mean())

        df = pd.DataFrame({"x": np.arange(10.0)})
        assert takes_a_frame(df, 3) == takes_a_frame(df, 3) == 8.0
        assert CALLS["frame"] == 2 and memo.bypassed == 2

        @ql.indicator
        def tail(x: np.ndarray, n: int) -> np.ndarray:
            return x[-n:]  # a view of the input: returned as a read-only copy

        mine = np.arange(10.0)
        assert tail(mine, 3).tolist() == [7.0, 8.0, 9.0]
        mine[-1] = 90.0  # the caller's own array stays writeable
        assert tail(mine, 3).tolist() == [7.0, 8.0, 90.0]


def test_outside_a_run_the_function_is_just_called() -> None:
    counted_zscore(BARS.close[0], 20)
    counted_zscore(BARS.close[0], 20)
    assert CALLS[("zscore", 20)] == 2
    assert len(I.current_memo()) == 0


def test_memory_is_bounded_least_recently_used_out(monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.random.default_rng(0).normal(size=1000)  # 8,000 bytes in, 8,000 bytes out
    monkeypatch.setenv("QUANTLAB_INDICATOR_MEMO_MB", str(40_000 / (1 << 20)))
    with I.memo_scope() as memo:
        for n in range(2, 12):
            counted_zscore(x, n)
            assert memo.nbytes <= 40_000
        # room for the input (held while named) and 4 results: the 4 most recent
        assert len(memo) == 4
        counted_zscore(x, 11)  # recent: a hit
        counted_zscore(x, 2)  # evicted: computed again
    assert CALLS[("zscore", 11)] == 1 and CALLS[("zscore", 2)] == 2
    assert memo.nbytes == 0 and len(memo) == 0


def test_an_entry_holds_its_input_so_the_address_cannot_be_reused() -> None:
    with I.memo_scope() as memo:
        counted_zscore(np.arange(50.0), 5)  # a temporary: its buffer stays alive in the memo
        counted_zscore(np.arange(50.0) * 2, 5)  # may not land at the same address
        assert CALLS[("zscore", 5)] == 2
        assert memo.nbytes == 2 * (50 * 8) + 2 * (50 * 8)


def test_the_scope_is_emptied_between_runs() -> None:
    ql.backtest(DATA, "memo_zrev", {"lookback": 20, "entry": 1.0})
    assert len(I.current_memo()) == 0 and I.current_memo().nbytes == 0
    ql.backtest(DATA, "memo_zrev", {"lookback": 20, "entry": 1.0})
    assert CALLS[("zscore", 20)] == 2  # once per run: nothing carried from the first
    assert I.current_memo().owner is None


def test_a_sweep_computes_each_zscore_once_per_lookback_with_identical_results() -> None:
    params = {"lookback": [10, 20, 30], "entry": [0.5, 1.0, 1.5, 2.0]}
    memo = ql.backtest(DATA, "memo_zrev", params)
    # the best combination's single re-run reads the sweep's memo too
    assert dict(CALLS) == {("zscore", 10): 1, ("zscore", 20): 1, ("zscore", 30): 1}
    plain = ql.backtest(DATA, "plain_zrev", params)
    pd.testing.assert_frame_equal(memo.table, plain.table)
    assert memo.params == plain.params
    pd.testing.assert_series_equal(memo.equity, plain.equity)
    assert len(I.current_memo()) == 0


def test_a_chunked_sweep_keeps_its_memo_across_chunks_and_resumes_from_a_checkpoint() -> None:
    params = {"lookback": [10, 20], "entry": [0.5, 1.0, 1.5]}
    sim = Simulation(DATA, "memo_zrev", params)
    sim.prepare()
    while not sim.finished:
        sim.run(1)
    assert dict(CALLS) == {("zscore", 10): 1, ("zscore", 20): 1}
    whole = sim.result()
    assert len(I.current_memo()) == 0
    pd.testing.assert_frame_equal(whole.table, ql.backtest(DATA, "plain_zrev", params).table)


# -- the sweep path: signals checked as they are stored, idle signals skipped ------------------


@ql.strategy(name="memo_answers")
def memo_answers(bars: Any, kind: str = "int8", k: int = 0) -> Any:
    """Signals held for runs of bars (a position's direction repeated), in several dtypes and
    shapes, or a wrong answer."""
    z = counted_zscore(bars.close[0], 10 + k)
    held = np.where(z < -0.5, 1, np.where(z > 0.5, -1, 0))
    answers = {"int8": held.astype(np.int8), "int64": held, "float": held.astype(float),
               "bool": held > 0, "rows": held[None, :].astype(np.int16),
               "list": held.tolist(), "half": held / 2, "nan": np.where(held > 0, np.nan, 0.0),
               "two": held * 2, "shape": held[1:], "int8_rows": held[None, :].astype(np.int8),
               "int8_two": (held * 2).astype(np.int8), "int8_min": np.full_like(held, -128,
                                                                            dtype=np.int8),
               "int8_shape": held[1:].astype(np.int8)}
    return answers[kind]


# (int8 and bool answers of the right shape are copied as they are and their values checked
# for the whole batch at once; the others take the one-pass check of each answer)
GOOD = ["int8", "int64", "float", "bool", "rows", "int8_rows"]
WRONG = ["half", "nan", "two", "shape", "list", "int8_two", "int8_min", "int8_shape"]


def test_a_sweep_checks_each_answer_as_a_single_run_does() -> None:
    # each combination's row equals its single run; a wrong answer fails its combination
    # with the single run's own message
    res = ql.backtest(DATA, "memo_answers", {"kind": GOOD + WRONG, "k": [0, 5]})
    assert res.config["failed"] == 2 * len(WRONG)
    for row in res.table.itertuples(index=False):
        single = ql.backtest(DATA, "memo_answers", {"kind": row.kind, "k": row.k})
        for metric in ("total_return_pct", "n_trades", "sharpe"):
            assert getattr(row, metric) == single.metrics[metric] or (
                np.isnan(getattr(row, metric)) and np.isnan(single.metrics[metric]))
    for failure in res.config["failures"]:
        with pytest.raises(StrategyError) as single_error:
            ql.backtest(DATA, "memo_answers", failure["params"])
        assert failure["error"] == str(single_error.value)


@pytest.mark.parametrize("options", [
    {}, {"allow_short": True}, {"fill": "close", "allow_short": True},
    {"stop_loss": 0.02, "take_profit": 0.03, "allow_short": True},
    {"cash": 300.0, "allow_short": True, "commission": 0.01}, {"units": "fractional"}],
    ids=lambda o: ",".join(o) or "defaults")
def test_signals_held_for_many_bars_give_what_the_general_kernel_gives(options: dict) -> None:
    # the one-symbol kernel skips a signal that repeats the held position's direction (or a
    # sell while flat without shorts) with the bars where nothing happens; run in chunks
    # that end anywhere, it must equal the general kernel, which takes every signal
    results = []
    for fast_path in (True, False):
        sim = Simulation(DATA, "memo_answers", {"kind": "int8", "k": 3}, **options)
        sim.fast_path = fast_path
        sim.prepare()
        while not sim.finished:
            sim.run(29 if fast_path else len(DATA))
        results.append(sim.result())
    fast, general = results
    assert general.metrics["n_trades"] > 5
    assert fast.metrics.keys() == general.metrics.keys()
    for key, value in fast.metrics.items():
        assert value == general.metrics[key] or (np.isnan(value)
                                                 and np.isnan(general.metrics[key])), key
    pd.testing.assert_series_equal(fast.equity, general.equity)
    pd.testing.assert_frame_equal(fast.trades, general.trades)


# -- failing combinations ----------------------------------------------------------------------


@ql.strategy(name="fussy_zrev")
def fussy_zrev(bars: Any, lookback: int = 20, entry: float = 1.5) -> Any:
    if lookback > len(bars.close[0]) // 10:
        raise ValueError(f"lookback {lookback} is too long for this data")
    z = counted_zscore(bars.close[0], lookback)
    return np.where(z < -entry, 1, np.where(z > entry, -1, 0))


def test_a_failing_combination_is_skipped_and_counted_with_its_error() -> None:
    params = {"lookback": [10, 60, 20], "entry": [1.0, 2.0]}
    res = ql.backtest(DATA, "fussy_zrev", params)
    assert res.table[["lookback", "entry"]].values.tolist() == [
        [10, 1.0], [10, 2.0], [20, 1.0], [20, 2.0]]
    assert res.config["skipped"] == 0  # refused by a validity rule: none
    assert res.config["failed"] == 2
    first = res.config["failures"][0]
    assert first["params"] == {"lookback": 60, "entry": 1.0}
    assert "raised ValueError: lookback 60 is too long for this data" in first["error"]
    good = ql.backtest(DATA, "memo_zrev", {"lookback": [10, 20], "entry": [1.0, 2.0]})
    pd.testing.assert_frame_equal(res.table, good.table)
    assert res.params == good.params


def test_failures_survive_a_checkpoint() -> None:
    params = {"lookback": [60, 10], "entry": [1.0, 2.0]}
    sim = Simulation(DATA, "fussy_zrev", params)
    sim.prepare()
    sim.run(2)
    blob = sim.state_bytes()
    resumed = Simulation(DATA, "fussy_zrev", params)
    resumed.prepare()
    resumed.load_state(blob)
    resumed.run(10)
    res = resumed.result()
    assert res.config["failed"] == 2 and len(res.table) == 2
    assert res.table["lookback"].tolist() == [10, 10]


def test_a_sweep_whose_every_combination_fails_says_why() -> None:
    with pytest.raises(StrategyError) as info:
        ql.backtest(DATA, "fussy_zrev", {"lookback": [60, 70], "entry": [1.0, 2.0]})
    message = str(info.value)
    assert message.startswith("every one of the 4 combinations of strategy 'fussy_zrev' "
                              "failed, so the sweep has no result; the first "
                              "({'lookback': 60, 'entry': 1.0}): ")
    assert "ValueError: lookback 60 is too long for this data" in message
    assert isinstance(info.value.__cause__, StrategyError)
    assert len(I.current_memo()) == 0


@ql.strategy(name="memo_bad_then_raising")
def memo_bad_then_raising(bars: Any, k: int = 0) -> Any:
    if k == 0:  # a wrong int8 answer: found by the check of the batch, after every call
        return np.full(bars.close.shape, 2, dtype=np.int8)
    raise ValueError(f"k {k} raises at once")


def test_the_first_failure_is_the_first_combination_even_when_found_after_the_batch() -> None:
    with pytest.raises(StrategyError) as info:
        ql.backtest(DATA, "memo_bad_then_raising", {"k": [0, 1, 2]})
    message = str(info.value)
    assert "the first ({'k': 0}): strategy 'memo_bad_then_raising' returned the signal value 2" \
        in message
    assert "returned the signal value 2" in str(info.value.__cause__)


def test_a_single_run_that_fails_still_raises() -> None:
    with pytest.raises(StrategyError, match="lookback 60 is too long"):
        ql.backtest(DATA, "fussy_zrev", {"lookback": 60, "entry": 1.0})


# -- a notebook strategy with a memoised helper travels to the workers -----------------------


NOTEBOOK_CELL = """\
import numpy as np
import pandas as pd
import quantlab as ql


@ql.indicator
def cell_zscore(x, n):
    s = pd.Series(x)
    return ((s - s.rolling(n).mean()) / s.rolling(n).std()).to_numpy()


@ql.strategy(name="cell_zrev")
def cell_zrev(bars, lookback=20, entry=1.5):
    z = cell_zscore(bars.close[0], lookback)
    return np.where(z < -entry, 1, np.where(z > entry, -1, 0))
"""


def test_a_memoised_helper_travels_with_its_strategy() -> None:
    # a notebook cell: code in __main__ whose source only linecache knows
    filename = "<ipython-input-memo-1>"
    linecache.cache[filename] = (len(NOTEBOOK_CELL), None,
                                 NOTEBOOK_CELL.splitlines(keepends=True), filename)
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(NOTEBOOK_CELL, filename, "exec"), namespace)
    source = shippable_source(namespace["cell_zrev"])
    assert "@ql.indicator\ndef cell_zscore(x, n):" in source
    assert "import pandas as pd" in source and "import quantlab as ql" in source
    shipped = load_shipped_strategy("cell_zrev", source)
    params = {"lookback": 20, "entry": 1.0}
    with I.memo_scope() as memo:
        sig = shipped.signals(BARS, params)
        np.testing.assert_array_equal(sig, shipped.signals(BARS, params))
        assert memo.hits == 1
    np.testing.assert_array_equal(sig, memo_zrev.signals(BARS, params))


# -- ql.ind against pandas references written from the definitions ----------------------------


def _with_gaps(x: np.ndarray) -> np.ndarray:
    y = x.copy()
    y[[0, 1, 57, 58, 200]] = np.nan
    return y


def _on_valid(x: np.ndarray, reference: Any) -> np.ndarray:
    """``reference`` applied to the valid bars only, NaN on the others (QuantLab's gap rule)."""
    out = np.full_like(x, np.nan)
    valid = ~np.isnan(x)
    out[valid] = reference(pd.Series(x[valid]))
    return out


CLOSE = _with_gaps(BARS.close[0])


def test_sma_ema_std_zscore_match_pandas() -> None:
    n = 14
    np.testing.assert_array_equal(ql.ind.sma(CLOSE, n),
                                  _on_valid(CLOSE, lambda s: s.rolling(n).mean()))
    ema = _on_valid(CLOSE, lambda s: s.ewm(span=n, adjust=False).mean().where(
        np.arange(len(s)) >= n - 1))
    np.testing.assert_allclose(ql.ind.ema(CLOSE, n), ema, rtol=1e-12)
    np.testing.assert_allclose(ql.ind.rolling_std(CLOSE, n),
                               _on_valid(CLOSE, lambda s: s.rolling(n).std()), rtol=1e-9)
    np.testing.assert_allclose(ql.ind.zscore(CLOSE, n), _on_valid(
        CLOSE, lambda s: (s - s.rolling(n).mean()) / s.rolling(n).std()), rtol=1e-9)


def test_rolling_std_is_the_two_pass_sum_of_each_window_bit_for_bit() -> None:
    # windows summed four at a time must give the bits of each window summed alone, in
    # order: mean = (x_1 + ... + x_n) / n, then sqrt(((x_1 - mean)^2 + ...) / (n - 1)),
    # over each row's valid bars (written here in plain Python, one window at a time)
    rng = np.random.default_rng(5)
    rows = 100 + np.cumsum(rng.normal(size=(2, 157)), axis=1)
    rows[1, rng.choice(157, 30, replace=False)] = np.nan
    for n in (1, 2, 3, 4, 5, 7, 20, 120, 150):
        expected = np.full(rows.shape, np.nan)
        for r, row in enumerate(rows):
            at = [i for i, value in enumerate(row) if not np.isnan(value)]
            for j in range(n - 1, len(at)):
                window = [float(row[i]) for i in at[j - n + 1:j + 1]]
                mean = 0.0
                for value in window:
                    mean += value
                mean /= n
                ss = 0.0
                for value in window:
                    ss += (value - mean) * (value - mean)
                expected[r, at[j]] = np.sqrt(ss / (n - 1)) if n > 1 else 0.0
        np.testing.assert_array_equal(ql.ind.rolling_std(rows, n), expected, err_msg=str(n))


def test_bollinger_matches_pandas() -> None:
    n, k = 20, 2.5
    mid, upper, lower = ql.ind.bollinger(CLOSE, n, k)
    np.testing.assert_array_equal(mid, _on_valid(CLOSE, lambda s: s.rolling(n).mean()))
    np.testing.assert_allclose(upper, _on_valid(
        CLOSE, lambda s: s.rolling(n).mean() + k * s.rolling(n).std()), rtol=1e-12)
    np.testing.assert_allclose(lower, _on_valid(
        CLOSE, lambda s: s.rolling(n).mean() - k * s.rolling(n).std()), rtol=1e-12)


def test_rsi_matches_wilder_written_with_pandas() -> None:
    n = 14

    def wilder(s: pd.Series) -> pd.Series:
        change = s.diff()
        gain, loss = change.clip(lower=0), (-change).clip(lower=0)
        avg_gain = pd.Series(np.nan, index=s.index)
        avg_loss = pd.Series(np.nan, index=s.index)
        avg_gain.iloc[n] = gain.iloc[1:n + 1].mean()
        avg_loss.iloc[n] = loss.iloc[1:n + 1].mean()
        for t in range(n + 1, len(s)):
            avg_gain.iloc[t] = (avg_gain.iloc[t - 1] * (n - 1) + gain.iloc[t]) / n
            avg_loss.iloc[t] = (avg_loss.iloc[t - 1] * (n - 1) + loss.iloc[t]) / n
        return 100 - 100 / (1 + avg_gain / avg_loss)

    np.testing.assert_allclose(ql.ind.rsi(CLOSE, n), _on_valid(CLOSE, wilder), rtol=1e-9)


def test_atr_matches_wilder_written_with_pandas() -> None:
    n = 10
    frame = pd.DataFrame({"h": BARS.high[0], "l": BARS.low[0], "c": BARS.close[0]})
    prev = frame["c"].shift()
    tr = pd.concat([frame["h"] - frame["l"], (frame["h"] - prev).abs(),
                    (frame["l"] - prev).abs()], axis=1).max(axis=1)
    atr = pd.Series(np.nan, index=frame.index)
    atr.iloc[n - 1] = tr.iloc[:n].mean()
    for t in range(n, len(tr)):
        atr.iloc[t] = (atr.iloc[t - 1] * (n - 1) + tr.iloc[t]) / n
    ours = ql.ind.atr(BARS.high[0], BARS.low[0], BARS.close[0], n)
    np.testing.assert_allclose(ours, atr.to_numpy(), rtol=1e-9)


def test_crossover_and_rows_of_several_symbols() -> None:
    fast, slow = ql.ind.sma(CLOSE, 5), ql.ind.sma(CLOSE, 20)
    cross = ql.ind.crossover(fast, slow)
    diff = pd.Series(fast - slow)[~np.isnan(fast - slow)]
    above = np.sign(diff)
    expected = np.zeros(len(CLOSE), np.int8)
    flips = above.ne(above.shift()) & above.shift().notna() & (above != 0)
    expected[flips[flips].index] = above[flips].astype(np.int8)
    np.testing.assert_array_equal(cross, expected)
    rows = np.vstack([CLOSE, BARS.close[0]])
    z = ql.ind.zscore(rows, 15)
    assert z.shape == rows.shape
    np.testing.assert_array_equal(z[0], ql.ind.zscore(CLOSE, 15))
    np.testing.assert_array_equal(z[1], ql.ind.zscore(BARS.close[0], 15))


def test_builtin_indicators_are_memoised_in_a_run() -> None:
    with I.memo_scope() as memo:
        first = ql.ind.zscore(BARS.close[0], 20)
        assert ql.ind.zscore(BARS.close[0], 20) is first
        assert ql.ind.sma(BARS.close[0], 20) is not first
    assert memo.hits == 1 and memo.computed == 2


def test_a_bad_window_says_so() -> None:
    with pytest.raises(ConfigError, match="window must be a whole number of bars >= 1, got 0"):
        ql.ind.sma(CLOSE, 0)
    with pytest.raises(ConfigError, match=r"got an array of shape \(2, 2, 2\); pass "
                                          r"bars.close\[0\] or bars.close"):
        ql.ind.sma(np.zeros((2, 2, 2)), 3)
    with pytest.raises(ConfigError, match=r"atr needs high, low and close of one shape"):
        ql.ind.atr(CLOSE, CLOSE, CLOSE[1:], 3)


def test_a_shard_table_without_its_failed_rows_maps_back_to_the_combinations() -> None:
    from quantlab.engine import sweep_combinations
    from quantlab.jobs.shards import _positions

    params = {"lookback": [10, 60, 20], "entry": [1.0, 2.0]}
    combos, _ = sweep_combinations("fussy_zrev", params)
    shard = Simulation(DATA, "fussy_zrev", combos[1:5])  # (10, 2.0) (60, 1.0) (60, 2.0) (20, 1.0)
    shard.prepare()
    shard.run(10)
    table = shard.result().table
    assert len(table) == 2
    assert _positions(table, combos, 1, ["lookback", "entry"]) == [1, 4]
