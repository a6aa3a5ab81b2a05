#!/usr/bin/env bash
# The raw SQL ceiling of W1, W2 and W3: the statements scenario-hub sends for
# those requests, replayed by pgbench on the same PostgreSQL.
#
#   bench/pgbench/run.sh            # 32 clients, 2 threads, 20 s per script
#   DURATION=5 bench/pgbench/run.sh
#
# Creates a fresh database bench_pgbench_<time>_<pid>, builds its tables with
# the server's own `migrate` command, inserts the fixture rows as loadgen
# spreads its load (20 runs of 1,001 events for W1, 20 empty runs for W2, 50
# engines with a ~2 KB state for W3), runs `pgbench -M prepared -c 32 -j 2
# -T 20 -f SCRIPT` for each script and prints tps and PostgreSQL's CPU per
# transaction (all its processes, sampled from /proc over the middle of the
# run); drops the database at the end. Environment:
# PG_URL (default postgres://postgres@127.0.0.1:5432), CLIENTS, THREADS,
# DURATION, CARGO_TARGET_DIR (to find the release binary; built if missing),
# SCRIPTS (which to run, e.g. "w3"; default "w1 w2 w3"; "w1c" is W1 reading
# only the columns it needs) and PRE_SQL (run on the
# database after the fixture, to try a setting).
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

TEMPLATE=00000000-0000-4000-8000-00000000f000
RUN_W3=00000000-0000-4000-8000-00000000f003
ETYPE=pgbench_text
# loadgen's ~300-byte payload and ~2 KB engine state.
TEXT="The merchant raises the price of bread again; the crowd murmurs and a guard steps closer to the stall while the narrator notes the rising tension in the square. A child slips through the crowd toward the fountain, and somebody shouts a name nobody recognizes. The bell st"
PAYLOAD=$(psql -Atq "$url" -c "SELECT jsonb_build_object('text', '$TEXT', 'n', 1)::text")
STATE=$(psql -Atq "$url" -c "SELECT jsonb_build_object('step', 1, 'mood', 'wary', 'memory',
  (SELECT jsonb_agg(jsonb_build_object('key', 'memory-' || lpad(i::text, 2, '0'),
     'value', 'observation ' || i || ' of step 1: the square is busy, prices rise')) FROM generate_series(0, 19) i))::text")

# Run r of W1 is 00000000-0000-4000-8000-0000000a<r as 4 digits>, of W2 ...0b<r>.
psql -q -v ON_ERROR_STOP=1 "$url" <<SQL
INSERT INTO scenario_templates (id, name, description, config, agent_roles, event_flow, created_at, updated_at)
  VALUES ('$TEMPLATE', 'pgbench', '', '{}', '[]', '{}', now(), now());
INSERT INTO scenario_runs (id, template_id, name, status, parameters, last_sequence, created_at, started_at)
  SELECT ('00000000-0000-4000-8000-0000000' || k || lpad(r::text, 4, '0'))::uuid, '$TEMPLATE',
         'w-' || k || r, 'RUNNING', '{}', CASE k WHEN 'a' THEN 1001 ELSE 0 END, now(), now()
  FROM generate_series(0, 19) r, (VALUES ('a'), ('b')) AS kinds(k);
INSERT INTO scenario_runs (id, template_id, name, status, parameters, last_sequence, created_at, started_at)
  VALUES ('$RUN_W3', '$TEMPLATE', 'w3', 'RUNNING', '{}', 0, now(), now());
INSERT INTO event_types (name, category, description, payload_schema, default_priority, max_attempts)
  VALUES ('$ETYPE', 'bench', '', '{"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}, "n": {"type": "integer"}}}', 0, 1);
-- W1's runs: run_status_changed at sequence 1, then 1,000 events of priority 0..9.
INSERT INTO event_instances (id, run_id, sequence, event_type, priority, payload, created_at)
  SELECT gen_random_uuid(), ('00000000-0000-4000-8000-0000000a' || lpad(r::text, 4, '0'))::uuid, 1,
         'run_status_changed', 1000, '{"from": "PENDING", "to": "RUNNING"}', now()
  FROM generate_series(0, 19) r;
INSERT INTO event_instances (id, run_id, sequence, event_type, priority, payload, created_at)
  SELECT gen_random_uuid(), ('00000000-0000-4000-8000-0000000a' || lpad(r::text, 4, '0'))::uuid, g + 1,
         '$ETYPE', ((g - 1) * 7) % 10, jsonb_build_object('text', '$TEXT', 'n', g - 1), now()
  FROM generate_series(0, 19) r, generate_series(1, 1000) g;
INSERT INTO engine_states (engine_id, run_id, engine_type, state, version, registered_at, updated_at, last_seen_at)
  SELECT ('00000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid, '$RUN_W3', 'BenchEngine',
         '$STATE', 1, now(), now(), now()
  FROM generate_series(0, 49) n;
ANALYZE;
SQL
if [ -n "${PRE_SQL:-}" ]; then psql -q -v ON_ERROR_STOP=1 "$url" -c "$PRE_SQL"; fi
SCRIPTS=${SCRIPTS:-w1 w2 w3}

# CPU time (user + system, in clock ticks) of every postgres process now,
# one "pid ticks" line each. Shell builtins only: a fork per process took
# the sample seconds on the loaded machine, long enough for a run to end
# halfway through it.
pg_cpu() {
  local pid line fields
  for pid in $(pgrep -x postgres); do
    read -r line <"/proc/$pid/stat" 2>/dev/null || continue
    read -ra fields <<<"${line##*) }"
    echo "$pid $((fields[11] + fields[12]))"
  done
}

# The CPU ticks spent between two pg_cpu samples: per process, so that a
# process that ends in between (an autovacuum worker on the fresh tables,
# the fixture's session) does not take its whole life's CPU off the sum.
pg_cpu_spent() {
  awk 'NR == FNR { a[$1] = $2; next } { spent += $2 - (($1 in a) ? a[$1] : 0) } END { print spent + 0 }' "$1" "$2"
}

echo "pgbench $("$PGBENCH" --version | awk '{print $3}'): -M prepared -c $CLIENTS -j $THREADS -T $DURATION on $(psql -Atq "$url" -c 'SHOW server_version'), fsync=$(psql -Atq "$url" -c 'SHOW fsync'), synchronous_commit=$(psql -Atq "$url" -c 'SHOW synchronous_commit')"
echo
echo "| script | SQL per transaction | tps | latency avg ms | PostgreSQL cores | PostgreSQL CPU per transaction |"
echo "|---|---|---|---|---|---|"
run() {
  local name=$1 what=$2
  shift 2
  case " $SCRIPTS " in *" ${name%%_*} "*) ;; *) return 0 ;; esac
  local out sampled
  sampled=$(mktemp)
  # The middle of the run: after the clients connect, before they leave.
  (
    sleep 2
    pg_cpu >"$sampled.a"
    t0=$(date +%s.%N)
    sleep $((DURATION - 4))
    pg_cpu >"$sampled.b"
    t1=$(date +%s.%N)
    echo "$(pg_cpu_spent "$sampled.a" "$sampled.b") $(getconf CLK_TCK) $t0 $t1" >"$sampled"
  ) &
  local sampler=$!
  out=$("$PGBENCH" -n -M prepared -c "${C:-$CLIENTS}" -j "$THREADS" -T "$DURATION" -f "$here/$name" "$@" "$url" 2>&1) || {
    echo "$out" >&2
    wait "$sampler"
    echo "| $name | $what | failed | - | - | - |"
    return 0
  }
  wait "$sampler"
  local tps lat cores per
  tps=$(echo "$out" | awk '/^tps = /{printf "%.0f", $3}')
  lat=$(echo "$out" | awk '/^latency average = /{print $4}')
  read -r cores per < <(awk -v tps="$tps" '{c = $1 / $2 / ($4 - $3); printf "%.2f %.3f ms\n", c, c / tps * 1000}' "$sampled")
  rm -f "$sampled" "$sampled.a" "$sampled.b"
  echo "| $name | $what | $tps | $lat | $cores | $per |"
}
run w1_read.sql "51 events by priority of one of 20 runs (one SELECT)" -D etype=$ETYPE
run w1c_read.sql "51 events, the five columns W1 needs (one SELECT)" -D etype=$ETYPE
run w2_publish.sql "sequence bump and insert in one CTE, one of 20 runs" -D etype=$ETYPE -D "payload=$PAYLOAD"
run w3_save_state.sql "compare-and-set UPDATE of a ~2 KB state and its history row (one CTE)" -D "state=$STATE" -D n=0 -D v0=1 -D v1=1 -D workers=$CLIENTS -D engines=50
