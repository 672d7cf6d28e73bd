"""The submission's checks against the data store, and its hashes.

A config is validated by :mod:`quantlab.config` without opening the store; what needs the store
happens here, when a run is submitted: :func:`check_symbols` (are the symbols stored, or can a
provider fetch them), the data fingerprint of the bars the run will use, and the config hash
(canonical config + data + strategy code + engine version) that keys the result cache. The
engine options' defaults in the hash come from the canonical config, that is from
:class:`quantlab.engine.options.EngineOptions`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from quantlab import data, settings
from quantlab.config import LABEL_KEYS, BacktestConfig
from quantlab.engine import ENGINE_VERSION
from quantlab.errors import DataError
from quantlab.strategies import get_strategy

# -- symbols --------------------------------------------------------------------------------------


def missing_symbols(symbols: list[str], interval: str = "1d") -> list[str]:
    """The symbols that the data store holds no bars of at ``interval``."""
    store = data.current_store()
    return [s for s in symbols if store.entry(s, interval) is None]


def check_symbols(symbols: list[str], interval: str = "1d") -> list[str]:
    """Raise for a symbol missing from the store unless a provider can fetch it.

    Returns the missing symbols that the worker will fetch first (with ALPHAVANTAGE_API_KEY set).
    """
    missing = missing_symbols(symbols, interval)
    if not missing or settings.current().alphavantage_api_key:
        return missing
    found = data.current_store().unknown_symbol(missing[0], interval)
    others = f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else ""
    raise DataError(
        f"{found.message}{others}", symbol=missing[0], field="symbols",
        suggestion=getattr(found, "suggestion", None),
    )


# -- hashing ------------------------------------------------------------------------------------


def strategy_source_hash(config: BacktestConfig) -> str:
    """Hash of the code of the config's strategy (its notebook source or the registered one)."""
    if config.strategy_source is not None:
        return hashlib.sha256(config.strategy_source.encode()).hexdigest()
    return str(get_strategy(config.strategy).source_hash)


def data_fingerprint(config: BacktestConfig) -> str:
    """The fingerprint of the bars the config's run will use; a range without bars is a
    ConfigError on ``start``."""
    start, end = config.data_window()
    try:
        return str(data.fingerprint(list(config.symbols), start, end, config.interval))
    except DataError as exc:
        if getattr(exc, "field", None) is not None:
            raise
        raise DataError(exc.message, field="start", symbol=getattr(exc, "symbol", None)) from None


def data_chunks(config: BacktestConfig) -> dict[str, Any]:
    """Per-symbol fingerprints by chunk of rows of the bars the run will use, recorded so that
    a later run diff can tell which symbols changed and from which bar
    (:mod:`quantlab.data.chunks`)."""
    from quantlab.data.chunks import chunk_fingerprints

    start, end = config.data_window()
    return chunk_fingerprints(data.load(list(config.symbols), start, end, config.interval))


def config_hash(config: BacktestConfig | Mapping[str, Any] | str,
                fingerprint: str | None = None) -> str:
    """sha256 over the canonical config (labels excluded), the data fingerprint, the strategy
    source hash and ``ENGINE_VERSION``: equal hashes mean equal results.

    A config given as a dict or YAML is validated first, with the submission's symbol check.
    """
    if isinstance(config, BacktestConfig):
        cfg = config
    else:
        cfg = BacktestConfig.from_any(config)
        check_symbols(cfg.symbols, cfg.interval)
    body = {k: v for k, v in cfg.canonical().items() if k not in LABEL_KEYS}
    payload = {
        "config": body,
        "data": fingerprint if fingerprint is not None else data_fingerprint(cfg),
        "strategy_source": strategy_source_hash(cfg),
        "engine": str(ENGINE_VERSION),
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()
