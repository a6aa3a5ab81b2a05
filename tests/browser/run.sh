#!/usr/bin/env bash
# Headless Chromium test of GraphiQL and the run viewer
# (tests/browser/graphiql.mjs) against a scenario-hub on a fresh SQLite
# database with the demo loaded, with GraphiQL's scripts served by
# the server itself (built into the binary); the page's requests to any
# other host are aborted.
#
#   bash tests/browser/run.sh
#
# Installs Debian's chromium when /usr/bin/chromium is missing (needs root),
# runs `npm ci` here, and uses target/debug/scenario-hub (built only when
# missing). On failure a screenshot is left under target/browser/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"

say() { echo "[browser] $*"; }

if [ ! -x /usr/bin/chromium ]; then
  say "installing Debian's chromium"
  apt_log="$(mktemp)"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends chromium; } >"$apt_log" 2>&1; then
    cat "$apt_log" >&2
    say "could not install chromium" >&2
    exit 1
  fi
  rm -f "$apt_log"
fi

# npm ci, unless node_modules was already installed from this very lock file.
lock_sum="$(sha256sum "$here/package-lock.json" | cut -d' ' -f1)"
stamp="$here/node_modules/.installed-lock-sha256"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$lock_sum" ]; then
  say "npm ci"
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$lock_sum" >"$stamp"
fi

bin="${CARGO_TARGET_DIR:-$repo/target}/debug/scenario-hub"
if [ ! -x "$bin" ]; then
  say "building $bin"
  cargo build --bin scenario-hub
fi

tmp="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port="$(node -e "const s=require('net').createServer();s.listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")"
url="http://127.0.0.1:$port"
# The README's first query shows the demo.
DATABASE_URL="sqlite://$tmp/b.db?mode=rwc" "$bin" demo >"$tmp/demo.log"
DATABASE_URL="sqlite://$tmp/b.db?mode=rwc" \
  BIND="127.0.0.1:$port" \
  "$bin" serve >"$tmp/server.log" 2>&1 &
server_pid=$!

healthy() {
  if command -v curl >/dev/null; then
    curl -fsS -o /dev/null --max-time 2 "$url/healthz"
  else
    node -e "fetch('$url/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
  fi
}
for _ in $(seq 1 300); do
  healthy 2>/dev/null && break
  if ! kill -0 "$server_pid" 2>/dev/null; then
    cat "$tmp/server.log" >&2
    say "scenario-hub exited before answering /healthz" >&2
    exit 1
  fi
  sleep 0.1
done
if ! healthy; then
  tail -n 50 "$tmp/server.log" >&2
  say "scenario-hub did not answer $url/healthz within 30 s" >&2
  exit 1
fi
say "scenario-hub on $url ($bin)"

status=0
# The last check makes API keys on this database with the CLI.
DATABASE_URL="sqlite://$tmp/b.db?mode=rwc" SCENARIO_HUB_BIN="$bin" \
  node "$here/graphiql.mjs" "$url" || status=$?
if [ "$status" -ne 0 ]; then
  say "scenario-hub log (last 50 lines):" >&2
  tail -n 50 "$tmp/server.log" >&2
fi
exit "$status"
