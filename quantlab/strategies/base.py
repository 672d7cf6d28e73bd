"""The ``Strategy`` object and the indicator cache its functions receive (the registry of
strategies by name is :mod:`quantlab.strategies.registry`).

A strategy is a plain function ``f(bars, **params)`` returning signals: an array of ``+1`` (buy),
``-1`` (sell) and ``0`` (nothing), of shape ``(n_bars,)`` for one symbol or ``(n_symbols,
n_bars)``. A signal on bar ``t`` is acted on by the fill engine (next open, or this close). If the
function has a parameter named ``ind`` it receives an :class:`Indicators` cache, so a sweep
computes each moving average once however many combinations use it.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from quantlab.bars import Bars
from quantlab.errors import ConfigError, StrategyError


class Indicators:
    """Memoised indicators over one ``Bars`` (``ind.sma(20)`` is computed once per run/sweep).

    The cache holds at most ``max_bytes`` (least recently used first out), so a sweep over
    long data cannot grow memory with the number of windows. A worker keeps one per cached data
    set, so consecutive runs on the same data reuse what earlier runs computed; ``computed``
    counts the indicator series actually computed.
    """

    def __init__(self, bars: Bars, max_bytes: int = 256 << 20) -> None:
        self.bars = bars
        self.max_bytes = max_bytes
        self._cache: dict[tuple[str, int], np.ndarray] = {}
        self._bytes = 0
        self.computed = 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def _get(self, name: str, n: int, compute: Callable[[np.ndarray, int], np.ndarray]
             ) -> np.ndarray:
        key = (name, int(n))
        value = self._cache.pop(key, None)
        if value is None:
            value = compute(self.bars.close, int(n))
            self.computed += 1
            self._put(key, value)
        else:
            self._cache[key] = value  # most recently used last
        return value

    def _put(self, key: tuple[str, int], value: np.ndarray) -> None:
        self._bytes += value.nbytes
        while self._cache and self._bytes > self.max_bytes:
            oldest = next(iter(self._cache))
            self._bytes -= self._cache.pop(oldest).nbytes
        self._cache[key] = value  # most recently used last

    def many(self, name: str, windows: Sequence[int]) -> list[np.ndarray]:
        """``[getattr(self, name)(n) for n in windows]``; simple moving averages not cached
        yet are computed two at a time (one pass over the data for both)."""
        if name == "sma":
            from quantlab.indicators import sma_pair

            missing = [w for w in dict.fromkeys(int(w) for w in windows)
                       if ("sma", w) not in self._cache]
            for k in range(0, len(missing) - 1, 2):
                a, b = sma_pair(self.bars.close, missing[k], missing[k + 1])
                self._put(("sma", missing[k]), a)
                self._put(("sma", missing[k + 1]), b)
                self.computed += 2
        compute = getattr(self, name)
        return [compute(w) for w in windows]

    def sma(self, n: int) -> np.ndarray:
        from quantlab.indicators import sma
        return self._get("sma", n, sma)

    def ema(self, n: int) -> np.ndarray:
        from quantlab.indicators import ema
        return self._get("ema", n, ema)

    def rsi(self, n: int) -> np.ndarray:
        from quantlab.indicators import rsi
        return self._get("rsi", n, rsi)

    def std(self, n: int) -> np.ndarray:
        from quantlab.indicators import rolling_std
        return self._get("std", n, rolling_std)


# the indicators whose crosses the engine can take inside its kernel (their output is NaN
# only in the warm-up on data without gaps, see quantlab.indicators)
CROSSABLE = ("sma", "ema")


class Strategy:
    """A registered strategy: ``name``, ``params`` (name -> default), a validity rule for
    parameter combinations, and its ``source`` text with ``source_hash`` (sha256)."""

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        name: str | None = None,
        valid: Callable[[Mapping[str, Any]], bool] | None = None,
        rule: str = "",
        builtin: bool = False,
        crossover_of: str | None = None,
        prefetch: Callable[[Indicators, Mapping[str, Any]], None] | None = None,
        slots: Callable[[Mapping[str, Any], int], int] | None = None,
        check: Callable[[Mapping[str, Any]], None] | None = None,
        description: str = "",
    ) -> None:
        self.func = func
        self.name = name or func.__name__
        self.valid_rule = valid
        self.rule = rule
        self.builtin = builtin
        # a crossover strategy's signals are the crosses of indicator `crossover_of` with
        # window params["fast"] over the one with params["slow"]: the engine crosses the
        # lines inside its kernel (computed once per window for a sweep's grid)
        if crossover_of is not None and crossover_of not in CROSSABLE:
            raise ConfigError(f"crossover_of must be one of {', '.join(CROSSABLE)}, got "
                              f"{crossover_of!r}", field="crossover_of")
        self.crossover_of = crossover_of
        # computes a single run's indicators ahead of the strategy function, together where
        # that is cheaper (the two averages of a crossover in one pass)
        self.prefetch = prefetch
        self._slots = slots
        self._check = check
        self.description = description or (inspect.getdoc(func) or "").split("\n")[0]
        sig = inspect.signature(func)
        names = list(sig.parameters)
        if not names:
            raise ConfigError(
                f"strategy '{self.name}' must take the bars as its first argument: "
                f"def {func.__name__}(bars, ...)", field="strategy")
        self.wants_ind = "ind" in sig.parameters
        self.params: dict[str, Any] = {}
        self.required: list[str] = []
        for pname in names[1:]:
            p = sig.parameters[pname]
            if pname == "ind" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            if p.default is inspect.Parameter.empty:
                self.required.append(pname)
                self.params[pname] = None
            else:
                self.params[pname] = p.default
        try:
            self.source = inspect.getsource(func)
        except (OSError, TypeError):
            # defined where no source is kept (exec): hash the bytecode instead
            self.source = ""
        digest_input = self.source.encode() if self.source else func.__code__.co_code
        self.source_hash = hashlib.sha256(digest_input).hexdigest()

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"<Strategy {self.name}({params})>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)

    def is_valid(self, params: Mapping[str, Any]) -> bool:
        """Whether a full parameter combination passes the strategy's validity rule."""
        if self.valid_rule is None:
            return True
        return bool(self.valid_rule(params))

    def check(self, params: Mapping[str, Any]) -> None:
        """Raise ConfigError for a parameter value that makes no sense on its own (a window of
        0, a negative band width); combinations are judged by :meth:`is_valid`."""
        if self._check is not None:
            self._check(params)

    @property
    def weights_follow_params(self) -> bool:
        """Whether the default weights depend on the parameters (momentum's ``top_n``)."""
        return self._slots is not None

    def slots(self, params: Mapping[str, Any], n_symbols: int) -> int:
        """How many positions the strategy holds at once (default weights are 1/slots)."""
        if self._slots is None:
            return n_symbols
        return max(1, min(n_symbols, int(self._slots(params, n_symbols))))

    def signals(self, bars: Bars, params: Mapping[str, Any], ind: Indicators | None = None
                ) -> np.ndarray:
        """Call the strategy and check its answer: int8 ``(n_symbols, n_bars)`` of -1/0/+1."""
        return check_signals(self.raw_signals(bars, params, ind), bars, self.name)

    def raw_signals(self, bars: Bars, params: Mapping[str, Any],
                    ind: Indicators | None = None) -> Any:
        """The strategy's answer, not checked yet (a sweep checks it as it stores it)."""
        kwargs = params
        if self.wants_ind:
            kwargs = {**params, "ind": ind if ind is not None else Indicators(bars)}
        try:
            return self.func(bars, **kwargs)  # (** gives the function its own dict)
        except Exception as exc:
            raise StrategyError(
                f"strategy '{self.name}' raised {type(exc).__name__}: {exc} (with params "
                f"{dict(params)}); its traceback shows where", strategy=self.name,
            ) from exc


def check_signals(raw: Any, bars: Bars, name: str) -> np.ndarray:
    """Coerce a strategy's answer to int8 ``(n_symbols, n_bars)``, or raise StrategyError."""
    if hasattr(raw, "to_numpy") and not isinstance(raw, np.ndarray):
        raw = raw.to_numpy()
    if not isinstance(raw, np.ndarray):
        raise StrategyError(
            f"strategy '{name}' returned {type(raw).__name__}; it must return a NumPy array of "
            f"signals (+1 buy, -1 sell, 0 nothing) with one value per bar", strategy=name)
    n_sym, n_bars = bars.n_symbols, bars.n_bars
    arr = raw
    if arr.ndim == 1 and n_sym == 1:
        arr = arr[None, :]
    if arr.shape != (n_sym, n_bars):
        want = f"({n_bars},)" if n_sym == 1 else f"({n_sym}, {n_bars})"
        raise StrategyError(
            f"strategy '{name}' returned signals of shape {raw.shape}; expected {want}: one "
            f"value per bar{' per symbol' if n_sym > 1 else ''}", strategy=name)
    if arr.dtype.kind not in "biuf":
        raise StrategyError(
            f"strategy '{name}' returned signals of dtype {arr.dtype}; use numbers +1 (buy), "
            f"-1 (sell), 0 (nothing)", strategy=name)
    # A sweep calls this once per combination: a range check by two reductions (np.isin is
    # ~10x slower); a float that int8 does not hold exactly (1.5, NaN) differs after the cast.
    kind = arr.dtype.kind
    if kind == "f":
        with np.errstate(invalid="ignore"):
            signals = np.ascontiguousarray(arr, dtype=np.int8)
        ok = bool((signals == arr).all())
    else:
        signals = arr
        ok = True
    if kind != "b" and arr.size and not (ok and signals.min() >= -1 and signals.max() <= 1):
        bad = ~np.isin(arr, (-1, 0, 1))
        raise _bad_values(name, arr[bad][0])
    return np.ascontiguousarray(signals, dtype=np.int8)


def _bad_values(name: str, value: Any) -> StrategyError:
    if isinstance(value, np.generic):
        value = value.item()
    return StrategyError(
        f"strategy '{name}' returned the signal value {value!r}; signals must be +1 (buy), -1 "
        f"(sell) or 0 (nothing) -- use np.sign(...) or np.where(cond, 1, 0)", strategy=name)
