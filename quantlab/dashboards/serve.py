"""Serving a dashboard notebook with Voila.

The options say why a stakeholder's first page is fast and the server stays lean:

- a **pre-heated kernel** (``preheat_kernel``, a pool of ``pool_size`` per notebook) has run the
  notebook's imports before anyone asks; the notebook then waits in
  ``voila.utils.get_query_string()`` for the visitor's query string;
- **idle kernels are culled** (``MappingKernelManager.cull_idle_timeout``, checked every
  ``cull_interval`` seconds; pooled kernels are never culled by Voila);
- the widgets' JavaScript is Voila's own bundle, served by this server, and the page template
  (``share/voila/templates/quantlab``) drops the stylesheets Voila's lab template loads from a
  CDN: nothing comes from the network, so pages work offline.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from quantlab.errors import ConfigError, MissingDependency, did_you_mean

DASHBOARDS = {
    "compare": Path(__file__).with_name("compare.ipynb"),
    "analytics": Path(__file__).with_name("analytics.ipynb"),
}
DEFAULT_PORT = 8866
# Where the Lab's own Jupyter server serves them too (quantlab.server.dashboards), under its
# base URL: the panel's "Compare selected" opens <base_url>quantlab/dashboards/compare.
LAB_ROUTE = "quantlab/dashboards"
# Holds voila/templates/quantlab: Voila's lab template without its CDN stylesheets.
TEMPLATE_ROOT = Path(__file__).with_name("share")
TEMPLATE = "quantlab"
EXTENSION_DENYLIST = ("quantlab",)
REQUEST_VARIABLES = ("QUERY_STRING", "SCRIPT_NAME", "PATH_INFO", "VOILA_PREHEAT", "VOILA_KERNEL_ID",
                     "VOILA_REQUEST_URL")  # the JupyterLab side panel has no place in a dashboard


@dataclass(frozen=True)
class ServeOptions:
    port: int = DEFAULT_PORT
    ip: str = "127.0.0.1"
    preheat: bool = True
    pool_size: int = 1
    cull_idle_timeout: int = 600  # seconds without activity before a kernel is shut down
    cull_interval: int = 60
    open_browser: bool = False


def notebook_path(name: str) -> Path:
    if name not in DASHBOARDS:
        raise ConfigError(
            f"unknown dashboard {name!r}{did_you_mean(name, DASHBOARDS)}; choose "
            f"{' or '.join(DASHBOARDS)}", field="dashboard",
        )
    return DASHBOARDS[name]


def voila_argv(name: str, options: ServeOptions = ServeOptions()) -> list[str]:
    """The ``voila`` command line that serves dashboard ``name``."""
    if not 0 < options.port < 65536:
        raise ConfigError(f"port {options.port} is not a TCP port; use 1-65535, e.g. --port 8866",
                          field="port")
    if options.pool_size < 1 and options.preheat:
        raise ConfigError("a pre-heated pool needs at least one kernel; use --pool-size 1 or "
                          "--no-preheat", field="pool_size")
    argv = [
        str(notebook_path(name)),
        f"--port={options.port}",
        f"--Voila.ip={options.ip}",
        "--theme=light",
        f"--template={TEMPLATE}",
        *[f"--VoilaConfiguration.extension_denylist={name}" for name in EXTENSION_DENYLIST],
        "--strip_sources=True",
        "--show_tracebacks=False",
        f"--MappingKernelManager.cull_idle_timeout={options.cull_idle_timeout}",
        f"--MappingKernelManager.cull_interval={options.cull_interval}",
        # A stakeholder's open tab keeps its kernel connected; it is culled only when idle.
        "--MappingKernelManager.cull_connected=True",
    ]
    if options.preheat:
        argv += ["--preheat_kernel=True", f"--pool_size={options.pool_size}"]
    if not options.open_browser:
        argv.append("--no-browser")
    return argv


def voila_command(name: str, options: ServeOptions = ServeOptions()) -> list[str]:
    """The full command: the Voila of this Python environment, then :func:`voila_argv`."""
    try:
        import voila  # noqa: F401  (heavy; imported only to say how to install it if missing)
    except ImportError:
        raise MissingDependency(
            "dashboards need the 'voila' package; install it with: pip install 'voila>=0.5.8'",
            module="voila", extra="",
        ) from None
    return [sys.executable, "-m", "voila", *voila_argv(name, options)]


def voila_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment Voila runs in: ``base`` (default: this process's) without request
    variables, and with the folder of QuantLab's Voila template first on JUPYTER_PATH."""
    env = dict(os.environ if base is None else base)
    # Request variables belong to a visitor's kernel; a pre-heated kernel that inherited one
    # from the server would take it for its visitor's query string.
    for name in REQUEST_VARIABLES:
        env.pop(name, None)
    paths = [str(TEMPLATE_ROOT), *[p for p in env.get("JUPYTER_PATH", "").split(os.pathsep) if p]]
    env["JUPYTER_PATH"] = os.pathsep.join(paths)
    return env


def served_url(options: ServeOptions) -> str:
    host = "localhost" if options.ip in ("127.0.0.1", "0.0.0.0", "") else options.ip
    return f"http://{host}:{options.port}/"


def chromium() -> str | None:
    """The system Chromium, if installed (tests drive the dashboards with it)."""
    return shutil.which("chromium") or shutil.which("chromium-browser")
