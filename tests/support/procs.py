"""Processes and ports of the tests' own: a free port, killing a process group, polling."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kill_group(pid: int) -> None:
    """Kill a process started in its own session (a worker), with every process of its group,
    and wait until it is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    wait_for(lambda: _gone(pid), 10, f"process {pid} to end")


def _gone(pid: int) -> bool:
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child: look for its disappearance
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    return bool(finished)


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0,
             what: str = "the condition", *, interval: float = 0.02,
             give_up: Callable[[], str | None] | None = None,
             detail: Callable[[], str] | None = None) -> Any:
    """Poll ``predicate()`` until it is truthy and return its value; fail (never hang) after
    ``timeout`` seconds. ``give_up()`` returns a reason to fail at once (the process being
    waited on exited); ``detail()`` adds what explains a failure (a log's tail)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        reason = give_up() if give_up is not None else None
        if reason is None and time.monotonic() >= deadline:
            reason = f"timed out after {timeout} s waiting for {what}"
        if reason is not None:
            raise AssertionError(reason + (f"\n{detail()}" if detail is not None else ""))
        time.sleep(interval)


def listening(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False
