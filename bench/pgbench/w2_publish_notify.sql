-- W2 with one pg_notify after each commit (autocommit, outside the
-- transaction): an upper bound of the doorbell's cost, since the server
-- coalesces its NOTIFYs per run and sends them from one connection.
SELECT "event_types"."name", "event_types"."category", "event_types"."engine_type", "event_types"."description", "event_types"."payload_schema", "event_types"."default_priority", "event_types"."max_attempts" FROM "event_types" WHERE "event_types"."name" IN (:etype);
BEGIN;
UPDATE "scenario_runs" SET "last_sequence" = "last_sequence" + 1 WHERE "scenario_runs"."id" = :run RETURNING "id", "template_id", "name", "status", "parameters", "last_sequence", "created_at", "started_at", "ended_at" \gset
INSERT INTO "event_instances" ("id", "run_id", "sequence", "event_type", "priority", "payload", "source_engine_id", "parent_event_id", "target_engine_id", "target_engine_type", "idempotency_key", "created_at") VALUES (gen_random_uuid(), :run, :last_sequence, :etype, 0, :payload, NULL, NULL, NULL, NULL, NULL, now());
COMMIT;
SELECT pg_notify('scenario_hub_events', :run::text || ':' || :last_sequence::text);
