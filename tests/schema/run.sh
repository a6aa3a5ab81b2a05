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

here=tests/schema
venv=target/python-venv
bin=target/debug/scenario-hub

if [ ! -x "$venv/bin/python" ]; then
  echo "creating $venv"
  rm -rf "$venv"
  "${PYTHON:-python3}" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"

if [ ! -x "$bin" ]; then
  echo "building $bin"
  cargo build --bin scenario-hub
fi

tmp="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then
    # SIGTERM lets it shut down cleanly; SIGKILL if it is still there after 10 s.
    kill "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

export DATABASE_URL="sqlite://$tmp/schema.db?mode=rwc"
port="$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export BIND="127.0.0.1:$port"
url="http://$BIND"

"$bin" serve >"$tmp/server.log" 2>&1 &
server_pid=$!

show_log() {
  echo "--- server log ($tmp/server.log) ---" >&2
  tail -n 40 "$tmp/server.log" >&2 || true
}

for _ in $(seq 1 150); do
  if curl -fsS -o /dev/null "$url/healthz" 2>/dev/null; then
    break
  fi
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "scenario-hub exited before answering /healthz" >&2
    show_log
    exit 1
  fi
  sleep 0.1
done
if ! curl -fsS -o /dev/null "$url/healthz"; then
  echo "scenario-hub did not answer $url/healthz within 15 s" >&2
  show_log
  exit 1
fi

if ! "$venv/bin/python" "$here/diff.py" --url "$url/graphql" --sdl schema.graphql; then
  echo "the served schema and schema.graphql differ (see above)" >&2
  exit 1
fi
