-- W2: the statements scenario-hub sends for one publishEvent (captured with
-- log_statement = all): the event type lookup before the transaction, then
-- the transaction that takes the run's next sequence (the row lock that
-- orders a run's publishers) and inserts the event. The server generates the
-- id (UUIDv7) and created_at itself; gen_random_uuid() and now() stand in.
-- Its NOTIFY is sent after commit, coalesced per run, from one other
-- connection: w2_publish_notify.sql adds one per transaction as a bound.
SELECT "event_types"."name", "event_types"."category", "event_types"."engine_type", "event_types"."description", "event_types"."payload_schema", "event_types"."default_priority", "event_types"."max_attempts" FROM "event_types" WHERE "event_types"."name" IN (:etype);
BEGIN;
UPDATE "scenario_runs" SET "last_sequence" = "last_sequence" + 1 WHERE "scenario_runs"."id" = :run RETURNING "id", "template_id", "name", "status", "parameters", "last_sequence", "created_at", "started_at", "ended_at" \gset
INSERT INTO "event_instances" ("id", "run_id", "sequence", "event_type", "priority", "payload", "source_engine_id", "parent_event_id", "target_engine_id", "target_engine_type", "idempotency_key", "created_at") VALUES (gen_random_uuid(), :run, :last_sequence, :etype, 0, :payload, NULL, NULL, NULL, NULL, NULL, now());
COMMIT;
