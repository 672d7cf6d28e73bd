"""What the stored results of the research analyses (walk-forward, cross-validation) share:
frames to and from Parquet bytes, and numpy scalars as plain Python for their JSON summaries."""

from __future__ import annotations

import io
from typing import Any

import pandas as pd


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    """``frame`` (index kept) as the bytes of a Parquet file."""
    buf = io.BytesIO()
    frame.to_parquet(buf, index=True)
    return buf.getvalue()


def frame_of(blob: bytes) -> pd.DataFrame:
    """The frame :func:`parquet_bytes` stored."""
    return pd.read_parquet(io.BytesIO(blob))


def plain(value: Any) -> Any:
    """A numpy scalar as the Python value JSON can hold; anything else as it is."""
    item = getattr(value, "item", None)
    return item() if callable(item) else value
