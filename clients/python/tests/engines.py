"""Engines the tests run (in-process and in subprocesses)."""

from __future__ import annotations

import asyncio
from typing import Any

from scenario_hub import BaseEngine, Event, EventInput, Outcome


class CountingEngine(BaseEngine):
    """Counts the prompts it handles and answers each with a `reply`.

    ``work_seconds``: how long each one takes. A payload with ``"fail": true``
    raises. Every call is kept in ``calls`` (sequence, delivery attempt).
    """

    engine_type = "Counter"

    def __init__(
        self, engine_id: Any = None, *, work_seconds: float = 0.0, announce: bool = False
    ) -> None:
        super().__init__(engine_id)
        self.work_seconds = work_seconds
        self.announce = announce
        self.count = 0
        self.seen: list[int] = []
        self.calls: list[tuple[int, int]] = []

    def get_state(self) -> dict[str, Any]:
        return {"count": self.count, "seen": list(self.seen)}

    def load_state(self, state: dict[str, Any]) -> None:
        self.count = int(state.get("count", 0))
        self.seen = list(state.get("seen", []))

    async def process_event(self, event: Event) -> Outcome:
        attempt = event.delivery.attempt if event.delivery else 0
        self.calls.append((event.sequence, attempt))
        if self.announce:
            print(f"working {event.sequence} attempt {attempt}", flush=True)
        await asyncio.sleep(self.work_seconds)
        if isinstance(event.payload, dict) and event.payload.get("fail"):
            raise RuntimeError(f"cannot handle sequence {event.sequence}")
        # State changes after the last await: each saved state is exact.
        self.count += 1
        self.seen = [*self.seen, event.sequence]
        if self.announce:
            print(f"processed {event.sequence}", flush=True)
        return Outcome(emit=[EventInput(event_type="reply", payload={"repliedTo": event.sequence})])
