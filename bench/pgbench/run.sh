#!/usr/bin/env bash
# The raw SQL ceiling of W1, W2 and W3: the statements scenario-hub sends for
# those requests, replayed by pgbench on the same PostgreSQL.
#
#   bench/pgbench/run.sh            # 32 clients, 2 threads, 20 s per script
#   DURATION=5 bench/pgbench/run.sh
#
# Creates a fresh database bench_pgbench_<time>_<pid>, builds its tables with
# the server's own `migrate` command, inserts the fixture rows (a run of 1,001
# events like loadgen's W1, an empty run for W2, 50 engines with a ~2 KB
# state for W3), runs `pgbench -M prepared -c 32 -j 2 -T 20 -f SCRIPT` for
# each script and prints tps; drops the database at the end. Environment:
# PG_URL (default postgres://postgres@127.0.0.1:5432), CLIENTS, THREADS,
# DURATION, CARGO_TARGET_DIR (to find the release binary; built if missing).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."

PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
CLIENTS=${CLIENTS:-32}
THREADS=${THREADS:-2}
DURATION=${DURATION:-20}
TARGET=${CARGO_TARGET_DIR:-target}
BIN=$TARGET/release/scenario-hub
[ -x "$BIN" ] || cargo build --release --bin scenario-hub

PGBENCH=$(command -v pgbench || ls /usr/lib/postgresql/*/bin/pgbench | tail -1)
db=bench_pgbench_$(date +%s)_$$
url=$PG_URL/$db
psql -q "$PG_URL/postgres" -c "CREATE DATABASE $db"
trap 'psql -q "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true' EXIT
DATABASE_URL=$url "$BIN" migrate >/dev/null

TEMPLATE=00000000-0000-4000-8000-00000000a000
RUN_W1=00000000-0000-4000-8000-00000000a001
RUN_W2=00000000-0000-4000-8000-00000000a002
RUN_W3=00000000-0000-4000-8000-00000000a003
ETYPE=pgbench_text
# loadgen's ~300-byte payload and ~2 KB engine state.
TEXT="The merchant raises the price of bread again; the crowd murmurs and a guard steps closer to the stall while the narrator notes the rising tension in the square. A child slips through the crowd toward the fountain, and somebody shouts a name nobody recognizes. The bell st"
PAYLOAD=$(psql -Atq "$url" -c "SELECT jsonb_build_object('text', '$TEXT', 'n', 1)::text")
STATE=$(psql -Atq "$url" -c "SELECT jsonb_build_object('step', 1, 'mood', 'wary', 'memory',
  (SELECT jsonb_agg(jsonb_build_object('key', 'memory-' || lpad(i::text, 2, '0'),
     'value', 'observation ' || i || ' of step 1: the square is busy, prices rise')) FROM generate_series(0, 19) i))::text")

psql -q -v ON_ERROR_STOP=1 "$url" <<SQL
INSERT INTO scenario_templates (id, name, description, config, agent_roles, event_flow, created_at, updated_at)
  VALUES ('$TEMPLATE', 'pgbench', '', '{}', '[]', '{}', now(), now());
INSERT INTO scenario_runs (id, template_id, name, status, parameters, last_sequence, created_at, started_at) VALUES
  ('$RUN_W1', '$TEMPLATE', 'w1', 'RUNNING', '{}', 1001, now(), now()),
  ('$RUN_W2', '$TEMPLATE', 'w2', 'RUNNING', '{}', 0, now(), now()),
  ('$RUN_W3', '$TEMPLATE', 'w3', 'RUNNING', '{}', 0, now(), now());
INSERT INTO event_types (name, category, description, payload_schema, default_priority, max_attempts)
  VALUES ('$ETYPE', 'bench', '', '{"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}, "n": {"type": "integer"}}}', 0, 1);
-- W1's run: run_status_changed at sequence 1, then 1,000 events of priority 0..9.
INSERT INTO event_instances (id, run_id, sequence, event_type, priority, payload, created_at)
  VALUES (gen_random_uuid(), '$RUN_W1', 1, 'run_status_changed', 1000, '{"from": "PENDING", "to": "RUNNING"}', now());
INSERT INTO event_instances (id, run_id, sequence, event_type, priority, payload, created_at)
  SELECT gen_random_uuid(), '$RUN_W1', g + 1, '$ETYPE', ((g - 1) * 7) % 10,
         jsonb_build_object('text', '$TEXT', 'n', g - 1), now()
  FROM generate_series(1, 1000) g;
INSERT INTO engine_states (engine_id, run_id, engine_type, state, version, registered_at, updated_at, last_seen_at)
  SELECT ('00000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid, '$RUN_W3', 'BenchEngine',
         '$STATE', 1, now(), now(), now()
  FROM generate_series(0, 49) n;
ANALYZE;
SQL

echo "pgbench $("$PGBENCH" --version | awk '{print $3}'): -M prepared -c $CLIENTS -j $THREADS -T $DURATION on $(psql -Atq "$url" -c 'SHOW server_version'), fsync=$(psql -Atq "$url" -c 'SHOW fsync'), synchronous_commit=$(psql -Atq "$url" -c 'SHOW synchronous_commit')"
echo
echo "| script | SQL per transaction | tps | latency avg ms |"
echo "|---|---|---|---|"
run() {
  local name=$1 what=$2
  shift 2
  local out
  out=$("$PGBENCH" -n -M prepared -c "${C:-$CLIENTS}" -j "$THREADS" -T "$DURATION" -f "$here/$name" "$@" "$url" 2>&1) || {
    echo "$out" >&2
    echo "| $name | $what | failed | - |"
    return 0
  }
  local tps lat
  tps=$(echo "$out" | awk '/^tps = /{printf "%.0f", $3}')
  lat=$(echo "$out" | awk '/^latency average = /{print $4}')
  echo "| $name | $what | $tps | $lat |"
}
run w1_read.sql "run + 51 events by priority + event types (3 SELECTs)" -D run=$RUN_W1 -D etype=$ETYPE
run w2_publish.sql "type SELECT; BEGIN, UPDATE..RETURNING, INSERT, COMMIT" -D run=$RUN_W2 -D etype=$ETYPE -D "payload=$PAYLOAD"
C=16 run w2_publish.sql "the same with 16 clients (the server's pool size)" -D run=$RUN_W2 -D etype=$ETYPE -D "payload=$PAYLOAD"
run w2_publish_notify.sql "W2 + one pg_notify per commit" -D run=$RUN_W2 -D etype=$ETYPE -D "payload=$PAYLOAD"
run w3_save_state.sql "one compare-and-set UPDATE of a ~2 KB state" -D "state=$STATE" -D n=0 -D v0=1 -D v1=1 -D workers=$CLIENTS -D engines=50
