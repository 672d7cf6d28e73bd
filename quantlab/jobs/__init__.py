"""Runs as jobs: the Huey queue and workers, the orchestrator and the ``ql.submit`` API.

- :mod:`quantlab.jobs.lifecycle`: statuses, allowed transitions, event payloads, and
  ``transition()``, the one way a run's status changes.
- :mod:`quantlab.jobs.api`: ``submit``, ``get_run``, ``runs``, ``Run`` (the public face).
- :mod:`quantlab.jobs.orchestrator`: submit-side logic (validation, cache, limits, cancel) and
  the reaper.
- :mod:`quantlab.jobs.fingerprint`: the data fingerprint and the config hash of a submission.
- :mod:`quantlab.jobs.execution`: what runs and shards share on a worker (the chunked engine
  loop, stop exceptions, bar loading, caches).
- :mod:`quantlab.jobs.runner`: the worker-side execution of one run.
- :mod:`quantlab.jobs.shards`: large sweeps split across workers, and their coordinator.
- :mod:`quantlab.jobs.queue`: the Huey app (``SqliteHuey`` embedded, ``PriorityRedisHuey`` team)
  and the messages; :mod:`quantlab.jobs.tasks`: the task bodies a worker registers.
- :mod:`quantlab.jobs.worker`: the consumer; :mod:`quantlab.jobs.supervisor`: starting the
  embedded worker (locks, spawn, idle exit). The ``quantlab worker`` command (``quantlab.cli``)
  composes the consumer with the services of higher layers.
- :mod:`quantlab.jobs.display`: how runs look, and the hooks higher layers fill.
- :mod:`quantlab.jobs.cli`: ``quantlab runs | status | cancel``.

See docs/jobs.md.
"""
