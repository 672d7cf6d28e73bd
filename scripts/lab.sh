#!/usr/bin/env bash
# The main job, from a fresh machine: set up .venv and run QuantLab in embedded mode
# (nothing else to start: the queue, registry and worker live under ~/.quantlab).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_venv "mongo"
quantlab demo "$@"
