"""Shared fixtures: an isolated QUANTLAB_HOME per test and a private redis-server.

Tests never touch the machine's default Redis (port 6379) or the user's ~/.quantlab.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Numba's cache must be writable and shared by the test session (compiled kernels are reused).
os.environ.setdefault(
    "NUMBA_CACHE_DIR", str(Path(__file__).resolve().parent.parent / ".venv" / "numba-cache")
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


class RedisServer:
    def __init__(self, port: int, proc: subprocess.Popen[bytes], workdir: Path) -> None:
        self.port = port
        self.proc = proc
        self.workdir = workdir
        self.url = f"redis://127.0.0.1:{port}/0"

    def flush(self) -> None:
        import redis

        redis.Redis.from_url(self.url).flushall()


def _start_redis(workdir: Path) -> RedisServer:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(
            "redis-server is not installed; the test command (bash scripts/test.sh) installs it, "
            "or run: sudo apt-get install redis-server"
        )
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return RedisServer(port, proc, workdir)
        except OSError:
            time.sleep(0.02)
    proc.kill()
    pytest.fail(f"redis-server did not start on port {port}")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of the test session's own, on a free loopback port."""
    server = _start_redis(tmp_path_factory.mktemp("redis"))
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


def kill_group(pid: int) -> None:
    """Kill a process started in its own session (a worker), with every process of its group,
    and wait until it is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            finished, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not our child: poll for its disappearance
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
        else:
            if finished:
                return
        time.sleep(0.02)


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0,
             what: str = "the condition") -> Any:
    """Poll ``predicate()`` until it is truthy and return its value; fail (never hang) after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
