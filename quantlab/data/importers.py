"""Importing bars from a CSV file or a DataFrame into the store.

Everything is checked before anything is written: a bad file leaves the store byte-identical.
Messages locate the problem (symbol, row, and for a CSV the line of the file) and say the fix
(the ``columns=``, ``date_column=``, ``date_format=``, ``timezone=`` or ``sort=`` option).
"""

from __future__ import annotations

import difflib
import io
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from quantlab.bars import OHLCV, PRICE_COLUMNS, infer_interval, normalize_ohlcv
from quantlab.data.store import (
    WriteSummary,
    canonical_interval,
    canonical_symbol,
    current_store,
    is_intraday,
)
from quantlab.errors import ConfigError, DataError

DATE_NAMES = ("date", "datetime", "timestamp", "time", "ts", "day")
# Separators tried when none is given: the first that splits the header is used.
SEPARATORS = (",", ";", "\t", "|")
_SEP_NAMES = {",": "','", ";": "';'", "\t": "'\\t' (tab)", "|": "'|'"}
# Byte-order marks: a file that starts with one says its own encoding.
_BOMS = ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))


class _Where:
    """Says where row ``i`` is: in a frame (its position) or in a CSV (its line)."""

    def __init__(self, symbol: str, path: Path | None) -> None:
        self.symbol = symbol
        self.path = path

    def row(self, i: int) -> str:
        if self.path is None:
            return f"row {i}"
        return f"row {i} (line {i + 2} of {self.path.name})"  # line 1 is the header


def _squash(name: object) -> str:
    return str(name).strip().lower().replace("_", " ").replace("-", " ")


def _apply_mapping(df: pd.DataFrame, columns: Mapping[str, str] | None, symbol: str
                   ) -> pd.DataFrame:
    if not columns:
        return df
    wanted = (*OHLCV, "date")
    for src, dst in columns.items():
        if src not in df.columns:
            near = difflib.get_close_matches(str(src), list(map(str, df.columns)), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise DataError(
                f"{symbol}: columns= maps {src!r}, which is not a column of the data{hint}; "
                f"columns found: {list(map(str, df.columns))}", symbol=symbol, column=str(src),
            )
        if str(dst).lower() not in wanted:
            raise ConfigError(
                f"{symbol}: columns= maps {src!r} to {dst!r}; map columns to one of "
                f"{', '.join(wanted)}", field="columns",
            )
    # An explicit mapping wins: a column that would be matched to a mapped target by name (a
    # plain "Close" next to {"Adj Close": "close"}) is left out, whatever the column order.
    targets = {str(dst).lower() for dst in columns.values()}
    competing = [c for c in df.columns if c not in columns and _squash(c) in targets]
    return df.drop(columns=competing).rename(
        columns={src: str(dst).lower() for src, dst in columns.items()})


def _pick_columns(df: pd.DataFrame, symbol: str) -> dict[str, str]:
    """canonical name -> column of ``df`` (case, blanks and underscores ignored)."""
    by_name = {_squash(c): str(c) for c in df.columns}
    found = {name: by_name[name] for name in OHLCV if name in by_name}
    missing = [name for name in PRICE_COLUMNS if name not in found]
    if missing:
        others = [str(c) for c in df.columns if str(c) not in found.values()]
        guesses = {}
        for name in missing:
            near = difflib.get_close_matches(name, [_squash(c) for c in others], n=1, cutoff=0.3)
            if near:
                guesses[next(c for c in others if _squash(c) == near[0])] = name
        mapping = guesses or {"<your column>": missing[0]}
        raise DataError(
            f"{symbol}: missing column(s) {', '.join(missing)}; columns found: "
            f"{list(map(str, df.columns))}. If they are there under other names, pass "
            f"columns={mapping!r} (CLI: "
            f"{' '.join(f'--column {k}={v}' for k, v in mapping.items())})",
            symbol=symbol, column=missing[0],
        )
    return found


def _parse_dates(raw: pd.Series, date_column: str, date_format: str | None, symbol: str
                 ) -> pd.DatetimeIndex:
    """Dates written as text (or numbers) -> timestamps, NaT where one cannot be read."""
    try:
        try:
            parsed = pd.to_datetime(raw.astype("string"), format=date_format, errors="coerce")
        except ValueError as exc:
            if "utc=True" not in str(exc):
                raise
            # offsets that change (daylight saving): the instants are exact, keep them in UTC
            parsed = pd.to_datetime(raw.astype("string"), format=date_format, errors="coerce",
                                    utc=True)
    except (ValueError, TypeError) as exc:
        raise DataError(
            f"{symbol}: cannot read the dates in column {date_column!r} ({exc}); pass "
            f"date_format= (e.g. date_format='%Y-%m-%d %H:%M:%S%z')",
            symbol=symbol, column=date_column,
        ) from None
    return pd.DatetimeIndex(parsed)


def _timestamps(df: pd.DataFrame, date_column: str | None, date_format: str | None,
                where: _Where) -> pd.DatetimeIndex:
    symbol = where.symbol
    if date_column is None and isinstance(df.index, pd.DatetimeIndex):
        return df.index
    if date_column is None:
        names = {_squash(c): c for c in df.columns}
        found = next((names[n] for n in DATE_NAMES if n in names), None)
        if found is None and len(df.columns) and _unnamed(df.columns[0]) \
                and _looks_like_dates(df[df.columns[0]]):
            # DataFrame.to_csv() writes the index first, under no name ("Unnamed: 0" on reading)
            found = df.columns[0]
        if found is None:
            likely = next((c for c in df.columns if _squash(c) not in OHLCV
                           and _looks_like_dates(df[c])), None)
            hint = (f"column {str(likely)!r} holds dates: pass date_column={str(likely)!r} "
                    f"(CLI --date-column {str(likely)!r})" if likely is not None else
                    "name it with date_column='...' (CLI --date-column), or give the frame a "
                    "DatetimeIndex")
            raise DataError(
                f"{symbol}: no date column (none is named date, datetime, timestamp or time); "
                f"{hint}. Columns found: {list(map(str, df.columns))}",
                symbol=symbol, column="date", suggestion=None if likely is None else str(likely),
            )
        date_column = str(found)
    if date_column not in df.columns:
        near = difflib.get_close_matches(date_column, list(map(str, df.columns)), n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise DataError(
            f"{symbol}: date_column={date_column!r} is not a column of the data{hint}; columns "
            f"found: {list(map(str, df.columns))}", symbol=symbol, column=date_column,
        )
    raw = df[date_column]
    if date_format is None and pd.api.types.is_datetime64_any_dtype(raw.dtype):
        # already timestamps: keep them (and their zone) as they are, no round trip through text
        parsed = pd.DatetimeIndex(raw)
    else:
        parsed = _parse_dates(raw, date_column, date_format, symbol)
    bad = np.flatnonzero(pd.isna(parsed))
    if len(bad):
        i = int(bad[0])
        value = raw.iloc[i]
        example = "'%d/%m/%Y'" if date_format is None else "matching the file"
        raise DataError(
            f"{symbol}: cannot read the date {value!r} at {where.row(i)} of column "
            f"{date_column!r}; pass date_format= to say how dates are written (e.g. "
            f"date_format={example}; CLI --date-format)",
            symbol=symbol, row=i, column=date_column,
        )
    return pd.DatetimeIndex(parsed)


def _unnamed(column: object) -> bool:
    """A column the CSV's header left without a name (pandas reads it as ``Unnamed: 0``)."""
    text = str(column).strip()
    return not text or text.startswith("Unnamed:")


def _looks_like_dates(values: pd.Series) -> bool:
    """Whether the first values of a column are dates (not plain numbers, which any column of
    prices also is)."""
    sample = values.dropna().head(5)
    if not len(sample):
        return False
    if pd.api.types.is_datetime64_any_dtype(sample.dtype):
        return True
    text = sample.astype("string")
    if text.str.fullmatch(r"\s*[-+]?\d+(\.\d*)?([eE][-+]?\d+)?\s*").all():
        return False
    try:
        parsed = pd.to_datetime(text, errors="coerce", format="mixed")
    except (ValueError, TypeError):
        return False
    return bool(pd.notna(parsed).all())


def _apply_timezone(index: pd.DatetimeIndex, timezone: str | None, symbol: str
                    ) -> pd.DatetimeIndex:
    if timezone is None:
        return index
    try:
        if index.tz is None:
            return index.tz_localize(timezone, ambiguous="raise", nonexistent="raise")
        return index.tz_convert(timezone)
    except (ValueError, TypeError, KeyError) as exc:
        raise DataError(
            f"{symbol}: cannot apply timezone={timezone!r}: {exc}; use an IANA name such as "
            f"'America/New_York' or 'UTC'", symbol=symbol, column="date",
        ) from None


def _check_order(index: pd.DatetimeIndex, where: _Where) -> None:
    values = index.as_unit("ns").asi8
    steps = np.diff(values)
    if (steps == 0).any():
        i = int(np.flatnonzero(steps == 0)[0]) + 1
        raise DataError(
            f"{where.symbol}: duplicate timestamp {index[i]} at {where.row(i)}; keep one bar per "
            f"timestamp", symbol=where.symbol, row=i, column="date",
        )
    if (steps < 0).any():
        i = int(np.flatnonzero(steps < 0)[0]) + 1
        raise DataError(
            f"{where.symbol}: timestamps are not in order: {index[i]} at {where.row(i)} comes "
            f"after {index[i - 1]}; pass sort=True (CLI --sort) to sort the bars by time",
            symbol=where.symbol, row=i, column="date",
        )


def _numeric(df: pd.DataFrame, picked: dict[str, str], where: _Where) -> pd.DataFrame:
    out = {}
    for name, col in picked.items():
        values = pd.to_numeric(df[col], errors="coerce")
        bad = np.flatnonzero(pd.isna(values).to_numpy() & pd.notna(df[col]).to_numpy())
        if len(bad):
            i = int(bad[0])
            raise DataError(
                f"{where.symbol}: {name} value {df[col].iloc[i]!r} at {where.row(i)} is not a "
                f"number; fix or drop that row", symbol=where.symbol, row=i, column=name,
            )
        out[name] = values.to_numpy(dtype="float64", na_value=np.nan)
    return pd.DataFrame(out)


def _check_volume(frame: pd.DataFrame, where: _Where) -> pd.DataFrame:
    volume = frame["volume"].to_numpy()
    negative = np.flatnonzero(volume < 0)
    if len(negative):
        i = int(negative[0])
        raise DataError(
            f"{where.symbol}: volume is {volume[i]:g} at {where.row(i)}; volume must not be "
            f"negative", symbol=where.symbol, row=i, column="volume",
        )
    return frame.fillna({"volume": 0.0})  # an unknown volume is recorded as none traded


def prepare(
    symbol: str,
    df: pd.DataFrame,
    *,
    date_column: str | None = None,
    columns: Mapping[str, str] | None = None,
    date_format: str | None = None,
    timezone: str | None = None,
    sort: bool = False,
    path: Path | None = None,
) -> pd.DataFrame:
    """Validate a raw frame into the store's OHLCV shape (DatetimeIndex, float64 columns)."""
    where = _Where(symbol, path)
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"{symbol}: expected a pandas DataFrame, got {type(df).__name__}",
                        symbol=symbol)
    if len(df) == 0:
        raise DataError(f"{symbol}: the data has no rows", symbol=symbol)
    df = _apply_mapping(df, columns, symbol)
    picked = _pick_columns(df, symbol)
    index = _apply_timezone(_timestamps(df, date_column, date_format, where), timezone, symbol)
    frame = _numeric(df, picked, where)
    frame.index = index
    if sort:
        frame = frame.sort_index(kind="stable")
    _check_order(pd.DatetimeIndex(frame.index), where)
    for name in OHLCV:
        if name not in frame:
            frame[name] = 0.0
    frame = _check_volume(frame[list(OHLCV)], where)
    try:
        clean = normalize_ohlcv(frame, symbol)
    except DataError as exc:
        row = exc.fields.get("row")
        if path is None or row is None:
            raise
        raise DataError(f"{exc.message} [{where.row(int(row))}]", symbol=symbol, row=row,
                        column=exc.fields.get("column")) from None
    _check_close_in_range(clean, where)
    return clean


def _check_close_in_range(frame: pd.DataFrame, where: _Where) -> None:
    """A bar's close lies between its low and its high (the engine fills stops and limits
    inside that range; a close outside it is a corrupt or misaligned row)."""
    close, high, low = (frame[c].to_numpy() for c in ("close", "high", "low"))
    outside = np.flatnonzero((close > high) | (close < low))
    if len(outside):
        i = int(outside[0])
        side = f"above its high ({high[i]:g})" if close[i] > high[i] else \
            f"below its low ({low[i]:g})"
        raise DataError(
            f"{where.symbol}: close ({close[i]:g}) is {side} at {where.row(i)} "
            f"({frame.index[i]}); a bar's close lies between its low and its high: fix or drop "
            f"that row", symbol=where.symbol, row=i, column="close",
        )


def _interval_for(frame: pd.DataFrame, interval: str | None, symbol: str) -> str:
    index = pd.DatetimeIndex(frame.index)
    # spacing in UTC (bars.infer_interval warns on zoned indexes under pandas 3.1)
    inferred = infer_interval(index.tz_convert(None) if index.tz is not None else index)
    if interval is None:
        return canonical_interval(inferred)
    chosen = canonical_interval(interval)
    if len(index) >= 3 and is_intraday(chosen) != is_intraday(inferred):
        raise DataError(
            f"{symbol}: interval={interval!r} but the bars are about {inferred} apart; pass "
            f"interval={inferred!r} or leave interval out to infer it", symbol=symbol,
            column="date",
        )
    return chosen


def import_frame(
    symbol: str,
    df: pd.DataFrame,
    *,
    mode: str = "replace",
    date_column: str | None = None,
    columns: Mapping[str, str] | None = None,
    date_format: str | None = None,
    timezone: str | None = None,
    interval: str | None = None,
    source: str = "frame",
    adjusted: bool = False,
    sort: bool = False,
) -> WriteSummary:
    """Store a DataFrame of OHLCV bars under ``symbol``.

    The timestamps come from ``date_column`` or, when absent, the frame's DatetimeIndex or a
    column named date/datetime/timestamp/time. ``columns`` renames columns (``{"Adj Close":
    "close"}``). ``timezone`` localizes naive timestamps (or converts zoned ones).
    ``interval`` defaults to the one inferred from the spacing. ``mode="replace"`` swaps the
    stored bars; ``mode="extend"`` merges, the new bar winning on the same timestamp.
    """
    name = canonical_symbol(symbol)
    if mode not in ("replace", "extend"):
        raise ConfigError(f"unknown mode {mode!r}; use mode='replace' or mode='extend'",
                          field="mode")
    frame = prepare(name, df, date_column=date_column, columns=columns, date_format=date_format,
                    timezone=timezone, sort=sort)
    iv = _interval_for(frame, interval, name)
    return current_store().write(name, iv, frame, mode=mode, source=source, adjusted=adjusted)


def _encoding_of(file: Path) -> str:
    """The file's encoding by its byte-order mark; UTF-16 without one is told by its NUL bytes
    (every ASCII character of a CSV has one); else UTF-8."""
    with file.open("rb") as fh:
        head = fh.read(4096)
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            return encoding
    if len(head) >= 4 and head.count(b"\x00") >= len(head) // 3:
        return "utf-16-le" if head[1:2] == b"\x00" else "utf-16-be"
    return "utf-8"


def _decode(file: Path, encoding: str, name: str) -> str:
    data = file.read_bytes()
    try:
        return data.decode(encoding)
    except LookupError:
        raise ConfigError(f"{name}: unknown encoding={encoding!r}; use e.g. encoding='utf-8', "
                          f"'latin-1' or 'utf-16'", field="encoding") from None
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise DataError(
            f"{name}: {file.name} is not {encoding} text (byte {data[exc.start]:#04x} on line "
            f"{line}); if it was saved as Latin-1 or Windows-1252, pass encoding='latin-1' "
            f"(CLI --encoding latin-1), or save it as UTF-8", symbol=name,
            suggestion="latin-1") from None


def _separator_of(text: str) -> str:
    """The separator of a CSV: of :data:`SEPARATORS`, the one its header line holds most often
    (``,`` when none)."""
    header = text.lstrip("\ufeff").split("\n", 1)[0]
    counts = {sep: header.count(sep) for sep in SEPARATORS}
    best = max(SEPARATORS, key=lambda sep: counts[sep])  # ties: the first listed
    return best if counts[best] else ","


def _one_column(raw: pd.DataFrame, sep: str, file: Path, name: str) -> None:
    """A file read as one column was split with the wrong separator: say which one it uses."""
    header = str(raw.columns[0])
    other = next((s for s in SEPARATORS if s != sep and s in header), None)
    if other is not None:
        raise DataError(
            f"{name}: {file.name} read as one column {header!r} with sep={sep!r}; its fields "
            f"are separated by {_SEP_NAMES[other]}: pass sep={other!r} (CLI --sep {other!r}), or "
            f"leave sep out to detect it", symbol=name, suggestion=other)


def import_csv(
    symbol: str,
    path: str | Path,
    *,
    mode: str = "replace",
    date_column: str | None = None,
    columns: Mapping[str, str] | None = None,
    date_format: str | None = None,
    timezone: str | None = None,
    interval: str | None = None,
    source: str | None = None,
    adjusted: bool = False,
    sort: bool = False,
    sep: str | None = None,
    encoding: str | None = None,
) -> WriteSummary:
    """Store the bars of a CSV file (a header row, one bar per line) under ``symbol``.

    Options as :func:`import_frame`. ``sep`` is the field separator (default: whichever of
    ``,`` ``;`` tab ``|`` the header line holds most often). ``encoding`` defaults to the file's
    byte-order mark (UTF-8 or UTF-16), else UTF-8; a file that is not UTF-8 is refused with a
    message suggesting ``encoding=``. Errors name the line.
    """
    name = canonical_symbol(symbol)
    if mode not in ("replace", "extend"):
        raise ConfigError(f"unknown mode {mode!r}; use mode='replace' or mode='extend'",
                          field="mode")
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"{name}: no such file {str(file)!r}; check the path", symbol=name)
    encoding = encoding or _encoding_of(file)
    text = _decode(file, encoding, name)
    if sep is None:
        sep = _separator_of(text)
    try:
        raw = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise DataError(f"{name}: {file.name} is empty; it needs a header row and one bar per "
                        f"line", symbol=name) from None
    except pd.errors.ParserError as exc:
        raise DataError(f"{name}: cannot parse {file.name} as CSV ({exc}); check the file, or "
                        f"pass sep= for another separator", symbol=name) from None
    if len(raw.columns) == 1:
        _one_column(raw, sep, file, name)
    frame = prepare(name, raw, date_column=date_column, columns=columns,
                    date_format=date_format, timezone=timezone, sort=sort, path=file)
    iv = _interval_for(frame, interval, name)
    return current_store().write(name, iv, frame, mode=mode, source=source or f"csv:{file.name}",
                                 adjusted=adjusted)
