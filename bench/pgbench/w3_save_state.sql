-- W3: the statement scenario-hub sends for
--   saveEngineState(engineId, state, expectedVersion) { version }
-- (captured with log_statement = all): one compare-and-set UPDATE that also
-- keeps the version in the engine's history (STATE_HISTORY=all, the
-- default). As in loadgen, client c owns engines c and c + :workers (when
-- < :engines) and saves them in turn, passing the version it last saw; a
-- failed compare returns no row and \gset aborts the client, so a conflict
-- cannot hide. The history row takes the state from the UPDATE's
-- RETURNING, as the server's statement does: parsed once. Engine n's id is 00000000-0000-4000-8000-<n as 12 digits>.
\set n :n + 1
\if :client_id + :workers < :engines and :n % 2 = 0
\set e :client_id + :workers
WITH saved AS (
    UPDATE engine_states
    SET state = :state, version = version + 1, updated_at = now(), last_seen_at = now()
    WHERE engine_id = ('00000000-0000-4000-8000-' || lpad(:e::text, 12, '0'))::uuid AND version = :v1
    RETURNING engine_id, run_id, engine_type, version, registered_at, registered_by, group_id,
              subscribed_until, forked_from, state
), kept AS (
    INSERT INTO engine_state_versions (engine_id, version, state, saved_at, run_sequence)
    SELECT saved.engine_id, saved.version, saved.state, now(), r.last_sequence
    FROM saved JOIN scenario_runs r ON r.id = saved.run_id
)
SELECT version AS v1 FROM saved \gset
\else
\set e :client_id
WITH saved AS (
    UPDATE engine_states
    SET state = :state, version = version + 1, updated_at = now(), last_seen_at = now()
    WHERE engine_id = ('00000000-0000-4000-8000-' || lpad(:e::text, 12, '0'))::uuid AND version = :v0
    RETURNING engine_id, run_id, engine_type, version, registered_at, registered_by, group_id,
              subscribed_until, forked_from, state
), kept AS (
    INSERT INTO engine_state_versions (engine_id, version, state, saved_at, run_sequence)
    SELECT saved.engine_id, saved.version, saved.state, now(), r.last_sequence
    FROM saved JOIN scenario_runs r ON r.id = saved.run_id
)
SELECT version AS v0 FROM saved \gset
\endif
