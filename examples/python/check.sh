#!/usr/bin/env bash
# End-to-end check of the Python example engine (examples/python/engine.py):
# a virtualenv with requirements.txt, a fresh scenario-hub on a free port over
# a temporary SQLite file, API keys (so both transports are checked with
# authentication), then check.py. Run from anywhere:
#
#   bash examples/python/check.sh
#
# The virtualenv lives in target/python-venv and is reused; set PYTHON to pick
# the interpreter that creates it (default python3, 3.10 or newer).
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/lib/hub.sh

here=examples/python
hub_venv "$here/requirements.txt"
hub_prepare py

# Keys, so that the check covers the Bearer header and the connection_init
# payload: the admin key seeds and reads, the engine key runs the engine.
admin_key="$("$bin" keys create --role admin --name python-check-admin | tail -n 1)"
engine_key="$("$bin" keys create --role engine --name python-check-engine | tail -n 1)"

hub_start
if ! "$venv/bin/python" "$here/check.py" --url "$url/graphql" \
  --admin-key "$admin_key" --engine-key "$engine_key"; then
  hub_log
  exit 1
fi
