"""What a submission checks against the store and hashes: the data fingerprint of a config, the
symbols the store lacks, and the config hash (canonical config + data + strategy code + engine
version) that keys the result cache. Kept out of :mod:`quantlab.config`, which only validates."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from quantlab import data
from quantlab.config import LABEL_KEYS, BacktestConfig, iso
from quantlab.engine import ENGINE_VERSION
from quantlab.errors import DataError
from quantlab.strategies import get_strategy

# -- hashing ------------------------------------------------------------------------------------


def strategy_source_hash(config: BacktestConfig) -> str:
    """Hash of the code of the config's strategy (its notebook source or the registered one)."""
    if config.strategy_source is not None:
        return hashlib.sha256(config.strategy_source.encode()).hexdigest()
    return str(get_strategy(config.strategy).source_hash)


def data_fingerprint(config: BacktestConfig) -> str:
    """The fingerprint of the bars the config's run will use; a range without bars is a
    ConfigError on ``start``."""
    start = iso(config.start) if config.start else None
    end = iso(config.end) if config.end else None
    try:
        return str(data.fingerprint(list(config.symbols), start, end, config.interval))
    except DataError as exc:
        if getattr(exc, "field", None) is not None:
            raise
        raise DataError(exc.message, field="start", symbol=getattr(exc, "symbol", None)) from None


def config_hash(config: BacktestConfig | Mapping[str, Any] | str,
                fingerprint: str | None = None) -> str:
    """sha256 over the canonical config (labels excluded), the data fingerprint, the strategy
    source hash and ``ENGINE_VERSION``: equal hashes mean equal results."""
    cfg = config if isinstance(config, BacktestConfig) else BacktestConfig.from_any(config)
    body = {k: v for k, v in cfg.canonical().items() if k not in LABEL_KEYS}
    payload = {
        "config": body,
        "data": fingerprint if fingerprint is not None else data_fingerprint(cfg),
        "strategy_source": strategy_source_hash(cfg),
        "engine": str(ENGINE_VERSION),
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()
