#!/usr/bin/env python3
"""An example scenario-hub engine in Python: the loop every engine runs.

It is the Python twin of ``examples/engine.rs``:

1. ``registerEngine``: idempotent. A new engine starts from an initial state;
   an engine that gives its ``--engine-id`` again gets its stored state back.
2. Subscribe to ``events(runId, engineId, eventTypes, maxInFlight,
   leaseSeconds)`` over the websocket (``graphql-transport-ws``). With its
   ``engineId`` the engine gets the events routed to it that it has not
   completed yet, most urgent first, at most ``--max-in-flight`` at once,
   each leased to it for ``--lease-seconds`` (``Event.delivery``).
3. It works on them side by side, extending each lease every third of
   ``--lease-seconds`` while the work lasts (a heartbeat: an LLM call that
   takes minutes keeps its event).
4. For each event, ``completeEvent`` under its ``leaseId``: the processing
   record (PROCESSED), a reply event and the engine's new state
   (compare-and-set on ``expectedVersion``), all in one transaction.

``LEASE_LOST`` (from a heartbeat or the completion) means the event went to
another delivery (the lease ran out, or a restarted instance of the engine
took it over): someone else has it now, so the engine drops it and goes on.

Kill it at any point and start it again with the same ``--engine-id``: it
resumes from its stored state with exactly the events it had not completed.

Start several with the same ``--group NAME`` (and ``--engine-type``) on one
run and they share its work: each event goes to one member at a time (one
with room in its window); if that member fails it, lets its lease run out or
disconnects, it is delivered again to a member. Each member keeps its own
state.

The engine handles ``prompt`` events (payload ``{"text": "..."}``) and
answers each with a ``reply`` event (payload ``{"repliedTo": <sequence>,
"text": "..."}``). Both event types belong to the scenario: create them
before starting the engine (``check.py`` shows how).

    python engine.py --run-id RUN_ID --engine-id 6f1c7b5e-0000-4000-8000-000000000001
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

from gql import Client, GraphQLRequest
from gql.transport.aiohttp import AIOHTTPTransport
from gql.transport.exceptions import TransportError, TransportQueryError
from gql.transport.websockets import WebsocketsTransport
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel
from websockets.exceptions import ConnectionClosed

HANDLES = "prompt"  # the event type this engine handles
REPLIES = "reply"  # the event type it emits in answer


# --- Models -----------------------------------------------------------------
# The server speaks camelCase JSON; the models are snake_case in Python and
# camelCase on the wire (model_validate reads it, dump() writes it).


class Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    def dump(self) -> dict[str, Any]:
        """JSON-ready dict with the wire (camelCase) names."""
        return self.model_dump(mode="json", by_alias=True)


class Prompt(Model):
    """Payload of a `prompt` event."""

    text: str


class Reply(Model):
    """Payload of the `reply` event the engine emits."""

    replied_to: int  # the sequence of the prompt it answers
    text: str


class Delivery(Model):
    """This delivery of an event to the engine: its lease."""

    lease_id: UUID
    attempt: int  # 1 the first time the event is delivered to this engine


class Event(Model):
    """An event as the subscription delivers it (the fields it asks for)."""

    id: UUID
    sequence: int
    priority: int
    event_type: str
    payload: dict[str, Any]
    delivery: Delivery


class EngineState(Model):
    """What the engine checkpoints with every completion."""

    handled: int = 0
    last_sequence: int | None = None


class Engine(Model):
    """The server's EngineInstance: the stored state and its version."""

    engine_id: UUID
    state: EngineState
    version: int
    group: str | None = None  # the group it shares the run's work with, if any


# --- GraphQL operations -----------------------------------------------------

REGISTER = """
mutation Register($input: RegisterEngineInput!) {
  registerEngine(input: $input) { engineId state version group }
}
"""

EVENT_TYPE = """
query EventType($name: String!) { eventType(name: $name) { name } }
"""

EVENTS = """
subscription Events($run: UUID!, $engine: UUID!, $types: [String!], $window: Int, $lease: Int) {
  events(
    runId: $run, engineId: $engine, eventTypes: $types, maxInFlight: $window, leaseSeconds: $lease
  ) {
    id sequence priority eventType payload
    delivery { leaseId attempt }
  }
}
"""

EXTEND_LEASE = """
mutation ExtendLease($input: ExtendLeaseInput!) {
  extendLease(input: $input) { leaseExpiresAt }
}
"""

COMPLETE = """
mutation Complete($input: CompleteEventInput!) {
  completeEvent(input: $input) { engine { engineId state version } }
}
"""


class EngineError(Exception):
    """A failure worth a one-line message rather than a traceback."""


class LeaseLost(Exception):
    """`LEASE_LOST`: the event went to another delivery; someone else has it now."""


def error_codes(error: TransportQueryError) -> list[str]:
    """The `extensions.code` of each GraphQL error."""
    return [(e.get("extensions") or {}).get("code", "") for e in error.errors or []]


def close_reason(error: BaseException | None) -> str:
    """The websocket close code behind a gql transport error (4403: key revoked)."""
    while error is not None:
        if isinstance(error, ConnectionClosed) and error.rcvd is not None:
            return f" (websocket closed {error.rcvd.code} {error.rcvd.reason})"
        error = error.__cause__ or error.__context__
    return ""


def describe(error: TransportQueryError) -> str:
    """`CODE: message` for each GraphQL error."""
    return "; ".join(
        f"{(e.get('extensions') or {}).get('code', 'ERROR')}: {e.get('message')}"
        for e in error.errors or []
    )


# --- The engine's own work --------------------------------------------------


async def answer(event: Event, work_seconds: float) -> Reply:
    """Whatever the engine is for; here, a pause and a canned answer.

    Raises ValidationError for a payload it cannot use.
    """
    prompt = Prompt.model_validate(event.payload)
    await asyncio.sleep(work_seconds)  # an LLM call, say
    return Reply(replied_to=event.sequence, text=f"you said: {prompt.text}")


# --- The loop ---------------------------------------------------------------


class Api:
    """Queries and mutations over HTTP."""

    def __init__(self, session: Any) -> None:
        self.session = session

    async def call(self, query: str, **variables: Any) -> dict[str, Any]:
        """The `data` of one operation; GraphQL errors raise TransportQueryError
        (LeaseLost for `LEASE_LOST`)."""
        try:
            data: dict[str, Any] = await self.session.execute(
                GraphQLRequest(query, variable_values=variables)
            )
        except TransportQueryError as e:
            if "LEASE_LOST" in error_codes(e):
                raise LeaseLost(describe(e)) from e
            raise
        return data


async def work_leased(api: Api, engine_id: UUID, event: Event, args: argparse.Namespace) -> Reply:
    """Works on one event, extending its lease every third of --lease-seconds
    until the work is done (a heartbeat). Raises LeaseLost, having stopped the
    work, when the event went to another delivery."""
    work = asyncio.create_task(answer(event, args.work_seconds))
    lease = {
        "eventId": str(event.id),
        "engineId": str(engine_id),
        "leaseId": str(event.delivery.lease_id),
        "seconds": args.lease_seconds,
    }
    try:
        while True:
            done, _ = await asyncio.wait({work}, timeout=args.lease_seconds / 3)
            if done:
                return work.result()
            try:
                await api.call(EXTEND_LEASE, input=lease)
            except (TransportQueryError, TransportError, OSError) as e:
                # Two thirds of the lease are left: try again at the next beat.
                print(f"could not extend the lease of sequence {event.sequence}: {e}", flush=True)
    finally:
        work.cancel()


async def run(args: argparse.Namespace) -> None:
    # Same credentials on both transports: a header over HTTP, the
    # connection_init payload over the websocket.
    auth = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    http = Client(transport=AIOHTTPTransport(url=args.url, headers=auth))
    ws = Client(
        transport=WebsocketsTransport(
            url=args.url.replace("http", "ws", 1),  # http -> ws, https -> wss
            init_payload=auth,
            subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],  # graphql-transport-ws
        )
    )

    async with http as session:
        api = Api(session)

        # The event types belong to the scenario; fail early if one is missing.
        for name in (HANDLES, REPLIES):
            if (await api.call(EVENT_TYPE, name=name))["eventType"] is None:
                raise EngineError(f"event type {name!r} does not exist: create it first")

        # Register, or get the stored state back after a restart.
        registration: dict[str, Any] = {
            "runId": str(args.run_id),
            "engineType": args.engine_type,
            "state": EngineState().dump(),  # used only when the engine is new
        }
        if args.engine_id:
            registration["engineId"] = str(args.engine_id)
        if args.group:
            # A member of the group: each event routed to the group goes to
            # one member at a time.
            registration["group"] = args.group
        try:
            data = await api.call(REGISTER, input=registration)
        except TransportQueryError as e:
            if "CONFLICT" in error_codes(e):
                # This engine id exists with another run, type or group.
                raise EngineError(
                    f"{describe(e)}; restart it with the --run-id, --engine-type and --group"
                    " it registered with, or give it a new --engine-id"
                ) from e
            raise
        engine = Engine.model_validate(data["registerEngine"])
        member = f" in group {engine.group!r}" if engine.group else ""
        print(
            f"registered engine {engine.engine_id}{member}: handled {engine.state.handled}"
            f" so far, state version {engine.version}",
            flush=True,
        )

        # Subscribe with our engineId: what is pending for us, most urgent
        # first, at most --max-in-flight at once, each leased for --lease-seconds.
        subscription = GraphQLRequest(
            EVENTS,
            variable_values={
                "run": str(args.run_id),
                "engine": str(engine.engine_id),
                "types": [HANDLES],
                "window": args.max_in_flight,
                "lease": args.lease_seconds,
            },
        )
        async with ws as stream:
            async with contextlib.aclosing(stream.subscribe(subscription)) as events:
                await work_on(api, args, engine, events)


async def work_on(
    api: Api, args: argparse.Namespace, engine: Engine, events: AsyncIterator[dict[str, Any]]
) -> None:
    """Works on the delivered events side by side and completes them one at a
    time (each completion saves the state the one before left), until
    --max-events or the end of the run."""
    handled_now = 0
    working: dict[asyncio.Task[Reply], Event] = {}
    next_event: asyncio.Future[dict[str, Any]] = asyncio.ensure_future(anext(events))
    try:
        while True:
            waiting: set[asyncio.Future[Any]] = {next_event, *working}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if next_event.done():
                try:
                    item = next_event.result()
                except StopAsyncIteration:
                    # The server completes the stream once the run is
                    # COMPLETED, FAILED or CANCELLED.
                    print("the run is over", flush=True)
                    return
                event = Event.model_validate(item["events"])
                print(
                    f"working on sequence {event.sequence} (attempt {event.delivery.attempt})",
                    flush=True,
                )
                work = asyncio.create_task(work_leased(api, engine.engine_id, event, args))
                working[work] = event
                next_event = asyncio.ensure_future(anext(events))
            for work in [task for task in working if task.done()]:
                event = working.pop(work)
                try:
                    engine = await complete(api, args.run_id, engine, event, work)
                except LeaseLost:
                    print(
                        f"lease lost on sequence {event.sequence}: someone else has it now,"
                        " moving on",
                        flush=True,
                    )
                    continue
                handled_now += 1
                if args.max_events is not None and handled_now >= args.max_events:
                    print(f"handled {handled_now} events, stopping", flush=True)
                    return
    finally:
        # Unfinished work is dropped: closing the subscription hands its
        # events back to the server at once.
        unfinished: list[asyncio.Future[Any]] = [next_event, *working]
        for future in unfinished:
            future.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)


async def complete(
    api: Api, run_id: UUID, engine: Engine, event: Event, work: asyncio.Future[Reply]
) -> Engine:
    """Records, replies and checkpoints one worked event in one transaction,
    under its lease. Raises LeaseLost when the lease was lost meanwhile."""
    completion: dict[str, Any] = {
        "eventId": str(event.id),
        "engineId": str(engine.engine_id),
        "leaseId": str(event.delivery.lease_id),
        "expectedVersion": engine.version,
    }
    try:
        reply = work.result()  # LeaseLost when a heartbeat found the lease gone
    except ValidationError as e:
        # A payload the engine cannot use: record the failure, keep the state.
        problems = "; ".join(f"{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in e.errors())
        completion |= {"status": "FAILED", "error": f"bad prompt payload: {problems}"}
        outcome = "failed"
    else:
        state = EngineState(handled=engine.state.handled + 1, last_sequence=event.sequence)
        completion |= {
            "status": "PROCESSED",
            "emit": [
                {
                    "runId": str(run_id),
                    "eventType": REPLIES,
                    "payload": reply.dump(),
                    # A retried completion never publishes a second reply.
                    "idempotencyKey": f"reply-to-{event.id}",
                }
            ],
            "state": state.dump(),
        }
        outcome = "completed"
    try:
        data = await api.call(COMPLETE, input=completion)
    except TransportQueryError as e:
        if "VERSION_CONFLICT" in error_codes(e):
            raise EngineError(
                "state version conflict: another instance with this engine id saved first"
            ) from e
        raise
    engine = Engine.model_validate(data["completeEvent"]["engine"])
    print(
        f"{outcome} sequence {event.sequence} (priority {event.priority}),"
        f" handled {engine.state.handled}, state version {engine.version},"
        f" attempt {event.delivery.attempt}",
        flush=True,
    )
    return engine


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000/graphql", help="GraphQL endpoint")
    parser.add_argument("--run-id", type=UUID, required=True, help="the run to work on")
    parser.add_argument(
        "--engine-id", type=UUID, help="this engine instance; give the same id to resume"
    )
    parser.add_argument("--engine-type", default="PromptEngine", help="its type")
    parser.add_argument(
        "--group",
        help="share the run's work with the other engines of this type registered with this"
        " group: each event goes to one of them (default: no group, every event routed to it)",
    )
    parser.add_argument(
        "--max-events",
        type=int,
        help="exit after handling N events (default: until the run closes)",
    )
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=1,
        help="how many events it works on at once (the subscription's maxInFlight; default 1)",
    )
    parser.add_argument(
        "--lease-seconds",
        type=int,
        default=30,
        help="how long each delivery is leased; extended every third of it meanwhile (default 30)",
    )
    parser.add_argument(
        "--work-seconds",
        type=float,
        default=0.0,
        help="pretend each prompt takes this long to answer (default 0)",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("SCENARIO_HUB_API_KEY"),
        help="API key (engine or admin) when the server has keys; default $SCENARIO_HUB_API_KEY",
    )
    args = parser.parse_args()
    try:
        asyncio.run(run(args))
    except EngineError as e:
        print(f"engine: {e}", file=sys.stderr)
        return 1
    except TransportQueryError as e:
        print(f"engine: the server refused: {describe(e)}", file=sys.stderr)
        return 1
    except (TransportError, OSError) as e:
        print(f"engine: {type(e).__name__}: {e}{close_reason(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
