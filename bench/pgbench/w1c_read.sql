-- W1 reading only the columns its selection needs (id eventType priority
-- payload, and the sequence for cursors) instead of all 14: what PostgreSQL
-- would spend on a page if the server read a projection. Not what the
-- server sends today; run it with SCRIPTS=w1c.
\set r random(0, 19)
SELECT "event_instances"."id", "event_instances"."sequence", "event_instances"."event_type", "event_instances"."priority", "event_instances"."payload" FROM "event_instances" WHERE "event_instances"."run_id" = ('00000000-0000-4000-8000-0000000a' || lpad(:r::text, 4, '0'))::uuid ORDER BY "event_instances"."priority" DESC, "event_instances"."sequence" ASC LIMIT 51;
