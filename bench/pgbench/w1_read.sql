-- W1: the statement scenario-hub sends for
--   events(runId, orderBy: PRIORITY, first: 50) { nodes { id eventType priority payload } }
-- (captured with log_statement = all): one page of first + 1 rows (to know
-- hasNextPage), outside any transaction; event types come from memory and
-- the run is looked up only when the page is empty. One of 20 runs, as
-- loadgen's W1 reads.
\set r random(0, 19)
SELECT "event_instances"."id", "event_instances"."run_id", "event_instances"."sequence", "event_instances"."event_type", "event_instances"."priority", "event_instances"."payload", "event_instances"."source_engine_id", "event_instances"."parent_event_id", "event_instances"."target_engine_id", "event_instances"."target_engine_type", "event_instances"."idempotency_key", "event_instances"."created_at", "event_instances"."deliver_at", "event_instances"."partition_key" FROM "event_instances" WHERE "event_instances"."run_id" = ('00000000-0000-4000-8000-0000000a' || lpad(:r::text, 4, '0'))::uuid ORDER BY "event_instances"."priority" DESC, "event_instances"."sequence" ASC LIMIT 51;
