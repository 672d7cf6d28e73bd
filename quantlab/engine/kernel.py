"""The fill engine: one Numba loop over bars, shared by single runs, portfolios and sweeps.

State lives in plain arrays so that a run is a sequence of chunks (``simulate`` is called with
``start``/``stop`` bar positions and the state arrays it mutates), and a checkpoint is those
arrays. Semantics are described in docs/engine.md; the comments here say why, not what.

Layouts (indices are the module constants below):

* ``cfg``   float64 config: cash, commission, fixed fee, slippage fraction, size, flags ...
* ``acct``  float64 account: cash, commissions paid, rejected orders, log rows used
* ``pos``   float64 ``(n_symbols, P_N)`` per symbol: units (signed), entry price, entry
  commission, entry bar, stop-loss level, take-profit level, last close, pending order
* ``acc``   float64 streaming metric accumulators (see ``quantlab.metrics``)
* ``log``   float64 ``(capacity, L_N)`` closed trades (only when ``detail``)
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from quantlab.indicators import crossover
from quantlab.metrics import (
    M_BEST,
    M_DD_LEN,
    M_DOWN2,
    M_EXPOSED,
    M_GROSS_LOSS,
    M_GROSS_PROFIT,
    M_LAST,
    M_MAX_DD,
    M_MAX_DD_LEN,
    M_N,
    M_N_ACC,
    M_PEAK,
    M_PREV,
    M_SUM,
    M_SUM2,
    M_SUM3,
    M_SUM4,
    M_SUM_LOG,
    M_SUM_RET,
    M_TRADES,
    M_WINS,
    M_WORST,
    finalize,
)

# error_model="numpy" below: a float division by zero gives inf/nan instead of raising, which
# spares a check on every division in the hot loop; every division that can meet a zero is
# guarded.

# cfg
C_CASH, C_COMM, C_FIXED, C_SLIP, C_SIZE, C_FILL_CLOSE, C_WHOLE, C_SHORT, C_SL, C_TP, \
    C_CLOSE_AT_END, C_N_TOTAL, C_N = range(13)
# acct
A_CASH, A_COMMISSIONS, A_REJECTED, A_LOG_ROWS, A_RUINED, A_N = range(6)
# pos columns
P_UNITS, P_ENTRY_PRICE, P_ENTRY_COMM, P_ENTRY_BAR, P_SL, P_TP, P_LAST, P_PENDING, P_N = range(9)
# log columns
L_SYMBOL, L_SIZE, L_ENTRY_BAR, L_EXIT_BAR, L_ENTRY_PRICE, L_EXIT_PRICE, L_PNL, L_RETURN, \
    L_COMMISSION, L_REASON, L_N = range(11)
# exit reasons
R_SIGNAL, R_STOP_LOSS, R_TAKE_PROFIT, R_END, R_RUIN = 0, 1, 2, 3, 4
# backtesting.py's default order size is just below all of equity (1 - machine epsilon) so
# that float rounding never buys one unit too many; whole-unit sizing uses the same bound.
FULL = 1.0 - np.finfo(np.float64).eps


def new_state(n_symbols: int, cash: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fresh state arrays (account, positions, accumulators) for a run with ``cash``."""
    acct = np.empty(A_N)
    pos = np.empty((n_symbols, P_N))
    acc = np.empty(M_N_ACC)
    # the compiled sweeps' reset, run by Python: one set of initial values, no compile
    _reset_state.py_func(cash, acct, pos, acc)
    return acct, pos, acc


@njit(cache=True, error_model="numpy")
def _exit_fill(units, price, entry, entry_comm, slip, rate, fixed):
    """The float arithmetic of closing ``units`` at ``price``: (fill, commission, total
    commission of the trade, pnl, return). Shared by every kernel, so all agree bit for bit."""
    # the closing order trades against the position: a sell for a long, a buy for a short
    fill = price * (1.0 - slip) if units > 0 else price * (1.0 + slip)
    comm = fixed + abs(units) * fill * rate
    total_comm = comm + entry_comm
    pnl = units * (fill - entry) - total_comm
    sign = 1.0 if units > 0 else -1.0
    # backtesting.py's Trade.pl_pct: gross return per unit minus commissions per entry value
    ret = sign * (fill / entry - 1.0) - total_comm / (abs(units) * entry)
    return fill, comm, total_comm, pnl, ret


@njit(cache=True, error_model="numpy")
def _tally(t, pnl, ret):
    """The closed-trade accumulators ``t`` (trades, wins, gross profit, gross loss, sum of
    returns, sum of log returns, best, worst) after one more trade. A tuple in, a tuple out:
    the one-symbol kernel keeps them in registers, the general one in ``acc``.

    Small helpers like this one take scalars only and are not inlined by Numba: LLVM inlines
    them anyway, and Numba-level inlining costs compile time (cold start)."""
    n, wins, gross_profit, gross_loss, sum_ret, sum_log, best, worst = t
    n += 1.0
    if pnl > 0:
        wins += 1.0
        gross_profit += pnl
    elif pnl < 0:
        gross_loss -= pnl
    sum_ret += ret
    sum_log += np.log1p(ret) if ret > -1.0 else np.nan
    if ret > best:
        best = ret
    if ret < worst:
        worst = ret
    return (n, wins, gross_profit, gross_loss, sum_ret, sum_log, best, worst)


@njit(cache=True, error_model="numpy")
def _record_trade(acc, pnl, ret):
    (acc[M_TRADES], acc[M_WINS], acc[M_GROSS_PROFIT], acc[M_GROSS_LOSS], acc[M_SUM_RET],
     acc[M_SUM_LOG], acc[M_BEST], acc[M_WORST]) = _tally(
        (acc[M_TRADES], acc[M_WINS], acc[M_GROSS_PROFIT], acc[M_GROSS_LOSS], acc[M_SUM_RET],
         acc[M_SUM_LOG], acc[M_BEST], acc[M_WORST]), pnl, ret)


@njit(cache=True, error_model="numpy")
def _log_exit(log, row, symbol, units, entry_bar, bar, entry, fill, pnl, ret, total_comm,
              reason):
    log[row, L_SYMBOL] = symbol
    log[row, L_SIZE] = units
    log[row, L_ENTRY_BAR] = entry_bar
    log[row, L_EXIT_BAR] = bar
    log[row, L_ENTRY_PRICE] = entry
    log[row, L_EXIT_PRICE] = fill
    log[row, L_PNL] = pnl
    log[row, L_RETURN] = ret
    log[row, L_COMMISSION] = total_comm
    log[row, L_REASON] = reason


@njit(cache=True, error_model="numpy")
def _entry_size(direction, price, equity, available, weight, slip, c, fixed, whole, size):
    """The float arithmetic of an entry: (fill price, signed units, commission); units 0.0
    when the order cannot buy one unit (whole) or anything (fractional): a rejection.
    Scalars only (no config array): a call with an array argument costs reference counting."""
    fill = price * (1.0 + slip) if direction > 0 else price * (1.0 - slip)
    budget = weight * equity
    if budget > available:
        budget = available
    if whole:
        f = size if size < FULL else FULL
        # backtesting.py: units = margin * size // (price + commission(size, price) / size),
        # the same floats when there is no fixed fee. The fixed fee is paid once per order, so
        # it comes off the budget (backtesting.py divides it by the size fraction instead).
        per_unit = fill + (f * fill * c) / f
        spend = budget * f - fixed
        units = spend // per_unit if spend > 0 else 0.0
        ok = units >= 1.0
    else:
        spend = budget * size - fixed
        units = spend / (fill * (1.0 + c)) if spend > 0 else 0.0
        ok = units > 0.0
    if not ok:
        return fill, 0.0, 0.0
    units = units * direction
    return fill, units, fixed + abs(units) * fill * c


@njit(cache=True, error_model="numpy")
def _close(s, price, bar, reason, cfg, acct, pos, acc, detail, log):
    units = pos[s, P_UNITS]
    entry = pos[s, P_ENTRY_PRICE]
    fill, comm, total_comm, pnl, ret = _exit_fill(units, price, entry, pos[s, P_ENTRY_COMM],
                                                  cfg[C_SLIP], cfg[C_COMM], cfg[C_FIXED])
    acct[A_CASH] += units * fill - comm
    acct[A_COMMISSIONS] += comm
    _record_trade(acc, pnl, ret)
    if detail:
        row = int(acct[A_LOG_ROWS])
        _log_exit(log, row, s, units, pos[s, P_ENTRY_BAR], bar, entry, fill, pnl, ret,
                  total_comm, reason)
        acct[A_LOG_ROWS] = row + 1
    pos[s, P_UNITS] = 0.0
    pos[s, P_ENTRY_COMM] = 0.0
    pos[s, P_SL] = np.nan
    pos[s, P_TP] = np.nan


@njit(cache=True, error_model="numpy")
def _open(s, direction, price, bar, marks, cfg, acct, pos, weights):
    # equity and margin in use, every position marked at its price of this moment
    equity = acct[A_CASH]
    used = 0.0
    for q in range(pos.shape[0]):
        u = pos[q, P_UNITS]
        if u != 0.0:
            equity += u * marks[q]
            used += abs(u) * marks[q]
    fill, units, comm = _entry_size(direction, price, equity, equity - used, weights[s],
                                    cfg[C_SLIP], cfg[C_COMM], cfg[C_FIXED], cfg[C_WHOLE] > 0,
                                    cfg[C_SIZE])
    if units == 0.0:
        acct[A_REJECTED] += 1.0
        return
    acct[A_CASH] -= units * fill + comm
    acct[A_COMMISSIONS] += comm
    pos[s, P_UNITS] = units
    pos[s, P_ENTRY_PRICE] = fill
    pos[s, P_ENTRY_COMM] = comm
    pos[s, P_ENTRY_BAR] = bar
    if cfg[C_SL] > 0:
        pos[s, P_SL] = fill * (1.0 - cfg[C_SL] * direction)
    if cfg[C_TP] > 0:
        pos[s, P_TP] = fill * (1.0 + cfg[C_TP] * direction)


@njit(cache=True, error_model="numpy")
def _fill_orders(prices, orders, bar, cfg, acct, pos, acc, weights, marks, detail, log):
    """Fill the orders of this moment at ``prices``: every exit first (freeing cash), then
    every entry, symbols in order. ``orders[s]`` is +1 buy, -1 sell, 0 none."""
    n = pos.shape[0]
    allow_short = cfg[C_SHORT] > 0
    for s in range(n):
        a = orders[s]
        if a == 0 or np.isnan(prices[s]):
            continue
        u = pos[s, P_UNITS]
        if (a > 0 and u < 0) or (a < 0 and u > 0):
            _close(s, prices[s], bar, np.int64(R_SIGNAL), cfg, acct, pos, acc, detail, log)
    for s in range(n):
        a = orders[s]
        if a == 0 or np.isnan(prices[s]):
            continue
        if pos[s, P_UNITS] == 0.0 and (a > 0 or allow_short):
            _open(s, 1.0 if a > 0 else -1.0, prices[s], bar, marks, cfg, acct, pos, weights)


@njit(cache=True, inline="always", error_model="numpy")
def _touched(units, sl, tp, high, low):
    # scalars only: cheap enough to run on every bar of every held position
    if units > 0:
        return low <= sl or high >= tp
    return high >= sl or low <= tp


@njit(cache=True, error_model="numpy")
def _check_stops(s, bar, o, h, lo, gap_ok, cfg, acct, pos, acc, detail, log):
    """Stop-loss, then take-profit, against the bar's low/high. The stop is taken first when
    both are touched (we cannot know the order inside the bar: assume the worse). The fill is
    the level, or the open when the bar opened beyond it (a gap) and the position was already
    held at the open."""
    u = pos[s, P_UNITS]
    sl = pos[s, P_SL]
    tp = pos[s, P_TP]
    reason = -1
    price = 0.0
    if u > 0:
        if sl == sl and lo <= sl:
            reason = R_STOP_LOSS
            price = o if (gap_ok and o < sl) else sl
        elif tp == tp and h >= tp:
            reason = R_TAKE_PROFIT
            price = o if (gap_ok and o > tp) else tp
    elif u < 0:
        if sl == sl and h >= sl:
            reason = R_STOP_LOSS
            price = o if (gap_ok and o > sl) else sl
        elif tp == tp and lo <= tp:
            reason = R_TAKE_PROFIT
            price = o if (gap_ok and o < tp) else tp
    if reason >= 0:
        # one call site: every inlined copy of _close costs compile time
        _close(s, price, bar, reason, cfg, acct, pos, acc, detail, log)


@njit(cache=True, error_model="numpy")
def _return_step(equity, prev, sum_r, sum_r2, sum_down2, sum_r3, sum_r4):
    """One bar's return ``equity / prev - 1`` added to the sums of returns, of their squares
    and of the squares of the negative ones (and of the cubes and fourth powers, for the
    skewness and kurtosis of psr). An unchanged equity (a flat bar) adds exactly 0, so it is
    skipped: no division."""
    if equity != prev:
        r = equity / prev - 1.0 if prev != 0.0 else 0.0
        sum_r += r
        r2 = r * r
        sum_r2 += r2
        sum_r3 += r2 * r
        sum_r4 += r2 * r2
        if r < 0.0:
            sum_down2 += r2
    return sum_r, sum_r2, sum_down2, sum_r3, sum_r4


@njit(cache=True, error_model="numpy")
def _drawdown_step(equity, peak, max_dd, dd_len, max_dd_len, low_seen):
    """One bar of drawdown bookkeeping: (peak, deepest drawdown, bars since the peak, longest
    drawdown, lowest equity since the peak). The depth of a drawdown is measured when it ends
    (a new peak), from its lowest equity: `equity / peak - 1` is monotone in equity, so that
    is the depth a bar-by-bar measure finds, at one division per drawdown."""
    if equity >= peak:
        if low_seen < peak:
            dd = low_seen / peak - 1.0
            if dd < max_dd:
                max_dd = dd
        if dd_len > max_dd_len:
            max_dd_len = dd_len
        return equity, max_dd, 0, max_dd_len, np.inf
    return peak, max_dd, dd_len + 1, max_dd_len, min(low_seen, equity)


@njit(cache=True, error_model="numpy")
def simulate(open_, high, low, close, sig, start, stop, cfg, weights, acct, pos, acc,
             detail, equity_out, log):
    """Advance bars ``start..stop-1``; returns the first bar not processed (``stop`` unless
    the trade log ran out of room, then the caller grows it and calls again)."""
    n = pos.shape[0]
    # "gap allowed" as a variable, not a literal: a literal argument compiles another
    # specialisation of the callee (cold start time)
    ALWAYS = np.bool_(True)
    fill_close = cfg[C_FILL_CLOSE] > 0
    has_stops = cfg[C_SL] > 0 or cfg[C_TP] > 0
    last_bar = int(cfg[C_N_TOTAL]) - 1
    marks = np.empty(n)
    orders = np.zeros(n)
    prices = np.empty(n)
    # Streaming metrics of the equity curve: sums of bar returns and their squares, downside
    # squares, drawdown depth and duration, exposure. Kept in locals for the loop (registers,
    # not memory the compiler must assume aliased) and stored back into `acc` on return.
    # The same code serves single runs and sweeps, so a sweep row equals the single run.
    m_n = acc[M_N]
    m_sum = acc[M_SUM]
    m_sum2 = acc[M_SUM2]
    m_down2 = acc[M_DOWN2]
    m_sum3 = acc[M_SUM3]
    m_sum4 = acc[M_SUM4]
    m_peak = acc[M_PEAK]
    m_max_dd = acc[M_MAX_DD]
    dd_len = int(acc[M_DD_LEN])
    max_dd_len = int(acc[M_MAX_DD_LEN])
    low_seen = np.inf
    m_exposed = acc[M_EXPOSED]
    m_prev = acc[M_PREV]
    reached = stop
    for i in range(start, stop):
        # room for the worst case of one bar: a signal exit, a stop exit and an end exit each
        if detail and acct[A_LOG_ROWS] + 3 * n > log.shape[0]:
            reached = i
            break
        ruined = acct[A_RUINED] > 0
        if ruined:
            # the account was wiped out: nothing trades any more, equity stays 0
            equity = 0.0
            exposed = False
        else:
            if not fill_close:
                # 1. orders from the previous close fill at this open
                any_order = False
                for s in range(n):
                    prices[s] = open_[s, i]
                    if prices[s] == prices[s]:
                        orders[s] = pos[s, P_PENDING]
                        if orders[s] != 0.0:
                            any_order = True
                            pos[s, P_PENDING] = 0.0
                        marks[s] = prices[s]
                    else:
                        orders[s] = 0.0
                        marks[s] = pos[s, P_LAST]
                if any_order:
                    _fill_orders(prices, orders, i, cfg, acct, pos, acc, weights, marks, detail, log)
                # 2. stops during the bar; a position opened at this open cannot have gapped
                for s in range(n if has_stops else 0):
                    u = pos[s, P_UNITS]
                    if u != 0.0 and close[s, i] == close[s, i] and _touched(
                            u, pos[s, P_SL], pos[s, P_TP], high[s, i], low[s, i]):
                        gap_ok = pos[s, P_ENTRY_BAR] != i
                        _check_stops(s, i, open_[s, i], high[s, i], low[s, i], gap_ok, cfg, acct,
                                     pos, acc, detail, log)
                # 3. this close's signals become the orders of the symbol's next bar
                for s in range(n):
                    if close[s, i] == close[s, i]:
                        pos[s, P_LAST] = close[s, i]
                        if sig[s, i] != 0:
                            pos[s, P_PENDING] = sig[s, i]
            else:
                # 1. stops during the bar for positions held since an earlier close
                for s in range(n if has_stops else 0):
                    u = pos[s, P_UNITS]
                    if u != 0.0 and close[s, i] == close[s, i] and _touched(
                            u, pos[s, P_SL], pos[s, P_TP], high[s, i], low[s, i]):
                        _check_stops(s, i, open_[s, i], high[s, i], low[s, i], ALWAYS, cfg, acct,
                                     pos, acc, detail, log)
                # 2. signals fill at this close
                any_order = False
                for s in range(n):
                    c = close[s, i]
                    prices[s] = c
                    if c == c:
                        pos[s, P_LAST] = c
                        marks[s] = c
                        orders[s] = sig[s, i]
                        if orders[s] != 0.0:
                            any_order = True
                    else:
                        marks[s] = pos[s, P_LAST]
                        orders[s] = 0.0
                if any_order:
                    _fill_orders(prices, orders, i, cfg, acct, pos, acc, weights, marks, detail, log)
            if i == last_bar and cfg[C_CLOSE_AT_END] > 0:
                for s in range(n):
                    if pos[s, P_UNITS] != 0.0:
                        _close(s, pos[s, P_LAST], i, np.int64(R_END), cfg, acct, pos, acc, detail, log)
            # mark to market at the close (a symbol without a bar keeps its last close)
            equity = acct[A_CASH]
            exposed = False
            for s in range(n):
                u = pos[s, P_UNITS]
                if u != 0.0:
                    equity += u * pos[s, P_LAST]
                    exposed = True
            if equity <= 0.0 and exposed:
                # ruin (as backtesting.py): close everything at this close, the account is empty
                for s in range(n):
                    if pos[s, P_UNITS] != 0.0:
                        _close(s, pos[s, P_LAST], i, np.int64(R_RUIN), cfg, acct, pos, acc, detail, log)
                    pos[s, P_PENDING] = 0.0
                acct[A_CASH] = 0.0
                acct[A_RUINED] = 1.0
                equity = 0.0
                exposed = False
        m_n += 1.0
        m_sum, m_sum2, m_down2, m_sum3, m_sum4 = _return_step(equity, m_prev, m_sum, m_sum2,
                                                              m_down2, m_sum3, m_sum4)
        m_peak, m_max_dd, dd_len, max_dd_len, low_seen = _drawdown_step(
            equity, m_peak, m_max_dd, dd_len, max_dd_len, low_seen)
        if exposed:
            m_exposed += 1.0
        m_prev = equity
        if detail:
            equity_out[i] = equity
    # the drawdown still running at the end of the chunk: measured as if a peak came now
    _, m_max_dd, _, max_dd_len, _ = _drawdown_step(np.inf, m_peak, m_max_dd, dd_len,
                                                    max_dd_len, low_seen)
    acc[M_N] = m_n
    acc[M_SUM] = m_sum
    acc[M_SUM2] = m_sum2
    acc[M_DOWN2] = m_down2
    acc[M_SUM3] = m_sum3
    acc[M_SUM4] = m_sum4
    acc[M_PEAK] = m_peak
    acc[M_MAX_DD] = m_max_dd
    acc[M_DD_LEN] = dd_len
    acc[M_MAX_DD_LEN] = max_dd_len
    acc[M_EXPOSED] = m_exposed
    acc[M_PREV] = m_prev
    acc[M_LAST] = m_prev
    return reached


# --- one symbol --------------------------------------------------------------------------------
#
# The common case (one symbol: every single SMA-crossover run, every crossover sweep, with or
# without stops) runs on `simulate1`: the same rules and the same float operations as
# `simulate` (`_exit_fill`, `_entry_size`, `_tally`), with the state in local scalars and the
# bars on which nothing can happen but the marking to market taken in tight loops. Bars
# where an order fills or a signal arrives go through every rule; between them the kernel
# looks ahead for the next signal many bars at a time (vector instructions), then marks the
# stretch to market: a flat stretch in one step (equity stays the cash), a held one bar by
# bar, skipping the work whose result is known (an unchanged equity adds exactly 0 to the
# sums; the depth of a drawdown, `equity / peak - 1`, is monotone in equity, so it is taken
# once per drawdown, from its lowest equity). Stops keep a held stretch tight: the loop also
# compares each bar's low and high with the position's two levels (a NaN level is an infinite
# bound) and leaves it at the first bar that touches one, which the full path then exits. A run
# without stops passes no high/low and compiles none of it. Results equal `simulate`'s bit for
# bit (tests/test_engine_chunks.py, tests/test_engine_sweep.py,
# tests/test_engine_sweep_options.py).
#
# Indices in the tight loops are unsigned: Numba then knows they are not negative, emits no
# wraparound code, and the scans compile to vector loads.

# The two scans are inlined by Numba (unlike the scalar helpers): they take arrays, and a call
# with array arguments costs reference counting on every stretch of bars.
_U1 = np.uint64(1)
_SCAN = 32  # bars tested at once when looking for the next signal
_SCAN_U = np.uint64(_SCAN)
_NONE = np.uint64(1 << 62)


@njit(cache=True, inline="always", error_model="numpy")
def _next_cross(fast, slow, j, end, either):
    """The first bar ``t`` in ``j..end-1`` (``1 <= j <= end``) where ``fast`` crosses above
    ``slow`` (or either way when ``either``), else ``end``. The cross is read from bars
    ``t-1`` and ``t`` alone, which is crossover()'s "previous valid bar" rule when the lines
    are NaN only in their warm-up prefix (every comparison with NaN is False)."""
    uj = np.uint64(j)
    ue = np.uint64(end)
    while uj + _SCAN_U <= ue:
        first = _NONE
        for t in range(_SCAN):
            u = uj + np.uint64(t)
            up = (fast[u - _U1] < slow[u - _U1]) & (fast[u] > slow[u])
            down = (fast[u - _U1] > slow[u - _U1]) & (fast[u] < slow[u])
            first = min(first, u if up | (down & either) else _NONE)
        if first != _NONE:
            return np.int64(first)
        uj += _SCAN_U
    while uj < ue:
        up = (fast[uj - _U1] < slow[uj - _U1]) & (fast[uj] > slow[uj])
        down = (fast[uj - _U1] > slow[uj - _U1]) & (fast[uj] < slow[uj])
        if up | (down & either):
            return np.int64(uj)
        uj += _U1
    return end


@njit(cache=True, inline="always", error_model="numpy")
def _next_signal(sig, j, end, idle):
    """The first bar in ``j..end-1`` with a signal other than ``idle`` (a signal that changes
    nothing in the position's state: see ``simulate1``; 0 for none), else ``end``."""
    uj = np.uint64(j)
    ue = np.uint64(end)
    while uj + _SCAN_U <= ue:
        first = _NONE
        for t in range(_SCAN):
            u = uj + np.uint64(t)
            first = min(first, u if sig[u] != 0 and sig[u] != idle else _NONE)
        if first != _NONE:
            return np.int64(first)
        uj += _SCAN_U
    while uj < ue:
        if sig[uj] != 0 and sig[uj] != idle:
            return np.int64(uj)
        uj += _U1
    return end


@njit(cache=True, error_model="numpy")
def _stop_exit(units, sl, tp, o, h, lo, gap_ok):
    """``_check_stops``'s rule for one held position, scalars only: (reason, price) of the
    stop-loss or take-profit exit this bar triggers, reason -1 when none. The stop is taken
    first when both are touched; the fill is the level, or the open when the bar opened
    beyond it (a gap) and the position was held at the open (``gap_ok``)."""
    if units > 0:
        if sl == sl and lo <= sl:
            return R_STOP_LOSS, o if (gap_ok and o < sl) else sl
        if tp == tp and h >= tp:
            return R_TAKE_PROFIT, o if (gap_ok and o > tp) else tp
    elif units < 0:
        if sl == sl and h >= sl:
            return R_STOP_LOSS, o if (gap_ok and o > sl) else sl
        if tp == tp and lo <= tp:
            return R_TAKE_PROFIT, o if (gap_ok and o < tp) else tp
    return -1, 0.0


@njit(cache=True, error_model="numpy")
def simulate1(open_, high, low, close, sig, fast, slow, start, stop, cfg, weight, acct, pos, acc,
              detail, equity_out, log):
    """``simulate`` for one symbol (``open_``, ``close`` 1-d; ``weight`` the symbol's weight).
    The signals are ``sig`` (int8, 1-d; ``fast`` and ``slow`` None), or the crosses of
    ``fast`` over ``slow`` (``sig`` None; lines NaN only in a warm-up prefix, as the averages
    of a close without gaps are). ``high`` and ``low`` (1-d) check the stop-loss and
    take-profit of ``cfg``; None when it sets neither, so that a run without stops compiles
    (and runs) none of their code. Returns the first bar not processed, as ``simulate``."""
    fill_close = cfg[C_FILL_CLOSE] > 0
    close_at_end = cfg[C_CLOSE_AT_END] > 0
    allow_short = cfg[C_SHORT] > 0
    whole = cfg[C_WHOLE] > 0
    size = cfg[C_SIZE]
    slip = cfg[C_SLIP]
    rate = cfg[C_COMM]
    fixed = cfg[C_FIXED]
    last_bar = int(cfg[C_N_TOTAL]) - 1
    sl_frac = cfg[C_SL]
    tp_frac = cfg[C_TP]
    # variables, not literals, for the trade log's symbol and exit reason: a literal argument
    # compiles another specialisation of the callee (cold start time)
    symbol = np.int64(0)
    signal_exit = np.int64(R_SIGNAL)
    cash = acct[A_CASH]
    commissions = acct[A_COMMISSIONS]
    rejected = acct[A_REJECTED]
    ruined = acct[A_RUINED] > 0
    log_rows = int(acct[A_LOG_ROWS])
    units = pos[0, P_UNITS]
    entry = pos[0, P_ENTRY_PRICE]
    entry_comm = pos[0, P_ENTRY_COMM]
    entry_bar = pos[0, P_ENTRY_BAR]
    last = pos[0, P_LAST]
    pending = pos[0, P_PENDING]
    sl_level = pos[0, P_SL]
    tp_level = pos[0, P_TP]
    # the phase of a bar that checks the stops, before (fill at the close: positions held
    # since an earlier close) or after (fill at the open) the phase that fills the order
    stop_phase = 0 if fill_close else 1
    n_phases = 1
    if high is not None:
        n_phases = 2
    else:
        stop_phase = -1  # no stop phase: the one phase fills the order
    tally = (acc[M_TRADES], acc[M_WINS], acc[M_GROSS_PROFIT], acc[M_GROSS_LOSS],
             acc[M_SUM_RET], acc[M_SUM_LOG], acc[M_BEST], acc[M_WORST])
    m_sum = acc[M_SUM]
    m_sum2 = acc[M_SUM2]
    m_down2 = acc[M_DOWN2]
    m_sum3 = acc[M_SUM3]
    m_sum4 = acc[M_SUM4]
    m_peak = acc[M_PEAK]
    m_max_dd = acc[M_MAX_DD]
    m_prev = acc[M_PREV]
    # bar counts as integers: a float += 1.0 chain costs 4 cycles a bar (exact either way)
    dd_len = int(acc[M_DD_LEN])
    max_dd_len = int(acc[M_MAX_DD_LEN])
    n_exposed = 0
    # the lowest equity since the last peak: its drawdown is measured when the drawdown
    # ends (a new peak) or the chunk does
    low_seen = np.inf
    # the tight loops stop before the last bar: it closes trades (close_at_end)
    end = stop if stop < last_bar else last_bar
    reached = stop
    i = start
    while i < stop:
        # -- bar i through every rule ------------------------------------------------------
        if detail and log_rows + 2 > log.shape[0]:
            reached = i  # the trade log is full: the caller grows it and calls again
            break
        if not ruined:
            c = close[i]
            if c == c:
                # (`is not None` tests on arguments are settled when Numba compiles: a
                # specialisation holds only the code of its kind of signal)
                s = 0.0
                if sig is not None:
                    s = float(sig[i])
                if fast is not None and i > 0:
                    if fast[i - 1] < slow[i - 1] and fast[i] > slow[i]:
                        s = 1.0
                    elif fast[i - 1] > slow[i - 1] and fast[i] < slow[i]:
                        s = -1.0
                if fill_close:
                    order = s
                    price = c
                else:
                    # the previous signal fills at this open; this one waits for the next
                    order = pending
                    price = open_[i]
                    pending = s
                # two phases, each written once (every copy of an exit costs compile time)
                for phase in range(n_phases):
                    if phase == stop_phase:
                        # stops during the bar (simulate's _check_stops); a position opened at
                        # this open cannot have gapped. (`is not None` alone in its test, so
                        # that Numba drops the branch from a run without stops.)
                        if units == 0.0:
                            continue
                        reason = -1
                        price_out = 0.0
                        if high is not None:
                            reason, price_out = _stop_exit(units, sl_level, tp_level, open_[i],
                                                           high[i], low[i],
                                                           fill_close or entry_bar != i)
                        if reason < 0:
                            continue
                        fill, comm, total_comm, pnl, ret = _exit_fill(units, price_out, entry,
                                                                      entry_comm, slip, rate,
                                                                      fixed)
                        cash += units * fill - comm
                        commissions += comm
                        tally = _tally(tally, pnl, ret)
                        if detail:
                            _log_exit(log, log_rows, symbol, units, entry_bar, i, entry, fill,
                                      pnl, ret, total_comm, np.int64(reason))
                            log_rows += 1
                        units = 0.0
                        entry_comm = 0.0
                        sl_level = np.nan
                        tp_level = np.nan
                        continue
                    if order == 0.0 or price != price:
                        continue
                    if (order > 0 and units < 0) or (order < 0 and units > 0):
                        fill, comm, total_comm, pnl, ret = _exit_fill(units, price, entry,
                                                                      entry_comm, slip, rate,
                                                                      fixed)
                        cash += units * fill - comm
                        commissions += comm
                        tally = _tally(tally, pnl, ret)
                        if detail:
                            _log_exit(log, log_rows, symbol, units, entry_bar, i, entry, fill,
                                      pnl, ret, total_comm, signal_exit)
                            log_rows += 1
                        units = 0.0
                        entry_comm = 0.0
                        sl_level = np.nan
                        tp_level = np.nan
                    if units == 0.0 and (order > 0 or allow_short):
                        direction = 1.0 if order > 0 else -1.0
                        fill, new_units, comm = _entry_size(direction, price, cash, cash, weight,
                                                            slip, rate, fixed, whole, size)
                        if new_units == 0.0:
                            rejected += 1.0
                        else:
                            cash -= new_units * fill + comm
                            commissions += comm
                            units = new_units
                            entry = fill
                            entry_comm = comm
                            entry_bar = i
                            if sl_frac > 0:
                                sl_level = fill * (1.0 - sl_frac * direction)
                            if tp_frac > 0:
                                tp_level = fill * (1.0 + tp_frac * direction)
                last = c
            # the end of the data (close_at_end), or ruin (as backtesting.py: equity at or
            # below zero closes everything at this close, and nothing trades any more)
            reason = -1
            if units != 0.0:
                if i == last_bar and close_at_end:
                    reason = R_END
                elif cash + units * last <= 0.0:
                    reason = R_RUIN
            if reason >= 0:
                fill, comm, total_comm, pnl, ret = _exit_fill(units, last, entry, entry_comm,
                                                              slip, rate, fixed)
                commissions += comm
                tally = _tally(tally, pnl, ret)
                if detail:
                    _log_exit(log, log_rows, symbol, units, entry_bar, i, entry, fill, pnl, ret,
                              total_comm, reason)
                    log_rows += 1
                if reason == R_RUIN:
                    cash = 0.0
                    ruined = True
                    pending = 0.0
                else:
                    cash += units * fill - comm
                units = 0.0
                entry_comm = 0.0
                sl_level = np.nan
                tp_level = np.nan
        equity = cash
        if units != 0.0:
            equity += units * last
            n_exposed += 1
        m_sum, m_sum2, m_down2, m_sum3, m_sum4 = _return_step(equity, m_prev, m_sum, m_sum2,
                                                              m_down2, m_sum3, m_sum4)
        m_peak, m_max_dd, dd_len, max_dd_len, low_seen = _drawdown_step(
            equity, m_peak, m_max_dd, dd_len, max_dd_len, low_seen)
        m_prev = equity
        if detail:
            equity_out[i] = equity
        i += 1
        # -- then the bars up to the next signal: nothing happens on them but the marking
        # to market. A signal in the held position's direction (or a sell when flat and
        # shorts are not allowed) changes nothing either: a sweep's signals often repeat
        # for many bars, and each would otherwise take the full path.
        idle = 0
        if units > 0.0:
            idle = 1
        elif units < 0.0 or not allow_short:
            idle = -1
        if ruined or (pending != 0.0 and pending != idle) or i >= end:
            continue
        stretch = end
        if sig is not None:
            stretch = _next_signal(sig, i, end, idle)
        if fast is not None:
            stretch = _next_cross(fast, slow, i, end, allow_short or units != 0.0)
        if units == 0.0:
            # flat: the equity stays the cash, each bar adds a zero return
            if m_prev < m_peak:
                dd_len += stretch - i
            if detail:
                equity_out[i:stretch] = cash
            for t in range(stretch - 1, i - 1, -1):
                if close[t] == close[t]:
                    last = close[t]
                    break
            if sig is not None and not fill_close and stretch > i:
                pending = float(sig[stretch - 1])  # the idle signal the next open sees
            i = stretch
            continue
        # a held stretch ends early at a bar that touches a stop (the full path exits there)
        lower = -np.inf
        upper = np.inf
        if high is not None:
            lo_level = sl_level if units > 0 else tp_level
            hi_level = tp_level if units > 0 else sl_level
            if lo_level == lo_level:
                lower = lo_level
            if hi_level == hi_level:
                upper = hi_level
        u = np.uint64(i)
        ue = np.uint64(stretch)
        while u < ue:
            # (`is not None` alone in its test: Numba drops it from a run without stops)
            if high is not None:  # noqa: SIM102
                if low[u] <= lower or high[u] >= upper:
                    break
            equity = cash + units * close[u]
            if not equity > 0.0:
                break  # no bar (NaN), or ruin: the full path handles it
            last = close[u]
            # m_prev > 0 here (a held position's equity was positive), and an unchanged
            # equity gives r = +0.0 exactly, which adds nothing to the sums (never -0.0)
            r = equity / m_prev - 1.0
            m_sum += r
            r2 = r * r
            m_sum2 += r2
            m_sum3 += r2 * r
            m_sum4 += r2 * r2
            # a select, not a branch (the sign of a bar's return is a coin toss)
            m_down2 += r2 if r < 0.0 else 0.0
            m_peak, m_max_dd, dd_len, max_dd_len, low_seen = _drawdown_step(
                equity, m_peak, m_max_dd, dd_len, max_dd_len, low_seen)
            m_prev = equity
            if detail:
                equity_out[u] = equity
            u += _U1
        n_exposed += np.int64(u) - i
        if sig is not None and not fill_close and np.int64(u) > i:
            pending = float(sig[u - _U1])  # the idle signal the next open sees
        i = np.int64(u)
    # the drawdown still running at the end of the chunk: measured as if a peak came now
    _, m_max_dd, _, max_dd_len, _ = _drawdown_step(np.inf, m_peak, m_max_dd, dd_len,
                                                    max_dd_len, low_seen)
    acct[A_CASH] = cash
    acct[A_COMMISSIONS] = commissions
    acct[A_REJECTED] = rejected
    acct[A_RUINED] = 1.0 if ruined else 0.0
    acct[A_LOG_ROWS] = log_rows
    pos[0, P_UNITS] = units
    pos[0, P_ENTRY_PRICE] = entry
    pos[0, P_ENTRY_COMM] = entry_comm
    pos[0, P_ENTRY_BAR] = entry_bar
    pos[0, P_LAST] = last
    pos[0, P_PENDING] = pending
    pos[0, P_SL] = sl_level
    pos[0, P_TP] = tp_level
    (acc[M_TRADES], acc[M_WINS], acc[M_GROSS_PROFIT], acc[M_GROSS_LOSS], acc[M_SUM_RET],
     acc[M_SUM_LOG], acc[M_BEST], acc[M_WORST]) = tally
    acc[M_N] += reached - start
    acc[M_SUM] = m_sum
    acc[M_SUM2] = m_sum2
    acc[M_DOWN2] = m_down2
    acc[M_SUM3] = m_sum3
    acc[M_SUM4] = m_sum4
    acc[M_PEAK] = m_peak
    acc[M_MAX_DD] = m_max_dd
    acc[M_DD_LEN] = dd_len
    acc[M_MAX_DD_LEN] = max_dd_len
    acc[M_EXPOSED] += n_exposed
    acc[M_PREV] = m_prev
    acc[M_LAST] = m_prev
    return reached


@njit(cache=True, error_model="numpy")
def _reset_state(cash, acct, pos, acc):
    """``new_state``'s values, written into existing arrays (a sweep reuses them)."""
    acct[:] = 0.0
    acct[A_CASH] = cash
    pos[:] = 0.0
    pos[:, P_LAST] = np.nan
    pos[:, P_SL] = np.nan
    pos[:, P_TP] = np.nan
    acc[:] = 0.0
    acc[M_PEAK] = cash
    acc[M_PREV] = cash
    acc[M_LAST] = cash
    acc[M_BEST] = -np.inf
    acc[M_WORST] = np.inf


def one_symbol_kernel(cfg: np.ndarray, n_symbols: int) -> bool:
    """Whether a run can take ``simulate1``: one symbol (stops included)."""
    return n_symbols == 1


def has_stops(cfg: np.ndarray) -> bool:
    """Whether ``cfg`` (one config row, or a sweep's rows) sets a stop-loss or take-profit:
    ``simulate1`` then needs the bars' high and low."""
    return bool(np.any(cfg[..., C_SL] > 0) or np.any(cfg[..., C_TP] > 0))


@njit(cache=True, error_model="numpy")
def _run_combination(open_, high, low, close, sig, cfg, weights, ppy, out_row, one, many):
    """One combination over all bars with fresh state, metrics only (no equity, no log).
    ``high``, ``low``, ``one``, ``many``: as :func:`sweep_kind` gives them."""
    n_sym = close.shape[0]
    n_bars = close.shape[1]
    acct = np.empty(A_N)
    pos = np.empty((n_sym, P_N))
    acc = np.empty(M_N_ACC)
    _reset_state(cfg[C_CASH], acct, pos, acc)
    no_eq = np.empty(0)
    no_log = np.empty((0, L_N))
    # start and detail as variables: a literal argument would compile another specialisation
    start = np.int64(0)
    detail = np.bool_(False)
    if many is not None:
        simulate(open_, high, low, close, sig, start, n_bars, cfg, weights, acct, pos, acc,
                 detail, no_eq, no_log)
    if one is not None:
        if high is None or (cfg[C_SL] <= 0 and cfg[C_TP] <= 0):
            simulate1(open_[0], None, None, close[0], sig[0], None, None, start, n_bars, cfg,
                      weights[0], acct, pos, acc, detail, no_eq, no_log)
        else:
            simulate1(open_[0], high[0], low[0], close[0], sig[0], None, None, start, n_bars,
                      cfg, weights[0], acct, pos, acc, detail, no_eq, no_log)
    open_count = 0.0
    for s in range(n_sym):
        if pos[s, P_UNITS] != 0.0:
            open_count += 1.0
    finalize(acc, acct, cfg[C_CASH], open_count, ppy, out_row)


def sweep_kind(high: np.ndarray, low: np.ndarray, cfgs: np.ndarray
               ) -> tuple[np.ndarray | None, np.ndarray | None, bool | None, bool | None]:
    """``(high, low, one, many)`` for the sweep kernels, from the bars' high and low
    (n_symbols, n_bars) and the sweep's config rows: ``one`` True and ``many`` None for one
    symbol (``simulate1``), the reverse for several (``simulate``), and for one symbol no high
    or low when no row has a stop. Numba drops a branch under ``if x is not None`` (or ``is
    None``) before compiling when ``x`` *is* None (not when it is a bool), so a sweep compiles
    only the code it runs: 5-6 s less of a cold cache's first sweep (bench/README.md)."""
    if high.shape[0] > 1:
        return high, low, None, True
    if has_stops(cfgs):
        return high, low, True, None
    return None, None, True, None


@njit(cache=True, parallel=True, error_model="numpy")
def sweep_batch(open_, high, low, close, sigs, cfgs, cfg_rows, weights, ppy, out, one, many):
    """Run every combination of ``sigs`` (k, n_symbols, n_bars) over all bars, in parallel,
    keeping only streaming accumulators; combination ``j`` runs with the options of
    ``cfgs[cfg_rows[j]]`` (a sweep over options: one config row per distinct combination of
    them); ``out[j]`` gets its metric row. ``high``, ``low``, ``one``, ``many``: :func:`sweep_kind`."""
    for j in prange(sigs.shape[0]):
        _run_combination(open_, high, low, close, sigs[j], cfgs[cfg_rows[j]], weights, ppy,
                         out[j], one, many)


@njit(cache=True, parallel=True, error_model="numpy")
def sweep_crossover(open_, high, low, close, lines, fast_row, slow_row, cfgs, cfg_rows, weights,
                    ppy, out, one, many):
    """A crossover sweep: combination ``j`` trades the cross of ``lines[fast_row[j]]`` over
    ``lines[slow_row[j]]`` (precomputed averages, one per window) with the options of
    ``cfgs[cfg_rows[j]]``. The signals are made inside the parallel loop, one combination at
    a time, so no batch of signals is ever stored. ``high``, ``low``, ``one``, ``many``: :func:`sweep_kind`."""
    for j in prange(fast_row.shape[0]):
        sig = crossover(lines[fast_row[j]], lines[slow_row[j]])
        _run_combination(open_, high, low, close, sig, cfgs[cfg_rows[j]], weights, ppy, out[j],
                         one, many)


# combinations per task of the parallel loop: their state arrays are allocated once
_BLOCK = 32


@njit(cache=True, parallel=True, error_model="numpy")
def sweep_cross1(open_, high, low, close, lines, fast_row, slow_row, cfgs, cfg_rows, weight, ppy,
                 out):
    """A crossover sweep of one symbol (``open_``/``close`` 1-d, no NaN close, ``lines`` NaN
    only in a warm-up prefix): combination ``j`` trades the cross of ``lines[fast_row[j]]``
    over ``lines[slow_row[j]]`` on ``simulate1`` with the options of ``cfgs[cfg_rows[j]]``,
    crossing the lines bar by bar (no signal array); ``out[j]`` gets its metric row, equal to
    ``sweep_crossover``'s. ``high``/``low`` (1-d) when some combination has a stop, else None
    (the sweep without stops compiles none of their code)."""
    n_combos = fast_row.shape[0]
    n_blocks = (n_combos + _BLOCK - 1) // _BLOCK
    n_bars = close.shape[0]
    no_eq = np.empty(0)
    no_log = np.empty((0, L_N))
    start = np.int64(0)
    detail = np.bool_(False)
    for b in prange(n_blocks):
        acct = np.empty(A_N)
        pos = np.empty((1, P_N))
        acc = np.empty(M_N_ACC)
        for j in range(b * _BLOCK, min(n_combos, (b + 1) * _BLOCK)):
            cfg = cfgs[cfg_rows[j]]
            cash0 = cfg[C_CASH]
            _reset_state(cash0, acct, pos, acc)
            simulate1(open_, high, low, close, None, lines[fast_row[j]], lines[slow_row[j]],
                      start, n_bars, cfg, weight, acct, pos, acc, detail, no_eq, no_log)
            finalize(acc, acct, cash0, 1.0 if pos[0, P_UNITS] != 0.0 else 0.0, ppy, out[j])
