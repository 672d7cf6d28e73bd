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

from quantlab.errors import ConfigError


def _env_int(name: str, default: int | None) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(
            f"environment variable {name}={raw!r} is not a whole number; set it to e.g. {name}=4 "
            f"or unset it", field=name
        ) from None
    if value < 0:
        raise ConfigError(f"environment variable {name}={raw!r} must not be negative", field=name)
    return value


def _env_float(name: str, default: float | None) -> float | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(
            f"environment variable {name}={raw!r} is not a number of seconds; set e.g. "
            f"{name}=1800 or unset it", field=name
        ) from None


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
        max_concurrent=_env_int("QUANTLAB_MAX_CONCURRENT", None),
        queue_max=_env_int("QUANTLAB_QUEUE_MAX", None),
        max_duration=_env_float("QUANTLAB_MAX_DURATION", None),
        alphavantage_api_key=os.environ.get("ALPHAVANTAGE_API_KEY") or None,
    )


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
