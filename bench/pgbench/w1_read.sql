-- W1: the statements scenario-hub sends for
--   events(runId, orderBy: PRIORITY, first: 50) { nodes { id eventType type { name } priority payload } }
-- (captured with log_statement = all): the run check, the page (first + 1
-- rows, to know hasNextPage) and the event types the page uses, each on a
-- connection of the pool, outside any transaction.
SELECT "scenario_runs"."id", "scenario_runs"."template_id", "scenario_runs"."name", "scenario_runs"."status", "scenario_runs"."parameters", "scenario_runs"."last_sequence", "scenario_runs"."created_at", "scenario_runs"."started_at", "scenario_runs"."ended_at" FROM "scenario_runs" WHERE "scenario_runs"."id" = :run LIMIT 1;
SELECT "event_instances"."id", "event_instances"."run_id", "event_instances"."sequence", "event_instances"."event_type", "event_instances"."priority", "event_instances"."payload", "event_instances"."source_engine_id", "event_instances"."parent_event_id", "event_instances"."target_engine_id", "event_instances"."target_engine_type", "event_instances"."idempotency_key", "event_instances"."created_at" FROM "event_instances" WHERE "event_instances"."run_id" = :run ORDER BY "event_instances"."priority" DESC, "event_instances"."sequence" ASC LIMIT 51;
SELECT "event_types"."name", "event_types"."category", "event_types"."engine_type", "event_types"."description", "event_types"."payload_schema", "event_types"."default_priority", "event_types"."max_attempts" FROM "event_types" WHERE "event_types"."name" IN ('run_status_changed', :etype);
