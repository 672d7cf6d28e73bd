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
    acct = np.zeros(A_N)
    acct[A_CASH] = cash
    pos = np.zeros((n_symbols, P_N))
    pos[:, P_LAST] = np.nan
    pos[:, P_SL] = np.nan
    pos[:, P_TP] = np.nan
    acc = np.zeros(M_N_ACC)
    acc[M_PEAK] = cash
    acc[M_PREV] = cash
    acc[M_LAST] = cash
    acc[M_BEST] = -np.inf
    acc[M_WORST] = np.inf
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
def _record_trade(acc, pnl, ret):
    acc[M_TRADES] += 1.0
    if pnl > 0:
        acc[M_WINS] += 1.0
        acc[M_GROSS_PROFIT] += pnl
    elif pnl < 0:
        acc[M_GROSS_LOSS] -= pnl
    acc[M_SUM_RET] += ret
    acc[M_SUM_LOG] += np.log1p(ret) if ret > -1.0 else np.nan
    if ret > acc[M_BEST]:
        acc[M_BEST] = ret
    if ret < acc[M_WORST]:
        acc[M_WORST] = ret


@njit(cache=True, error_model="numpy")
def _entry_size(direction, price, equity, available, weight, cfg):
    """The float arithmetic of an entry: (fill price, signed units, commission); units 0.0
    when the order cannot buy one unit (whole) or anything (fractional): a rejection."""
    slip = cfg[C_SLIP]
    fill = price * (1.0 + slip) if direction > 0 else price * (1.0 - slip)
    budget = weight * equity
    if budget > available:
        budget = available
    c = cfg[C_COMM]
    fixed = cfg[C_FIXED]
    if cfg[C_WHOLE] > 0:
        f = cfg[C_SIZE] if cfg[C_SIZE] < FULL else FULL
        # backtesting.py: units = margin * size // (price + commission(size, price) / size),
        # the same floats when there is no fixed fee. The fixed fee is paid once per order, so
        # it comes off the budget (backtesting.py divides it by the size fraction instead).
        per_unit = fill + (f * fill * c) / f
        spend = budget * f - fixed
        units = spend // per_unit if spend > 0 else 0.0
        ok = units >= 1.0
    else:
        spend = budget * cfg[C_SIZE] - fixed
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
        log[row, L_SYMBOL] = s
        log[row, L_SIZE] = units
        log[row, L_ENTRY_BAR] = pos[s, P_ENTRY_BAR]
        log[row, L_EXIT_BAR] = bar
        log[row, L_ENTRY_PRICE] = entry
        log[row, L_EXIT_PRICE] = fill
        log[row, L_PNL] = pnl
        log[row, L_RETURN] = ret
        log[row, L_COMMISSION] = total_comm
        log[row, L_REASON] = reason
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
    fill, units, comm = _entry_size(direction, price, equity, equity - used, weights[s], cfg)
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
    m_peak = acc[M_PEAK]
    m_max_dd = acc[M_MAX_DD]
    m_dd_len = acc[M_DD_LEN]
    m_max_dd_len = acc[M_MAX_DD_LEN]
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
        # a flat bar (nothing held, nothing filled) has a return of exactly 0: no division
        r = 0.0 if equity == m_prev else (equity / m_prev - 1.0 if m_prev != 0.0 else 0.0)
        m_n += 1.0
        m_sum += r
        m_sum2 += r * r
        if r < 0.0:
            m_down2 += r * r
        if equity >= m_peak:
            m_peak = equity
            m_dd_len = 0.0
        else:
            m_dd_len += 1.0
            dd = equity / m_peak - 1.0
            if dd < m_max_dd:
                m_max_dd = dd
            if m_dd_len > m_max_dd_len:
                m_max_dd_len = m_dd_len
        if exposed:
            m_exposed += 1.0
        m_prev = equity
        if detail:
            equity_out[i] = equity
    acc[M_N] = m_n
    acc[M_SUM] = m_sum
    acc[M_SUM2] = m_sum2
    acc[M_DOWN2] = m_down2
    acc[M_PEAK] = m_peak
    acc[M_MAX_DD] = m_max_dd
    acc[M_DD_LEN] = m_dd_len
    acc[M_MAX_DD_LEN] = m_max_dd_len
    acc[M_EXPOSED] = m_exposed
    acc[M_PREV] = m_prev
    acc[M_LAST] = m_prev
    return reached




@njit(cache=True, error_model="numpy")
def simulate1(open_, high, low, close, sig, start, stop, cfg, weights, acct, pos, acc,
              detail, equity_out, log):
    """``simulate`` for one symbol, with the per-bar state in locals.

    The same rules and the same float operations as :func:`simulate` (fills, stops and
    closes go through the same ``_fill_orders``/``_check_stops``/``_close``); only the
    bookkeeping between events is lighter, which makes a single-symbol bar about 3x cheaper.
    ``tests/test_engine_chunks.py`` checks both give identical results.
    """
    # symbol 0 and "gap allowed" as variables, not literals: a literal argument compiles
    # another specialisation of the callee (cold start time)
    ZERO = np.int64(0)
    ALWAYS = np.bool_(True)
    fill_close = cfg[C_FILL_CLOSE] > 0
    has_stops = cfg[C_SL] > 0 or cfg[C_TP] > 0
    close_at_end = cfg[C_CLOSE_AT_END] > 0
    last_bar = int(cfg[C_N_TOTAL]) - 1
    # np.empty, not np.zeros, for all three: every element is written before it is read, and
    # one allocation signature compiles once (cold start time)
    marks = np.empty(1)
    orders = np.empty(1)
    prices = np.empty(1)
    cash = acct[A_CASH]
    units = pos[0, P_UNITS]
    last = pos[0, P_LAST]
    pending = pos[0, P_PENDING]
    ruined = acct[A_RUINED] > 0
    m_n = acc[M_N]
    m_sum = acc[M_SUM]
    m_sum2 = acc[M_SUM2]
    m_down2 = acc[M_DOWN2]
    m_peak = acc[M_PEAK]
    m_max_dd = acc[M_MAX_DD]
    m_dd_len = acc[M_DD_LEN]
    m_max_dd_len = acc[M_MAX_DD_LEN]
    m_exposed = acc[M_EXPOSED]
    m_prev = acc[M_PREV]
    reached = stop
    i = start
    while i < stop:
        if detail and acct[A_LOG_ROWS] + 3 > log.shape[0]:
            reached = i
            break
        if ruined:
            equity = 0.0
            exposed = False
        else:
            c = close[0, i]
            if c == c:
                if not fill_close:
                    if pending != 0.0:
                        prices[0] = open_[0, i]
                        marks[0] = prices[0]
                        orders[0] = pending
                        pending = 0.0
                        pos[0, P_PENDING] = 0.0
                        pos[0, P_LAST] = last
                        _fill_orders(prices, orders, i, cfg, acct, pos, acc, weights, marks,
                                     detail, log)
                        units = pos[0, P_UNITS]
                        cash = acct[A_CASH]
                    if has_stops and units != 0.0 and _touched(
                            units, pos[0, P_SL], pos[0, P_TP], high[0, i], low[0, i]):
                        gap_ok = pos[0, P_ENTRY_BAR] != i
                        _check_stops(ZERO, i, open_[0, i], high[0, i], low[0, i], gap_ok, cfg,
                                     acct, pos, acc, detail, log)
                        units = pos[0, P_UNITS]
                        cash = acct[A_CASH]
                    last = c
                    if sig[0, i] != 0:
                        pending = sig[0, i]
                else:
                    if has_stops and units != 0.0 and _touched(
                            units, pos[0, P_SL], pos[0, P_TP], high[0, i], low[0, i]):
                        _check_stops(ZERO, i, open_[0, i], high[0, i], low[0, i], ALWAYS, cfg,
                                     acct, pos, acc, detail, log)
                        units = pos[0, P_UNITS]
                        cash = acct[A_CASH]
                    last = c
                    if sig[0, i] != 0:
                        prices[0] = c
                        marks[0] = c
                        orders[0] = sig[0, i]
                        pos[0, P_LAST] = c
                        _fill_orders(prices, orders, i, cfg, acct, pos, acc, weights, marks,
                                     detail, log)
                        units = pos[0, P_UNITS]
                        cash = acct[A_CASH]
            if i == last_bar and close_at_end and units != 0.0:
                pos[0, P_LAST] = last
                _close(ZERO, last, i, np.int64(R_END), cfg, acct, pos, acc, detail, log)
                units = 0.0
                cash = acct[A_CASH]
            equity = cash
            exposed = units != 0.0
            if exposed:
                equity += units * last
                if equity <= 0.0:
                    pos[0, P_LAST] = last
                    _close(ZERO, last, i, np.int64(R_RUIN), cfg, acct, pos, acc, detail, log)
                    pending = 0.0
                    acct[A_CASH] = 0.0
                    acct[A_RUINED] = 1.0
                    ruined = True
                    units = 0.0
                    cash = 0.0
                    equity = 0.0
                    exposed = False
        # the same streaming statistics as in simulate()
        r = 0.0 if equity == m_prev else (equity / m_prev - 1.0 if m_prev != 0.0 else 0.0)
        m_n += 1.0
        m_sum += r
        m_sum2 += r * r
        if r < 0.0:
            m_down2 += r * r
        if equity >= m_peak:
            m_peak = equity
            m_dd_len = 0.0
        else:
            m_dd_len += 1.0
            dd = equity / m_peak - 1.0
            if dd < m_max_dd:
                m_max_dd = dd
            if m_dd_len > m_max_dd_len:
                m_max_dd_len = m_dd_len
        if exposed:
            m_exposed += 1.0
        m_prev = equity
        if detail:
            equity_out[i] = equity
        i += 1
        # -- then the bars on which nothing can happen but the marking to market (no order
        # to fill, no signal, no stop to watch, a bar for the symbol, not the last bar), in
        # a tight loop: the same statistics, minus the operations whose result is known
        # (an unchanged equity adds exactly 0 to the sums; a drawdown no deeper than one
        # already seen since the peak cannot be a new maximum, `equity / peak - 1` being
        # monotone in equity)
        if ruined or pending != 0.0 or has_stops:
            continue
        j = i
        end = stop if stop < last_bar else last_bar
        dd_len = int(m_dd_len)
        max_dd_len = int(m_max_dd_len)
        # the bar just done measured its drawdown against the current peak
        low_seen = m_prev if m_prev < m_peak else np.inf
        while j < end:
            c = close[0, j]
            if c != c or sig[0, j] != 0:
                break
            equity = cash
            if units != 0.0:
                equity += units * c
                if not equity > 0.0:
                    break  # ruin: the full path handles it
            last = c
            if equity != m_prev:
                r = equity / m_prev - 1.0 if m_prev != 0.0 else 0.0
                m_sum += r
                r2 = r * r
                m_sum2 += r2
                if r < 0.0:
                    m_down2 += r2
            if equity >= m_peak:
                m_peak = equity
                dd_len = 0
                low_seen = np.inf
            else:
                dd_len += 1
                if equity < low_seen:
                    dd = equity / m_peak - 1.0
                    if dd < m_max_dd:
                        m_max_dd = dd
                    low_seen = equity
                if dd_len > max_dd_len:
                    max_dd_len = dd_len
            m_prev = equity
            if detail:
                equity_out[j] = equity
            j += 1
        m_n += j - i
        if units != 0.0:
            m_exposed += j - i
        m_dd_len = float(dd_len)
        m_max_dd_len = float(max_dd_len)
        i = j
    pos[0, P_LAST] = last
    pos[0, P_PENDING] = pending
    acc[M_N] = m_n
    acc[M_SUM] = m_sum
    acc[M_SUM2] = m_sum2
    acc[M_DOWN2] = m_down2
    acc[M_PEAK] = m_peak
    acc[M_MAX_DD] = m_max_dd
    acc[M_DD_LEN] = m_dd_len
    acc[M_MAX_DD_LEN] = m_max_dd_len
    acc[M_EXPOSED] = m_exposed
    acc[M_PREV] = m_prev
    acc[M_LAST] = m_prev
    return reached


@njit(cache=True, error_model="numpy")
def _run_combination(open_, high, low, close, sig, cfg, weights, ppy, out_row):
    """One combination over all bars with fresh state, metrics only (no equity, no log)."""
    n_sym = close.shape[0]
    n_bars = close.shape[1]
    acct = np.zeros(A_N)
    acct[A_CASH] = cfg[C_CASH]
    pos = np.zeros((n_sym, P_N))
    for s in range(n_sym):
        pos[s, P_LAST] = np.nan
        pos[s, P_SL] = np.nan
        pos[s, P_TP] = np.nan
    acc = np.zeros(M_N_ACC)
    acc[M_PEAK] = cfg[C_CASH]
    acc[M_PREV] = cfg[C_CASH]
    acc[M_LAST] = cfg[C_CASH]
    acc[M_BEST] = -np.inf
    acc[M_WORST] = np.inf
    dummy_eq = np.empty(0)
    dummy_log = np.empty((0, L_N))
    if n_sym == 1:
        simulate1(open_, high, low, close, sig, 0, n_bars, cfg, weights, acct, pos, acc, False,
                  dummy_eq, dummy_log)
    else:
        simulate(open_, high, low, close, sig, 0, n_bars, cfg, weights, acct, pos, acc, False,
                 dummy_eq, dummy_log)
    open_count = 0.0
    for s in range(n_sym):
        if pos[s, P_UNITS] != 0.0:
            open_count += 1.0
    finalize(acc, acct, cfg[C_CASH], open_count, ppy, out_row)


@njit(cache=True, parallel=True, error_model="numpy")
def sweep_batch(open_, high, low, close, sigs, cfg, weights, ppy, out):
    """Run every combination of ``sigs`` (k, n_symbols, n_bars) over all bars, in parallel,
    keeping only streaming accumulators; ``out[k]`` gets each combination's metric row."""
    for j in prange(sigs.shape[0]):
        _run_combination(open_, high, low, close, sigs[j], cfg, weights, ppy, out[j])


@njit(cache=True, parallel=True, error_model="numpy")
def sweep_crossover(open_, high, low, close, lines, fast_row, slow_row, cfg, weights, ppy, out):
    """A crossover sweep: combination ``j`` trades the cross of ``lines[fast_row[j]]`` over
    ``lines[slow_row[j]]`` (precomputed averages, one per window). The signals are made inside
    the parallel loop, one combination at a time, so no batch of signals is ever stored."""
    for j in prange(fast_row.shape[0]):
        sig = crossover(lines[fast_row[j]], lines[slow_row[j]])
        _run_combination(open_, high, low, close, sig, cfg, weights, ppy, out[j])


# --- the crossover sweep of one symbol -------------------------------------------------------
#
# The most common sweep (a crossover grid on one symbol, no stops) runs on a fused kernel: the
# crossover is taken bar by bar inside the simulation loop (no signal array), the position
# lives in scalars, fills use the same float arithmetic as the general kernel
# (`_exit_fill`/`_entry_size`/`_record_trade`), and the streaming metrics skip the work whose
# result is known (a bar whose equity did not change adds exactly 0 to the sums; a drawdown
# is measured only when equity makes a new low since the last peak, since the drawdown
# `equity / peak - 1` is monotone in equity). Rows equal `simulate1`'s bit for bit
# (tests/test_engine_sweep.py compares them on many random configurations).


@njit(cache=True, error_model="numpy")
def _exit1(units, price, entry, entry_comm, cfg, acct, acc):
    """Close one symbol's position of ``units`` at ``price`` (``_close`` without the position
    table and the log); returns the cash it brings in."""
    fill, comm, _, pnl, ret = _exit_fill(units, price, entry, entry_comm, cfg[C_SLIP],
                                         cfg[C_COMM], cfg[C_FIXED])
    acct[A_COMMISSIONS] += comm
    _record_trade(acc, pnl, ret)
    return units * fill - comm


@njit(cache=True, error_model="numpy")
def _trade1(direction, price, units, cash, entry, entry_comm, cfg, weight, acct, acc):
    """One symbol's order at ``price`` (``_fill_orders`` for a single symbol): close an
    opposite position, then open in ``direction`` if flat (and allowed). Returns the new
    (units, cash, entry price, entry commission)."""
    if price != price:
        return units, cash, entry, entry_comm
    if (direction > 0 and units < 0) or (direction < 0 and units > 0):
        cash += _exit1(units, price, entry, entry_comm, cfg, acct, acc)
        units = 0.0
        entry_comm = 0.0
    if units == 0.0 and (direction > 0 or cfg[C_SHORT] > 0):
        d = 1.0 if direction > 0 else -1.0
        fill, new_units, comm = _entry_size(d, price, cash, cash, weight, cfg)
        if new_units == 0.0:
            acct[A_REJECTED] += 1.0
        else:
            cash -= new_units * fill + comm
            acct[A_COMMISSIONS] += comm
            units = new_units
            entry = fill
            entry_comm = comm
    return units, cash, entry, entry_comm


@njit(cache=True, error_model="numpy")
def _cross1(open_, close, fast, slow, cfg, weight, acct, acc):
    """All bars of one symbol (no NaN close, no stops) trading the cross of ``fast`` over
    ``slow``; fills ``acct``/``acc`` as ``simulate1`` would and returns the units held at the
    end."""
    n = close.shape[0]
    fill_close = cfg[C_FILL_CLOSE] > 0
    close_at_end = cfg[C_CLOSE_AT_END] > 0
    allow_short = cfg[C_SHORT] > 0
    last_bar = int(cfg[C_N_TOTAL]) - 1
    cash = acct[A_CASH]
    units = 0.0
    entry = 0.0
    entry_comm = 0.0
    pending = 0.0
    ruined = False
    pa = np.nan
    pb = np.nan
    m_sum = acc[M_SUM]
    m_sum2 = acc[M_SUM2]
    m_down2 = acc[M_DOWN2]
    m_peak = acc[M_PEAK]
    m_max_dd = acc[M_MAX_DD]
    m_prev = acc[M_PREV]
    # bar counts as integers: a float += 1.0 chain would cost 4 cycles a bar (exact either way)
    dd_len = int(acc[M_DD_LEN])
    max_dd_len = int(acc[M_MAX_DD_LEN])
    n_exposed = 0
    # the lowest equity since the last peak; its drawdown goes into m_max_dd (and the
    # length of the drawdown into max_dd_len) when the drawdown ends: a new peak or the end
    # of the data. The depth `equity / peak - 1` is monotone in equity, so this is the same
    # value, computed once per drawdown instead of at every new low
    low_seen = np.inf
    i = 0
    while i < n:
        # -- bar i through every rule (fills, signals, end of data, ruin) ----------------
        if ruined:
            equity = 0.0
            exposed = False
        else:
            c = close[i]
            if pending != 0.0:
                units, cash, entry, entry_comm = _trade1(pending, open_[i], units, cash, entry,
                                                         entry_comm, cfg, weight, acct, acc)
                pending = 0.0
            f = fast[i]
            s = slow[i]
            if f == f and s == s:
                sig = 0.0
                if pa < pb and f > s:
                    sig = 1.0
                elif pa > pb and f < s:
                    sig = -1.0
                pa = f
                pb = s
                if sig != 0.0:
                    if fill_close:
                        units, cash, entry, entry_comm = _trade1(sig, c, units, cash, entry,
                                                                 entry_comm, cfg, weight, acct,
                                                                 acc)
                    else:
                        pending = sig
            if i == last_bar and close_at_end and units != 0.0:
                cash += _exit1(units, c, entry, entry_comm, cfg, acct, acc)
                units = 0.0
            equity = cash
            exposed = units != 0.0
            if exposed:
                equity += units * c
                if equity <= 0.0:
                    # ruin: close at this close, the account is empty, nothing trades any more
                    _exit1(units, c, entry, entry_comm, cfg, acct, acc)
                    acct[A_RUINED] = 1.0
                    ruined = True
                    units = 0.0
                    cash = 0.0
                    equity = 0.0
                    exposed = False
        # simulate1's streaming statistics, minus the operations whose result is known:
        # an unchanged equity adds exactly 0 to the sums, and a drawdown no deeper than one
        # already seen since the peak cannot be a new maximum
        if equity != m_prev:
            r = equity / m_prev - 1.0 if m_prev != 0.0 else 0.0
            m_sum += r
            r2 = r * r
            m_sum2 += r2
            if r < 0.0:
                m_down2 += r2
        if equity >= m_peak:
            # the drawdown since the old peak ends: its depth is its lowest equity's
            if low_seen < m_peak:
                dd = low_seen / m_peak - 1.0
                if dd < m_max_dd:
                    m_max_dd = dd
            if dd_len > max_dd_len:
                max_dd_len = dd_len
            m_peak = equity
            dd_len = 0
            low_seen = np.inf
        else:
            dd_len += 1
            low_seen = min(low_seen, equity)
        if exposed:
            n_exposed += 1
        m_prev = equity
        i += 1
        # -- then the bars up to the next crossover in one tight loop: nothing can happen
        # on them but the marking to market (the last bar always takes the full path)
        if ruined or pending != 0.0:
            continue
        j = i
        if units == 0.0:
            # flat: equity stays `cash`, each bar adds a zero return; long only, a sell
            # signal changes nothing when flat, so only a buy ends the stretch
            while j < last_bar:
                f = fast[j]
                s = slow[j]
                if f == f and s == s:
                    if (pa < pb and f > s) or (allow_short and pa > pb and f < s):
                        break
                    pa = f
                    pb = s
                j += 1
            if j > i and m_prev < m_peak:
                dd_len += j - i
        else:
            while j < last_bar:
                f = fast[j]
                s = slow[j]
                if f == f and s == s and ((pa < pb and f > s) or (pa > pb and f < s)):
                    break
                equity = cash + units * close[j]
                if not equity > 0.0:
                    break  # ruin: the full path handles it
                if f == f and s == s:
                    pa = f
                    pb = s
                # m_prev > 0 here (a held position's equity was positive, or ruin would
                # have ended it), and an unchanged equity gives r = +0.0 exactly, which adds
                # nothing to the sums (never -0.0): no branch needed on either
                r = equity / m_prev - 1.0
                m_sum += r
                r2 = r * r
                m_sum2 += r2
                # a select, not a branch (the sign of a bar's return is a coin toss)
                m_down2 += r2 if r < 0.0 else 0.0
                if equity >= m_peak:
                    if low_seen < m_peak:
                        dd = low_seen / m_peak - 1.0
                        if dd < m_max_dd:
                            m_max_dd = dd
                    if dd_len > max_dd_len:
                        max_dd_len = dd_len
                    m_peak = equity
                    dd_len = 0
                    low_seen = np.inf
                else:
                    dd_len += 1
                    low_seen = min(low_seen, equity)
                m_prev = equity
                j += 1
            n_exposed += j - i
        i = j
    # the drawdown still running at the end
    if low_seen < m_peak:
        dd = low_seen / m_peak - 1.0
        if dd < m_max_dd:
            m_max_dd = dd
    if dd_len > max_dd_len:
        max_dd_len = dd_len
    acct[A_CASH] = cash
    acc[M_N] += n
    acc[M_SUM] = m_sum
    acc[M_SUM2] = m_sum2
    acc[M_DOWN2] = m_down2
    acc[M_PEAK] = m_peak
    acc[M_MAX_DD] = m_max_dd
    acc[M_DD_LEN] = dd_len
    acc[M_MAX_DD_LEN] = max_dd_len
    acc[M_EXPOSED] += n_exposed
    acc[M_PREV] = m_prev
    acc[M_LAST] = m_prev
    return units


# combinations per task of the parallel loop: their scratch arrays are allocated once
_BLOCK = 32


@njit(cache=True, parallel=True, error_model="numpy")
def sweep_cross1(open_, close, lines, fast_row, slow_row, cfg, weight, ppy, out):
    """A crossover sweep of one symbol without stops (``open_``/``close`` 1-d, no NaN close):
    combination ``j`` trades the cross of ``lines[fast_row[j]]`` over ``lines[slow_row[j]]``;
    ``out[j]`` gets its metric row, equal to ``sweep_crossover``'s."""
    n_combos = fast_row.shape[0]
    n_blocks = (n_combos + _BLOCK - 1) // _BLOCK
    cash0 = cfg[C_CASH]
    for b in prange(n_blocks):
        acct = np.empty(A_N)
        acc = np.empty(M_N_ACC)
        for j in range(b * _BLOCK, min(n_combos, (b + 1) * _BLOCK)):
            acct[:] = 0.0
            acct[A_CASH] = cash0
            acc[:] = 0.0
            acc[M_PEAK] = cash0
            acc[M_PREV] = cash0
            acc[M_LAST] = cash0
            acc[M_BEST] = -np.inf
            acc[M_WORST] = np.inf
            units = _cross1(open_, close, lines[fast_row[j]], lines[slow_row[j]], cfg, weight,
                            acct, acc)
            finalize(acc, acct, cash0, 1.0 if units != 0.0 else 0.0, ppy, out[j])
