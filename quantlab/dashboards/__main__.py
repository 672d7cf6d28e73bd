"""``python -m quantlab.dashboards compare|analytics [--port P]``: the same as
``quantlab dashboard``."""

from quantlab.dashboards.cli import dashboard

if __name__ == "__main__":
    dashboard()
