"""QuantLab's exception tree.

Every error a user can cause derives from :class:`QuantlabError` and carries the fields a
program needs to act on it (``field``, ``symbol``, ``row`` ...) as attributes, while ``str(err)``
is a sentence that names the problem and the fix.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class QuantlabError(Exception):
    """Base of every QuantLab error."""

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields
        for key, value in fields.items():
            setattr(self, key, value)


class ConfigError(QuantlabError, ValueError):
    """A backtest config (or an argument of ``ql.backtest``) is invalid.

    ``field`` names the offending key when there is one; ``suggestion`` holds the nearest
    valid name for a misspelt key.
    """

    def __init__(self, message: str, *, field: str | None = None, **fields: Any) -> None:
        super().__init__(message, field=field, **fields)


class DataError(ConfigError):
    """Market data is missing or malformed (a CSV, a frame, a provider's answer).

    A subclass of :class:`ConfigError` so that ``except ql.ConfigError`` catches every bad
    input of a backtest; ``symbol``, ``row`` and ``column`` locate the problem when known.
    """

    def __init__(
        self,
        message: str,
        *,
        symbol: str | None = None,
        row: int | None = None,
        column: str | None = None,
        **fields: Any,
    ) -> None:
        super().__init__(message, symbol=symbol, row=row, column=column, **fields)


class ProviderError(DataError):
    """A market-data provider refused or failed a request (bad key, unknown symbol, outage)."""


class StrategyError(QuantlabError):
    """A user strategy raised, or returned signals of the wrong shape or type."""


class RunError(QuantlabError):
    """A run failed, was cancelled, or cannot be found."""


class RunNotFound(RunError, KeyError):
    """No run with that id exists in the registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class NotOwner(RunError, PermissionError):
    """The caller may not act on another user's run or notification (answered 403 over REST):
    only its owner (``owner``) or an admin listed in ``QUANTLAB_ADMINS`` may; ``user`` is the
    caller and ``action`` what was refused."""


class QueueFull(QuantlabError):
    """The queue already holds ``QUANTLAB_QUEUE_MAX`` runs; nothing was created."""


class SchemaError(QuantlabError):
    """The registry's schema is newer than this QuantLab (upgrade QuantLab), or cannot be migrated."""


class StoreUnavailable(QuantlabError, OSError):
    """A store QuantLab needs cannot be used: a file under ``QUANTLAB_HOME`` (``path``) or a
    server (``url``, shown without its password). ``fix`` says what to do; the message names
    both. A ``submit`` that raises it queued nothing. Answered 503 over REST (507 for a full
    disk). Also an ``OSError``, so that code catching the raw error it replaces still does."""

    def __init__(self, message: str, *, fix: str, path: str | None = None,
                 url: str | None = None, **fields: Any) -> None:
        super().__init__(message, fix=fix, path=path, url=url, **fields)


class HomeNotWritable(StoreUnavailable):
    """A file or folder under ``QUANTLAB_HOME`` cannot be written: the home is read-only, or
    its permissions refuse this user (``reason`` is ``read-only`` or ``permission``)."""


class DiskFull(HomeNotWritable):
    """The disk holding ``path`` is full (``reason`` is ``disk full``)."""


class ServerUnreachable(StoreUnavailable):
    """A server at ``url`` (Redis, MongoDB) does not answer."""


class EventsUnavailable(ServerUnreachable):
    """The event store (Redis) cannot be reached even after retrying."""

    def __init__(self, message: str, *, url: str | None = None,
                 fix: str = "check that redis-server is running and QUANTLAB_REDIS_URL is right",
                 **fields: Any) -> None:
        super().__init__(message, fix=fix, url=url, **fields)


class MissingDependency(QuantlabError, ImportError):
    """An optional feature needs an extra that is not installed; the message says which."""


def nearest(word: str, choices: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The choice closest to ``word`` (a misspelt name), or None."""
    import difflib

    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=cutoff)
    return close[0] if close else None


def did_you_mean(word: str, choices: Iterable[str], cutoff: float = 0.6) -> str:
    """`` — did you mean 'x'?`` for the choice closest to ``word``, or an empty string."""
    close = nearest(word, choices, cutoff)
    return f" — did you mean '{close}'?" if close else ""


def require(module: str, extra: str, feature: str) -> Any:
    """Import an optional dependency, or raise :class:`MissingDependency` with the install hint."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(
            f"{feature} needs the '{module}' package, which is not installed. "
            f"Install it with: pip install 'quantlab[{extra}]'",
            module=module,
            extra=extra,
        ) from exc
