"""The sandbox handler of the look-ahead audit at submit (``isolation.audit_in_sandbox``).

The same sandboxes as a worker's (:mod:`quantlab.strategies.sandbox`: a fork per request, killed
when done or out of time; :func:`quantlab.jobs.isolation.serve` answers the ``audit`` request),
from a server of its own that warms nothing up: an audit calls only the strategy's signal
function, never the engine's compiled kernels, so the first REST submit a Jupyter server handles
waits for the server's imports (about a second), not for the worker's warm-up (tens of seconds on
a loaded machine, bench/README.md).
"""

from __future__ import annotations

from quantlab.jobs.isolation import serve

__all__ = ["serve"]
