"""Voila dashboards for people who never open a notebook.

- ``compare.ipynb``: pick 2 to 5 runs; metrics, equity overlay, drawdowns, correlation, config
  differences; save a comparison and share its URL (``?comparison=<id>``).
- ``analytics.ipynb``: statistics over all runs, filtered by period, strategy, tag and user.

``quantlab dashboard compare|analytics`` serves one with Voila (:mod:`quantlab.dashboards.serve`);
the Lab's own Jupyter server serves both too, at ``<base_url>quantlab/dashboards/<name>``
(:mod:`quantlab.server.dashboards`). The widgets are in :mod:`quantlab.dashboards.app`, the
compare dashboard's run picker in :mod:`quantlab.dashboards.picker`.
"""
