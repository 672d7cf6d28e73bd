"""Environment settings (``QUANTLAB_*``) and mode selection.

Settings are read from the environment each time :func:`current` is called, so a test (or a
notebook) that changes ``os.environ`` is seen at once; reading a dozen variables costs
microseconds. The rest of the code asks *which backend* to use through these settings and
never asks which mode it is in.
"""

from __future__ import annotations

import getpass
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
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

    def __repr__(self) -> str:  # printed in a notebook or a log: no password, no key
        return _safe_repr(self)

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


#: query parameters whose values are hidden in any URL shown
_SECRET_PARAM = re.compile(
    r"^(?!auth(source|mechanism)).*(pass|pwd|secret|token|key|sig|auth|cred|code|session)",
    re.IGNORECASE)
#: a path segment of a web URL shown as it is: a plain lower-case word (``services``, ``api``,
#: ``hooks``); the first segment that is not, and everything after it, is hidden
_PLAIN_SEGMENT = re.compile(r"[a-z][a-z_-]{0,23}")
HIDDEN = "***"
# a URL in a message: up to a space or quote, without the punctuation that ends a sentence
_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]*[^\s'\"<>.,;:)\]]")


def redact(url: str) -> str:
    """``url`` as it may be logged or shown: no password, no token.

    - A password becomes ``***`` (``redis://:***@host:6379/0``, ``mongodb://u:***@h/db``);
      in a web (http/https) URL a bare user name too (``https://***@host/``).
    - A web URL is a webhook, whose path often *is* the secret (Slack's
      ``/services/T000/B000/XXXX``): its path is kept up to the first segment that is not a
      plain lower-case word, the rest becomes ``***`` (``https://hooks.slack.com/services/***``),
      and the fragment is dropped.
    - The values of query parameters that look secret (``password``, ``token``, ``key``,
      ``sig``, ``code``, ``auth``…) become ``***``.

    Anything that is not a URL (a path) comes back unchanged; a URL that cannot be parsed comes
    back as ``***``.
    """
    text = str(url)
    try:
        parts = urlsplit(text)
    except ValueError:
        return HIDDEN
    web = parts.scheme.lower() in ("http", "https")
    netloc = parts.netloc
    userinfo, at, hostport = netloc.rpartition("@")
    if at:
        user, colon, _password = userinfo.partition(":")
        if colon:
            userinfo = f"{user}:{HIDDEN}"
        elif web:
            userinfo = HIDDEN
        netloc = f"{userinfo}@{hostport}"
    path, query, fragment = parts.path, parts.query, parts.fragment
    if web:
        kept: list[str] = []
        segments = path.split("/")[1:]
        for index, segment in enumerate(segments):
            if _PLAIN_SEGMENT.fullmatch(segment) or (segment == "" and index == len(segments) - 1):
                kept.append(segment)
            else:
                kept.append(HIDDEN)
                break
        path = "/" + "/".join(kept) if segments else path
        fragment = ""
    if query:
        pairs = [pair.partition("=") for pair in query.split("&")]
        query = "&".join(
            f"{name}{eq}{HIDDEN if eq and _SECRET_PARAM.search(name) else value}"
            for name, eq, value in pairs)
    return urlunsplit((parts.scheme, netloc, path, query, fragment))


def _safe_repr(obj: Any) -> str:
    """A dataclass's repr with URLs redacted and passwords, keys and secrets hidden."""
    shown = []
    for item in fields(obj):
        value = getattr(obj, item.name)
        if value and re.search(r"password|secret|api_key|token", item.name):
            value = HIDDEN
        elif isinstance(value, str) and "://" in value:
            value = redact(value)
        shown.append(f"{item.name}={value!r}")
    return f"{type(obj).__name__}({', '.join(shown)})"


def redact_text(text: str) -> str:
    """``text`` (an error message, a log line) with every URL in it redacted."""
    return _URL_IN_TEXT.sub(lambda m: redact(m.group(0)), text)
