#!/usr/bin/env bash
# Checks the Python engine SDK (clients/python): a virtualenv at
# target/sdk-venv (created once by $PYTHON, default python3, 3.10 or newer,
# then reused), the package installed with its test extras, `mypy --strict`
# on the package, its tests and the example engine, then the tests, which
# drive the real server (target/debug/scenario-hub, built when missing;
# $SCENARIO_HUB_BIN overrides it). Run from anywhere:
#
#   bash clients/python/check.sh [PYTEST ARGS...]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$root/target/sdk-venv"

# Bytecode and tool caches go to target/, not into the source tree.
export PYTHONPYCACHEPREFIX="$root/target/sdk-pycache"

if [ ! -x "$venv/bin/python" ]; then
  echo "creating $venv"
  rm -rf "$venv"
  "${PYTHON:-python3}" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$here[test]"

if [ -z "${SCENARIO_HUB_BIN:-}" ] && [ ! -x "$root/target/debug/scenario-hub" ]; then
  echo "building target/debug/scenario-hub"
  (cd "$root" && cargo build --bin scenario-hub)
fi

cd "$here"
# The example engine on the SDK is checked with it.
echo "mypy --strict src/scenario_hub tests examples/python/engine.py"
"$venv/bin/python" -m mypy --strict --cache-dir "$root/target/sdk-mypy-cache" \
  src/scenario_hub tests "$root/examples/python/engine.py"
echo "pytest"
"$venv/bin/python" -m pytest -q "$@"
