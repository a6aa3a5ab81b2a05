-- W2: the statement scenario-hub sends for one publishEvent (captured with
-- log_statement = all): the run's sequence bump and the insert in one
-- autocommitted CTE, into one of 20 runs as loadgen's W2 publishes. The
-- server makes the id (a UUIDv7, time-ordered) and created_at itself; a
-- time-ordered id built from the clock stands in, so that the primary key
-- grows at its right edge as the server's ids make it. The server's
-- doorbell NOTIFY (one statement per burst, about one per five publishes
-- under this load, from another connection) is not replayed.
\set r random(0, 19)
WITH run AS (
    UPDATE scenario_runs SET last_sequence = last_sequence + 1
    WHERE id = ('00000000-0000-4000-8000-0000000b' || lpad(:r::text, 4, '0'))::uuid AND status NOT IN ('COMPLETED', 'FAILED', 'CANCELLED')
    RETURNING id, last_sequence
)
INSERT INTO event_instances (id, run_id, sequence, event_type, priority, payload,
    source_engine_id, parent_event_id, target_engine_id, target_engine_type,
    idempotency_key, created_at, deliver_at, partition_key)
SELECT (lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000000)::bigint), 16, '0') || substr(md5(random()::text), 1, 16))::uuid,
    run.id, run.last_sequence, :etype, 0, (:payload)::jsonb,
    NULL, NULL, NULL, NULL, NULL, now(), NULL, NULL
FROM run
RETURNING id, sequence;
