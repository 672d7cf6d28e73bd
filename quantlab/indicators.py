"""Numba indicators over ``(n_symbols, n_bars)`` arrays.

Every indicator walks each symbol's row over its *valid* bars only: a NaN (no bar for that
symbol on that date) is skipped, so a window of ``n`` always means ``n`` real bars of that
symbol, and the output is NaN where the input is NaN or the window is not full yet.

``sma`` reproduces ``pandas.Series.rolling(n).mean()`` bit for bit (same running sum with
Kahan compensation, same reset rules), because the peers (backtesting.py's ``SMA`` helper and
most notebooks) compute their averages with pandas, and a crossover that compares two nearly
equal averages must flip on the same bar as theirs.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from typing import Any, ParamSpec, TypeVar, cast

import numpy as np
from numba import njit

from quantlab.errors import ConfigError
from quantlab.settings import env_number


@njit(cache=True)
def _sma_pair(x, at, k, dense, n0, n1, o0, o1):
    """pandas' roll_mean (add/remove with separate Kahan compensations, and the "same value n
    times" rule that returns that value exactly) over the valid values ``x[at[:k]]``, for
    windows ``n0`` and ``n1`` at once: each average is a chain of dependent additions, so two
    interleaved chains take about the time of one. ``n1 == 0``: ``n0`` only. ``dense``: no
    NaN in ``x`` (``at`` is not used, position ``j`` is bar ``j``)."""
    both = n1 > 0
    s0 = 0.0
    ca0 = 0.0
    cr0 = 0.0
    nobs0 = 0
    neg0 = 0
    s1 = 0.0
    ca1 = 0.0
    cr1 = 0.0
    nobs1 = 0
    neg1 = 0
    same = 0
    prev_value = np.nan
    for j in range(k):
        i = j if dense else at[j]
        val = x[i]
        # the run of equal values is the same for both windows
        if val == prev_value:
            same += 1
        else:
            same = 1
        prev_value = val
        # pandas removes the value leaving the window first, then adds the new one
        if j >= n0:
            old = x[j - n0] if dense else x[at[j - n0]]
            nobs0 -= 1
            y = -old - cr0
            t = s0 + y
            cr0 = t - s0 - y
            s0 = t
            if old < 0.0:
                neg0 -= 1
        nobs0 += 1
        y = val - ca0
        t = s0 + y
        ca0 = t - s0 - y
        s0 = t
        if val < 0.0:
            neg0 += 1
        if nobs0 >= n0:
            result = s0 / nobs0
            if same >= nobs0:
                result = val
            elif (neg0 == 0 and result < 0.0) or (neg0 == nobs0 and result > 0.0):
                result = 0.0
            o0[i] = result
        else:
            o0[i] = np.nan
        if both:
            if j >= n1:
                old = x[j - n1] if dense else x[at[j - n1]]
                nobs1 -= 1
                y = -old - cr1
                t = s1 + y
                cr1 = t - s1 - y
                s1 = t
                if old < 0.0:
                    neg1 -= 1
            nobs1 += 1
            y = val - ca1
            t = s1 + y
            ca1 = t - s1 - y
            s1 = t
            if val < 0.0:
                neg1 += 1
            if nobs1 >= n1:
                result = s1 / nobs1
                if same >= nobs1:
                    result = val
                elif (neg1 == 0 and result < 0.0) or (neg1 == nobs1 and result > 0.0):
                    result = 0.0
                o1[i] = result
            else:
                o1[i] = np.nan


@njit(cache=True)
def _sma_dense_rows(x, n0, n1, out0, out1):
    """``_sma_rows`` for rows without NaN, in one compiled loop."""
    no_positions = np.empty(0, np.int64)
    # `dense` as a variable, never a literal: a literal would compile a second
    # specialisation of _sma_pair (cold start time)
    dense = x.shape[1] >= 0
    for r in range(x.shape[0]):
        _sma_pair(x[r], no_positions, x.shape[1], dense, n0, n1, out0[r], out1[r])


_NO_POSITIONS = np.empty(0, np.int64)


def _sma_rows(x: np.ndarray, n0: int, n1: int, out0: np.ndarray, out1: np.ndarray) -> None:
    """``out0 = sma(x, n0)`` and, if ``n1 > 0``, ``out1 = sma(x, n1)``, in one pass per row.
    Rows with gaps (NaN) are handled here, row by row, so that the usual case compiles
    only the dense loop (cold start time)."""
    gaps = np.isnan(x).any(axis=1)
    if len(x) > 1 and not gaps.any():
        _sma_dense_rows(x, n0, n1, out0, out1)
        return
    # one symbol (or rows with gaps): row by row from here; one symbol then compiles nothing
    # but _sma_pair
    for r in range(x.shape[0]):
        row = x[r]
        if not gaps[r]:
            _sma_pair(row, _NO_POSITIONS, len(row), True, n0, n1, out0[r], out1[r])
            continue
        # the window slides over the valid values only
        positions = np.flatnonzero(row == row)
        out0[r] = np.nan
        out1[r] = np.nan
        _sma_pair(row, positions, len(positions), False, n0, n1, out0[r], out1[r])


def sma(x: np.ndarray, n: int) -> np.ndarray:
    """Simple moving average of the last ``n`` valid bars: ``mean(x[t-n+1..t])``; bit for bit
    pandas' ``rolling(n).mean()``."""
    out = np.empty_like(x)
    _sma_rows(x, int(n), 0, out, out)
    return out


def sma_pair(x: np.ndarray, n0: int, n1: int) -> tuple[np.ndarray, np.ndarray]:
    """``(sma(x, n0), sma(x, n1))`` computed together, in about the time of one."""
    out0 = np.empty_like(x)
    out1 = np.empty_like(x)
    _sma_rows(x, int(n0), int(n1), out0, out1)
    return out0, out1


@njit(cache=True)
def ema(x: np.ndarray, n: int) -> np.ndarray:
    """Exponential moving average, ``alpha = 2/(n+1)``, seeded with the first valid value
    (pandas ``ewm(span=n, adjust=False)``), NaN for the first ``n-1`` valid bars (warm-up)."""
    out = np.empty_like(x)
    alpha = 2.0 / (n + 1.0)
    for r in range(x.shape[0]):
        count = 0
        value = np.nan
        for i in range(x.shape[1]):
            v = x[r, i]
            if np.isnan(v):
                out[r, i] = np.nan
                continue
            if count == 0:
                value = v
            else:
                value = value + alpha * (v - value)
            count += 1
            out[r, i] = value if count >= n else np.nan
    return out


@njit(cache=True)
def rolling_std(x: np.ndarray, n: int) -> np.ndarray:
    """Sample standard deviation (ddof=1) of the last ``n`` valid bars (two-pass per window).

    Each window's two sums are chains of dependent additions, in window order; four windows
    are summed at once (four independent chains, each in the same order as alone: the same
    bits), which takes about the time of one."""
    out = np.full_like(x, np.nan)
    for r in range(x.shape[0]):
        pos = np.empty(x.shape[1], np.int64)
        k = 0
        for i in range(x.shape[1]):
            if not np.isnan(x[r, i]):
                pos[k] = i
                k += 1
        v = np.empty(k)  # the row's valid values, gathered once
        for q in range(k):
            v[q] = x[r, pos[q]]
        j = n - 1
        while j + 3 < k:  # the windows ending at j, j+1, j+2, j+3
            m0 = 0.0
            m1 = 0.0
            m2 = 0.0
            m3 = 0.0
            for q in range(j - n + 1, j + 1):
                m0 += v[q]
                m1 += v[q + 1]
                m2 += v[q + 2]
                m3 += v[q + 3]
            m0 /= n
            m1 /= n
            m2 /= n
            m3 /= n
            s0 = 0.0
            s1 = 0.0
            s2 = 0.0
            s3 = 0.0
            for q in range(j - n + 1, j + 1):
                d0 = v[q] - m0
                s0 += d0 * d0
                d1 = v[q + 1] - m1
                s1 += d1 * d1
                d2 = v[q + 2] - m2
                s2 += d2 * d2
                d3 = v[q + 3] - m3
                s3 += d3 * d3
            out[r, pos[j]] = np.sqrt(s0 / (n - 1)) if n > 1 else 0.0
            out[r, pos[j + 1]] = np.sqrt(s1 / (n - 1)) if n > 1 else 0.0
            out[r, pos[j + 2]] = np.sqrt(s2 / (n - 1)) if n > 1 else 0.0
            out[r, pos[j + 3]] = np.sqrt(s3 / (n - 1)) if n > 1 else 0.0
            j += 4
        for end in range(j, k):  # the last windows, one at a time
            mean = 0.0
            for q in range(end - n + 1, end + 1):
                mean += v[q]
            mean /= n
            ss = 0.0
            for q in range(end - n + 1, end + 1):
                d = v[q] - mean
                ss += d * d
            out[r, pos[end]] = np.sqrt(ss / (n - 1)) if n > 1 else 0.0
    return out


@njit(cache=True)
def rsi(x: np.ndarray, n: int) -> np.ndarray:
    """Wilder's RSI: ``100 - 100/(1 + avg_gain/avg_loss)``, averages seeded with the simple mean
    of the first ``n`` changes and smoothed with ``alpha = 1/n``; NaN for the first ``n`` valid
    bars; 100 when there was no loss in the window."""
    out = np.full_like(x, np.nan)
    for r in range(x.shape[0]):
        prev = np.nan
        count = 0
        gain = 0.0
        loss = 0.0
        for i in range(x.shape[1]):
            v = x[r, i]
            if np.isnan(v):
                continue
            if np.isnan(prev):
                prev = v
                continue
            change = v - prev
            prev = v
            up = change if change > 0.0 else 0.0
            down = -change if change < 0.0 else 0.0
            count += 1
            if count <= n:
                gain += up / n
                loss += down / n
            else:
                gain = (gain * (n - 1) + up) / n
                loss = (loss * (n - 1) + down) / n
            if count >= n:
                out[r, i] = 100.0 if loss == 0.0 else 100.0 - 100.0 / (1.0 + gain / loss)
    return out


@njit(cache=True)
def crossover(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """+1 where ``a`` crosses above ``b`` (strictly: ``a[p] < b[p]`` and ``a[t] > b[t]``, with
    ``p`` the symbol's previous valid bar), -1 where it crosses below, else 0."""
    out = np.zeros(a.shape, np.int8)
    for r in range(a.shape[0]):
        _cross_row(a[r], b[r], out[r])
    return out


@njit(cache=True)
def _cross_row(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    pa = np.nan
    pb = np.nan
    for i in range(a.shape[0]):
        ca = a[i]
        cb = b[i]
        if np.isnan(ca) or np.isnan(cb):
            # no bar for this symbol, or a warm-up bar: not a comparison point
            continue
        if pa < pb and ca > cb:
            out[i] = 1
        elif pa > pb and ca < cb:
            out[i] = -1
        pa = ca
        pb = cb


@njit(cache=True)
def band_breakout(close: np.ndarray, mid: np.ndarray, sd: np.ndarray, k: float) -> np.ndarray:
    """+1 where close crosses above ``mid + k*sd``, -1 where it crosses below ``mid``."""
    out = np.zeros(close.shape, np.int8)
    for r in range(close.shape[0]):
        p_close = np.nan
        p_up = np.nan
        p_mid = np.nan
        for i in range(close.shape[1]):
            c = close[r, i]
            if np.isnan(c):
                continue
            up = mid[r, i] + k * sd[r, i]
            m = mid[r, i]
            if p_close <= p_up and c > up:
                out[r, i] = 1
            elif p_close >= p_mid and c < m:
                out[r, i] = -1
            p_close = c
            p_up = up
            p_mid = m
    return out


# -- memoised indicators (``ql.indicator``, ``ql.ind``) ----------------------------------------
#
# A user strategy is called once per combination of a sweep; an indicator inside it that depends
# on only some of the params (``zscore(bars.close[0], lookback)`` in a lookback x entry sweep)
# would be recomputed for every value of the others. ``@indicator`` remembers its results for
# the duration of one run or sweep (the engine opens the scope: see ``memo_scope``), keyed by
# the arguments: an array by *where its data lives* (the address of its first element, its
# shape, strides and dtype), so a fresh view of the same bars (``bars.close[0]`` on every call)
# is a hit without hashing the data, plus a guard of its values that notices data changed in
# place: a checksum of every value for the usual arrays (8-byte numbers laid out contiguously,
# as bars and their rows are), a sample of 16 values for others.
#
# Safety of an address as a key: the memo holds a reference to every root array (the buffer an
# argument views) that an entry names, so that buffer cannot be freed and its address reused by
# other data while an entry names it; the guard catches data changed in place; and the whole
# memo is emptied when a run or sweep starts and when it ends, so nothing outlives the data it
# was computed from.
#
# The lookup is paid by every combination of a sweep, hit or not: one Numba call per array
# gives its address and checksum (~0.3 us for a 2,000-bar row; ``__array_interface__`` alone
# costs ~1 us), and the array's root is looked for only when a result is stored.

MEMO_MAX_BYTES = 256 << 20
"""Default bound of the memo (results plus the input arrays it holds), per thread: least
recently used entries go first. ``QUANTLAB_INDICATOR_MEMO_MB`` overrides it."""

_SAMPLE = 16  # values sampled from an input array the checksum does not cover
_SCALARS = (int, float, complex, str, bytes, bool, type(None))
_PLAIN = frozenset(_SCALARS)  # exactly these types (a subclass goes the long way)
# the dtypes (by character) whose values the checksum reads as 64-bit words: float64, int64,
# uint64 (a dtype's ``char`` is cheaper to test than the dtype's hash)
_WORD_CHARS = "".join(sorted({np.dtype(t).char for t in (np.float64, np.int64, np.uint64,
                                                          np.longlong, np.ulonglong)}))


class _Uncacheable(Exception):
    """An argument the memo cannot key (a DataFrame, a list of arrays...): call through."""


@njit(cache=True, nogil=True)
def _address_and_checksum(a: np.ndarray) -> tuple[int, Any, Any]:
    """The address of ``a``'s first element and two checksums of all its values, read as
    64-bit words (``a``: C-contiguous, 8-byte items): their wrapping sum, which any change
    of one value alters, and the wrapping sum of each word times an odd weight that grows
    with its position, which values that trade places also alter (words ``a`` and ``b`` at
    ``i`` and ``j`` swapped change it by ``2 (a - b)(j - i)``, zero mod 2**64 only in
    contrived cases). The loop has no branch and vectorises."""
    words = a.reshape(a.size).view(np.uint64)
    total = np.uint64(0)
    placed = np.uint64(0)
    weight = np.uint64(1)
    for i in range(words.shape[0]):
        w = words[i]
        total += w
        placed += w * weight
        weight += np.uint64(2)
    return a.ctypes.data, total, placed


def _contiguous_words(shape: tuple[int, ...], strides: tuple[int, ...]) -> bool:
    """Whether the checksum can read an array of 8-byte numbers: C-contiguous, not empty, 1 or
    2 dimensions (judged from the shape and strides the key reads anyway: ``a.flags`` costs
    more)."""
    if len(shape) == 1:
        return strides[0] == 8 and shape[0] > 0
    return (len(shape) == 2 and strides[1] == 8 and strides[0] == 8 * shape[1]
            and shape[0] * shape[1] > 0)


def _root(a: np.ndarray) -> np.ndarray:
    """The array whose buffer ``a`` views (``a`` itself when it owns its data)."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


class IndicatorMemo:
    """One thread's memo of ``@indicator`` results (see the module notes above).

    ``computed`` counts the calls that ran the function, ``hits`` those answered from memory,
    ``bypassed`` those whose arguments could not be keyed (computed, not stored).
    """

    def __init__(self, max_bytes: int | None = None) -> None:
        self.max_bytes = max_bytes
        self._entries: dict[tuple[Any, ...], tuple[Any, Any, int]] = {}
        # id(root) -> [root, how many entries name it]
        self._roots: dict[int, list[Any]] = {}
        self._entry_roots: dict[tuple[Any, ...], tuple[int, ...]] = {}
        self.nbytes = 0
        self.depth = 0
        self.owner: object | None = None
        self._limit: int | None = None  # the environment's bound, read once per scope
        self.computed = 0
        self.hits = 0
        self.bypassed = 0

    @property
    def limit(self) -> int:
        if self.max_bytes is not None:
            return self.max_bytes
        if self._limit is None:
            mb = env_number("QUANTLAB_INDICATOR_MEMO_MB", MEMO_MAX_BYTES / (1 << 20),
                            minimum=0, example="512")
            self._limit = int(mb * (1 << 20))
        return self._limit

    @property
    def active(self) -> bool:
        return self.owner is not None

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self._roots.clear()
        self._entry_roots.clear()
        self.nbytes = 0

    def reset_counts(self) -> None:
        self.computed = self.hits = self.bypassed = 0

    # -- keys -------------------------------------------------------------------------------
    def _key_part(self, value: Any, arrays: list[np.ndarray], guards: list[Any]) -> Any:
        kind = type(value)
        if kind in _PLAIN:  # the usual parameter (a window, a threshold): first and fast
            return (kind, value)
        if isinstance(value, np.ndarray):
            shape, strides, dtype = value.shape, value.strides, value.dtype
            if dtype.char in _WORD_CHARS and _contiguous_words(shape, strides):
                address, total, placed = _address_and_checksum(value)
                guards.append((total, placed))
            else:
                address = value.__array_interface__["data"][0]
                guards.append(_sample(value))
            arrays.append(value)
            # while an entry holds the root no other buffer can sit at this address: the
            # address, shape, strides and dtype say which data it is, the guard its values
            return (address, shape, strides, dtype)
        if isinstance(value, np.generic):
            value = value.item()  # np.int64(20) and 20 are the same argument
        if isinstance(value, _SCALARS):
            return (type(value), value)
        if isinstance(value, tuple | list):
            return (type(value).__name__,
                    tuple(self._key_part(v, arrays, guards) for v in value))
        raise _Uncacheable

    # -- lookup -----------------------------------------------------------------------------
    def call_positional(self, func: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        """``call(func, args, {})`` for the usual call (positional numbers, strings and
        C-contiguous 8-byte arrays), inlined: every combination of a sweep pays this path, hit
        or not. The key and the guards are exactly ``call``'s; anything else goes to ``call``."""
        parts: list[Any] = [func]
        guards: list[Any] = []
        for a in args:
            kind = type(a)
            if kind in _PLAIN:
                parts.append((kind, a))
                continue
            if kind is not np.ndarray:
                return self.call(func, args, {})
            shape, strides, dtype = a.shape, a.strides, a.dtype
            # a series (bars.close[0]) tested here, other shapes by _contiguous_words
            if dtype.char not in _WORD_CHARS or not (
                    (len(shape) == 1 and strides[0] == 8 and shape[0] > 0)
                    or _contiguous_words(shape, strides)):
                return self.call(func, args, {})
            address, total, placed = _address_and_checksum(a)
            guards.append((total, placed))
            parts.append((address, shape, strides, dtype))
        key = tuple(parts)
        found = self._entries.pop(key, None)
        if found is not None:
            if found[0] == guards:
                self._entries[key] = found  # most recently used last
                self.hits += 1
                return found[1]
            self._forget(key, found)  # the same buffer holds other values now
        return self._compute(func, args, {}, key, guards,
                             [a for a in args if type(a) is np.ndarray])

    def call(self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
             ) -> Any:
        arrays: list[np.ndarray] = []
        guards: list[Any] = []
        part = self._key_part
        try:
            parts: list[Any] = [func]
            for a in args:  # (a loop, not a comprehension: no frame of its own)
                kind = type(a)
                parts.append((kind, a) if kind in _PLAIN else part(a, arrays, guards))
            key: tuple[Any, ...] = tuple(parts)
            if kwargs:
                # after a marker no positional part can equal (parts are tuples)
                key += ("**", *[(k, part(kwargs[k], arrays, guards)) for k in sorted(kwargs)])
            found = self._entries.pop(key, None)
        except (_Uncacheable, TypeError):  # TypeError: a value that cannot be hashed
            self.bypassed += 1
            self.computed += 1
            return func(*args, **kwargs)
        if found is not None:
            if found[0] == guards:
                self._entries[key] = found  # most recently used last
                self.hits += 1
                return found[1]
            self._forget(key, found)  # the same buffer holds other values now
        return self._compute(func, args, kwargs, key, guards, arrays)

    def _compute(self, func: Callable[..., Any], args: tuple[Any, ...],
                 kwargs: dict[str, Any], key: tuple[Any, ...], guards: list[Any],
                 arrays: list[np.ndarray]) -> Any:
        """A miss: call ``func``, keep its result under ``key`` with the arrays' roots."""
        roots = [_root(a) for a in arrays]
        value = _read_only(_not_an_input(func(*args, **kwargs), roots))
        self.computed += 1
        self._store(key, guards, value, roots)
        return value

    def _store(self, key: tuple[Any, ...], guard: Any, value: Any,
               roots: list[np.ndarray]) -> None:
        size = _nbytes(value)
        new_roots = {id(r): r for r in roots if id(r) not in self._roots}
        size_with_roots = size + sum(r.nbytes for r in new_roots.values())
        limit = self.limit
        if size_with_roots > limit:
            return  # larger than the whole memo: not kept
        while self._entries and self.nbytes + size_with_roots > limit:
            oldest = next(iter(self._entries))
            self._forget(oldest, self._entries.pop(oldest))
            # a root freed by that eviction may be one of ours: count it again
            new_roots = {id(r): r for r in roots if id(r) not in self._roots}
            size_with_roots = size + sum(r.nbytes for r in new_roots.values())
        self._entries[key] = (guard, value, size)
        ids = tuple(dict.fromkeys(id(r) for r in roots))
        for rid in ids:
            held = self._roots.get(rid)
            if held is None:
                root = new_roots[rid]
                self._roots[rid] = [root, 1]
                self.nbytes += root.nbytes
            else:
                held[1] += 1
        self._entry_roots[key] = ids
        self.nbytes += size

    def _forget(self, key: tuple[Any, ...], entry: tuple[Any, Any, int]) -> None:
        self.nbytes -= entry[2]
        for rid in self._entry_roots.pop(key, ()):
            held = self._roots[rid]
            held[1] -= 1
            if held[1] == 0:
                self.nbytes -= held[0].nbytes
                del self._roots[rid]


def _sample(a: np.ndarray) -> bytes:
    """A few values of ``a``, evenly spaced (first and last included), as bytes."""
    n = a.size
    if n <= _SAMPLE:
        return a.tobytes()
    if a.ndim == 1:  # a strided view, no index array
        step = (n - 1) // (_SAMPLE - 1)
        return a[::step].tobytes() + a[-1:].tobytes()
    at = _SAMPLE_AT.get(n)
    if at is None:
        at = _SAMPLE_AT[n] = np.linspace(0, n - 1, _SAMPLE).astype(np.intp)
    return a.flat[at].tobytes()


_SAMPLE_AT: dict[int, np.ndarray] = {}  # array size -> the positions sampled


def _nbytes(value: Any) -> int:
    if isinstance(value, tuple | list):
        return sum(_nbytes(v) for v in value) + 64
    return int(getattr(value, "nbytes", 0) or 64)


def _not_an_input(value: Any, roots: list[np.ndarray]) -> Any:
    """A result that views an input's data (``return x``, ``return x[n:]``) copied: made
    read-only below, it would otherwise lock the caller's own array."""
    if isinstance(value, np.ndarray):
        root = value
        while isinstance(root.base, np.ndarray):
            root = root.base
        if any(root is r for r in roots):
            return value.copy()
    elif isinstance(value, tuple):
        return tuple(_not_an_input(v, roots) for v in value)
    return value


def _read_only(value: Any) -> Any:
    """The result as shared by every caller: its arrays made read-only, so that a strategy that
    changes one in place fails loudly instead of changing what the next combination reads."""
    if isinstance(value, np.ndarray):
        value.flags.writeable = False
    elif isinstance(value, tuple):
        for v in value:
            if isinstance(v, np.ndarray):
                v.flags.writeable = False
    return value


_local = threading.local()


def current_memo() -> IndicatorMemo:
    """This thread's memo (each thread runs its own runs; a sandbox process has its own)."""
    memo = getattr(_local, "memo", None)
    if memo is None:
        memo = _local.memo = IndicatorMemo()
    return memo


def open_scope(owner: object) -> None:
    """Start the memo scope of run or sweep ``owner`` (the engine's ``Simulation``): an empty
    memo. Called again by the same owner (its next chunk) it keeps the memo; another owner in
    between (a second simulation advanced by the same thread) empties it first."""
    memo = current_memo()
    if memo.owner is not owner:
        memo.clear()
        memo.reset_counts()
        memo.owner = owner
        memo._limit = None


def close_scope(owner: object) -> None:
    """End ``owner``'s scope: the memo is emptied and releases the arrays it held."""
    memo = current_memo()
    if memo.owner is owner:
        memo.clear()
        memo.owner = None


@contextlib.contextmanager
def memo_scope() -> Iterator[IndicatorMemo]:
    """A memo scope for code outside the engine (a test, a script computing indicators in a
    loop): ``with memo_scope(): ...``; emptied when it ends."""
    owner = object()
    previous = current_memo().owner
    open_scope(owner)
    try:
        yield current_memo()
    finally:
        close_scope(owner)
        if previous is not None:
            current_memo().owner = previous


P = ParamSpec("P")
R = TypeVar("R")


def indicator(func: Callable[P, R]) -> Callable[P, R]:
    """Memoise an indicator function of arrays and parameters within a run or sweep.

    ::

        @ql.indicator
        def zscore(x, n):
            s = pd.Series(x)
            return ((s - s.rolling(n).mean()) / s.rolling(n).std()).to_numpy()

    Inside a backtest or sweep, calls with the same arguments compute once: arrays are the same
    argument when they view the same data (``bars.close[0]`` on each call is), numbers and
    strings when equal. Outside a run the function is simply called. The memo is emptied when a
    run starts and ends, holds at most ``QUANTLAB_INDICATOR_MEMO_MB`` (256 MB by default;
    least recently used out), and returns its arrays read-only (``z.copy()`` to modify one).
    Arguments it cannot key (a DataFrame, a dict) make the call compute without memo.
    """
    if getattr(func, "__wrapped_indicator__", False):
        return func

    @functools.wraps(func)
    def memoised(*args: P.args, **kwargs: P.kwargs) -> R:
        # (current_memo() inlined: this runs once per combination of a sweep)
        memo = getattr(_local, "memo", None)
        if memo is None or memo.owner is None:
            return func(*args, **kwargs)
        if kwargs:
            return cast(R, memo.call(func, args, kwargs))
        return cast(R, memo.call_positional(func, args))

    memoised.__wrapped_indicator__ = True  # type: ignore[attr-defined]
    return memoised


# -- the built-in indicators, public and memoised (``ql.ind``) ---------------------------------


@njit(cache=True)
def _atr_rows(high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int) -> np.ndarray:
    """Wilder's average true range over each row's valid bars (see ``BuiltinIndicators.atr``)."""
    out = np.full_like(close, np.nan)
    for r in range(close.shape[0]):
        prev_close = np.nan
        count = 0
        total = 0.0
        value = np.nan
        for i in range(close.shape[1]):
            h = high[r, i]
            lo = low[r, i]
            c = close[r, i]
            if np.isnan(h) or np.isnan(lo) or np.isnan(c):
                continue
            tr = h - lo
            if not np.isnan(prev_close):
                tr = max(tr, abs(h - prev_close), abs(lo - prev_close))
            prev_close = c
            count += 1
            if count < n:
                total += tr
                continue
            if count == n:
                value = (total + tr) / n  # seeded with the simple mean of the first n
            else:
                value = (value * (n - 1) + tr) / n
            out[r, i] = value
    return out


def _rows(x: Any) -> tuple[np.ndarray, bool]:
    """``x`` as a C-contiguous float64 ``(rows, bars)`` array, and whether it was one row."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        return np.ascontiguousarray(a[None, :]), True
    if a.ndim != 2:
        raise ConfigError(f"an indicator takes a series (n_bars,) or rows (n_symbols, n_bars), "
                          f"got an array of shape {a.shape}; pass bars.close[0] or bars.close",
                          field="x")
    return np.ascontiguousarray(a), False


def _window(n: Any) -> int:
    if isinstance(n, bool) or int(n) != n or int(n) < 1:
        raise ConfigError(f"an indicator window must be a whole number of bars >= 1, got {n!r}",
                          field="n")
    return int(n)


def _shaped(out: np.ndarray, one: bool) -> np.ndarray:
    return out[0] if one else out


class BuiltinIndicators:
    """QuantLab's indicators for your own strategies, as ``ql.ind.<name>`` (Numba, memoised like
    ``@ql.indicator`` within a run or sweep).

    Each takes a series ``(n_bars,)`` (``bars.close[0]``) or rows ``(n_symbols, n_bars)``
    (``bars.close``) and returns the same shape. A row's NaN bars (no bar for that symbol) are
    skipped: a window of ``n`` is ``n`` real bars, and the output is NaN on NaN bars and during
    the warm-up. Results are read-only arrays inside a run.
    """

    @staticmethod
    @indicator
    def sma(x: Any, n: int) -> np.ndarray:
        """Simple moving average: ``sma_t = (x_{t-n+1} + ... + x_t) / n``; bit for bit pandas'
        ``Series.rolling(n).mean()``."""
        a, one = _rows(x)
        return _shaped(sma(a, _window(n)), one)

    @staticmethod
    @indicator
    def ema(x: Any, n: int) -> np.ndarray:
        """Exponential moving average: ``ema_t = ema_{t-1} + alpha * (x_t - ema_{t-1})`` with
        ``alpha = 2 / (n + 1)``, seeded with the first value (pandas ``ewm(span=n,
        adjust=False).mean()``), NaN for the first ``n - 1`` bars."""
        a, one = _rows(x)
        return _shaped(ema(a, _window(n)), one)

    @staticmethod
    @indicator
    def rolling_std(x: Any, n: int) -> np.ndarray:
        """Sample standard deviation of the last ``n`` bars: ``sqrt(sum((x_i - sma_t)^2) /
        (n - 1))`` (pandas ``rolling(n).std()``, ddof = 1); 0 when ``n == 1``."""
        a, one = _rows(x)
        return _shaped(rolling_std(a, _window(n)), one)

    @staticmethod
    @indicator
    def zscore(x: Any, n: int) -> np.ndarray:
        """Rolling z-score: ``z_t = (x_t - sma_t(n)) / rolling_std_t(n)`` (ddof = 1), as
        ``(s - s.rolling(n).mean()) / s.rolling(n).std()`` in pandas; ``±inf`` or NaN where the
        window is constant."""
        a, one = _rows(x)
        w = _window(n)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = (a - sma(a, w)) / rolling_std(a, w)
        return _shaped(out, one)

    @staticmethod
    @indicator
    def bollinger(x: Any, n: int = 20, k: float = 2.0
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Bollinger bands ``(middle, upper, lower)``: ``middle = sma(n)``, ``upper = middle +
        k * rolling_std(n)``, ``lower = middle - k * rolling_std(n)`` (sample std, ddof = 1, as
        the built-in ``bollinger_breakout``)."""
        a, one = _rows(x)
        w = _window(n)
        mid = sma(a, w)
        sd = rolling_std(a, w)
        return (_shaped(mid, one), _shaped(mid + k * sd, one), _shaped(mid - k * sd, one))

    @staticmethod
    @indicator
    def rsi(x: Any, n: int = 14) -> np.ndarray:
        """Wilder's relative strength index: ``rsi = 100 - 100 / (1 + avg_gain / avg_loss)``,
        the averages of the up and down moves seeded with the simple mean of the first ``n``
        changes, then ``avg_t = (avg_{t-1} * (n - 1) + move_t) / n``; NaN for the first ``n``
        bars, 100 when the window had no loss."""
        a, one = _rows(x)
        return _shaped(rsi(a, _window(n)), one)

    @staticmethod
    @indicator
    def atr(high: Any, low: Any, close: Any, n: int = 14) -> np.ndarray:
        """Wilder's average true range: ``tr_t = max(high_t - low_t, |high_t - close_{t-1}|,
        |low_t - close_{t-1}|)`` (``high_t - low_t`` on the first bar), ``atr`` = the simple mean
        of the first ``n`` true ranges, then ``atr_t = (atr_{t-1} * (n - 1) + tr_t) / n``; NaN
        for the first ``n - 1`` bars. Call it as ``ql.ind.atr(bars.high[0], bars.low[0],
        bars.close[0], 14)``."""
        h, one = _rows(high)
        lo, _ = _rows(low)
        c, _ = _rows(close)
        if not h.shape == lo.shape == c.shape:
            raise ConfigError(f"atr needs high, low and close of one shape, got {h.shape}, "
                              f"{lo.shape} and {c.shape}; pass bars.high[0], bars.low[0], "
                              f"bars.close[0]", field="high")
        return _shaped(_atr_rows(h, lo, c, _window(n)), one)

    @staticmethod
    @indicator
    def crossover(a: Any, b: Any) -> np.ndarray:
        """Crosses of ``a`` over ``b`` (int8): ``+1`` on bar ``t`` when ``a_p < b_p`` and ``a_t >
        b_t`` (``p`` the previous bar where both are valid), ``-1`` when it crosses below, else
        0: a crossover strategy's signals are ``ql.ind.crossover(fast, slow)``."""
        x, one = _rows(a)
        y, _ = _rows(b)
        if x.shape != y.shape:
            raise ConfigError(f"crossover needs two series of one shape, got {x.shape} and "
                              f"{y.shape}", field="b")
        return _shaped(crossover(x, y), one)

    def __repr__(self) -> str:
        names = [n for n in vars(BuiltinIndicators) if not n.startswith("_")]
        return f"<ql.ind: {', '.join(names)}>"


ind = BuiltinIndicators()
"""The built-in indicators: ``ql.ind.sma(x, n)``, ``ql.ind.zscore(x, n)``, ..."""
