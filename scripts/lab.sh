#!/usr/bin/env bash
# The main job, from a fresh machine: set up .venv, build the Lab extension, install the
# synthetic sample data, and open JupyterLab on the quickstart notebook in embedded mode
# (nothing else to start: queue, registry and worker live under ~/.quantlab; the first
# %%backtest starts the worker). Extra arguments go to `jupyter lab`.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_venv "mongo"
ensure_node
bash scripts/build-extension.sh
say "installing the synthetic sample data (offline, once)"
quantlab data sample >/dev/null
args=(--notebook-dir="$ROOT/notebooks")
[ "$(id -u)" -ne 0 ] || args+=(--allow-root)
say "starting JupyterLab on notebooks/quickstart.ipynb (Ctrl-C to stop)"
exec jupyter lab "${args[@]}" "$@" "$ROOT/notebooks/quickstart.ipynb"
