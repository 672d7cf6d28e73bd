"""A notebook strategy's run, simulated in a sandbox process (:mod:`quantlab.strategies.sandbox`)
and driven from the worker.

The worker never executes a shipped strategy's source. For a run whose config carries one
(``strategy_source``), :func:`quantlab.jobs.execution.simulation` returns a
:class:`SandboxedSimulation`: the same interface as the engine's ``Simulation`` (prepare, run a
chunk, checkpoint, result), each call a request to a fresh sandbox that holds the real
``Simulation`` and the user's strategy. So the runner's loop is unchanged: it publishes progress,
writes checkpoints and the registry, and checks for a cancel between chunks, in the worker; the
sandbox talks to nothing but the worker (the bars go in as arrays, the result comes back as the
result's blobs: no pickle either way).

While the sandbox works (a chunk, or the whole signal computation of a single run, which may be
user code that never returns) the worker calls ``watch`` (the runner's control check) every
``WATCH_EVERY`` seconds; when it raises (a cancel, the time limit, a lost run) the sandbox is
killed on the spot and the run ends with what it had finished: its last checkpoint.

:func:`audit_in_sandbox` is the look-ahead audit of a shipped strategy before it is queued
(:func:`quantlab.research.audit.audit_before_queue`, from ``submit``): the submitting process (a
kernel, or the Jupyter server for a REST submit) never runs a source it did not define, and a
strategy that never returns is killed after ``QUANTLAB_AUDIT_TIMEOUT`` seconds.

This module is also the sandbox server's *handler*: :func:`warm` runs once in the server,
:func:`serve` in every sandbox.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from quantlab import errors
from quantlab.bars import Bars
from quantlab.config import BacktestConfig
from quantlab.engine import Result, Simulation
from quantlab.research.audit import Audit, shipped_audit
from quantlab.research.blocksums import BlockSums, table_block_sums
from quantlab.settings import env_number
from quantlab.strategies import sandbox
from quantlab.strategies.usercode import load_shipped_strategy

HANDLER = __name__
# the audit's sandbox server: the same requests, no warm-up (see quantlab/jobs/auditbox.py)
AUDIT_HANDLER = "quantlab.jobs.auditbox"
WATCH_EVERY = 0.1  # seconds between two control checks while the sandbox works
# seconds a stopped sweep's sandbox may take to rebuild its partial result from the checkpoint
RECOVERY_SECONDS = 5.0
BAR_FIELDS = ("open", "high", "low", "close", "volume")
# seconds a shipped strategy's look-ahead audit may take before its sandbox is killed
AUDIT_TIMEOUT_VAR = "QUANTLAB_AUDIT_TIMEOUT"
AUDIT_TIMEOUT_DEFAULT = 30.0

Watch = Callable[[], None]


class UserCodeFailed(errors.StrategyError):
    """What the sandbox raised, as seen in the worker: ``remote_type`` is the exception's class
    name there and ``remote_traceback`` its traceback (naming the strategy's lines)."""


# -- the worker's side -----------------------------------------------------------------------------


class SandboxedSimulation:
    """The engine's ``Simulation`` of a config with a shipped strategy, living in a sandbox.

    Set ``watch`` (a callable that raises to stop the run) before driving it: it is called
    every ``WATCH_EVERY`` s while the sandbox works, and the sandbox is killed when it raises.
    """

    def __init__(self, bars: Bars, cfg: BacktestConfig, overrides: Mapping[str, Any],
                 watch: Watch | None = None) -> None:
        self.bars = bars
        self.strategy_name = cfg.strategy
        self.watch = watch
        self._open = {"op": "open", "config": cfg.model_dump(mode="json"),
                      "overrides": dict(overrides), **_bars_header(bars)}
        self._state: bytes | None = None  # the last checkpoint taken (or resumed from)
        self._state_units = 0
        self._prepare_pending = False  # asked for, sent with the next request (one round trip less)
        self._final: ShippedResult | None = None  # sent with the chunk that finished the run
        self.sandbox = self._start()

    # -- driving the sandbox ---------------------------------------------------------------------

    def _start(self) -> sandbox.Sandbox:
        box = sandbox.server(HANDLER).open(wait=self._wait)
        reply = self._ask(box, self._open, _bar_arrays(self.bars))
        self.is_sweep = bool(reply["is_sweep"])
        self.total_units = int(reply["total_units"])
        self.done_units = int(reply["done_units"])
        self.param_names = list(reply["params"])  # the strategy's, as the engine declares them
        return box

    def _wait(self) -> None:
        if self.watch is not None:
            self.watch()

    def _ask(self, box: sandbox.Sandbox, header: Mapping[str, Any],
             arrays: Mapping[str, np.ndarray] | None = None,
             blobs: Mapping[str, bytes] | None = None) -> dict[str, Any]:
        try:
            reply = box.request(header, arrays, blobs, wait=self._wait, every=WATCH_EVERY)
        except BaseException as exc:
            # killed mid-way (a cancel, the time limit) or gone: what is finished is the last
            # checkpoint
            self.done_units = self._state_units
            if not isinstance(exc, sandbox.SandboxGone):
                raise
            raise UserCodeFailed(
                f"strategy '{self.strategy_name}' ended the process it ran in (it called "
                f"exit, crashed, or the system killed it, e.g. when out of memory)",
                strategy=self.strategy_name) from exc
        self._blobs = reply.blobs
        failure = reply.header.get("error")
        if failure:
            raise _rebuilt(failure, self.strategy_name)
        return reply.header

    def _request(self, header: Mapping[str, Any], blobs: Mapping[str, bytes] | None = None
                 ) -> dict[str, Any]:
        if self._prepare_pending:
            header = {**header, "prepare": True}
        reply = self._ask(self.sandbox, header, None, blobs)
        self._prepare_pending = False
        return reply

    # -- the Simulation interface ----------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.done_units >= self.total_units

    def prepare(self, indicators: Any = None) -> None:
        """Compute the signals (a single run) in the sandbox, with the next request.
        ``indicators`` is ignored: the sandbox computes its own, so no user code ever reads or
        fills the worker's memo."""
        self._prepare_pending = True

    def run(self, max_units: int) -> int:
        before = self.done_units
        self.done_units = int(self._request({"op": "run", "units": int(max_units)})["done_units"])
        if self.finished and "summary.json" in self._blobs:
            self._final = ShippedResult(self._blobs)  # the chunk that finished brought it
        return self.done_units - before

    def state_bytes(self) -> bytes:
        self._request({"op": "state"})
        self._state, self._state_units = self._blobs["state"], self.done_units
        return self._state

    def load_state(self, data: bytes) -> None:
        self.done_units = int(self._request({"op": "load_state"}, {"state": data})["done_units"])
        self._state, self._state_units = data, self.done_units

    def result(self, partial: bool = False) -> Result:
        if self._final is not None:
            return self._final  # type: ignore[return-value]
        if not self.sandbox.alive:
            return self._recovered_result()
        self._request({"op": "result", "partial": bool(partial)})
        return ShippedResult(self._blobs)  # type: ignore[return-value]

    def block_sums(self, bounds: np.ndarray, count: int) -> BlockSums:
        """The per-block return sums of the result table's first ``count`` rows (a sweep's
        overfitting statistics), re-simulated in the sandbox: they run the user's signals."""
        reply = self._request({"op": "block_sums", "bounds": [int(b) for b in bounds],
                               "count": int(count)})
        sums = np.frombuffer(self._blobs["sums"], dtype=np.float64).reshape(reply["shape"])
        return BlockSums(n=np.diff(np.asarray(bounds)).astype(float), sums=sums.copy())

    def _recovered_result(self) -> Result:
        """After the sandbox was killed: the partial result of the last checkpoint, rebuilt in
        a new sandbox (within ``RECOVERY_SECONDS``: its best combination runs user code)."""
        if self._state is None:
            raise errors.RunError("the run's sandbox was stopped before any checkpoint")
        deadline = time.monotonic() + RECOVERY_SECONDS
        state = self._state

        def in_time() -> None:
            if time.monotonic() > deadline:
                raise errors.RunError(f"the partial result was not rebuilt within "
                                      f"{RECOVERY_SECONDS:g} s")

        self.watch = in_time
        self.sandbox = self._start()
        try:
            self._request({"op": "prepare"})
            self._request({"op": "load_state"}, {"state": state})
            self._request({"op": "result", "partial": True})
            return ShippedResult(self._blobs)  # type: ignore[return-value]
        finally:
            self.close()

    def close(self) -> None:
        """End the sandbox (a fresh one per run: nothing it holds is seen again)."""
        box = getattr(self, "sandbox", None)
        if box is not None:
            box.kill()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


class _AuditTimedOut(Exception):
    """The audit's time is up (raised by the wait callback: the sandbox is killed)."""


def audit_timeout() -> float:
    """``QUANTLAB_AUDIT_TIMEOUT``: the seconds a shipped strategy's audit may take (30)."""
    return env_number(AUDIT_TIMEOUT_VAR, AUDIT_TIMEOUT_DEFAULT, positive=True, example="60")


def audit_in_sandbox(cfg: BacktestConfig, bars: Bars, *, timeout: float | None = None) -> Audit:
    """The look-ahead audit of ``cfg``'s shipped strategy source on ``bars``, run in a fresh
    sandbox (the source is loaded there, the edge combinations computed there), which is killed
    when done or after ``timeout`` seconds (default :func:`audit_timeout`; counted from the
    sandbox's start, not the server's warm-up). Out of time: ConfigError. The strategy failing
    (or ending its process): StrategyError, as :func:`shipped_audit` raises in-process."""
    limit = audit_timeout() if timeout is None else float(timeout)
    box = sandbox.server(AUDIT_HANDLER).open()
    deadline = time.monotonic() + limit

    def in_time() -> None:
        if time.monotonic() > deadline:
            raise _AuditTimedOut

    header = {"op": "audit", "config": cfg.model_dump(mode="json"), **_bars_header(bars)}
    try:
        reply = box.request(header, _bar_arrays(bars), wait=in_time, every=WATCH_EVERY)
    except _AuditTimedOut:
        raise errors.ConfigError(
            f"the look-ahead audit of strategy '{cfg.strategy}' did not finish in {limit:g} s "
            f"(the strategy may never return; its process was stopped). Make the strategy "
            f"faster, raise {AUDIT_TIMEOUT_VAR}, or set audit: false to queue it unaudited",
            field="strategy", seconds=limit) from None
    except sandbox.SandboxGone as exc:
        raise UserCodeFailed(
            f"strategy '{cfg.strategy}' ended the process its look-ahead audit ran in (it "
            f"called exit, crashed, or the system killed it)", strategy=cfg.strategy) from exc
    finally:
        box.kill()  # a fresh sandbox per audit: nothing the source did is seen again
    failure = reply.header.get("error")
    if failure:
        raise _rebuilt(failure, cfg.strategy)
    return Audit.from_json(reply.header["audit"])


class ShippedResult:
    """A sandbox's result as the runner saves it: its blobs as the sandbox wrote them (not
    parsed and written again), the summary read from them, the sweep's table parsed only when
    asked for."""

    def __init__(self, blobs: Mapping[str, bytes]) -> None:
        self._blobs = dict(blobs)
        self._summary = json.loads(self._blobs["summary.json"])
        self.metrics: dict[str, Any] = self._summary["metrics"]
        self.params: dict[str, Any] = self._summary["params"]
        self.config: dict[str, Any] = self._summary["config"]
        self.partial = bool(self._summary["partial"])
        # set by the runner (research.run_end_fields) and saved with the result, as a Result's
        self.overfitting_summary: dict[str, Any] | None = self._summary.get("overfitting")

    def to_blobs(self) -> dict[str, bytes]:
        blobs = dict(self._blobs)
        if self.overfitting_summary is not None:
            summary = {**self._summary, "overfitting": self.overfitting_summary}
            blobs["summary.json"] = json.dumps(summary, default=lambda v: v.item()).encode()
        return blobs

    @functools.cached_property
    def table(self) -> pd.DataFrame | None:
        """The sweep's table (parsed once: the ledger and the statistics each read it)."""
        blob = self._blobs.get("table.parquet")
        return None if blob is None else pd.read_parquet(io.BytesIO(blob))


def _bars_header(bars: Bars) -> dict[str, Any]:
    return {"symbols": list(bars.symbols), "interval": bars.interval,
            "tz": None if bars.index.tz is None else str(bars.index.tz)}


def _bar_arrays(bars: Bars) -> dict[str, np.ndarray]:
    arrays = {name: np.asarray(getattr(bars, name)) for name in BAR_FIELDS}
    arrays["index"] = np.asarray(bars.index.asi8)
    return arrays


def _rebuilt(failure: Mapping[str, Any], strategy: str) -> Exception:
    """The sandbox's exception as the worker raises it: a QuantLab error keeps its class (its
    message is a sentence for the researcher), anything else is a :class:`UserCodeFailed` under
    the same class name; the sandbox's traceback rides along."""
    name = str(failure.get("type") or "Exception")
    message = str(failure.get("message") or "")
    found = getattr(errors, name, None)
    cls: type[Exception]
    if isinstance(found, type) and issubclass(found, errors.QuantlabError):
        exc: Exception = found.__new__(found)
        errors.QuantlabError.__init__(exc, message)  # type: ignore[arg-type]
    else:
        cls = type(name, (UserCodeFailed,), {"__module__": "sandbox"})
        exc = cls(message)
        exc.strategy = strategy  # type: ignore[attr-defined]
    exc.remote_type = name  # type: ignore[attr-defined]
    exc.remote_traceback = str(failure.get("traceback") or "")  # type: ignore[attr-defined]
    return exc


# -- the sandbox's side ----------------------------------------------------------------------------


def warm() -> None:
    """In the sandbox server, once: load the engine's kernels (single run and sweep, built-in
    and Python strategies) and the Parquet writer, so that a sandbox starts warm."""
    from quantlab.bars import from_frame
    from quantlab.strategies import Strategy

    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 300)))
    frame = pd.DataFrame({"open": close, "high": close * 1.01, "low": close * 0.99,
                          "close": close, "volume": 1e6},
                         index=pd.date_range("2020-01-01", periods=300, freq="B"))
    bars = from_frame(frame, "WARMUP")

    def momentum(bars: Any, n: int = 5) -> np.ndarray:
        c = bars.close[0]
        out = np.zeros(len(c), np.int8)
        out[n:] = np.where(c[n:] > c[:-n], 1, -1)
        return out

    python_strategy = Strategy(momentum, name="warmup_python")
    for strategy, params in (("sma_crossover", {}), ("sma_crossover", {"fast": [5, 10],
                                                                         "slow": [20, 30]}),
                             (python_strategy, {}), (python_strategy, {"n": [3, 5]})):
        with contextlib.suppress(Exception):  # a failed warm-up only costs speed
            sim = Simulation(bars, strategy=strategy, params=params)
            sim.prepare()
            sim.run(sim.total_units)
            sim.result().to_blobs()


def serve(sock: Any) -> None:
    """In a sandbox: answer the worker's requests until it hangs up."""
    session = _Session()
    while True:
        try:
            message = sandbox.receive(sock)
        except sandbox.SandboxGone:
            return
        try:
            header, blobs = session.handle(message)
        except Exception as exc:  # the run's failure, told to the worker with its traceback
            header, blobs = {"error": {"type": type(exc).__name__, "message": str(exc),
                                       "traceback": traceback.format_exc()}}, {}
        sandbox.send(sock, header, None, blobs)


class _Session:
    """The one ``Simulation`` a sandbox holds (or the one look-ahead audit it runs)."""

    sim: Simulation

    def handle(self, message: sandbox.Message) -> tuple[dict[str, Any], dict[str, bytes]]:
        op = message.header.get("op")
        if op == "open":
            self.sim = _simulation(message)
            return self._units(), {}
        if op == "audit":
            return {"audit": _audit(message)}, {}
        sim = self.sim
        if op == "prepare" or message.header.get("prepare"):
            sim.prepare()
        if op == "prepare":
            return {}, {}
        if op == "run":
            sim.run(int(message.header["units"]))
            # the worker asks for the result next: send it now (one round trip less)
            return self._units(), sim.result().to_blobs() if sim.finished else {}
        if op == "state":
            return {}, {"state": sim.state_bytes()}
        if op == "load_state":
            sim.load_state(message.blobs["state"])
            return self._units(), {}
        if op == "result":
            return {}, sim.result(partial=bool(message.header.get("partial"))).to_blobs()
        if op == "block_sums":
            bounds = np.asarray(message.header["bounds"], dtype=np.int64)
            sums = table_block_sums(sim, bounds, int(message.header["count"])).sums
            return {"shape": list(sums.shape)}, {"sums": np.ascontiguousarray(sums).tobytes()}
        raise errors.RunError(f"unknown sandbox request {op!r}")

    def _units(self) -> dict[str, Any]:
        return {"is_sweep": self.sim.is_sweep, "total_units": self.sim.total_units,
                "done_units": self.sim.done_units, "params": list(self.sim.strategy.params)}


def _bars(message: sandbox.Message) -> Bars:
    header, arrays = message.header, message.arrays
    index = pd.DatetimeIndex(arrays["index"].view("datetime64[ns]"))
    if header.get("tz"):
        index = index.tz_localize("UTC").tz_convert(header["tz"])
    return Bars(index=index, symbols=tuple(header["symbols"]), open=arrays["open"],
                high=arrays["high"], low=arrays["low"], close=arrays["close"],
                volume=arrays["volume"], interval=header["interval"])


def _audit(message: sandbox.Message) -> dict[str, Any]:
    """The verdict of the shipped strategy's audit, as JSON (timestamps as text)."""
    cfg = BacktestConfig.from_any(message.header["config"], check=False)
    verdict = shipped_audit(cfg, _bars(message))
    return json.loads(json.dumps(verdict.to_json(), default=str))


def _simulation(message: sandbox.Message) -> Simulation:
    header = message.header
    bars = _bars(message)
    cfg = BacktestConfig.from_any(header["config"], check=False)
    kwargs = cfg.engine_kwargs()
    kwargs["strategy"] = load_shipped_strategy(cfg.strategy, cfg.strategy_source or "")
    return Simulation(bars, **{**kwargs, **header.get("overrides", {})})
