"""Environment settings (``QUANTLAB_*``) and mode selection.

Settings are read from the environment each time :func:`current` is called, so a test (or a
notebook) that changes ``os.environ`` is seen at once; reading a dozen variables costs
microseconds. The rest of the code asks *which backend* to use through these settings and
never asks which mode it is in.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from quantlab.errors import ConfigError


def env_number(name: str, default: float, *, integer: bool = False,
               minimum: float | None = None, positive: bool = False,
               example: str | None = None) -> float:
    """A numeric setting from the environment (``default`` when unset or blank).

    A value that is not a number, is below ``minimum``, or is not above zero when ``positive``
    raises :class:`ConfigError` naming the variable and an example of a good value.
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    hint = f"set e.g. {name}={example or f'{default:g}'} or unset it"
    try:
        value: float = int(raw) if integer else float(raw)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise ConfigError(f"environment variable {name}={raw!r} is not {kind}; {hint}",
                          field=name) from None
    if positive and not value > 0:
        raise ConfigError(f"environment variable {name}={raw!r} must be positive; {hint}",
                          field=name)
    if minimum is not None and value < minimum:
        raise ConfigError(f"environment variable {name}={raw!r} must be at least {minimum:g}; "
                          f"{hint}", field=name)
    return value


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def env_flag(name: str, default: bool) -> bool:
    """A yes/no setting from the environment (1/true/yes/on or 0/false/no/off)."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(
        f"environment variable {name}={raw!r} is not a yes/no value; set {name}=1 or {name}=0",
        field=name,
    )


def _optional(name: str, *, integer: bool, example: str) -> float | None:
    if not os.environ.get(name, "").strip():
        return None
    return env_number(name, 0, integer=integer, minimum=0, example=example)


def default_home() -> Path:
    return Path(os.environ.get("QUANTLAB_HOME") or Path.home() / ".quantlab").expanduser()


def current_user() -> str:
    """The user a run is recorded under: ``QUANTLAB_USER``, else the operating-system user."""
    explicit = os.environ.get("QUANTLAB_USER", "").strip()
    if explicit:
        return explicit
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "unknown"


@dataclass(frozen=True)
class Settings:
    home: Path
    redis_url: str | None
    mongo_url: str | None
    mongo_db: str
    user: str
    max_concurrent: int | None
    queue_max: int | None
    max_duration: float | None
    alphavantage_api_key: str | None

    @property
    def mode(self) -> str:
        """``"team"`` when Redis or MongoDB is configured, else ``"embedded"`` (for display only)."""
        return "team" if (self.redis_url or self.mongo_url) else "embedded"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    def ensure_home(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        return self.home


def current() -> Settings:
    """The settings in force now, read from the environment."""
    return Settings(
        home=default_home(),
        redis_url=os.environ.get("QUANTLAB_REDIS_URL") or None,
        mongo_url=os.environ.get("QUANTLAB_MONGO_URL") or None,
        mongo_db=os.environ.get("QUANTLAB_MONGO_DB") or "quantlab",
        user=current_user(),
        max_concurrent=_int_or_none(_optional("QUANTLAB_MAX_CONCURRENT", integer=True,
                                              example="4")),
        queue_max=_int_or_none(_optional("QUANTLAB_QUEUE_MAX", integer=True, example="100")),
        max_duration=_optional("QUANTLAB_MAX_DURATION", integer=False, example="1800"),
        alphavantage_api_key=os.environ.get("ALPHAVANTAGE_API_KEY") or None,
    )


def _int_or_none(value: float | None) -> int | None:
    return None if value is None else int(value)


def configure_numba_cache() -> None:
    """Point Numba's cache at a writable folder before Numba is imported.

    Numba writes its cache next to the package by default; in a read-only install (a system
    site-packages, a container image) that raises at import. ``NUMBA_CACHE_DIR`` set by the user
    wins.
    """
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    os.environ["NUMBA_CACHE_DIR"] = str(Path(base) / "quantlab" / "numba")


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))
