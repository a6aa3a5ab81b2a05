#!/usr/bin/env bash
# One loadgen run against a given server binary on a fresh database: for
# A/B comparisons of two builds with the same load generator.
#
#   bench/ab.sh BIN sqlite|postgres WORKLOADS [loadgen arguments...]
#   bench/ab.sh /work/target-base/release/scenario-hub postgres w1,w2 --duration 10
#
# Uses target/release/examples/loadgen (build it first; LOADGEN overrides
# it); PG_URL (default postgres://postgres@127.0.0.1:5432), PG_QUERY
# (appended to the server's database URL, e.g. ?sslmode=disable), PORT
# (default 18090), and PRE_SQL: SQL run on the fresh database after the
# server's migrations (to try a setting). Prints loadgen's table rows.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$1 BACKEND=$2 WORKLOADS=$3
shift 3
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
PORT=${PORT:-18090}
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d)
db=""
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  if [ -n "$db" ]; then psql -q "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

case "$BACKEND" in
  postgres)
    db=ab_$(date +%s)_$$
    psql -q "$PG_URL/postgres" -c "CREATE DATABASE $db"
    url=$PG_URL/$db${PG_QUERY:-} ;;
  sqlite) url="sqlite://$work/hub.db" ;;
  *) echo "backend: sqlite or postgres" >&2; exit 2 ;;
esac
DATABASE_URL=$url BIND=127.0.0.1:$PORT MAX_WS_CONNECTIONS=20000 RUST_LOG=warn \
  "$BIN" serve >"$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
if [ -n "${PRE_SQL:-}" ]; then
  [ "$BACKEND" = postgres ] && psql -q "$url" -c "$PRE_SQL"
fi
"${LOADGEN:-target/release/examples/loadgen}" --url "http://127.0.0.1:$PORT" --workload "$WORKLOADS" \
  --server-pid "$pid" "$@" | grep -E "^\| (W|RSS)" || true
