"""How QuantLab shows things: formats, figures and HTML, shared by the notebook widgets, the run
reports, the Voila dashboards and the Jupyter server extension, so that all of them show a run
the same way.

- :mod:`quantlab.render.format`: metric, number and duration formats, small HTML tables, status
  badges (metric labels, units and directions come from :mod:`quantlab.metrics`).
- :mod:`quantlab.render.figures`: every figure, drawn with plotly (a result's price, trades,
  indicators, equity, drawdown; a sweep's heatmap, parallel coordinates, stability; the lines
  and bars of comparisons and statistics), and their HTML with plotly.js inline.
- :mod:`quantlab.render.results`: HTML of one result (its page, the trades table, a sweep's
  explorer whose heatmap cells show their combination).
- :mod:`quantlab.render.resultviews`: fills ``Result.plot``/``to_html``/``combination``.
- :mod:`quantlab.render.html`: the HTML views of comparisons and statistics; importing it
  registers them as the notebook views of ``Comparison`` and ``Stats``.

Nothing here imports ipywidgets or IPython: a report or a server renders with render alone.
"""
