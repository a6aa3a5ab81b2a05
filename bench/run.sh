#!/usr/bin/env bash
# Benchmarks scenario-hub with examples/loadgen.rs, on SQLite and on PostgreSQL.
#
#   bench/run.sh                          # all workloads, 20 s per HTTP workload
#   bench/run.sh --duration 5 --workload w1,w4
#
# Arguments go to loadgen (see `loadgen --help`). Builds the release binaries,
# starts the server on a temporary SQLite file, runs loadgen, stops it; then
# the same on a fresh PostgreSQL database bench_<time>_<pid> (created and
# dropped here; the server's settings, fsync included, stay as they are), and
# prints both tables. Environment: PG_URL (default
# postgres://postgres@127.0.0.1:5432), PORT (default 18080), BACKENDS
# (default "sqlite postgres"), CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
PORT=${PORT:-18080}
BACKENDS=${BACKENDS:-sqlite postgres}
TARGET=${CARGO_TARGET_DIR:-target}

# 10,000 idle websockets in the rss workload: one descriptor each, on both
# ends; where the hard limit is lower (20,000 here), take the hard limit.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

cargo build --release --example loadgen --bin scenario-hub
BIN=$TARGET/release/scenario-hub
LOADGEN=$TARGET/release/examples/loadgen

work=$(mktemp -d)
db=bench_$(date +%s)_$$
server_pid=""
created_db=""

stop_server() {
  if [ -n "$server_pid" ]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
  fi
}
cleanup() {
  stop_server
  if [ -n "$created_db" ]; then
    psql -q "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS $created_db WITH (FORCE)" || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# Starts the server on $1 (a database URL) and waits until it is ready.
start_server() {
  DATABASE_URL=$1 BIND=127.0.0.1:$PORT MAX_WS_CONNECTIONS=20000 RUST_LOG=warn \
    "$BIN" serve >"$work/server-$2.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 300); do
    if curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; then
      return 0
    fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
      cat "$work/server-$2.log" >&2
      echo "the server exited" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "the server did not get ready" >&2
  exit 1
}

# Runs loadgen against the server started for backend $1.
bench() {
  local name=$1 url=$2
  shift 2
  start_server "$url" "$name"
  echo "== $name: server pid $server_pid, $url" >&2
  "$LOADGEN" --url "http://127.0.0.1:$PORT" --server-pid "$server_pid" \
    --label "$name" "$@" >"$work/table-$name.md"
  stop_server
}

for backend in $BACKENDS; do
  case $backend in
    sqlite)
      bench sqlite "sqlite://$work/bench.db" "${@}"
      ;;
    postgres)
      psql -q "$PG_URL/postgres" -c "CREATE DATABASE $db"
      created_db=$db
      bench postgres "$PG_URL/$db" "${@}"
      psql -q "$PG_URL/postgres" -c "DROP DATABASE $db WITH (FORCE)"
      created_db=""
      ;;
    *)
      echo "unknown backend $backend" >&2
      exit 2
      ;;
  esac
done

for backend in $BACKENDS; do
  cat "$work/table-$backend.md"
done
