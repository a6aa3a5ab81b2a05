#!/usr/bin/env python3
"""An example scenario-hub engine in Python, on the SDK (clients/python).

It answers each ``prompt`` event (payload ``{"text": "..."}``) of a run with
a ``reply`` event (payload ``{"repliedTo": <sequence>, "text": "..."}``) and
counts what it handled in its state. ``run_engine`` does the rest: it
registers the engine (an ``--engine-id`` it has seen gets its stored state
back), takes at most ``--max-in-flight`` leased events at once, most urgent
first, extends each lease while the work lasts, completes each event with its
reply and the new state in one transaction, records FAILED when
``process_event`` raises, reconnects when the server goes away and stops
cleanly on SIGTERM. Kill it at any point and start it again with the same
``--engine-id``: it resumes with exactly the events it had not completed.

Start several with the same ``--group`` on one run and they share its work.
Both event types belong to the scenario: create them first (check.py shows how).

    python engine.py --run-id RUN_ID --engine-id 6f1c7b5e-0000-4000-8000-000000000001
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import Any
from uuid import UUID

from pydantic import BaseModel

from scenario_hub import BaseEngine, Event, EventInput, HubError, Outcome, run_engine


class Prompt(BaseModel):
    """Payload of a `prompt` event."""

    text: str


class PromptEngine(BaseEngine):
    """Replies to prompts; its state is how many it handled and the last one's sequence."""

    def __init__(self, engine_id: UUID | None, engine_type: str, work_seconds: float) -> None:
        super().__init__(engine_id, engine_type)
        self.work_seconds = work_seconds
        self.handled = 0
        self.last_sequence: int | None = None

    def get_state(self) -> dict[str, Any]:
        return {"handled": self.handled, "lastSequence": self.last_sequence}

    def load_state(self, state: dict[str, Any]) -> None:
        self.handled = state.get("handled", 0)
        self.last_sequence = state.get("lastSequence")

    async def process_event(self, event: Event) -> Outcome:
        attempt = event.delivery.attempt if event.delivery else 1
        print(f"working on sequence {event.sequence} (attempt {attempt})", flush=True)
        # A payload the model rejects raises: the SDK records the event FAILED.
        prompt = event.payload_as(Prompt)
        await asyncio.sleep(self.work_seconds)  # where an LLM would be called
        # The state changes after the last await, so that each saved state
        # holds exactly the completed events even with several in flight.
        self.handled += 1
        self.last_sequence = event.sequence
        reply = EventInput(
            event_type="reply",
            payload={"repliedTo": event.sequence, "text": f"you said: {prompt.text}"},
            # A retried completion never publishes a second reply.
            idempotency_key=f"reply-to-{event.id}",
        )
        return Outcome(emit=[reply])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000/graphql", help="GraphQL endpoint")
    parser.add_argument("--run-id", type=UUID, required=True, help="the run to work on")
    parser.add_argument("--engine-id", type=UUID, help="this engine; give the same id to resume")
    parser.add_argument("--engine-type", default="PromptEngine", help="its type")
    parser.add_argument("--group", help="share the run's work with this group's members")
    parser.add_argument("--max-events", type=int, help="exit after handling N events")
    parser.add_argument("--max-in-flight", type=int, default=1, help="events worked on at once")
    parser.add_argument("--lease-seconds", type=int, help="lease per delivery (default: the type's)")
    parser.add_argument("--work-seconds", type=float, default=0.0, help="time each prompt takes")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("SCENARIO_HUB_API_KEY"),
        help="engine or admin key when the server has keys (default $SCENARIO_HUB_API_KEY)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    engine = PromptEngine(args.engine_id, args.engine_type, args.work_seconds)
    try:
        summary = asyncio.run(
            run_engine(
                engine,
                args.run_id,
                url=args.url,
                api_key=args.api_key,
                max_in_flight=args.max_in_flight,
                lease_seconds=args.lease_seconds,
                group=args.group,
                event_types=["prompt"],
                max_events=args.max_events,
            )
        )
    except HubError as e:  # what retrying cannot mend: an unknown run, a refused key
        print(f"engine: {e}", file=sys.stderr)
        return 1
    handled = summary.processed + summary.failed
    print(f"handled {handled} events, stopping ({summary.stop_reason})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
