"""Per-symbol fingerprints of a run's bars by chunk of rows, so a run diff can tell which
symbols' bars changed between two runs and from which row, long after the store has moved on.

For each symbol, the bars a run used (its own rows, in time order, over the run's range) are cut
into chunks of :data:`CHUNK_ROWS` rows. Each chunk keeps its first timestamp, its row count and
a SHA-256 of its timestamps and OHLCV values (16 hex digits kept); each row also gets a 16-bit
checksum (base64 of little-endian uint16), used only inside a chunk whose SHA-256 already
differs, to tell the first changed row. About 3 bytes a row in the run record.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import numpy as np

from quantlab.bars import OHLCV, Bars

CHUNK_ROWS = 256
VERSION = 1


def _symbol_rows(bars: Bars, i: int) -> tuple[np.ndarray, np.ndarray]:
    """The symbol's own rows: timestamps (int64 ns) and an (n, 5) float array of OHLCV."""
    values = np.stack([np.asarray(getattr(bars, name)[i], dtype="float64") for name in OHLCV],
                      axis=1)
    present = ~np.isnan(values[:, 3])
    ts = np.asarray(bars.index.as_unit("ns").asi8)[present]
    return ts, np.ascontiguousarray(values[present])


def _row_checksums(ts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """A 16-bit checksum per row (a multiply-xorshift mix of its 6 words): a cheap locator of
    the first changed row, never a proof of equality (the chunk's SHA-256 is that)."""
    words = np.concatenate([ts.astype(np.int64).view(np.uint64)[:, None],
                            values.view(np.uint64)], axis=1)
    h = np.full(len(ts), 0xCBF29CE484222325, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(words.shape[1]):
            h ^= words[:, k]
            h *= np.uint64(0x100000001B3)
            h ^= h >> np.uint64(29)
    return (h ^ (h >> np.uint64(16)) ^ (h >> np.uint64(32)) ^ (h >> np.uint64(48))).astype(
        np.uint16)


def _chunk_sha(ts: np.ndarray, values: np.ndarray) -> str:
    digest = hashlib.sha256(ts.astype(np.int64).tobytes())
    digest.update(values.tobytes())
    return digest.hexdigest()[:16]


def symbol_chunks(ts: np.ndarray, values: np.ndarray, rows: int = CHUNK_ROWS) -> dict[str, Any]:
    """One symbol's record: ``{"rows", "chunk_rows", "chunks": [[first_iso, n, sha16], ...],
    "rowsums": base64}``."""
    import pandas as pd

    chunks = []
    for lo in range(0, len(ts), rows):
        part_ts, part_values = ts[lo:lo + rows], values[lo:lo + rows]
        first = pd.Timestamp(int(part_ts[0]), unit="ns").isoformat()
        chunks.append([first, len(part_ts), _chunk_sha(part_ts, part_values)])
    sums = _row_checksums(ts, values).astype("<u2").tobytes()
    return {"rows": len(ts), "chunk_rows": rows, "chunks": chunks,
            "rowsums": base64.b64encode(sums).decode()}


def chunk_fingerprints(bars: Bars, rows: int = CHUNK_ROWS) -> dict[str, Any]:
    """``{"v": 1, "interval": ..., "symbols": {SYMBOL: symbol_chunks(...)}}`` of these bars."""
    out = {}
    for i, symbol in enumerate(bars.symbols):
        ts, values = _symbol_rows(bars, i)
        out[symbol] = symbol_chunks(ts, values, rows)
    return {"v": VERSION, "interval": bars.interval, "symbols": out}


def row_checksums(record: dict[str, Any]) -> np.ndarray:
    """The per-row checksums of a :func:`symbol_chunks` record."""
    return np.frombuffer(base64.b64decode(record.get("rowsums") or ""), dtype="<u2")


def symbol_rows(bars: Bars, symbol: str) -> tuple[np.ndarray, np.ndarray]:
    """Public form of the symbol's own rows (timestamps ns, OHLCV) used for the fingerprints."""
    return _symbol_rows(bars, bars.symbols.index(symbol))
