"""Run reports (a papermill notebook per run), batch reruns, and the HTML views of comparisons
and statistics shared with the notebook and the dashboards.

- :mod:`quantlab.reports.runner`: ``run_report`` executes ``run_report.ipynb`` for a run.
- :mod:`quantlab.reports.rerun`: ``rerun`` replays stored configs and checks they reproduce.
- :mod:`quantlab.reports.cli`: the ``quantlab report`` and ``quantlab rerun`` commands.
"""
