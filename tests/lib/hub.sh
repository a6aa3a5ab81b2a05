# Shared by the scripts that drive a real scenario-hub from Python
# (examples/python/check.sh, tests/schema/run.sh); sourced from the
# repository root, after `set -euo pipefail`.
#
#   hub_venv REQUIREMENTS...  the virtualenv target/python-venv (created once,
#                             by $PYTHON, default python3), with them installed
#   hub_prepare NAME          a temporary SQLite file NAME.db and a free port:
#                             exports DATABASE_URL and BIND, sets $url and $tmp;
#                             the server is stopped and $tmp removed on exit
#   hub_start                 `scenario-hub serve` in the background, waited
#                             for on /healthz
#   hub_log                   the end of the server's log, on stderr
#
# The binary is target/debug/scenario-hub ($bin), built only when missing.

venv=target/python-venv
bin=target/debug/scenario-hub
server_pid=""
tmp=""

hub_venv() {
  if [ ! -x "$venv/bin/python" ]; then
    echo "creating $venv"
    rm -rf "$venv"
    "${PYTHON:-python3}" -m venv "$venv"
  fi
  local requirements=()
  for file in "$@"; do requirements+=(-r "$file"); done
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${requirements[@]}"
  if [ ! -x "$bin" ]; then
    echo "building $bin"
    cargo build --bin scenario-hub
  fi
}

hub_cleanup() {
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
  if [ -n "$tmp" ]; then rm -rf "$tmp"; fi
}

hub_prepare() {
  tmp="$(mktemp -d)"
  trap hub_cleanup EXIT
  export DATABASE_URL="sqlite://$tmp/$1.db?mode=rwc"
  local port
  port="$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  export BIND="127.0.0.1:$port"
  url="http://$BIND"
}

hub_log() {
  echo "--- server log ($tmp/server.log) ---" >&2
  tail -n 40 "$tmp/server.log" >&2 || true
}

hub_start() {
  "$bin" serve >"$tmp/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 150); do
    if curl -fsS -o /dev/null "$url/healthz" 2>/dev/null; then
      return 0
    fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
      echo "scenario-hub exited before answering /healthz" >&2
      hub_log
      exit 1
    fi
    sleep 0.1
  done
  echo "scenario-hub did not answer $url/healthz within 15 s" >&2
  hub_log
  exit 1
}
