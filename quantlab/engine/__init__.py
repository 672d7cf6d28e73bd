"""The Numba backtest engine: fills, costs, positions, equity, sweeps and portfolios.

``Simulation`` is the chunked, checkpointable run the workers drive; ``ql.backtest`` runs one
to the end. See docs/engine.md for the semantics.
"""

from quantlab.engine.result import Result
from quantlab.engine.simulation import Simulation
from quantlab.engine.validate import sweep_combinations
from quantlab.engine.version import ENGINE_VERSION

__all__ = ["ENGINE_VERSION", "Result", "Simulation", "sweep_combinations"]
