# Shared set-up steps for scripts/lab.sh and scripts/test.sh (sourced, not run).
# Creates or refreshes the virtual environment at .venv and installs the system packages the
# chosen job needs. Safe to run again: it does only what is missing or out of date.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"

say() { printf '\033[1m[quantlab]\033[0m %s\n' "$*"; }
die() { printf '\033[1;31m[quantlab] error:\033[0m %s\n' "$*" >&2; exit 1; }

pick_python() {
  for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  die "QuantLab needs Python >= 3.11. Install it (Debian/Ubuntu: sudo apt-get install python3 python3-venv) or set PYTHON=/path/to/python3.11"
}

apt_install() {
  # apt_install PACKAGE... : install Debian packages when root, else say exactly what to run.
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing $* with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    if [ -z "${QUANTLAB_APT_UPDATED:-}" ]; then  # once per command
      apt-get update -qq || die "apt-get update failed; check the network and retry"
      export QUANTLAB_APT_UPDATED=1
    fi
    # Packages like redis-server and prometheus start a system daemon on install; the tests start
    # their own servers on free ports, so keep the daemons from starting (policy-rc.d, exit 101).
    local policy=/usr/sbin/policy-rc.d added=""
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && added=1
      # left behind (an interrupted download), it would keep every service from starting
      trap 'rm -f /usr/sbin/policy-rc.d' EXIT INT TERM
    fi
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null || {
      [ -z "$added" ] || rm -f "$policy"; die "apt-get install $* failed"; }
    if [ -n "$added" ]; then
      rm -f "$policy"
      trap - EXIT INT TERM
    fi
  else
    die "missing system package(s): $*. Install them with: sudo apt-get install $*  (then run this command again)"
  fi
}

ensure_venv() {
  # ensure_venv EXTRAS : create .venv when missing; (re)install the project when pyproject changed.
  local extras="$1" python stamp want
  if [ ! -x "$PY" ]; then
    python="$(pick_python)"
    say "creating virtual environment at .venv ($("$python" --version))"
    if ! "$python" -m venv "$VENV" 2>/dev/null; then
      rm -rf "$VENV"
      apt_install python3-venv
      "$python" -m venv "$VENV" || die "could not create .venv with $python"
    fi
    "$PY" -m pip install -q --upgrade pip
  fi
  stamp="$VENV/.quantlab-installed"
  want="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16) $extras"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    local target="$ROOT"
    [ -z "$extras" ] || target="$ROOT[$extras]"
    say "installing quantlab${extras:+[$extras]} and its dependencies into .venv"
    "$PY" -m pip install -q -e "$target" || die "pip install failed (see above)"
    echo "$want" > "$stamp"
  fi
  export NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-$VENV/numba-cache}"
  export PATH="$VENV/bin:$PATH"
}

ensure_command() {
  # ensure_command COMMAND PACKAGE : the command must exist; install PACKAGE when it does not.
  command -v "$1" >/dev/null 2>&1 || apt_install "$2"
  command -v "$1" >/dev/null 2>&1 || die "$1 is still missing after installing $2"
}

ensure_node() {
  # The Lab extension is built with Node >= 20.19 and npm (packages from the npm registry).
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt_install nodejs npm
  fi
  node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=19)?0:1)' ||
    die "Node $(node --version) is too old to build the Lab extension: install Node >= 20.19 (e.g. from nodesource or nvm), then run this command again"
}
