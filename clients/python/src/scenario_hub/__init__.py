"""scenario-hub engine SDK.

* :class:`Hub`: an async GraphQL client of a scenario-hub server.
* :class:`BaseEngine` and :func:`run_engine`: the engine loop (register,
  subscribe with a window of leased deliveries, heartbeat, complete
  atomically, reconnect, stop on SIGTERM).
* ``python -m scenario_hub.codegen URL``: Pydantic models of the server's
  event payload schemas.
"""

from .client import Hub
from .engine import BaseEngine, EngineRunSummary, Outcome, StopReason, run_engine
from .errors import (
    BadUserInput,
    Conflict,
    Forbidden,
    HubConnectionError,
    HubError,
    InternalError,
    InvalidTransition,
    LeaseLost,
    LimitExceeded,
    NotFound,
    PayloadSchemaViolation,
    RunClosed,
    Unauthenticated,
    Unavailable,
    VersionConflict,
)
from .models import (
    CompleteEventResult,
    Delivery,
    EngineInstance,
    Event,
    EventInput,
    EventType,
    Page,
    Processing,
    ProcessingStatus,
    RunStatus,
    ScenarioRun,
    ScenarioTemplate,
)

__version__ = "0.1.0"

__all__ = [
    "BadUserInput",
    "BaseEngine",
    "CompleteEventResult",
    "Conflict",
    "Delivery",
    "EngineInstance",
    "EngineRunSummary",
    "Event",
    "EventInput",
    "EventType",
    "Forbidden",
    "Hub",
    "HubConnectionError",
    "HubError",
    "InternalError",
    "InvalidTransition",
    "LeaseLost",
    "LimitExceeded",
    "NotFound",
    "Outcome",
    "Page",
    "PayloadSchemaViolation",
    "Processing",
    "ProcessingStatus",
    "RunClosed",
    "RunStatus",
    "ScenarioRun",
    "ScenarioTemplate",
    "StopReason",
    "Unauthenticated",
    "Unavailable",
    "VersionConflict",
    "__version__",
    "run_engine",
]
