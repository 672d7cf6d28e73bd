#!/usr/bin/env bash
# Build the JupyterLab extension (extension/ -> quantlab/labextension/) with Node and packages
# from the npm registry, then make the environment's JupyterLab see it.
#
#   bash scripts/build-extension.sh            build when the sources changed, else do nothing
#   bash scripts/build-extension.sh --force    rebuild whatever the stamp says
#
# Idempotent: `npm ci` runs only when package-lock.json changed (or node_modules is missing), the
# build only when a source, the lock file or the output changed. The build itself is offline: it
# resolves JupyterLab's shared packages from @jupyterlab/core-meta in node_modules (pinned to the
# installed JupyterLab minor), so no download happens after `npm ci`. The recipe is in docs/lab.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXT="$ROOT/extension"
OUT="$ROOT/quantlab/labextension"
VENV="${QUANTLAB_VENV:-$ROOT/.venv}"
FORCE=0
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    -h|--help) sed -n 2,11p "$0"; exit 0 ;;
    *) echo "build-extension.sh: unknown option '$arg' (use --force or --help)" >&2; exit 2 ;;
  esac
done

say() { printf '\033[1m[quantlab]\033[0m %s\n' "$*"; }
die() { printf '\033[1;31m[quantlab] error:\033[0m %s\n' "$*" >&2; exit 1; }

command -v node >/dev/null 2>&1 || die "Node.js is needed to build the Lab extension: install Node >= 20.19 (Debian: sudo apt-get install nodejs npm), then run this script again"
command -v npm >/dev/null 2>&1 || die "npm is needed to build the Lab extension (Debian: sudo apt-get install npm)"

if [ -x "$VENV/bin/jupyter-builder" ]; then
  BUILDER="$VENV/bin/jupyter-builder"
elif command -v jupyter-builder >/dev/null 2>&1; then
  BUILDER="$(command -v jupyter-builder)"
else
  die "jupyter-builder is missing: pip install jupyter-builder (it comes with jupyterlab >= 4.6), then run this script again"
fi
JUPYTER_BIN="$(dirname "$BUILDER")"

cd "$EXT"

# 1. Node packages, exactly as locked.
lock_hash="$(sha256sum package.json package-lock.json | sha256sum | cut -c1-16)"
lock_stamp="node_modules/.quantlab-lock"
if [ ! -f "$lock_stamp" ] || [ "$(cat "$lock_stamp")" != "$lock_hash" ]; then
  say "installing the extension's npm packages (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error || die "npm ci failed in extension/ (see above); check that the npm registry is reachable"
  echo "$lock_hash" > "$lock_stamp"
fi

# 2. The build, when anything that goes into it changed.
src_hash="$( { sha256sum package.json package-lock.json tsconfig.json;
               find src style schema -type f -print0 | sort -z | xargs -0 sha256sum;
               node --version; } | sha256sum | cut -c1-16)"
build_stamp="$EXT/.build-stamp"
if [ "$FORCE" -eq 1 ] || [ ! -f "$build_stamp" ] || [ "$(cat "$build_stamp")" != "$src_hash" ] \
   || [ ! -f "$OUT/package.json" ] || ! ls "$OUT"/static/remoteEntry.*.js >/dev/null 2>&1; then
  say "building the JupyterLab extension into quantlab/labextension"
  rm -f "$build_stamp"
  rm -rf lib tsconfig.tsbuildinfo "$OUT"
  npx --no-install tsc --sourceMap false || die "TypeScript compilation failed (see above)"
  PATH="$JUPYTER_BIN:$PATH" "$BUILDER" build . || die "jupyter-builder build failed (see above)"
  echo "$src_hash" > "$build_stamp"
else
  say "Lab extension is up to date (sources unchanged)"
fi

# 3. Let this environment's JupyterLab find the build: a copy in .venv/share/jupyter/labextensions
#    (an editable install copies shared-data only at install time, which may predate the build;
#    a copy rather than a link, so that pip uninstalling the old copy never deletes the build).
if [ -d "$VENV" ]; then
  labext_dir="$VENV/share/jupyter/labextensions"
  if [ -L "$labext_dir/quantlab" ] || ! diff -rq "$OUT" "$labext_dir/quantlab" >/dev/null 2>&1; then
    mkdir -p "$labext_dir"
    rm -rf "${labext_dir:?}/quantlab"
    cp -R "$OUT" "$labext_dir/quantlab"
    say "installed the Lab extension into $labext_dir/quantlab"
  fi
  server_conf="$VENV/etc/jupyter/jupyter_server_config.d/quantlab.json"
  if ! cmp -s "$ROOT/jupyter-config/server-config/quantlab.json" "$server_conf"; then
    mkdir -p "$(dirname "$server_conf")"
    cp "$ROOT/jupyter-config/server-config/quantlab.json" "$server_conf"
    say "enabled the quantlab server extension in .venv"
  fi
fi
