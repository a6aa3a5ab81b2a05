#!/usr/bin/env bash
# The run timeline's benchmarks on one backend, each on a fresh database:
# loadgen's `fork` (forkRun of a 100,000-event run with 10 engines) and
# `export` (a 1,000,000-event run streamed over HTTP), then the same
# million-event run through `scenario-hub export` and `scenario-hub import`
# (into a fresh database of the same backend) under /usr/bin/time, for
# their wall time and peak RSS.
#
#   bench/timeline.sh sqlite|postgres [loadgen arguments...]
#
# Uses target/release/scenario-hub and target/release/examples/loadgen
# (cargo build --release --bin scenario-hub --example loadgen); PG_URL
# (default postgres://postgres@127.0.0.1:5432) and PORT (default 18091).
set -euo pipefail
cd "$(dirname "$0")/.."
BACKEND=$1
shift
BIN=target/release/scenario-hub
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
PORT=${PORT:-18091}

work=$(mktemp -d)
dbs=()
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  for db in "${dbs[@]}"; do
    psql -q "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

# A fresh database of the backend; prints its URL (in a subshell: new_db
# keeps the PostgreSQL names for the cleanup).
fresh() {
  case "$BACKEND" in
    postgres)
      local db="tl_$(date +%s%N)_$$"
      psql -q "$PG_URL/postgres" -c "CREATE DATABASE $db" >&2
      echo "$PG_URL/$db" ;;
    sqlite) echo "sqlite://$work/$(date +%s%N).db" ;;
    *) echo "backend: sqlite or postgres" >&2; exit 2 ;;
  esac
}

serve() {
  DATABASE_URL=$1 BIND=127.0.0.1:$PORT RUST_LOG=warn "$BIN" serve >"$work/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && return
    sleep 0.1
  done
  echo "the server did not start" >&2; cat "$work/server.log" >&2; exit 1
}

stop() { kill -TERM "$pid"; wait "$pid" || true; pid=""; }

new_db() {
  local url; url=$(fresh)
  [ "$BACKEND" = postgres ] && dbs+=("${url##*/}")
  echo "$url" > "$work/url"
}

new_db; url=$(cat "$work/url")
serve "$url"
target/release/examples/loadgen --url "http://127.0.0.1:$PORT" --workload fork \
  --server-pid "$pid" --label "fork, $BACKEND" "$@" | grep '^|' || true
stop

new_db; url=$(cat "$work/url")
serve "$url"
table=$(target/release/examples/loadgen --url "http://127.0.0.1:$PORT" --workload export \
  --server-pid "$pid" --label "export, $BACKEND" "$@")
echo "$table" | grep '^|' || true
stop
run=$(echo "$table" | grep -o 'run [0-9a-f-]\{36\}' | tail -n 1 | cut -d' ' -f2)

measure() {
  local what=$1; shift
  /usr/bin/time -f "%e s wall, %M KiB max RSS" -o "$work/time" "$@" >"$work/out" 2>"$work/err" ||
    { cat "$work/err" >&2; exit 1; }
  echo "$what: $(cat "$work/time"); $(tail -n 1 "$work/err" "$work/out" | grep -v '^==' | grep . | tail -n 1)"
}
measure "scenario-hub export (to a file)" env DATABASE_URL="$url" "$BIN" export "$run" -o "$work/run.jsonl"
echo "file: $(du -m "$work/run.jsonl" | cut -f1) MB, $(wc -l < "$work/run.jsonl") lines"
new_db; target=$(cat "$work/url")
DATABASE_URL=$target "$BIN" migrate >/dev/null
measure "scenario-hub import" env DATABASE_URL="$target" "$BIN" import "$work/run.jsonl"
