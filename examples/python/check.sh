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

here=examples/python
venv=target/python-venv
bin=target/debug/scenario-hub

# The virtualenv: created once, then reused.
if [ ! -x "$venv/bin/python" ]; then
  echo "creating $venv"
  rm -rf "$venv"
  "${PYTHON:-python3}" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"

# The server binary: whatever is built, built only when missing.
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

export DATABASE_URL="sqlite://$tmp/py.db?mode=rwc"
port="$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export BIND="127.0.0.1:$port"
url="http://$BIND"

# Keys, so that the check covers the Bearer header and the connection_init
# payload: the admin key seeds and reads, the engine key runs the engine.
admin_key="$("$bin" keys create --role admin --name python-check-admin | tail -n 1)"
engine_key="$("$bin" keys create --role engine --name python-check-engine | tail -n 1)"

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

if ! "$venv/bin/python" "$here/check.py" --url "$url/graphql" \
  --admin-key "$admin_key" --engine-key "$engine_key"; then
  show_log
  exit 1
fi
