#!/usr/bin/env python3
"""An example scenario-hub engine in Python: the loop every engine runs.

It is the Python twin of ``examples/engine.rs``:

1. ``registerEngine``: idempotent. A new engine starts from an initial state;
   an engine that gives its ``--engine-id`` again gets its stored state back.
2. Subscribe to ``events(runId, engineId, eventTypes)`` over the websocket
   (``graphql-transport-ws``). With its ``engineId`` the engine first gets
   every event routed to it that it has not completed yet, most urgent first,
   then live events.
3. For each event, ``completeEvent``: the processing record (PROCESSED), a
   reply event and the engine's new state (compare-and-set on
   ``expectedVersion``), all in one transaction.

Kill it at any point and start it again with the same ``--engine-id``: it
resumes from its stored state with exactly the events it had not completed.

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


class Event(Model):
    """An event as the subscription delivers it (the fields it asks for)."""

    id: UUID
    sequence: int
    priority: int
    event_type: str
    payload: dict[str, Any]


class EngineState(Model):
    """What the engine checkpoints with every completion."""

    handled: int = 0
    last_sequence: int | None = None


class Engine(Model):
    """The server's EngineInstance: the stored state and its version."""

    engine_id: UUID
    state: EngineState
    version: int


# --- GraphQL operations -----------------------------------------------------

REGISTER = """
mutation Register($input: RegisterEngineInput!) {
  registerEngine(input: $input) { engineId state version }
}
"""

EVENT_TYPE = """
query EventType($name: String!) { eventType(name: $name) { name } }
"""

EVENTS = """
subscription Events($run: UUID!, $engine: UUID!, $types: [String!]) {
  events(runId: $run, engineId: $engine, eventTypes: $types) {
    id sequence priority eventType payload
  }
}
"""

COMPLETE = """
mutation Complete($input: CompleteEventInput!) {
  completeEvent(input: $input) { engine { engineId state version } }
}
"""


class EngineError(Exception):
    """A failure worth a one-line message rather than a traceback."""


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


def answer(event: Event, prompt: Prompt) -> Reply:
    """Whatever the engine is for; here, a canned answer."""
    return Reply(replied_to=event.sequence, text=f"you said: {prompt.text}")


# --- The loop ---------------------------------------------------------------


class Api:
    """Queries and mutations over HTTP."""

    def __init__(self, session: Any) -> None:
        self.session = session

    async def call(self, query: str, **variables: Any) -> dict[str, Any]:
        """The `data` of one operation; GraphQL errors raise TransportQueryError."""
        return await self.session.execute(GraphQLRequest(query, variable_values=variables))


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
        data = await api.call(REGISTER, input=registration)
        engine = Engine.model_validate(data["registerEngine"])
        print(
            f"registered engine {engine.engine_id}: handled {engine.state.handled} so far,"
            f" state version {engine.version}",
            flush=True,
        )

        # Subscribe with our engineId: the backlog first, then live events.
        subscription = GraphQLRequest(
            EVENTS,
            variable_values={
                "run": str(args.run_id),
                "engine": str(engine.engine_id),
                "types": [HANDLES],
            },
        )
        handled_now = 0
        async with ws as stream:
            async with contextlib.aclosing(stream.subscribe(subscription)) as events:
                async for item in events:
                    event = Event.model_validate(item["events"])
                    engine = await complete(api, args.run_id, engine, event)
                    handled_now += 1
                    if args.max_events is not None and handled_now >= args.max_events:
                        print(f"handled {handled_now} events, stopping", flush=True)
                        return
        # The server completes the stream once the run is COMPLETED, FAILED or CANCELLED.
        print("the run is over", flush=True)


async def complete(api: Api, run_id: UUID, engine: Engine, event: Event) -> Engine:
    """Records, replies and checkpoints one event in one transaction."""
    completion: dict[str, Any] = {
        "eventId": str(event.id),
        "engineId": str(engine.engine_id),
        "expectedVersion": engine.version,
    }
    try:
        prompt = Prompt.model_validate(event.payload)
    except ValidationError as e:
        # A payload the engine cannot use: record the failure, keep the state.
        problems = "; ".join(f"{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in e.errors())
        completion |= {"status": "FAILED", "error": f"bad prompt payload: {problems}"}
        outcome = "failed"
    else:
        reply = answer(event, prompt)
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
        f" handled {engine.state.handled}, state version {engine.version}",
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
        "--max-events",
        type=int,
        help="exit after handling N events (default: until the run closes)",
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
