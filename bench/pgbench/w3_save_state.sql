-- W3: the statement scenario-hub sends for
--   saveEngineState(engineId, state, expectedVersion) { version }
-- (captured with log_statement = all): one compare-and-set UPDATE. As in
-- loadgen, client c owns engines c and c + :workers (when < :engines) and
-- saves them in turn, passing the version it last saw; a failed compare
-- returns no row and \gset aborts the client, so a conflict cannot hide.
-- Engine n's id is 00000000-0000-4000-8000-<n as 12 digits>.
\set n :n + 1
\if :client_id + :workers < :engines and :n % 2 = 0
\set e :client_id + :workers
UPDATE "engine_states" SET "state" = :state, "version" = "version" + 1, "updated_at" = now(), "last_seen_at" = now() WHERE "engine_states"."engine_id" = ('00000000-0000-4000-8000-' || lpad(:e::text, 12, '0'))::uuid AND "engine_states"."version" = :v1 RETURNING "engine_id", "run_id", "engine_type", "state", "version" + 0 AS v1, "registered_at", "updated_at", "last_seen_at", "registered_by" \gset
\else
\set e :client_id
UPDATE "engine_states" SET "state" = :state, "version" = "version" + 1, "updated_at" = now(), "last_seen_at" = now() WHERE "engine_states"."engine_id" = ('00000000-0000-4000-8000-' || lpad(:e::text, 12, '0'))::uuid AND "engine_states"."version" = :v0 RETURNING "engine_id", "run_id", "engine_type", "state", "version" + 0 AS v0, "registered_at", "updated_at", "last_seen_at", "registered_by" \gset
\endif
