"""A redis-server of the tests' own on a loopback port (never the machine's 6379)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.procs import free_port, listening, wait_for


class RedisServer:
    def __init__(self, port: int, proc: subprocess.Popen[bytes], workdir: Path,
                 password: str | None = None) -> None:
        self.port = port
        self.proc = proc
        self.workdir = workdir
        self.url = f"redis://{f':{password}@' if password else ''}127.0.0.1:{port}/0"

    def flush(self) -> None:
        import redis

        redis.Redis.from_url(self.url).flushall()


def start_redis(workdir: Path, port: int | None = None,
                password: str | None = None) -> RedisServer:
    """A private redis-server on ``port`` (default: a free one), without persistence, asking
    for ``password`` when given."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(
            "redis-server is not installed; the test command (bash scripts/test.sh) installs it, "
            "or run: sudo apt-get install redis-server"
        )
    port = port or free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir), *(["--requirepass", password] if password else [])],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: listening(port), 10, f"redis-server on port {port}")
    except AssertionError:
        proc.kill()
        raise
    return RedisServer(port, proc, workdir, password)

