"""Per-block power sums of every sweep combination's bar returns, by re-simulation.

CSCV needs each combination's returns cut into S contiguous blocks; the deflated Sharpe ratio
needs each combination's skewness and kurtosis. Both come from sums: per block ``sum r``,
``sum r^2``, ``sum r^3``, ``sum r^4``. They are computed by running each combination again
through the engine's own kernels (``simulate1``/``simulate``), one block of bars per call, and
reading the sums the kernel accumulates: the same returns as the sweep's metric rows, never a
``T x N`` matrix (memory ``N x S x 4`` floats), in parallel over combinations.

The bar returns are the metrics' (docs/metrics.md): ``r_t = E_t / E_{t-1} - 1`` for every bar,
``E_{-1}`` the initial cash, so ``T`` is the number of bars and the per-bar SR is the sweep
table's ``sharpe / sqrt(periods_per_year)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit, prange

from quantlab.engine import kernel as K
from quantlab.engine.simulation import Simulation, _crossover_grid, _line_groups
from quantlab.indicators import crossover
from quantlab.metrics import M_N_ACC, M_SUM, M_SUM2, M_SUM3, M_SUM4

# a batch of user-strategy signals holds at most this many bytes (k x symbols x bars int8)
_BATCH_BYTES = 8 << 20
# combinations re-simulated between two reports of block_sums(progress=): a 20,000-combination
# sweep on 5 symbols re-simulates ~1,000 of them in ~0.1 s here
PART_COMBINATIONS = 1000


@dataclass(frozen=True)
class BlockSums:
    """``n`` (S,) returns per block; ``sums`` (S, N, 4): per block and combination the sums of
    ``r``, ``r^2``, ``r^3``, ``r^4``."""

    n: np.ndarray
    sums: np.ndarray

    def totals(self) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``T`` and each combination's whole-series sums of ``r``, ``r^2``, ``r^3``, ``r^4``."""
        whole = self.sums.sum(axis=0)
        return float(self.n.sum()), whole[:, 0], whole[:, 1], whole[:, 2], whole[:, 3]


@njit(cache=True, error_model="numpy")
def _one(open_, high, low, close, sig, cfg, weights, bounds, out, one, many):
    """One combination over all bars, block by block: ``out[b]`` = the sums of block ``b``.

    ``high``, ``low``, ``one``, ``many``: as ``kernel.sweep_kind`` gives them, so a call
    compiles only the kernel it runs (compiling ``simulate1`` twice for nothing cost ~2.5 s of
    a cold worker's first sweep end)."""
    n_sym = close.shape[0]
    acct = np.empty(K.A_N)
    pos = np.empty((n_sym, K.P_N))
    acc = np.empty(M_N_ACC)
    K._reset_state(cfg[K.C_CASH], acct, pos, acc)
    no_eq = np.empty(0)
    no_log = np.empty((0, K.L_N))
    detail = np.bool_(False)
    stops = cfg[K.C_SL] > 0 or cfg[K.C_TP] > 0  # simulate1 then needs the high and low
    for b in range(bounds.shape[0] - 1):
        # the kernel adds each bar's return to these sums: zero them, run the block, read them
        acc[M_SUM] = 0.0
        acc[M_SUM2] = 0.0
        acc[M_SUM3] = 0.0
        acc[M_SUM4] = 0.0
        if many is not None:
            K.simulate(open_, high, low, close, sig, bounds[b], bounds[b + 1], cfg, weights,
                       acct, pos, acc, detail, no_eq, no_log)
        if one is not None:
            if high is None or not stops:
                K.simulate1(open_[0], None, None, close[0], sig[0], None, None, bounds[b],
                            bounds[b + 1], cfg, weights[0], acct, pos, acc, detail, no_eq,
                            no_log)
            else:
                K.simulate1(open_[0], high[0], low[0], close[0], sig[0], None, None, bounds[b],
                            bounds[b + 1], cfg, weights[0], acct, pos, acc, detail, no_eq,
                            no_log)
        out[b, 0] = acc[M_SUM]
        out[b, 1] = acc[M_SUM2]
        out[b, 2] = acc[M_SUM3]
        out[b, 3] = acc[M_SUM4]


@njit(cache=True, parallel=True, error_model="numpy")
def _signals(open_, high, low, close, sigs, cfgs, rows, weights, bounds, out, one, many):
    """Combination ``j``: signals ``sigs[j]``, config row ``cfgs[rows[j]]`` (swept options)."""
    for j in prange(sigs.shape[0]):
        _one(open_, high, low, close, sigs[j], cfgs[rows[j]], weights, bounds, out[j], one,
             many)


@njit(cache=True, parallel=True, error_model="numpy")
def _crossovers(open_, high, low, close, lines, fast_row, slow_row, cfgs, rows, weights, bounds,
                out, one, many):
    for j in prange(fast_row.shape[0]):
        sig = crossover(lines[fast_row[j]], lines[slow_row[j]])
        _one(open_, high, low, close, sig, cfgs[rows[j]], weights, bounds, out[j], one, many)


def parts(count: int) -> int:
    """How many parts :func:`block_sums` with ``progress`` computes ``count`` combinations in."""
    return max(1, -(-int(count) // PART_COMBINATIONS))


def block_sums(sim: Simulation, bounds: np.ndarray, count: int | None = None,
               first: int = 0,
               progress: Callable[[int, int], None] | None = None) -> BlockSums:
    """The block sums of the combinations ``first:count`` of the sweep ``sim`` (all by
    default), blocks ``bounds[b]:bounds[b+1]`` of the bars. ``sim`` is prepared if it is not.
    Each combination's sums are its own (no combination depends on another): computed in
    parts (a queued cross-validation's chunks, between which it may be cancelled), they are
    the same numbers. ``progress(done, total)``: told after each part of
    ``PART_COMBINATIONS`` combinations (``total`` = :func:`parts`), into one output array."""
    if not sim._prepared:
        sim.prepare()
    stop = len(sim.combos) if count is None else int(count)
    bounds = np.ascontiguousarray(bounds, dtype=np.int64)
    out = np.zeros((stop, len(bounds) - 1, 4))
    with sim._threads():
        if progress is None:
            _fill(sim, bounds, stop, out, first)
        else:
            total = parts(stop - first)
            for k in range(total):
                start = first + k * PART_COMBINATIONS
                _fill(sim, bounds, min(stop, start + PART_COMBINATIONS), out, start)
                progress(k + 1, total)
    return BlockSums(n=np.diff(bounds).astype(float), sums=out[first:].transpose(1, 0, 2))


def table_block_sums(sim: Simulation, bounds: np.ndarray, rows: int,
                     progress: Callable[[int, int], None] | None = None) -> BlockSums:
    """The block sums of the first ``rows`` rows of the sweep's result table, in its order.
    The table leaves out the combinations that raised (``sim.failed``), so row ``i`` is not
    combination ``i`` once one did: the grid is re-simulated up to the last row's combination
    and the rows' columns kept."""
    failed = getattr(sim, "failed", None) or {}
    positions = np.array([k for k in range(len(sim.combos)) if k not in failed][:rows],
                         dtype=np.int64)
    stop = int(positions[-1]) + 1 if len(positions) else 0
    whole = block_sums(sim, bounds, stop, progress=progress)
    if len(positions) == stop:
        return whole
    return BlockSums(n=whole.n, sums=whole.sums[:, positions, :])


def _fill(sim: Simulation, bounds: np.ndarray, stop: int, out: np.ndarray,
          first: int = 0) -> None:
    """As ``Simulation._run_sweep_steps``: crossover lines computed once per window, or user
    signals in bounded batches; weights per combination where they follow the params."""
    o, c = sim._arrays[0], sim._arrays[3]
    h, lo, one, many = K.sweep_kind(sim._arrays[1], sim._arrays[2], sim.cfgs)  # see _one
    kind = sim.strategy.crossover_of
    per_params = sim.weights_given is None and sim.strategy.weights_follow_params
    per_combo = sim.bars.n_symbols * sim.bars.n_bars
    cfgs, rows = sim.cfgs, sim.cfg_rows  # each combination's config row (swept options)
    if stop <= first:
        return
    if kind is not None and not per_params:
        weights = sim._weights(sim.combos[0])
        for g0, g1 in _line_groups(sim.combos, first, stop, per_combo * 8,
                                   sim.ind.max_bytes // 2):
            lines, fast, slow = _crossover_grid(sim.ind, kind, sim.combos[g0:g1])
            _crossovers(o, h, lo, c, lines, fast, slow, cfgs, rows[g0:g1], weights, bounds,
                        out[g0:g1], one, many)
        return
    batch = max(1, _BATCH_BYTES // per_combo)
    for b0 in range(first, stop, batch):
        b1 = min(stop, b0 + batch)
        combos: Any = sim.combos[b0:b1]
        sigs = sim._signals_batch(combos, b0)
        if per_params:
            for j, combo in enumerate(combos):
                _signals(o, h, lo, c, sigs[j:j + 1], cfgs, rows[b0 + j:b0 + j + 1],
                         sim._weights(combo), bounds, out[b0 + j:b0 + j + 1], one, many)
        else:
            _signals(o, h, lo, c, sigs, cfgs, rows[b0:b1], sim._weights(combos[0]), bounds,
                     out[b0:b1], one, many)


__all__ = ["PART_COMBINATIONS", "BlockSums", "block_sums", "parts"]
