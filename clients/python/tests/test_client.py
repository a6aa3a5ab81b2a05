"""Hub: typed calls, error codes, API keys."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from pathlib import Path

import pytest
from conftest import HubServer, free_port, new_run, publish_prompts, server_binary
from engines import CountingEngine

from scenario_hub import (
    BadUserInput,
    EventInput,
    Hub,
    HubConnectionError,
    HubError,
    LeaseLost,
    NotFound,
    RunClosed,
    RunStatus,
    Unauthenticated,
    VersionConflict,
    run_engine,
)


async def test_error_codes_and_fields(hub_server: HubServer, hub: Hub) -> None:
    with pytest.raises(BadUserInput) as bad:
        await hub.create_event_type("9 not a name", "test")
    assert bad.value.code == "BAD_USER_INPUT" and bad.value.field == "input.name"
    assert isinstance(bad.value, HubError) and not bad.value.retryable

    with pytest.raises(NotFound) as missing:
        await hub.save_state(uuid.uuid4(), {"a": 1})
    assert missing.value.code == "NOT_FOUND" and missing.value.field == "engineId"

    run_id = await new_run(hub)
    engine = await hub.register_engine(run_id, "Counter", state={"count": 0})
    assert engine.version == 1 and engine.state == {"count": 0}
    again = await hub.register_engine(run_id, "Counter", engine_id=engine.engine_id)
    assert again.engine_id == engine.engine_id and again.state == {"count": 0}
    saved = await hub.save_state(engine.engine_id, {"count": 1}, expected_version=1)
    assert saved.version == 2
    with pytest.raises(VersionConflict) as conflict:
        await hub.save_state(engine.engine_id, {"count": 9}, expected_version=1)
    assert conflict.value.code == "VERSION_CONFLICT"
    stored = await hub.get_engine(engine.engine_id)
    assert stored is not None and stored.state == {"count": 1}

    # An idempotency key already used returns the first event.
    first = await hub.publish_event(
        EventInput(run_id=run_id, event_type="prompt", payload={"text": "a"}, idempotency_key="k")
    )
    second = await hub.publish_event(
        {"run_id": run_id, "event_type": "prompt", "payload": {"text": "b"}, "idempotency_key": "k"}
    )
    assert second.id == first.id and second.payload == {"text": "a"}

    await hub.set_run_status(run_id, RunStatus.COMPLETED)
    run = await hub.get_run(run_id)
    assert run is not None and run.status is RunStatus.COMPLETED and run.status.terminal
    with pytest.raises(RunClosed) as closed:
        await hub.publish_event(
            EventInput(run_id=run_id, event_type="prompt", payload={"text": "c"})
        )
    assert closed.value.code == "RUN_CLOSED"


async def test_leases_by_hand(hub_server: HubServer, hub: Hub) -> None:
    """subscribe_events, extend_lease, LEASE_LOST, complete_event with emit and state."""
    run_id = await new_run(hub)
    [prompt_id] = await publish_prompts(hub, run_id, 1)
    engine = await hub.register_engine(run_id, "Counter", state={"count": 0})
    stream = hub.subscribe_events(
        run_id, engine_id=engine.engine_id, event_types=["prompt"], lease_seconds=30
    )
    async with contextlib.aclosing(stream):
        event = await asyncio.wait_for(anext(stream), 10)
        assert event.id == prompt_id and event.delivery is not None
        assert event.delivery.attempt == 1 and event.delivery.lease_id is not None
        lease = event.delivery.lease_id

        renewed = await hub.extend_lease(event.id, engine.engine_id, lease, 60)
        assert renewed.lease_id == lease and renewed.lease_expires_at is not None
        with pytest.raises(LeaseLost):
            await hub.extend_lease(event.id, engine.engine_id, uuid.uuid4(), 60)
        with pytest.raises(LeaseLost):
            await hub.complete_event(event.id, engine.engine_id, lease_id=uuid.uuid4())

        result = await hub.complete_event(
            event.id,
            engine.engine_id,
            lease_id=lease,
            emit=[EventInput(event_type="reply", payload={"repliedTo": event.sequence})],
            state={"count": 1},
            expected_version=engine.version,
            run_id=run_id,
        )
    assert result.processing.status.value == "PROCESSED"
    assert result.engine.version == 2 and result.engine.state == {"count": 1}
    [reply] = result.emitted
    assert reply.parent_event_id == prompt_id and reply.source_engine_id == engine.engine_id


async def test_unreachable_server_is_a_retryable_connection_error() -> None:
    async with Hub(f"http://127.0.0.1:{free_port()}/graphql", timeout=5) as hub:
        with pytest.raises(HubConnectionError) as failed:
            await hub.get_run(uuid.uuid4())
    assert failed.value.retryable


async def test_api_keys_on_http_and_websocket(tmp_path: Path) -> None:
    server = HubServer(server_binary(), tmp_path)
    admin_key = server.cli("keys", "create", "--role", "admin", "--name", "sdk-admin").splitlines()[
        -1
    ]
    engine_key = server.cli(
        "keys", "create", "--role", "engine", "--name", "sdk-engine"
    ).splitlines()[-1]
    server.start()
    try:
        async with Hub(server.url) as anonymous:
            with pytest.raises(Unauthenticated):
                await anonymous.list_event_types()
        async with Hub(server.url, api_key=admin_key) as admin:
            run_id = await new_run(admin)
            await publish_prompts(admin, run_id, 2)
            # The engine key over both transports: registration (HTTP), events (websocket).
            engine = CountingEngine()
            summary = await asyncio.wait_for(
                run_engine(
                    engine,
                    run_id,
                    url=server.url,
                    api_key=engine_key,
                    event_types=["prompt"],
                    max_events=2,
                    handle_signals=False,
                ),
                30,
            )
            assert summary.processed == 2
            # A wrong key is refused at once, not retried forever.
            with pytest.raises(Unauthenticated):
                await asyncio.wait_for(
                    run_engine(
                        CountingEngine(),
                        run_id,
                        url=server.url,
                        api_key="wrong",
                        handle_signals=False,
                    ),
                    30,
                )
            # And on the websocket alone: closed 4403.
            async with Hub(server.url, api_key="wrong") as bad:
                with pytest.raises(Unauthenticated):
                    async for _ in bad.subscribe_events(run_id):
                        pass
    finally:
        server.stop()
