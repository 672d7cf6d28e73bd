"""How QuantLab shows things: formats, figures and HTML, shared by the notebook widgets, the run
reports, the Voila dashboards and the Jupyter server extension, so that all of them show a run
the same way.

- :mod:`quantlab.render.format`: metric, number and duration formats, small HTML tables, status
  badges (metric labels, units and directions come from :mod:`quantlab.metrics`).
- :mod:`quantlab.render.svg`: self-contained SVG charts (lines, heatmaps).
- :mod:`quantlab.render.charts`: multi-line and bar charts for comparisons and statistics.
- :mod:`quantlab.render.results`: figures and HTML of one result (equity, trades, sweeps).
- :mod:`quantlab.render.html`: the HTML views of comparisons and statistics; importing it
  registers them as the notebook views of ``Comparison`` and ``Stats``.

Nothing here imports ipywidgets or IPython: a report or a server renders with render alone.
"""
