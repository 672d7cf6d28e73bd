"""Runs as jobs: the Huey queue and workers, the orchestrator and the ``ql.submit`` API.

- :mod:`quantlab.jobs.api`: ``submit``, ``get_run``, ``runs``, ``Run`` (the public face).
- :mod:`quantlab.jobs.orchestrator`: submit-side logic (validation, cache, limits, cancel) and
  the reaper.
- :mod:`quantlab.jobs.runner`: the worker-side execution of one run, in chunks.
- :mod:`quantlab.jobs.shards`: large sweeps split across workers.
- :mod:`quantlab.jobs.queue`: the Huey app (``SqliteHuey`` embedded, ``PriorityRedisHuey`` team).
- :mod:`quantlab.jobs.worker`: the worker process (``python -m quantlab.jobs.worker``).
- :mod:`quantlab.jobs.display`: how runs look (one overridable place).
- :mod:`quantlab.jobs.cli`: ``quantlab worker | runs | status | cancel``.

See docs/jobs.md.
"""
