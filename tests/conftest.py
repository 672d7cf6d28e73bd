"""Shared fixtures: an isolated QUANTLAB_HOME per test and a private redis-server.

Tests never touch the machine's default Redis (port 6379) or the user's ~/.quantlab.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.redis import RedisServer, start_redis

# `%load_ext quantlab` starts a detached worker in advance; a test wants only the workers it
# starts (and stops) itself. tests/test_notebook_units.py tests the start with this set to 1.
os.environ["QUANTLAB_PRESTART_WORKER"] = "0"

# Numba's cache must be writable and shared by the test session (compiled kernels are reused).
os.environ.setdefault(
    "NUMBA_CACHE_DIR", str(Path(__file__).resolve().parent.parent / ".venv" / "numba-cache")
)


@pytest.fixture
def ql_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty QUANTLAB_HOME for this test, in embedded mode."""
    home = tmp_path / "qlhome"
    home.mkdir()
    monkeypatch.setenv("QUANTLAB_HOME", str(home))
    for var in ("QUANTLAB_REDIS_URL", "QUANTLAB_MONGO_URL", "QUANTLAB_QUEUE_MAX",
                "QUANTLAB_MAX_CONCURRENT", "QUANTLAB_MAX_DURATION", "ALPHAVANTAGE_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("QUANTLAB_USER", "tester")
    return home


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of the test session's own, on a free loopback port."""
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.proc.terminate()
    server.proc.wait(timeout=10)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The private server's URL, emptied before the test."""
    redis_server.flush()
    return redis_server.url


@pytest.fixture(scope="session")
def sample_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic sample store (AAA..JJJ daily), built once per session; tests copy it into
    their own QUANTLAB_HOME."""
    home = tmp_path_factory.mktemp("sample-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QUANTLAB_HOME", str(home))
        import quantlab as ql

        ql.data.sample(minute=False)
    return home / "data"
