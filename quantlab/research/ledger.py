"""The trial ledger: every combination ever run of a strategy on the same data, for an honest N.

A deflated Sharpe ratio is only as honest as its N. The registry keeps, per *group* (a strategy
on a data set: strategy name, symbols, interval, first and last bar), one entry per *trial*:
a combination's effective settings (parameters and every engine option, without the run's name
and tags, which are not in the engine's config) hashed, with its per-bar Sharpe ratio. Runs
record their trials when they end (completed, or cancelled with a partial sweep kept), so
repeating a run adds nothing and a cancelled sweep's finished combinations count.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from quantlab.engine.options import OPTION_NAMES, is_swept
from quantlab.registry import Registry

# the engine config's keys that are not a trial's settings: the grid (replaced by one
# combination's params), how the best is chosen and the sweep's bookkeeping
_NOT_SETTINGS = ("params", "select", "n_combinations", "skipped", "failed", "failures",
                 "engine_version")


def _json(payload: Any) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)


def _digest(payload: Any) -> str:
    return hashlib.sha256(_json(payload).encode()).hexdigest()


def group_key(config: Mapping[str, Any]) -> str:
    """The ledger group of a run's engine config: its strategy on its data."""
    return _digest({k: config.get(k) for k in ("strategy", "symbols", "interval", "start",
                                                "end", "n_bars")})


def trial_key(config: Mapping[str, Any], params: Mapping[str, Any]) -> str:
    """One combination's identity: the settings of ``config`` with ``params`` as its params.
    An engine option among ``params`` (a sweep's best re-run as ``{"n": 4, "commission": 0}``)
    is a setting, as in the sweep's row: the same trial gets the same key."""
    carried = {k: _option(v) for k, v in params.items() if k in OPTION_NAMES}
    own = {k: v for k, v in params.items() if k not in OPTION_NAMES}
    return _TrialKeys({**config, **carried})(own)


class _TrialKeys:
    """:func:`trial_key` for many combinations of one config: the settings' JSON is written
    once (a 20,000-combination sweep wrote it 20,000 times: ~0.4 s of its end). The text is
    the one ``_digest({"settings": ..., "params": ...})`` hashes, keys sorted: "params" first."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        settings = {k: v for k, v in config.items() if k not in _NOT_SETTINGS}
        self.tail = ',"settings":' + _json(settings) + "}"

    def __call__(self, params: Mapping[str, Any]) -> str:
        text = '{"params":' + _json(dict(params)) + self.tail
        return hashlib.sha256(text.encode()).hexdigest()


def trials_of(result: Any) -> dict[str, float | None]:
    """``{trial key: per-bar SR}`` of a Result: each finished row of a sweep, or the run."""
    config = result.config
    root = math.sqrt(float(config.get("periods_per_year") or 1.0))
    table = result.table
    if table is None:
        sharpe = result.metrics.get("sharpe")
        return {trial_key(config, result.params): _per_bar(sharpe, root)}
    names = [n for n in _param_names(config) if n in table.columns]
    # a swept option (commission=[0, 0.001]) is a column too: each row is a trial with the
    # option's value of that row, keyed as the single run with that value is
    swept = [n for n in OPTION_NAMES if is_swept(config.get(n)) and n in table.columns]
    keys: dict[tuple[Any, ...], _TrialKeys] = {}
    out: dict[str, float | None] = {}
    sharpe = table["sharpe"].to_numpy(dtype=float) if "sharpe" in table else np.full(
        len(table), np.nan)
    rows = table[names + swept].itertuples(index=False, name=None)
    for values, value in zip(rows, sharpe, strict=True):
        params = {n: _plain(v) for n, v in zip(names, values[:len(names)], strict=True)}
        options = tuple(_option(v) for v in values[len(names):])
        key = keys.get(options)
        if key is None:
            key = keys[options] = _TrialKeys({**config, **dict(zip(swept, options,
                                                                    strict=True))})
        out[key(params)] = _per_bar(value, root)
    return out


def _param_names(config: Mapping[str, Any]) -> list[str]:
    grid = config.get("params")
    if isinstance(grid, Mapping):
        return list(grid)
    if isinstance(grid, list) and grid and isinstance(grid[0], Mapping):
        return list(grid[0])
    return []


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _option(value: Any) -> Any:
    """A swept option's value in a table row as a single run's config holds it: a number as a
    float, no stop (a missing value in the column) as None."""
    value = _plain(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else value


def _per_bar(sharpe: Any, root: float) -> float | None:
    if sharpe is None:
        return None
    value = float(sharpe) / root
    return value if math.isfinite(value) else None


def record(registry: Registry, result: Any) -> int:
    """Add a run's trials to the ledger; returns how many were new."""
    return registry.record_trials(group_key(result.config), trials_of(result))


def record_unfinished(registry: Registry, sim: Any) -> int:
    """Add a single run cancelled before its result (its SR unknown): it was tried."""
    if sim is None or sim.is_sweep:
        return 0  # a sweep's finished combinations come with its partial result
    return registry.record_trials(group_key(sim.config), {trial_key(sim.config, sim.params): None})


def stats(registry: Registry, config: Mapping[str, Any]) -> tuple[int, float]:
    """(trials recorded for this strategy on this data, the variance (ddof 1) of their
    per-bar SRs, NaN with fewer than two known)."""
    ledger = registry.trial_ledger(group_key(config))
    known = np.array([v for v in ledger.values() if v is not None], dtype=float)
    variance = float(np.var(known, ddof=1)) if len(known) > 1 else math.nan
    return len(ledger), variance


__all__ = ["group_key", "record", "record_unfinished", "stats", "trial_key", "trials_of"]
