"""A process apart from the worker for user code, which the worker owns and can kill.

A notebook strategy's source is code of whoever submitted it: it must not run inside the shared
worker, where it could change what the worker computes for the runs after it (replace a metrics
function, fill a cache) or block the worker for good (``while True: pass``). So it runs in a
*sandbox*: a process forked, one per run, from a pre-loaded *server* (Python, NumPy, Numba and
QuantLab imported, the compiled kernels loaded), which costs a few milliseconds instead of the
second a fresh interpreter takes to import all that.

- Each sandbox is a fresh fork of the server, which never runs user code: nothing one run's code
  leaves behind is seen by the next run.
- Each sandbox leads its own process group: the worker stops it at once with ``SIGKILL`` of the
  group, whatever the user code is doing. It dies with the server (``PR_SET_PDEATHSIG``) and the
  server dies with the worker (end of its stdin), so no user code outlives its worker.
- The server is started with an environment cleaned of the worker's secrets
  (:func:`clean_environment`), so user code finds no registry or Redis URL, password or token.
- A sandbox talks to nothing but its worker, over a Unix socket, in :func:`send` /
  :func:`receive` messages: a JSON header, NumPy arrays as raw bytes (never pickles: nothing
  a hostile sandbox sends can run code in the worker) and byte blobs.

This is isolation, not a security boundary: the sandbox runs as the same user as the worker,
and the files and network the worker can reach are reachable (see docs/operations.md, "Trust
model"). What runs in the sandbox is a *handler* module named when the server starts (the jobs
layer's :mod:`quantlab.jobs.isolation`): its ``warm()`` runs once in the server, its
``serve(sock)`` in each sandbox.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib
import json
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from quantlab.errors import QuantlabError

# -- the environment user code gets ----------------------------------------------------------------

#: names of variables that hold or may hold a secret (what settings.redact hides in URLs)
_SECRET_NAME = re.compile(
    r"PASS|PWD|SECRET|TOKEN|KEY|CRED|AUTH|SESSION|COOKIE|SIG|_URLS?$|_URI$|DSN|WEBHOOK",
    re.IGNORECASE)
#: a URL carrying a user or password (``redis://:pw@host``, a proxy with credentials)
_URL_WITH_USERINFO = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/\s]*@")
#: QuantLab's own variables that user code may see: engine knobs, no location, no credential
QUANTLAB_VARS_KEPT = ("QUANTLAB_THREADS", "QUANTLAB_JOBS_MAX_CHUNK", "QUANTLAB_JOBS_CHUNK_DELAY")


def clean_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without what user code must not see: every ``QUANTLAB_*`` variable but the
    engine knobs (:data:`QUANTLAB_VARS_KEPT`: no home, no registry, Redis or SMTP setting),
    every variable whose name says it may hold a secret (password, token, key, credential,
    ``*_URL``, webhook), and every value that is a URL with a user or password in it."""
    kept = {}
    for name, value in environ.items():
        if name.upper().startswith("QUANTLAB_") and name.upper() not in QUANTLAB_VARS_KEPT:
            continue
        if _SECRET_NAME.search(name) or _URL_WITH_USERINFO.search(value):
            continue
        kept[name] = value
    return kept


# -- messages --------------------------------------------------------------------------------------


class SandboxError(QuantlabError):
    """The sandbox process of a run could not be started or reached, or ended while it ran."""


class SandboxGone(SandboxError):
    """The other end of a sandbox's socket closed (the sandbox ended or was killed)."""


#: kinds of NumPy dtype that may cross (numbers, booleans, dates): never objects
_ARRAY_KINDS = "biufcmM"
#: the most bytes one message may announce (a hostile sandbox must not make the worker allocate
#: without bound)
MAX_MESSAGE_BYTES = 4 << 30
_LENGTH = struct.Struct("!Q")

Wait = Callable[[], None]


@dataclass
class Message:
    header: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)


def send(sock: socket.socket, header: Mapping[str, Any],
         arrays: Mapping[str, np.ndarray] | None = None,
         blobs: Mapping[str, bytes] | None = None, *, wait: Wait | None = None,
         every: float = 0.1) -> None:
    """Send one message: a JSON ``header``, ``arrays`` (raw bytes of numbers) and ``blobs``.
    ``wait`` is called every ``every`` seconds while the other end does not read (it may raise
    to give up)."""
    arrays = {name: np.ascontiguousarray(a) for name, a in (arrays or {}).items()}
    for name, array in arrays.items():
        if array.dtype.kind not in _ARRAY_KINDS:
            raise SandboxError(f"array {name!r} of dtype {array.dtype} cannot be sent to or "
                               f"from a sandbox: only numbers, booleans and dates can")
    blobs = dict(blobs or {})
    full = {**header,
            "_arrays": [[n, a.dtype.str, list(a.shape)] for n, a in arrays.items()],
            "_blobs": [[n, len(b)] for n, b in blobs.items()]}
    head = json.dumps(full).encode()
    parts: list[bytes | memoryview] = [_LENGTH.pack(len(head)), head]
    parts += [a.reshape(-1).view(np.uint8).data if a.nbytes else b"" for a in arrays.values()]
    parts += list(blobs.values())
    for part in parts:
        _write_all(sock, part, wait, every)


def receive(sock: socket.socket, *, wait: Wait | None = None, every: float = 0.1) -> Message:
    """Receive one message (see :func:`send`); raises :class:`SandboxGone` at the end of the
    stream. ``wait`` is called every ``every`` seconds while nothing arrives."""
    (length,) = _LENGTH.unpack(_read_exact(sock, _LENGTH.size, wait, every))
    if length > MAX_MESSAGE_BYTES:
        raise SandboxError(f"a sandbox message announced {length} header bytes")
    header = json.loads(bytes(_read_exact(sock, length, wait, every)))
    specs = header.pop("_arrays", [])
    sizes = header.pop("_blobs", [])
    arrays: dict[str, np.ndarray] = {}
    total = 0
    for name, dtype_str, shape in specs:
        dtype = np.dtype(dtype_str)
        if dtype.kind not in _ARRAY_KINDS or dtype.hasobject:
            raise SandboxError(f"a sandbox sent array {name!r} of dtype {dtype}")
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        total += count * dtype.itemsize
        if total > MAX_MESSAGE_BYTES or count < 0:
            raise SandboxError("a sandbox message announced too many bytes")
        raw = _read_exact(sock, count * dtype.itemsize, wait, every)
        arrays[str(name)] = np.frombuffer(raw, dtype=dtype).reshape(shape)
    blobs: dict[str, bytes] = {}
    for name, size in sizes:
        total += int(size)
        if total > MAX_MESSAGE_BYTES or int(size) < 0:
            raise SandboxError("a sandbox message announced too many bytes")
        blobs[str(name)] = bytes(_read_exact(sock, int(size), wait, every))
    return Message(header, arrays, blobs)


def _read_exact(sock: socket.socket, n: int, wait: Wait | None, every: float) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        if wait is not None and not select.select([sock], [], [], every)[0]:
            wait()
            continue
        try:
            k = sock.recv_into(view[got:], n - got)
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise SandboxGone("the sandbox connection was reset") from exc
        if k == 0:
            raise SandboxGone("the sandbox connection closed")
        got += k
    return buf


def _write_all(sock: socket.socket, data: bytes | memoryview, wait: Wait | None,
               every: float) -> None:
    view = memoryview(data).cast("B")
    sent = 0
    while sent < len(view):
        if wait is not None and not select.select([], [sock], [], every)[1]:
            wait()
            continue
        try:
            sent += sock.send(view[sent:])
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise SandboxGone("the sandbox connection closed") from exc


# -- the worker's side -----------------------------------------------------------------------------


class Sandbox:
    """One sandbox process, as its worker sees it: a connection and the process group to kill."""

    def __init__(self, sock: socket.socket, pid: int) -> None:
        self.sock = sock
        self.pid = pid
        self.alive = True
        with _LIVE_LOCK:
            _LIVE[id(self)] = self

    def request(self, header: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None,
                blobs: Mapping[str, bytes] | None = None, *, wait: Wait | None = None,
                every: float = 0.1) -> Message:
        """Send a request and return the reply. ``wait`` is called every ``every`` seconds while
        the sandbox works: when it raises, the sandbox is killed and the exception goes on."""
        if not self.alive:
            raise SandboxGone("the sandbox was stopped")
        try:
            send(self.sock, header, arrays, blobs, wait=wait, every=every)
            return receive(self.sock, wait=wait, every=every)
        except BaseException:
            self.kill()
            raise

    def kill(self) -> None:
        """Stop the sandbox now (``SIGKILL`` of its process group) and close the connection."""
        if self.alive:
            self.alive = False
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            self.sock.close()
        with _LIVE_LOCK:
            _LIVE.pop(id(self), None)


_LIVE: dict[int, Sandbox] = {}
_LIVE_LOCK = threading.Lock()


def kill_all() -> None:
    """Kill every sandbox of this process (the worker is stopping)."""
    with _LIVE_LOCK:
        live = list(_LIVE.values())
    for sandbox in live:
        sandbox.kill()


class SandboxServer:
    """The pre-loaded server process that forks the sandboxes of one worker process.

    ``handler`` names the module that runs in it (``warm()`` once, ``serve(sock)`` per
    sandbox). Started by :meth:`start` (it warms up meanwhile), ready at the first :meth:`open`;
    restarted if it died.
    """

    def __init__(self, handler: str, start_timeout: float = 300.0) -> None:
        self.handler = handler
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.path: str | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the server process (not waiting for it to be ready)."""
        with self._lock:
            if self.proc is None or self.proc.poll() is not None:
                self._spawn()

    def _spawn(self) -> None:
        env = clean_environment(os.environ)
        # a fork of a process whose Numba kernels ran on GNU OpenMP aborts: use a fork-safe
        # threading layer in the server (the results are the same whichever layer runs them)
        env.setdefault("NUMBA_THREADING_LAYER", "forksafe")
        self.path = None
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "quantlab.strategies.sandbox", self.handler],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True,
            start_new_session=True)  # a ^C or a kill of the worker's group goes to the worker

    def _ready_path(self, wait: Wait | None) -> str:
        with self._lock:
            if self.proc is None or self.proc.poll() is not None:
                self._spawn()
            proc = self.proc
            assert proc is not None and proc.stdout is not None
            if self.path is None:
                deadline = time.monotonic() + self.start_timeout
                while not select.select([proc.stdout], [], [], 0.1)[0]:
                    if time.monotonic() > deadline:
                        break
                    if wait is not None:
                        wait()  # still warming up: a cancel meanwhile is honoured
                line = proc.stdout.readline() if time.monotonic() <= deadline else b""
                if not line:
                    proc.kill()
                    self.proc = None
                    raise SandboxError(
                        f"the sandbox server for user strategies did not start (exit code "
                        f"{proc.poll()}); see the worker's log for its error")
                self.path = str(json.loads(line)["socket"])
            return self.path

    def open(self, *, wait: Wait | None = None) -> Sandbox:
        """A new sandbox: a fresh fork of the server, connected to this process."""
        path = self._ready_path(wait)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            hello = receive(sock, wait=wait)
        except (OSError, SandboxError) as exc:
            sock.close()
            with self._lock:  # the server died: the next open starts a new one
                if self.proc is not None and self.proc.poll() is None:
                    self.proc.kill()
                self.proc = None
            raise SandboxError(f"could not reach the sandbox server at {path}: {exc}; the "
                               f"next run starts a new one") from exc
        except BaseException:  # stopped while waiting: the sandbox ends at the closed socket
            sock.close()
            raise
        return Sandbox(sock, int(hello.header["pid"]))

    def stop(self) -> None:
        """Stop the server (its sandboxes die with it)."""
        with self._lock:
            proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            assert proc.stdin is not None
            proc.stdin.close()  # the server leaves at the end of its stdin
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


_SERVERS: dict[tuple[int, str], SandboxServer] = {}
_SERVERS_LOCK = threading.Lock()


def server(handler: str) -> SandboxServer:
    """This process's sandbox server for ``handler`` (one per process: a forked worker process
    starts its own), started on first use."""
    key = (os.getpid(), handler)
    with _SERVERS_LOCK:
        found = _SERVERS.get(key)
        if found is None:
            found = _SERVERS[key] = SandboxServer(handler)
    found.start()
    return found


def stop_servers() -> None:
    """Kill this process's sandboxes and stop its servers (at exit, and on a worker's stop)."""
    kill_all()
    with _SERVERS_LOCK:
        mine = [s for (pid, _), s in _SERVERS.items() if pid == os.getpid()]
    for found in mine:
        found.stop()


atexit.register(stop_servers)


# -- the server process ----------------------------------------------------------------------------


def serve_forever(handler_name: str) -> None:
    """The server's main loop: warm up, then fork a sandbox per connection until stdin ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    t0 = time.perf_counter()
    handler = importlib.import_module(handler_name)
    warm = getattr(handler, "warm", None)
    if warm is not None:
        warm()
    directory = tempfile.mkdtemp(prefix="quantlab-sandbox-")  # mode 0700: this user's only
    path = os.path.join(directory, "server.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # sandboxes are reaped by the system
    sys.stdout.write(json.dumps({"socket": path}) + "\n")
    sys.stdout.flush()
    # to the worker's log (stderr is the worker's): operators and tests see when it is warm
    print(f"QuantLab sandbox server pid {os.getpid()} ready in {time.perf_counter() - t0:.2f} "
          f"s", file=sys.stderr, flush=True)
    stdin = sys.stdin.fileno()
    try:
        while True:
            # one sandbox forked ahead, waiting for the next connection: a run does not wait for
            # the fork; it tells the server (a byte, or the end of its pipe) when it is taken
            taken, told = os.pipe()
            if os.fork() == 0:
                os.close(taken)
                _sandbox(listener, told, handler)
            os.close(told)
            try:
                while True:
                    ready, _, _ = select.select([taken, stdin], [], [])
                    if stdin in ready and not os.read(stdin, 4096):
                        return  # the worker is gone (the waiting sandbox dies with this process)
                    if taken in ready:
                        os.read(taken, 1)
                        break
            finally:
                os.close(taken)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _sandbox(listener: socket.socket, told: int, handler: Any) -> None:
    """In a fresh fork of the server: lead a new process group, die with the server, wait for a
    worker's connection, tell the server, tell the worker this process's id, then serve its
    requests. Never returns."""
    code = 0
    try:
        server_pid = os.getppid()
        os.setsid()
        _die_with_parent()
        if os.getppid() != server_pid:
            os._exit(1)  # the server died before the line above took effect
        for signum in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_DFL)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)  # user code gets no handle on the server's stdin
        os.close(devnull)
        os.dup2(2, 1)  # what user code prints goes to the worker's log, not the server's pipe
        conn, _ = listener.accept()
        listener.close()
        os.write(told, b"x")
        os.close(told)
        send(conn, {"pid": os.getpid()})
        handler.serve(conn)
    except BaseException:  # a sandbox never returns into the server's loop
        code = 1
    finally:
        os._exit(code)


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent (the server) dies."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


if __name__ == "__main__":
    serve_forever(sys.argv[1])
