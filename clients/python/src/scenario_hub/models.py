"""Typed views of what scenario-hub answers, and of what it takes as input.

The server speaks camelCase JSON; these models are snake_case in Python and
camelCase on the wire (``model_validate`` reads the server's answers;
:meth:`EventInput.to_graphql` writes an ``EventInput``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import Enum
from typing import Any, Generic, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

__all__ = [
    "CompleteEventResult",
    "Delivery",
    "EngineInstance",
    "Event",
    "EventInput",
    "EventType",
    "HubModel",
    "Page",
    "Processing",
    "ProcessingStatus",
    "RunStatus",
    "ScenarioRun",
    "ScenarioTemplate",
    "dump_payload",
]

ModelT = TypeVar("ModelT", bound=BaseModel)
NodeT = TypeVar("NodeT")


class HubModel(BaseModel):
    """Base of the SDK's models: snake_case attributes, camelCase on the wire."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def dump(self) -> dict[str, Any]:
        """JSON-ready dict with the wire (camelCase) names, None fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class RunStatus(str, Enum):
    """Where a run is in its lifecycle."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        """COMPLETED, FAILED or CANCELLED: the run takes no more events."""
        return self in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)


class ProcessingStatus(str, Enum):
    """What an engine did with an event."""

    PROCESSED = "PROCESSED"
    FAILED = "FAILED"


class Delivery(HubModel):
    """One delivery of an event to an engine (or group): its lease."""

    engine_id: UUID | None = None
    event_id: UUID | None = None
    #: How many times the event has been delivered to this engine, from 1.
    attempt: int = 1
    lease_id: UUID | None = None
    lease_expires_at: datetime | None = None


class Processing(HubModel):
    """A processing record: what one engine recorded for one event."""

    event_id: UUID
    engine_id: UUID
    status: ProcessingStatus
    error: str | None = None
    attempts: int = 1
    processed_at: datetime | None = None
    run_sequence: int | None = None


class Event(HubModel):
    """An event of a run, as the server gives it (fields not asked for are None)."""

    id: UUID
    sequence: int
    event_type: str
    priority: int = 0
    payload: Any = Field(default_factory=dict)
    run_id: UUID | None = None
    source_engine_id: UUID | None = None
    parent_event_id: UUID | None = None
    target_engine_id: UUID | None = None
    target_engine_type: str | None = None
    idempotency_key: str | None = None
    partition_key: str | None = None
    created_at: datetime | None = None
    deliver_at: datetime | None = None
    #: This delivery's lease, when the event came through an engine's subscription.
    delivery: Delivery | None = None
    processed_by: list[Processing] = Field(default_factory=list)

    def payload_as(self, model: type[ModelT]) -> ModelT:
        """The payload validated into ``model`` (e.g. a class made by ``scenario_hub.codegen``).

        Raises ``pydantic.ValidationError`` when it does not fit.
        """
        return model.model_validate(self.payload)


class EngineInstance(HubModel):
    """A registered engine instance and its last saved state."""

    engine_id: UUID
    run_id: UUID | None = None
    engine_type: str | None = None
    state: dict[str, Any] = Field(default_factory=dict)
    version: int = 1
    group: str | None = None
    registered_at: datetime | None = None
    updated_at: datetime | None = None
    last_seen_at: datetime | None = None
    online: bool | None = None
    pending_count: int | None = None
    in_flight: list[Delivery] = Field(default_factory=list)


class EventType(HubModel):
    """An event type: name, payload schema, delivery settings."""

    name: str
    category: str | None = None
    engine_type: str | None = None
    description: str | None = None
    payload_schema: Any = None
    default_priority: int = 0
    max_attempts: int = 1
    lease_seconds: int = 300
    retry_delay_seconds: int = 0


class ScenarioTemplate(HubModel):
    """A scenario template (its typed config is left as JSON: ask with ``Hub.execute``)."""

    id: UUID
    name: str
    description: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None


class ScenarioRun(HubModel):
    """A run of a scenario template."""

    id: UUID
    template_id: UUID | None = None
    name: str = ""
    status: RunStatus
    parameters: Any = None
    last_sequence: int = 0
    created_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    parent_run_id: UUID | None = None
    forked_at_sequence: int | None = None


class CompleteEventResult(HubModel):
    """What ``completeEvent`` wrote: the record, the emitted events, the engine after the save."""

    processing: Processing
    emitted: list[Event] = Field(default_factory=list)
    engine: EngineInstance


class Page(BaseModel, Generic[NodeT]):
    """One page of a Relay connection."""

    nodes: list[NodeT]
    has_next_page: bool = False
    end_cursor: str | None = None


def dump_payload(payload: Any) -> Any:
    """A payload as JSON for the wire: Pydantic models by alias, None fields left out."""
    if isinstance(payload, BaseModel):
        return payload.model_dump(mode="json", by_alias=True, exclude_none=True)
    return payload


class EventInput(HubModel):
    """An event to publish, or to emit from ``process_event``.

    ``payload`` may be a JSON value or a Pydantic model (e.g. one made by
    ``python -m scenario_hub.codegen``); a model is sent by its aliases.
    ``run_id`` may be left out when emitting: the engine's run is used, and
    the server fills ``sourceEngineId`` and ``parentEventId`` of an emitted
    event.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    event_type: str
    payload: Any = None
    run_id: UUID | None = None
    priority: int | None = None
    source_engine_id: UUID | None = None
    parent_event_id: UUID | None = None
    target_engine_id: UUID | None = None
    target_engine_type: str | None = None
    idempotency_key: str | None = None
    partition_key: str | None = None
    deliver_at: datetime | None = None

    def to_graphql(self, run_id: UUID | str | None = None) -> dict[str, Any]:
        """The ``EventInput`` variables (camelCase); ``run_id`` fills a missing run."""
        data: dict[str, Any] = self.model_dump(
            mode="json", by_alias=True, exclude_none=True, exclude={"payload"}
        )
        if "runId" not in data:
            if run_id is None:
                raise ValueError(f"event {self.event_type!r} has no run_id")
            data["runId"] = str(run_id)
        if self.payload is not None:
            data["payload"] = dump_payload(self.payload)
        return data


def as_event_input(value: EventInput | Mapping[str, Any]) -> EventInput:
    """An :class:`EventInput` from itself or a dict (snake_case or camelCase keys)."""
    if isinstance(value, EventInput):
        return value
    return EventInput.model_validate(dict(value))
