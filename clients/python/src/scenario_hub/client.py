"""``Hub``: an async client of scenario-hub (GraphQL over HTTP and websocket)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

import aiohttp
from gql import Client, GraphQLRequest
from gql.transport.aiohttp import AIOHTTPTransport
from gql.transport.exceptions import (
    TransportError,
    TransportProtocolError,
    TransportQueryError,
    TransportServerError,
)
from gql.transport.websockets import WebsocketsTransport
from graphql import DocumentNode, parse
from pydantic import BaseModel
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from .errors import (
    BadUserInput,
    Forbidden,
    HubConnectionError,
    HubError,
    LimitExceeded,
    NotFound,
    Unauthenticated,
    Unavailable,
    error_from_graphql,
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
    as_event_input,
)

__all__ = ["Hub", "graphql_url", "websocket_url"]

ModelT = TypeVar("ModelT", bound=BaseModel)

# --- GraphQL documents (parsed once) ---------------------------------------

EVENT_FIELDS = """
  id runId sequence priority eventType payload sourceEngineId parentEventId
  targetEngineId targetEngineType idempotencyKey partitionKey createdAt deliverAt
"""
DELIVERY_FIELDS = "engineId eventId attempt leaseId leaseExpiresAt"
PROCESSING_FIELDS = "eventId engineId status error attempts processedAt runSequence"
ENGINE_FIELDS = (
    "engineId runId engineType state version group registeredAt updatedAt lastSeenAt"
    " online pendingCount"
)
EVENT_TYPE_FIELDS = (
    "name category engineType description payloadSchema defaultPriority maxAttempts"
    " leaseSeconds retryDelaySeconds"
)
RUN_FIELDS = (
    "id templateId name status parameters lastSequence createdAt startedAt endedAt"
    " parentRunId forkedAtSequence"
)
TEMPLATE_FIELDS = "id name description createdAt updatedAt"

REGISTER_ENGINE = parse(f"""mutation RegisterEngine($input: RegisterEngineInput!) {{
  registerEngine(input: $input) {{ {ENGINE_FIELDS} }}
}}""")
GET_ENGINE = parse(f"""query Engine($engineId: UUID!) {{
  engine(engineId: $engineId) {{ {ENGINE_FIELDS} inFlight {{ {DELIVERY_FIELDS} }} }}
}}""")
LIST_ENGINES = parse(f"""query Engines($runId: UUID!, $engineType: String) {{
  engines(runId: $runId, engineType: $engineType) {{ {ENGINE_FIELDS} }}
}}""")
SAVE_STATE = parse(
    f"""mutation SaveEngineState($engineId: UUID!, $state: JSON!, $expectedVersion: Int) {{
  saveEngineState(engineId: $engineId, state: $state, expectedVersion: $expectedVersion) {{
    {ENGINE_FIELDS}
  }}
}}"""
)
PUBLISH_EVENT = parse(f"""mutation PublishEvent($input: EventInput!) {{
  publishEvent(input: $input) {{ {EVENT_FIELDS} }}
}}""")
PUBLISH_EVENTS = parse(f"""mutation PublishEvents($inputs: [EventInput!]!) {{
  publishEvents(inputs: $inputs) {{ {EVENT_FIELDS} }}
}}""")
RECORD_PROCESSING = parse(f"""mutation RecordProcessing($input: RecordProcessingInput!) {{
  recordProcessing(input: $input) {{ {PROCESSING_FIELDS} }}
}}""")
COMPLETE_EVENT = parse(f"""mutation CompleteEvent($input: CompleteEventInput!) {{
  completeEvent(input: $input) {{
    processing {{ {PROCESSING_FIELDS} }}
    emitted {{ {EVENT_FIELDS} }}
    engine {{ {ENGINE_FIELDS} }}
  }}
}}""")
EXTEND_LEASE = parse(f"""mutation ExtendLease($input: ExtendLeaseInput!) {{
  extendLease(input: $input) {{ {DELIVERY_FIELDS} }}
}}""")
CREATE_EVENT_TYPE = parse(f"""mutation CreateEventType($input: CreateEventTypeInput!) {{
  createEventType(input: $input) {{ {EVENT_TYPE_FIELDS} }}
}}""")
GET_EVENT_TYPE = parse(
    f"""query EventType($name: String!) {{ eventType(name: $name) {{ {EVENT_TYPE_FIELDS} }} }}"""
)
LIST_EVENT_TYPES = parse(f"""query EventTypes($category: String, $engineType: String) {{
  eventTypes(category: $category, engineType: $engineType) {{ {EVENT_TYPE_FIELDS} }}
}}""")
CREATE_TEMPLATE = parse(f"""mutation CreateScenarioTemplate($input: CreateScenarioTemplateInput!) {{
  createScenarioTemplate(input: $input) {{ {TEMPLATE_FIELDS} }}
}}""")
LIST_TEMPLATES = parse(f"""query ScenarioTemplates($first: Int, $after: String) {{
  scenarioTemplates(first: $first, after: $after) {{
    nodes {{ {TEMPLATE_FIELDS} }} pageInfo {{ hasNextPage endCursor }}
  }}
}}""")
CREATE_RUN = parse(f"""mutation CreateScenarioRun($input: CreateScenarioRunInput!) {{
  createScenarioRun(input: $input) {{ {RUN_FIELDS} }}
}}""")
GET_RUN = parse(f"""query ScenarioRun($id: UUID!) {{ scenarioRun(id: $id) {{ {RUN_FIELDS} }} }}""")
LIST_RUNS = parse(
    f"""query ScenarioRuns($status: RunStatus, $templateId: UUID, $first: Int, $after: String) {{
  scenarioRuns(status: $status, templateId: $templateId, first: $first, after: $after) {{
    nodes {{ {RUN_FIELDS} }} pageInfo {{ hasNextPage endCursor }}
  }}
}}"""
)
SET_RUN_STATUS = parse(f"""mutation SetRunStatus($runId: UUID!, $status: RunStatus!) {{
  setRunStatus(runId: $runId, status: $status) {{ {RUN_FIELDS} }}
}}""")
FORK_RUN = parse(
    f"""mutation ForkRun($input: ForkRunInput!) {{ forkRun(input: $input) {{ {RUN_FIELDS} }} }}"""
)
LIST_EVENTS = parse(f"""query Events(
  $runId: UUID!, $filter: EventFilter, $orderBy: EventOrder!, $first: Int, $after: String
) {{
  events(runId: $runId, filter: $filter, orderBy: $orderBy, first: $first, after: $after) {{
    nodes {{ {EVENT_FIELDS} processedBy {{ {PROCESSING_FIELDS} }} }}
    pageInfo {{ hasNextPage endCursor }}
  }}
}}""")
GET_EVENT = parse(f"""query Event($id: UUID!) {{
  event(id: $id) {{ {EVENT_FIELDS} processedBy {{ {PROCESSING_FIELDS} }} }}
}}""")
SUBSCRIBE_EVENTS = parse(f"""subscription Events(
  $runId: UUID!, $engineId: UUID, $eventTypes: [String!], $minPriority: Int,
  $afterSequence: Int, $maxInFlight: Int, $leaseSeconds: Int
) {{
  events(
    runId: $runId, engineId: $engineId, eventTypes: $eventTypes, minPriority: $minPriority,
    afterSequence: $afterSequence, maxInFlight: $maxInFlight, leaseSeconds: $leaseSeconds
  ) {{
    {EVENT_FIELDS}
    delivery {{ {DELIVERY_FIELDS} }}
  }}
}}""")


# --- helpers -----------------------------------------------------------------


def graphql_url(url: str) -> str:
    """The GraphQL endpoint for ``url``: a bare ``http://host:port`` gets ``/graphql``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "ws", "wss"):
        raise ValueError(f"not an http(s) or ws(s) URL: {url!r}")
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    path = parts.path if parts.path not in ("", "/") else "/graphql"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def websocket_url(url: str) -> str:
    """The websocket URL of the GraphQL endpoint (http -> ws, https -> wss)."""
    http = graphql_url(url)
    return "wss" + http[5:] if http.startswith("https") else "ws" + http[4:]


def _str_or_none(value: UUID | str | None) -> str | None:
    return None if value is None else str(value)


def _drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _close_code(error: BaseException | None) -> int | None:
    """The websocket close code the server sent, found in an exception's chain."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, ConnectionClosed) and error.rcvd is not None:
            return int(error.rcvd.code)
        error = error.__cause__ or error.__context__
    return None


def _transport_error(error: BaseException) -> HubError:
    """The HubError for a failure below GraphQL (HTTP status, socket, protocol)."""
    if isinstance(error, HubError):
        return error
    if isinstance(error, TransportQueryError):
        return error_from_graphql(error.errors or [{"message": str(error)}])
    if isinstance(error, TransportServerError):
        status = error.code
        if status == 401:
            return Unauthenticated(f"HTTP 401: {error}")
        if status == 403:
            return Forbidden(f"HTTP 403: {error}")
        if status == 404:
            return NotFound(f"HTTP 404: {error} (is the URL the /graphql endpoint?)")
        if status == 413:
            return LimitExceeded(f"HTTP 413: {error}")
        if status == 400:
            return BadUserInput(f"HTTP 400: {error}")
        return HubConnectionError(f"HTTP {status}: {error}")
    close_code = _close_code(error)
    if close_code == 4403:
        return Unauthenticated(
            "the server refused the API key (websocket closed 4403): missing, wrong or revoked"
        )
    if isinstance(error, TransportProtocolError):
        return HubError(f"protocol error: {error}", code="PROTOCOL")
    detail = str(error) or type(error).__name__
    if close_code is not None:
        detail += f" (websocket closed {close_code})"
    return HubConnectionError(detail, close_code=close_code)


#: Exceptions that mean "no GraphQL answer": turned into HubConnectionError and the like.
_LOW_LEVEL_ERRORS: tuple[type[BaseException], ...] = (
    TransportError,
    aiohttp.ClientError,
    ConnectionClosed,
    InvalidHandshake,
    OSError,
    asyncio.TimeoutError,
    TimeoutError,
)


class Hub:
    """An async client of one scenario-hub server.

    Queries and mutations go over HTTP (one pooled aiohttp session, opened on
    first use); subscriptions each open a websocket (graphql-transport-ws).
    With ``api_key`` the token is sent as ``Authorization: Bearer <token>`` on
    HTTP and in the websocket's ``connection_init`` payload.

    GraphQL errors raise :class:`~scenario_hub.errors.HubError` (or the
    subclass for its ``code``: ``LeaseLost``, ``VersionConflict``,
    ``RunClosed``, ...); a server that cannot be reached raises
    :class:`~scenario_hub.errors.HubConnectionError`.

    Use it as ``async with Hub(url) as hub: ...``, or call :meth:`close`.
    """

    def __init__(self, url: str, api_key: str | None = None, *, timeout: float = 30.0) -> None:
        self.url = graphql_url(url)
        self.ws_url = websocket_url(url)
        self.api_key = api_key
        self.timeout = timeout
        self._client: Client | None = None
        self._session: Any = None
        self._connect_lock = asyncio.Lock()

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    async def __aenter__(self) -> Hub:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _http(self) -> Any:
        async with self._connect_lock:
            if self._session is None:
                transport = AIOHTTPTransport(
                    url=self.url, headers=self._auth, timeout=int(self.timeout)
                )
                client = Client(transport=transport, execute_timeout=self.timeout)
                try:
                    self._session = await client.connect_async()  # type: ignore[no-untyped-call]
                except _LOW_LEVEL_ERRORS as e:
                    raise _transport_error(e) from e
                self._client = client
            return self._session

    async def close(self) -> None:
        """Closes the HTTP session (open subscriptions close with their iterators)."""
        client, self._client, self._session = self._client, None, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close_async()  # type: ignore[no-untyped-call]

    # --- raw access ------------------------------------------------------------

    async def execute(
        self, query: str | DocumentNode, variables: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Runs one query or mutation; returns its ``data``.

        Raises HubError (a subclass per ``extensions.code``) on GraphQL errors,
        HubConnectionError when the server cannot be reached.
        """
        document = parse(query) if isinstance(query, str) else query
        request = GraphQLRequest(document, variable_values=dict(variables or {}))
        session = await self._http()
        try:
            data: dict[str, Any] = await session.execute(request)
        except _LOW_LEVEL_ERRORS as e:
            # aiohttp opens new connections by itself once the server is back.
            raise _transport_error(e) from e
        return data

    async def subscribe(
        self, query: str | DocumentNode, variables: Mapping[str, Any] | None = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Runs one subscription on a websocket of its own; yields each ``data``.

        The iterator ends when the server completes the subscription. Close
        it (``contextlib.aclosing``, or ``break`` out of ``async for``) to
        close the websocket.
        """
        document = parse(query) if isinstance(query, str) else query
        request = GraphQLRequest(document, variable_values=dict(variables or {}))
        transport = WebsocketsTransport(
            url=self.ws_url,
            init_payload=self._auth,
            subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],  # graphql-transport-ws
            connect_timeout=self.timeout,
            ack_timeout=self.timeout,
            close_timeout=5,
        )
        client = Client(transport=transport)
        try:
            async with client as session:
                inner = session.subscribe(request)
                async with contextlib.aclosing(inner):  # `complete` sent before the socket closes
                    async for data in inner:
                        yield data
        except _LOW_LEVEL_ERRORS as e:
            raise _transport_error(e) from e

    # --- engines -----------------------------------------------------------------

    async def register_engine(
        self,
        run_id: UUID | str,
        engine_type: str,
        *,
        engine_id: UUID | str | None = None,
        state: Mapping[str, Any] | None = None,
        group: str | None = None,
    ) -> EngineInstance:
        """Registers an engine instance, or gets an existing one back with its stored state.

        ``state`` is the initial state, used only when the engine is new.
        ``CONFLICT`` when ``engine_id`` exists with another run, type or group.
        """
        data = await self.execute(
            REGISTER_ENGINE,
            {
                "input": _drop_none(
                    {
                        "engineId": _str_or_none(engine_id),
                        "runId": str(run_id),
                        "engineType": engine_type,
                        "state": dict(state) if state is not None else None,
                        "group": group,
                    }
                )
            },
        )
        return EngineInstance.model_validate(data["registerEngine"])

    async def get_engine(self, engine_id: UUID | str) -> EngineInstance | None:
        """One engine instance (with its in-flight deliveries), None if unknown."""
        data = await self.execute(GET_ENGINE, {"engineId": str(engine_id)})
        found = data["engine"]
        return None if found is None else EngineInstance.model_validate(found)

    async def list_engines(
        self, run_id: UUID | str, engine_type: str | None = None
    ) -> list[EngineInstance]:
        """The engine instances of a run, optionally of one type."""
        data = await self.execute(LIST_ENGINES, {"runId": str(run_id), "engineType": engine_type})
        return [EngineInstance.model_validate(e) for e in data["engines"]]

    async def save_state(
        self,
        engine_id: UUID | str,
        state: Mapping[str, Any],
        expected_version: int | None = None,
    ) -> EngineInstance:
        """Saves an engine's state; with ``expected_version``, only if it is still current
        (else :class:`VersionConflict`)."""
        data = await self.execute(
            SAVE_STATE,
            {"engineId": str(engine_id), "state": dict(state), "expectedVersion": expected_version},
        )
        return EngineInstance.model_validate(data["saveEngineState"])

    # --- events --------------------------------------------------------------------

    async def publish_event(self, event: EventInput | Mapping[str, Any]) -> Event:
        """Publishes one event (its ``run_id`` is required); an ``idempotency_key``
        already used in the run returns the existing event."""
        data = await self.execute(PUBLISH_EVENT, {"input": as_event_input(event).to_graphql()})
        return Event.model_validate(data["publishEvent"])

    async def publish_events(self, events: Sequence[EventInput | Mapping[str, Any]]) -> list[Event]:
        """Publishes up to 1,000 events in one transaction; returned in input order."""
        inputs = [as_event_input(e).to_graphql() for e in events]
        data = await self.execute(PUBLISH_EVENTS, {"inputs": inputs})
        return [Event.model_validate(e) for e in data["publishEvents"]]

    async def record_processing(
        self,
        event_id: UUID | str,
        engine_id: UUID | str,
        status: ProcessingStatus | str = ProcessingStatus.PROCESSED,
        *,
        error: str | None = None,
        lease_id: UUID | str | None = None,
        retry_after_seconds: int | None = None,
    ) -> Processing:
        """Records that an engine processed or failed an event (no emit, no state)."""
        data = await self.execute(
            RECORD_PROCESSING,
            {
                "input": _drop_none(
                    {
                        "eventId": str(event_id),
                        "engineId": str(engine_id),
                        "status": ProcessingStatus(status).value,
                        "error": error,
                        "leaseId": _str_or_none(lease_id),
                        "retryAfterSeconds": retry_after_seconds,
                    }
                )
            },
        )
        return Processing.model_validate(data["recordProcessing"])

    async def complete_event(
        self,
        event_id: UUID | str,
        engine_id: UUID | str,
        status: ProcessingStatus | str = ProcessingStatus.PROCESSED,
        *,
        error: str | None = None,
        lease_id: UUID | str | None = None,
        emit: Sequence[EventInput | Mapping[str, Any]] = (),
        state: Mapping[str, Any] | None = None,
        expected_version: int | None = None,
        run_id: UUID | str | None = None,
    ) -> CompleteEventResult:
        """Records the outcome, publishes ``emit`` and saves ``state`` in one transaction.

        ``run_id`` fills the run of emitted events that give none. Raises
        :class:`LeaseLost` when ``lease_id`` is no longer the event's lease,
        :class:`VersionConflict` when ``expected_version`` is stale: then
        nothing changed.
        """
        data = await self.execute(
            COMPLETE_EVENT,
            {
                "input": _drop_none(
                    {
                        "eventId": str(event_id),
                        "engineId": str(engine_id),
                        "status": ProcessingStatus(status).value,
                        "error": error,
                        "leaseId": _str_or_none(lease_id),
                        "emit": [as_event_input(e).to_graphql(run_id) for e in emit],
                        "state": dict(state) if state is not None else None,
                        "expectedVersion": expected_version,
                    }
                )
            },
        )
        return CompleteEventResult.model_validate(data["completeEvent"])

    async def extend_lease(
        self,
        event_id: UUID | str,
        engine_id: UUID | str,
        lease_id: UUID | str,
        seconds: int,
    ) -> Delivery:
        """Renews a lease for ``seconds`` from now (a heartbeat); :class:`LeaseLost` when
        the lease is no longer current."""
        data = await self.execute(
            EXTEND_LEASE,
            {
                "input": {
                    "eventId": str(event_id),
                    "engineId": str(engine_id),
                    "leaseId": str(lease_id),
                    "seconds": int(seconds),
                }
            },
        )
        return Delivery.model_validate(data["extendLease"])

    async def events(
        self,
        run_id: UUID | str,
        *,
        event_types: Sequence[str] | None = None,
        min_priority: int | None = None,
        after_sequence: int | None = None,
        pending_for: UUID | str | None = None,
        source_engine_id: UUID | str | None = None,
        order_by: str = "SEQUENCE",
        first: int | None = None,
        after: str | None = None,
    ) -> Page[Event]:
        """One page of a run's events (with their processing records)."""
        event_filter = _drop_none(
            {
                "eventTypes": list(event_types) if event_types is not None else None,
                "minPriority": min_priority,
                "afterSequence": after_sequence,
                "pendingFor": _str_or_none(pending_for),
                "sourceEngineId": _str_or_none(source_engine_id),
            }
        )
        data = await self.execute(
            LIST_EVENTS,
            {
                "runId": str(run_id),
                "filter": event_filter or None,
                "orderBy": order_by,
                "first": first,
                "after": after,
            },
        )
        return _page(data["events"], Event)

    async def all_events(
        self,
        run_id: UUID | str,
        *,
        event_types: Sequence[str] | None = None,
        pending_for: UUID | str | None = None,
        page_size: int = 500,
    ) -> list[Event]:
        """Every event of a run (optionally filtered), in sequence order, page by page."""
        nodes: list[Event] = []
        after: str | None = None
        while True:
            page = await self.events(
                run_id,
                event_types=event_types,
                pending_for=pending_for,
                first=page_size,
                after=after,
            )
            nodes += page.nodes
            if not page.has_next_page or page.end_cursor is None:
                return nodes
            after = page.end_cursor

    async def get_event(self, event_id: UUID | str) -> Event | None:
        """One event with its processing records, None if unknown."""
        data = await self.execute(GET_EVENT, {"id": str(event_id)})
        found = data["event"]
        return None if found is None else Event.model_validate(found)

    async def subscribe_events(
        self,
        run_id: UUID | str,
        *,
        engine_id: UUID | str | None = None,
        event_types: Sequence[str] | None = None,
        min_priority: int | None = None,
        after_sequence: int | None = None,
        max_in_flight: int | None = None,
        lease_seconds: int | None = None,
    ) -> AsyncGenerator[Event, None]:
        """The ``events`` subscription on a websocket of its own.

        With ``engine_id``: the events pending for that engine, most urgent
        first, at most ``max_in_flight`` unrecorded at once, each leased
        (``Event.delivery``). Ends when the run closes. (``run_engine`` does
        all of this for a :class:`~scenario_hub.BaseEngine`.)
        """
        variables = {
            "runId": str(run_id),
            "engineId": _str_or_none(engine_id),
            "eventTypes": list(event_types) if event_types is not None else None,
            "minPriority": min_priority,
            "afterSequence": after_sequence,
            "maxInFlight": max_in_flight,
            "leaseSeconds": lease_seconds,
        }
        stream = self.subscribe(SUBSCRIBE_EVENTS, _drop_none(variables))
        async with contextlib.aclosing(stream):
            async for data in stream:
                yield Event.model_validate(data["events"])

    # --- event types ---------------------------------------------------------------

    async def create_event_type(
        self,
        name: str,
        category: str,
        *,
        engine_type: str | None = None,
        description: str | None = None,
        payload_schema: Mapping[str, Any] | None = None,
        default_priority: int | None = None,
        max_attempts: int | None = None,
        lease_seconds: int | None = None,
        retry_delay_seconds: int | None = None,
    ) -> EventType:
        """Creates an event type (``CONFLICT`` when the name exists)."""
        data = await self.execute(
            CREATE_EVENT_TYPE,
            {
                "input": _drop_none(
                    {
                        "name": name,
                        "category": category,
                        "engineType": engine_type,
                        "description": description,
                        "payloadSchema": (
                            dict(payload_schema) if payload_schema is not None else None
                        ),
                        "defaultPriority": default_priority,
                        "maxAttempts": max_attempts,
                        "leaseSeconds": lease_seconds,
                        "retryDelaySeconds": retry_delay_seconds,
                    }
                )
            },
        )
        return EventType.model_validate(data["createEventType"])

    async def get_event_type(self, name: str) -> EventType | None:
        """One event type, None if unknown."""
        data = await self.execute(GET_EVENT_TYPE, {"name": name})
        found = data["eventType"]
        return None if found is None else EventType.model_validate(found)

    async def list_event_types(
        self, *, category: str | None = None, engine_type: str | None = None
    ) -> list[EventType]:
        """Event types by name, optionally of one category or engine type."""
        data = await self.execute(
            LIST_EVENT_TYPES, {"category": category, "engineType": engine_type}
        )
        return [EventType.model_validate(t) for t in data["eventTypes"]]

    # --- templates and runs ------------------------------------------------------

    async def create_scenario_template(
        self,
        name: str,
        *,
        description: str | None = None,
        config: Mapping[str, Any] | None = None,
        agent_roles: Sequence[Mapping[str, Any]] | None = None,
        event_flow: Mapping[str, Any] | None = None,
    ) -> ScenarioTemplate:
        """Creates a scenario template; ``config``, ``agent_roles`` and ``event_flow`` are
        the GraphQL input objects (camelCase keys)."""
        data = await self.execute(
            CREATE_TEMPLATE,
            {
                "input": _drop_none(
                    {
                        "name": name,
                        "description": description,
                        "config": dict(config) if config is not None else None,
                        "agentRoles": (
                            [dict(r) for r in agent_roles] if agent_roles is not None else None
                        ),
                        "eventFlow": dict(event_flow) if event_flow is not None else None,
                    }
                )
            },
        )
        return ScenarioTemplate.model_validate(data["createScenarioTemplate"])

    async def list_scenario_templates(
        self, *, first: int | None = None, after: str | None = None
    ) -> Page[ScenarioTemplate]:
        """One page of scenario templates, oldest first."""
        data = await self.execute(LIST_TEMPLATES, {"first": first, "after": after})
        return _page(data["scenarioTemplates"], ScenarioTemplate)

    async def create_scenario_run(
        self, template_id: UUID | str, name: str, parameters: Any = None
    ) -> ScenarioRun:
        """Creates a PENDING run of a template."""
        data = await self.execute(
            CREATE_RUN,
            {
                "input": _drop_none(
                    {"templateId": str(template_id), "name": name, "parameters": parameters}
                )
            },
        )
        return ScenarioRun.model_validate(data["createScenarioRun"])

    async def get_run(self, run_id: UUID | str) -> ScenarioRun | None:
        """One run, None if unknown."""
        data = await self.execute(GET_RUN, {"id": str(run_id)})
        found = data["scenarioRun"]
        return None if found is None else ScenarioRun.model_validate(found)

    async def list_runs(
        self,
        *,
        status: RunStatus | str | None = None,
        template_id: UUID | str | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Page[ScenarioRun]:
        """One page of runs, oldest first, optionally of one status or template."""
        data = await self.execute(
            LIST_RUNS,
            {
                "status": RunStatus(status).value if status is not None else None,
                "templateId": _str_or_none(template_id),
                "first": first,
                "after": after,
            },
        )
        return _page(data["scenarioRuns"], ScenarioRun)

    async def set_run_status(self, run_id: UUID | str, status: RunStatus | str) -> ScenarioRun:
        """Moves a run to another status (``INVALID_TRANSITION`` when not allowed)."""
        data = await self.execute(
            SET_RUN_STATUS, {"runId": str(run_id), "status": RunStatus(status).value}
        )
        return ScenarioRun.model_validate(data["setRunStatus"])

    async def fork_run(
        self,
        run_id: UUID | str,
        at_sequence: int,
        *,
        name: str | None = None,
        parameters: Any = None,
    ) -> ScenarioRun:
        """A new PENDING run from ``run_id`` as it stood at ``at_sequence`` (admin)."""
        data = await self.execute(
            FORK_RUN,
            {
                "input": _drop_none(
                    {
                        "runId": str(run_id),
                        "atSequence": at_sequence,
                        "name": name,
                        "parameters": parameters,
                    }
                )
            },
        )
        return ScenarioRun.model_validate(data["forkRun"])


def _page(connection: Mapping[str, Any], model: type[ModelT]) -> Page[ModelT]:
    info = connection.get("pageInfo") or {}
    return Page[model](  # type: ignore[valid-type]
        nodes=[model.model_validate(n) for n in connection["nodes"]],
        has_next_page=bool(info.get("hasNextPage")),
        end_cursor=info.get("endCursor"),
    )
