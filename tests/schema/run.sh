#!/usr/bin/env bash
# The served schema against the checked-in SDL under a standard schema diff:
# a fresh scenario-hub on a free port over a temporary SQLite file, then
# diff.py (graphql-core's find_breaking_changes and find_dangerous_changes,
# both ways). Fails with the list of changes if there is any. Run from
# anywhere:
#
#   bash tests/schema/run.sh
#
# Shares the virtualenv target/python-venv with examples/python/check.sh
# (PYTHON picks the interpreter that creates it, default python3) and uses
# target/debug/scenario-hub, built only when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/lib/hub.sh

hub_venv tests/schema/requirements.txt
hub_prepare schema
hub_start
if ! "$venv/bin/python" tests/schema/diff.py --url "$url/graphql" --sdl schema.graphql; then
  echo "the served schema and schema.graphql differ (see above)" >&2
  exit 1
fi
