#!/usr/bin/env bash
# The whole test suite, from a fresh machine: set up .venv, build the Lab extension, install
# what the tests need (redis-server, promtool, chromium), then lint, type-check and run pytest.
# Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_venv "dev,mongo"
ensure_node
bash scripts/build-extension.sh
ensure_command redis-server redis-server   # tests start private servers on free ports
ensure_command promtool prometheus         # validates and unit-tests deploy/alerts.yml
ensure_command chromium chromium           # browser tests (Playwright drives the Debian build)

status=0
say "ruff"; ruff check quantlab tests bench || status=1
say "mypy"; mypy || status=1
say "pytest"; pytest "$@" || status=$?
exit "$status"
