"""run_engine against the real server: crash resume, heartbeats, failures, restarts, SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest
from conftest import HubServer, new_run, publish_prompts
from engines import CountingEngine
from helpers import EngineProcess, assert_processed_once, wait_done, wait_until

from scenario_hub import Event, EventInput, Hub, Outcome, RunStatus, run_engine


async def check_exactly_once(
    hub: Hub, run_id: uuid.UUID, engine_id: uuid.UUID, prompt_ids: list[uuid.UUID]
) -> None:
    """Each prompt PROCESSED once by the engine, one reply each, the state counting each once."""
    prompts = await hub.all_events(run_id, event_types=["prompt"])
    assert sorted(p.id for p in prompts) == sorted(prompt_ids)
    assert_processed_once(prompts, engine_id)

    replies = await hub.all_events(run_id, event_types=["reply"])
    assert sorted(r.parent_event_id for r in replies if r.parent_event_id) == sorted(prompt_ids)
    by_id = {p.id: p.sequence for p in prompts}
    for reply in replies:
        assert reply.source_engine_id == engine_id
        assert reply.parent_event_id is not None
        assert reply.payload == {"repliedTo": by_id[reply.parent_event_id]}

    engine = await hub.get_engine(engine_id)
    assert engine is not None
    n = len(prompt_ids)
    assert engine.state["count"] == n
    assert sorted(engine.state["seen"]) == sorted(p.sequence for p in prompts)
    assert engine.version == n + 1  # one save per completion, none lost, none doubled


async def test_resumes_after_sigkill_exactly_once(
    hub_server: HubServer, hub: Hub, tmp_path: Path
) -> None:
    """(a) kill -9 mid-event, restart with the same engine id: every event completed once."""
    run_id = await new_run(hub)
    n, k = 24, 8
    prompt_ids = await publish_prompts(hub, run_id, n)
    engine_id = uuid.uuid4()
    work = ("--work-seconds", "0.1", "--max-in-flight", "1")

    first = await EngineProcess.start(hub_server.url, run_id, engine_id, tmp_path / "1.log", *work)
    try:
        await first.wait_for("processed", count=k)
        working = await first.wait_for("working")  # in the middle of the next one
        first.kill(signal.SIGKILL)
        await first.process.wait()
    finally:
        await first.close()
    killed_sequence = int(working.split()[1])

    # What the killed engine stored is consistent: its state counts exactly
    # the events recorded PROCESSED (each completion was one transaction).
    stored = await hub.get_engine(engine_id)
    assert stored is not None
    recorded = [p for p in await hub.all_events(run_id, event_types=["prompt"]) if p.processed_by]
    assert stored.state["count"] == len(recorded) >= k
    assert stored.version == len(recorded) + 1
    assert killed_sequence not in {p.sequence for p in recorded}

    second = await EngineProcess.start(hub_server.url, run_id, engine_id, tmp_path / "2.log", *work)
    try:
        await wait_done(hub, run_id, engine_id, ["prompt"])
        await hub.set_run_status(run_id, RunStatus.COMPLETED)
        code, summary = await second.finish()
    finally:
        await second.close()
    assert code == 0, second.describe()
    assert summary is not None and summary["stop_reason"] == "run_closed"
    assert summary["processed"] == n - len(recorded)
    # The event it was killed on came back to the restarted engine, as a new delivery.
    assert f"working {killed_sequence} attempt 2" in second.lines, second.describe()

    await check_exactly_once(hub, run_id, engine_id, prompt_ids)


async def test_heartbeat_keeps_lease_past_its_length(hub_server: HubServer, hub: Hub) -> None:
    """(b) 3 s of work on a 1 s lease: extendLease keeps it; each event delivered once."""
    run_id = await new_run(hub)
    prompt_ids = await publish_prompts(hub, run_id, 2)
    engine = CountingEngine(work_seconds=3.0)
    task = asyncio.create_task(
        run_engine(
            engine,
            run_id,
            url=hub_server.url,
            event_types=["prompt"],
            lease_seconds=1,
            max_in_flight=2,
            max_events=2,
            handle_signals=False,
        )
    )
    # Two seconds in, both leases are held by their first delivery and run
    # past their original second.
    await asyncio.sleep(2.0)
    instance = await hub.get_engine(engine.engine_id)
    assert instance is not None
    assert sorted(d.attempt for d in instance.in_flight) == [1, 1]
    now = datetime.now(timezone.utc)
    assert all(d.lease_expires_at and d.lease_expires_at > now for d in instance.in_flight)

    summary = await asyncio.wait_for(task, 30)
    assert summary.stop_reason == "max_events"
    assert (summary.processed, summary.failed, summary.lease_lost) == (2, 0, 0)
    assert sorted(attempt for _, attempt in engine.calls) == [1, 1]  # never delivered again
    prompts = await hub.all_events(run_id, event_types=["prompt"])
    assert sorted(p.id for p in prompts) == sorted(prompt_ids)
    assert_processed_once(prompts, engine.engine_id)


async def test_exception_fails_and_retries_up_to_max_attempts(
    hub_server: HubServer, hub: Hub
) -> None:
    """(c) process_event raising: FAILED with the message, delivered again up to maxAttempts."""
    run_id = await new_run(hub, flaky={"max_attempts": 3, "retry_delay_seconds": 0})
    [flaky] = await hub.publish_events(
        [{"run_id": run_id, "event_type": "flaky", "payload": {"fail": True}}]
    )
    [prompt_id] = await publish_prompts(hub, run_id, 1)
    engine = CountingEngine()
    task = asyncio.create_task(
        run_engine(
            engine,
            run_id,
            url=hub_server.url,
            event_types=["flaky", "prompt"],
            handle_signals=False,
        )
    )

    async def final_failure_published() -> bool:
        page = await hub.events(run_id, event_types=["error_occurred"])
        return bool(page.nodes)

    await wait_until(final_failure_published, what="error_occurred")
    await wait_done(hub, run_id, engine.engine_id, ["flaky", "prompt"])
    await hub.set_run_status(run_id, RunStatus.COMPLETED)
    summary = await asyncio.wait_for(task, 30)

    assert summary.stop_reason == "run_closed"
    assert (summary.processed, summary.failed) == (1, 3)
    assert [a for s, a in engine.calls if s == flaky.sequence] == [1, 2, 3]

    event = await hub.get_event(flaky.id)
    assert event is not None
    [record] = event.processed_by
    assert record.engine_id == engine.engine_id
    assert record.status.value == "FAILED"
    assert record.attempts == 3
    assert record.error == f"cannot handle sequence {flaky.sequence}"

    [error_event] = (await hub.events(run_id, event_types=["error_occurred"])).nodes
    assert error_event.payload["eventId"] == str(flaky.id)
    assert error_event.payload["engineId"] == str(engine.engine_id)
    assert error_event.payload["attempts"] == 3

    # The prompt went through; the failures changed no state.
    ok = await hub.get_event(prompt_id)
    assert ok is not None
    assert_processed_once([ok], engine.engine_id)
    stored = await hub.get_engine(engine.engine_id)
    assert stored is not None
    assert stored.state["count"] == 1 and stored.version == 2


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
async def test_survives_server_restart(
    hub_server: HubServer, hub: Hub, how: signal.Signals
) -> None:
    """(d) the server stops mid-run and comes back on the same database and port."""
    run_id = await new_run(hub)
    prompt_ids = await publish_prompts(hub, run_id, 15)
    engine = CountingEngine(work_seconds=0.1)
    task = asyncio.create_task(
        run_engine(
            engine,
            run_id,
            url=hub_server.url,
            event_types=["prompt"],
            handle_signals=False,
            reconnect_initial_delay=0.2,
            reconnect_max_delay=1.0,
        )
    )
    await wait_until(lambda: len(engine.seen) >= 4, what="4 events processed")
    hub_server.stop(how)
    await asyncio.sleep(1.0)  # the engine retries against a server that is gone
    assert not task.done()
    hub_server.start()

    # Events published after the restart reach it too.
    prompt_ids += await publish_prompts(hub, run_id, 5, start=15)
    await wait_done(hub, run_id, engine.engine_id, ["prompt"])
    await hub.set_run_status(run_id, RunStatus.COMPLETED)
    summary = await asyncio.wait_for(task, 30)

    assert summary.stop_reason == "run_closed"
    assert summary.reconnects >= 1
    assert summary.processed == 20
    await check_exactly_once(hub, run_id, engine.engine_id, prompt_ids)


async def test_sigterm_finishes_current_event_and_exits(
    hub_server: HubServer, hub: Hub, tmp_path: Path
) -> None:
    """SIGTERM: the event in progress is completed, the engine exits 0; the rest stays pending."""
    run_id = await new_run(hub)
    await publish_prompts(hub, run_id, 3)
    engine_id = uuid.uuid4()
    process = await EngineProcess.start(
        hub_server.url, run_id, engine_id, tmp_path / "e.log", "--work-seconds", "1.0"
    )
    try:
        working = await process.wait_for("working")
        process.kill(signal.SIGTERM)
        code, summary = await process.finish(timeout=15)
    finally:
        await process.close()
    assert code == 0, process.describe()
    assert summary is not None
    assert summary["stop_reason"] == "stopped" and summary["processed"] == 1
    sequence = int(working.split()[1])
    prompts = await hub.all_events(run_id, event_types=["prompt"])
    done = [p for p in prompts if p.processed_by]
    assert [p.sequence for p in done] == [sequence]
    assert_processed_once(done, engine_id)
    # Nothing is held: the other two are pending and not in flight. The
    # server releases them when it sees the websocket close, which may come
    # a moment after the process exited (well before their 300 s lease).

    async def released() -> bool:
        instance = await hub.get_engine(engine_id)
        return instance is not None and instance.in_flight == []

    await wait_until(released, timeout=10, what="the release of the unfinished events")


async def test_group_members_share_the_work(hub_server: HubServer, hub: Hub) -> None:
    """Two engines of one group: each prompt processed once, by one of them."""
    run_id = await new_run(hub)
    members = [CountingEngine(work_seconds=0.05) for _ in range(2)]
    tasks = [
        asyncio.create_task(
            run_engine(
                engine,
                run_id,
                url=hub_server.url,
                group="counters",
                event_types=["prompt"],
                handle_signals=False,
            )
        )
        for engine in members
    ]

    async def both_registered() -> bool:
        return len(await hub.list_engines(run_id)) == 2

    await wait_until(both_registered, what="both members registered")
    prompt_ids = await publish_prompts(hub, run_id, 12)
    await wait_done(hub, run_id, members[0].engine_id, ["prompt"])
    await hub.set_run_status(run_id, RunStatus.COMPLETED)
    summaries = await asyncio.wait_for(asyncio.gather(*tasks), 30)

    assert sum(s.processed for s in summaries) == 12
    prompts = await hub.all_events(run_id, event_types=["prompt"])
    assert sorted(p.id for p in prompts) == sorted(prompt_ids)
    ids = {e.engine_id for e in members}
    for p in prompts:
        [record] = p.processed_by
        assert record.engine_id in ids and record.status.value == "PROCESSED"
    for engine, summary in zip(members, summaries):
        stored = await hub.get_engine(engine.engine_id)
        assert stored is not None and stored.group == "counters"
        assert stored.state["count"] == summary.processed


async def test_version_conflict_starts_over_from_the_stored_state(
    hub_server: HubServer, hub: Hub
) -> None:
    """Someone else saves the engine's state mid-event: the completion is refused
    (VERSION_CONFLICT), the engine reloads the stored state and does the event again."""
    run_id = await new_run(hub)
    [prompt_id] = await publish_prompts(hub, run_id, 1)
    engine = CountingEngine(work_seconds=1.0)
    task = asyncio.create_task(
        run_engine(
            engine,
            run_id,
            url=hub_server.url,
            event_types=["prompt"],
            max_events=1,
            handle_signals=False,
            reconnect_initial_delay=0.1,
        )
    )
    await wait_until(lambda: len(engine.calls) == 1, what="the first delivery")
    await hub.save_state(engine.engine_id, {"count": 100, "seen": []}, expected_version=1)
    summary = await asyncio.wait_for(task, 30)

    assert summary.stop_reason == "max_events" and summary.processed == 1
    assert summary.reconnects >= 1
    assert [attempt for _, attempt in engine.calls] == [1, 2]
    stored = await hub.get_engine(engine.engine_id)
    assert stored is not None
    assert stored.state["count"] == 101 and stored.version == 3
    event = await hub.get_event(prompt_id)
    assert event is not None
    assert_processed_once([event], engine.engine_id)


class BadReplyEngine(CountingEngine):
    """Emits a reply whose payload breaks the `reply` schema."""

    async def process_event(self, event: Event) -> Outcome:
        self.count += 1  # not saved: the completion is refused
        return Outcome(emit=[EventInput(event_type="reply", payload={"repliedTo": "nope"})])


async def test_refused_outcome_records_failed(hub_server: HubServer, hub: Hub) -> None:
    """An emitted payload the server refuses fails the event (with the server's message)."""
    run_id = await new_run(hub)
    [prompt_id] = await publish_prompts(hub, run_id, 1)
    engine = BadReplyEngine()
    summary = await asyncio.wait_for(
        run_engine(
            engine,
            run_id,
            url=hub_server.url,
            event_types=["prompt"],
            max_events=1,
            handle_signals=False,
        ),
        30,
    )
    assert (summary.processed, summary.failed) == (0, 1)
    assert engine.count == 0  # put back to the last saved state
    event = await hub.get_event(prompt_id)
    assert event is not None
    [record] = event.processed_by
    assert record.status.value == "FAILED"
    assert record.error is not None and record.error.startswith("PAYLOAD_SCHEMA_VIOLATION")
    assert not (await hub.events(run_id, event_types=["reply"])).nodes
