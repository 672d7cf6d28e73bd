"""A real Jupyter server (or JupyterLab) in a subprocess, for the server and browser tests.

Not a test module itself (it only holds helpers): a server with a token on a free loopback port,
its own QUANTLAB_HOME and Jupyter directories, and a QuantLab worker of the test's own, so that
nothing is started that the test does not stop.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.support.procs import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]  # the repository


def quantlab_env(home: Path, jupyter_dirs: Path, extra: Mapping[str, str] | None = None
                 ) -> dict[str, str]:
    """The environment of a server/worker: this home, embedded mode, private Jupyter dirs."""
    env = dict(os.environ)
    for var in ("QUANTLAB_REDIS_URL", "QUANTLAB_MONGO_URL", "QUANTLAB_QUEUE_MAX",
                "QUANTLAB_MAX_CONCURRENT", "QUANTLAB_MAX_DURATION", "ALPHAVANTAGE_API_KEY",
                "JUPYTER_TOKEN"):
        env.pop(var, None)
    env.update({
        "QUANTLAB_HOME": str(home),
        "QUANTLAB_USER": "tester",
        "JUPYTER_CONFIG_DIR": str(jupyter_dirs / "config"),
        "JUPYTER_DATA_DIR": str(jupyter_dirs / "data"),
        "JUPYTER_RUNTIME_DIR": str(jupyter_dirs / "runtime"),
        "IPYTHONDIR": str(jupyter_dirs / "ipython"),
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra or {})
    return env


def stop(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """Stop a process this test started (and its process group), politely then firmly."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


class Worker:
    """The QuantLab worker of a test home (so that submit does not spawn a detached one)."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self.log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "quantlab", "worker"], env=env, stdin=subprocess.DEVNULL,
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def wait_alive(self, home: Path, timeout: float = 60.0) -> None:
        from quantlab.jobs.supervisor import worker_alive
        from quantlab.settings import current

        def alive() -> bool:
            old = os.environ.get("QUANTLAB_HOME")
            os.environ["QUANTLAB_HOME"] = str(home)
            try:
                return worker_alive(current())
            finally:
                if old is None:
                    os.environ.pop("QUANTLAB_HOME", None)
                else:
                    os.environ["QUANTLAB_HOME"] = old

        wait_for(alive, timeout, "the worker to start", interval=0.05,
                 give_up=lambda: None if self.proc.poll() is None else "the worker exited",
                 detail=lambda: self.log_path.read_text()[-2000:])

    def stop(self) -> None:
        stop(self.proc)
        self.log.close()


class JupyterProcess:
    """``jupyter server`` (or ``jupyter lab``) with a token on a free port."""

    def __init__(self, env: dict[str, str], root_dir: Path, log_path: Path, *,
                 app: str = "jupyter_server", extra_args: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.args = [
            sys.executable, "-m", app, "--no-browser", "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root_dir}",
            "--ServerApp.jpserver_extensions={'quantlab': True}", *extra_args,
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            self.args.append("--allow-root")
        self.env = env
        self.proc = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.args, env=self.env, stdin=subprocess.DEVNULL,
                                stdout=self.log, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def restart(self) -> None:
        """Stop the server and start it again on the same port with the same token."""
        stop(self.proc)
        self.proc = self._start()
        self.wait_ready()

    def wait_ready(self, timeout: float = 60.0) -> None:
        def answers() -> bool:
            try:
                return self.request("GET", "/api/status")[0] == 200
            except OSError:
                return False

        wait_for(answers, timeout, "jupyter to answer", interval=0.1,
                 give_up=lambda: (None if self.proc.poll() is None
                                  else f"jupyter exited with {self.proc.returncode}"),
                 detail=lambda: self.log_text()[-3000:])

    def log_text(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def request(self, method: str, path: str, body: Any = None, *, token: bool = True,
                headers: Mapping[str, str] | None = None) -> tuple[int, Any]:
        """One HTTP request; returns (status, decoded JSON or text)."""
        data = None if body is None else (
            body if isinstance(body, bytes) else json.dumps(body).encode())
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if token:
            req.add_header("Authorization", f"token {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for key, value in (headers or {}).items():
            req.add_header(key, value)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, _decode(resp.read(), resp.headers.get("Content-Type", ""))
        except urllib.error.HTTPError as err:
            return err.code, _decode(err.read(), err.headers.get("Content-Type", ""))

    def stop(self) -> None:
        stop(self.proc)
        self.log.close()


def _decode(raw: bytes, content_type: str) -> Any:
    if "json" in content_type:
        return json.loads(raw or b"null")
    return raw.decode("utf-8", "replace")
