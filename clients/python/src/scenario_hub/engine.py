"""``BaseEngine`` and ``run_engine``: the loop every scenario-hub engine runs.

``run_engine`` registers the engine (an engine id the server knows gets its
stored state back through ``load_state``), subscribes to the events routed to
it with a window of ``max_in_flight`` leased deliveries, runs
``process_event`` on each, keeps each lease alive with ``extendLease`` while
the work lasts, and completes each event atomically with ``completeEvent``:
the processing record, the emitted events and the engine's new state
(compare-and-set on its version) in one transaction. A crash between two
completions loses nothing and duplicates nothing: the restarted engine gets
the state of its last completion and exactly the events it had not completed.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import random
import signal
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar
from uuid import UUID, uuid4

from .client import Hub
from .errors import HubError, LeaseLost, RunClosed, VersionConflict
from .models import Event, EventInput, ProcessingStatus, as_event_input

__all__ = ["BaseEngine", "EngineRunSummary", "Outcome", "StopReason", "run_engine"]

log = logging.getLogger("scenario_hub.engine")

T = TypeVar("T")
StopReason = Literal["run_closed", "max_events", "stopped"]


@dataclass
class Outcome:
    """What ``process_event`` returns: the events to emit and, optionally, the new state.

    ``emit`` items may leave ``run_id`` out (the engine's run); the server
    sets their ``sourceEngineId`` to the engine and ``parentEventId`` to the
    processed event unless given. When ``state`` is None the engine's
    ``get_state()``, taken as soon as ``process_event`` returns, is saved.
    """

    emit: list[EventInput] = field(default_factory=list)
    state: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.emit = [as_event_input(e) for e in self.emit]


class BaseEngine(ABC):
    """An engine: an id, a type, a JSON state, and what it does with an event.

    Subclass it, set ``engine_type`` (class attribute, or the constructor's
    argument; default: the class name) and implement the three methods.
    ``engine_id`` is given to resume a known engine, or generated.

    With ``max_in_flight > 1`` several ``process_event`` calls run at once on
    one engine object: change the state only after the last ``await`` of
    ``process_event`` so that each saved state holds the completed events
    exactly.
    """

    engine_type: str
    engine_id: UUID

    def __init__(self, engine_id: UUID | str | None = None, engine_type: str | None = None) -> None:
        self.engine_id = UUID(str(engine_id)) if engine_id is not None else uuid4()
        if engine_type is not None:
            self.engine_type = engine_type
        elif not getattr(self, "engine_type", None):
            self.engine_type = type(self).__name__

    @abstractmethod
    def get_state(self) -> dict[str, Any]:
        """The engine's state as JSON-ready data (saved with every completion)."""

    @abstractmethod
    def load_state(self, state: dict[str, Any]) -> None:
        """Takes over a stored state (at registration, after a reconnect, after a failure)."""

    @abstractmethod
    async def process_event(self, event: Event) -> Outcome | None:
        """Handles one delivered event; returns what to emit (None: nothing).

        Raising records the event FAILED with ``str(exception)``; the server
        delivers it again until its type's ``maxAttempts``.
        """


@dataclass
class EngineRunSummary:
    """What one ``run_engine`` call did."""

    engine_id: UUID
    #: Why it returned: the run closed, ``max_events`` were handled, or it was stopped.
    stop_reason: StopReason
    processed: int = 0
    failed: int = 0
    #: Events given up because their lease went to another delivery.
    lease_lost: int = 0
    #: Sessions started again after a dropped connection (or a state conflict).
    reconnects: int = 0
    #: The engine's state version after its last save.
    version: int = 0


class _Restart(Exception):
    """Ends the current session so that the next one re-registers and resubscribes."""


class _Stopped(Exception):
    """A stop was requested while connecting."""


@dataclass
class _Job:
    event: Event
    work: asyncio.Task[tuple[Outcome | None, dict[str, Any]]]
    heartbeat: asyncio.Task[None] | None = None
    lost: bool = False


@dataclass
class _Options:
    max_in_flight: int
    lease_seconds: int | None
    group: str | None
    event_types: list[str] | None
    max_events: int | None
    drain_seconds: float
    reconnect_initial_delay: float
    reconnect_max_delay: float
    max_reconnect_attempts: int | None


class _Runner:
    def __init__(
        self,
        engine: BaseEngine,
        run_id: UUID,
        url: str,
        api_key: str | None,
        options: _Options,
        stop: asyncio.Event,
    ) -> None:
        self.engine = engine
        self.run_id = run_id
        self.url = url
        self.api_key = api_key
        self.options = options
        self.stop = stop
        self.force = asyncio.Event()  # a second signal: release the work in progress now
        self.summary = EngineRunSummary(engine_id=engine.engine_id, stop_reason="stopped")
        self.version = 0
        self.saved_state: dict[str, Any] = {}
        self.handled = 0
        #: The state version before a completion whose answer never came.
        self.uncertain_version: int | None = None
        self.lease_lengths: dict[str, int] = {}

    # --- the outer loop: sessions and reconnects ------------------------------------

    async def run(self) -> EngineRunSummary:
        failures = 0
        while True:
            if self.stop.is_set():
                return self._done("stopped")
            started = time.monotonic()
            handled_before = self.handled
            try:
                reason = await self._session()
            except _Stopped:
                return self._done("stopped")
            except RunClosed:
                log.info("engine %s: the run is closed", self.engine.engine_id)
                return self._done("run_closed")
            except _Restart as e:
                log.warning("engine %s: %s; starting over", self.engine.engine_id, e)
                failure = True
            except HubError as e:
                if not e.retryable:
                    raise
                log.warning(
                    "engine %s: lost the server (%s); reconnecting", self.engine.engine_id, e
                )
                failure = True
            else:
                if reason is not None:
                    return self._done(reason)
                # The stream ended while the run is open: subscribe again (backing
                # off, should the server keep doing that).
                log.info(
                    "engine %s: the subscription ended; subscribing again", self.engine.engine_id
                )
                failure = True
            if self.stop.is_set():
                return self._done("stopped")
            # A session that lived a while or got work done resets the backoff.
            if time.monotonic() - started > 10 or self.handled > handled_before:
                failures = 0
            if failure:
                failures += 1
                limit = self.options.max_reconnect_attempts
                if limit is not None and failures > limit:
                    raise HubError(f"gave up after {limit} reconnect attempts", code="UNAVAILABLE")
                delay = self._backoff(failures)
                log.info("engine %s: reconnecting in %.2f s", self.engine.engine_id, delay)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), timeout=delay)
                if self.stop.is_set():
                    return self._done("stopped")
            self.summary.reconnects += 1

    def _backoff(self, failures: int) -> float:
        """Exponential backoff with jitter: between half and all of initial * 2^(n-1), capped."""
        ceiling = min(
            self.options.reconnect_max_delay,
            self.options.reconnect_initial_delay * 2.0 ** min(failures - 1, 30),
        )
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _done(self, reason: StopReason) -> EngineRunSummary:
        self.summary.stop_reason = reason
        self.summary.version = self.version
        return self.summary

    async def _unless_stopped(self, awaitable: Awaitable[T]) -> T:
        """Awaits ``awaitable``, or raises _Stopped (cancelling it) when a stop comes first."""
        task = asyncio.ensure_future(awaitable)
        stopper = asyncio.ensure_future(self.stop.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            raise _Stopped()
        return task.result()

    # --- one session: register, subscribe, work -------------------------------------

    async def _session(self) -> StopReason | None:
        engine = self.engine
        async with Hub(self.url, self.api_key) as hub:
            instance = await self._unless_stopped(
                hub.register_engine(
                    self.run_id,
                    engine.engine_type,
                    engine_id=engine.engine_id,
                    state=engine.get_state(),
                    group=self.options.group,
                )
            )
            if self.uncertain_version is not None and instance.version > self.uncertain_version:
                # The completion whose answer was lost had committed.
                self.summary.processed += 1
                self.handled += 1
            self.uncertain_version = None
            self.version = instance.version
            self.saved_state = copy.deepcopy(instance.state)
            engine.load_state(copy.deepcopy(instance.state))
            log.info(
                "engine %s (%s) registered on run %s%s at state version %d",
                engine.engine_id,
                engine.engine_type,
                self.run_id,
                f" in group {instance.group!r}" if instance.group else "",
                self.version,
            )
            if self._max_reached():
                return "max_events"
            stream = hub.subscribe_events(
                self.run_id,
                engine_id=engine.engine_id,
                event_types=self.options.event_types,
                max_in_flight=self.options.max_in_flight,
                lease_seconds=self.options.lease_seconds,
            )
            async with contextlib.aclosing(stream):
                return await self._work(hub, stream)

    async def _work(self, hub: Hub, stream: AsyncIterator[Event]) -> StopReason | None:
        jobs: dict[asyncio.Task[Any], _Job] = {}
        next_event: asyncio.Future[Event] | None = asyncio.ensure_future(anext(stream))
        stopper = asyncio.ensure_future(self.stop.wait())
        try:
            while True:
                waiting: set[asyncio.Future[Any]] = {stopper, *jobs}
                if next_event is not None:
                    waiting.add(next_event)
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)

                # Finished work first: each completion frees room in the window.
                for task in [t for t in jobs if t.done()]:
                    job = jobs.pop(task)
                    await self._finish(hub, job)
                    if self._max_reached():
                        return "max_events"

                if stopper.done():
                    return await self._drain(hub, jobs)

                if next_event is not None and next_event.done():
                    try:
                        event = next_event.result()
                    except StopAsyncIteration:
                        next_event = None
                        log.debug("engine %s: the subscription ended", self.engine.engine_id)
                        if await self._run_closed(hub):
                            await self._drain(hub, jobs, timeout=None)
                            return "run_closed"
                        return None  # completed while the run is open: subscribe again
                    job = self._start(hub, event)
                    jobs[job.work] = job
                    next_event = asyncio.ensure_future(anext(stream))
        finally:
            stopper.cancel()
            pending: list[asyncio.Future[Any]] = [stopper]
            if next_event is not None:
                next_event.cancel()
                pending.append(next_event)
            for job in jobs.values():
                job.work.cancel()
                pending.append(job.work)
                if job.heartbeat is not None:
                    job.heartbeat.cancel()
                    pending.append(job.heartbeat)
            # Unfinished work is dropped: closing the subscription releases it at once.
            await asyncio.gather(*pending, return_exceptions=True)

    def _max_reached(self) -> bool:
        limit = self.options.max_events
        return limit is not None and self.handled >= limit

    async def _run_closed(self, hub: Hub) -> bool:
        run = await hub.get_run(self.run_id)
        return run is None or run.status.terminal

    async def _drain(
        self, hub: Hub, jobs: dict[asyncio.Task[Any], _Job], timeout: float | None = -1.0
    ) -> StopReason:
        """Completes the work in progress, for up to ``drain_seconds``; the rest is released."""
        deadline = None
        if timeout is not None:
            budget = self.options.drain_seconds if timeout < 0 else timeout
            deadline = time.monotonic() + budget
            if jobs:
                log.info(
                    "engine %s: stopping; finishing %d event(s) for up to %.1f s",
                    self.engine.engine_id,
                    len(jobs),
                    budget,
                )
        forced = asyncio.ensure_future(self.force.wait())
        try:
            while jobs:
                left = None if deadline is None else deadline - time.monotonic()
                if forced.done() or (left is not None and left <= 0):
                    log.info(
                        "engine %s: releasing %d unfinished event(s)",
                        self.engine.engine_id,
                        len(jobs),
                    )
                    break
                done, _ = await asyncio.wait(
                    {forced, *jobs}, timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    if task is forced:
                        continue
                    await self._finish(hub, jobs.pop(task))
                    if self._max_reached():
                        return "max_events"
        finally:
            forced.cancel()
        return "run_closed" if timeout is None else "stopped"

    # --- one event ---------------------------------------------------------------------

    def _start(self, hub: Hub, event: Event) -> _Job:
        attempt = event.delivery.attempt if event.delivery else None
        log.debug(
            "engine %s: sequence %d (%s), attempt %s",
            self.engine.engine_id,
            event.sequence,
            event.event_type,
            attempt,
        )
        job = _Job(event=event, work=asyncio.create_task(self._process(event)))
        if event.delivery is not None and event.delivery.lease_id is not None:
            job.heartbeat = asyncio.create_task(self._heartbeat(hub, job))
        return job

    async def _process(self, event: Event) -> tuple[Outcome | None, dict[str, Any]]:
        outcome = await self.engine.process_event(event)
        if outcome is not None and not isinstance(outcome, Outcome):
            raise TypeError(
                f"process_event returned {type(outcome).__name__}, not an Outcome or None"
            )
        # The state right when the work is done (before another event changes it).
        state = outcome.state if outcome is not None and outcome.state is not None else None
        return outcome, copy.deepcopy(state if state is not None else self.engine.get_state())

    async def _lease_length(self, hub: Hub, event_type: str) -> int:
        if self.options.lease_seconds is not None:
            return self.options.lease_seconds
        if event_type not in self.lease_lengths:
            try:
                found = await hub.get_event_type(event_type)
            except HubError:
                return 300
            self.lease_lengths[event_type] = found.lease_seconds if found is not None else 300
        return self.lease_lengths[event_type]

    async def _heartbeat(self, hub: Hub, job: _Job) -> None:
        """Extends the event's lease every third of its length until cancelled."""
        delivery = job.event.delivery
        assert delivery is not None and delivery.lease_id is not None
        seconds = await self._lease_length(hub, job.event.event_type)
        while True:
            await asyncio.sleep(seconds / 3)
            try:
                await hub.extend_lease(
                    job.event.id, self.engine.engine_id, delivery.lease_id, seconds
                )
            except LeaseLost:
                log.warning(
                    "engine %s: lease lost on sequence %d; letting it go",
                    self.engine.engine_id,
                    job.event.sequence,
                )
                job.lost = True
                job.work.cancel()
                return
            except HubError as e:
                # Two thirds of the lease are left: try again at the next beat.
                log.warning(
                    "engine %s: could not extend the lease of sequence %d: %s",
                    self.engine.engine_id,
                    job.event.sequence,
                    e,
                )

    async def _finish(self, hub: Hub, job: _Job) -> None:
        """Completes one finished job (PROCESSED or FAILED) under its lease."""
        try:
            await self._complete(hub, job)
        except _LetGo:
            self.summary.lease_lost += 1
            self._forget_unsaved()
        finally:
            if job.heartbeat is not None:
                job.heartbeat.cancel()
                with contextlib.suppress(BaseException):
                    await job.heartbeat

    async def _complete(self, hub: Hub, job: _Job) -> None:
        event = job.event
        if job.lost or job.work.cancelled():
            self.summary.lease_lost += 1
            self._forget_unsaved()
            return
        lease_id = event.delivery.lease_id if event.delivery else None
        error = job.work.exception()
        if error is None:
            outcome, state = job.work.result()
            try:
                # Should the connection drop before the answer, whether the
                # completion committed shows in the version at the next registration.
                self.uncertain_version = self.version
                result = await hub.complete_event(
                    event.id,
                    self.engine.engine_id,
                    ProcessingStatus.PROCESSED,
                    lease_id=lease_id,
                    emit=outcome.emit if outcome is not None else (),
                    state=state,
                    expected_version=self.version,
                    run_id=self.run_id,
                )
            except HubError as e:
                if e.retryable:
                    raise  # outcome unknown: uncertain_version tells after reconnecting
                self.uncertain_version = None
                if not self._refused(e, event):
                    raise
                # The server refused the outcome (an emitted event or the state is
                # invalid): the event failed.
                error = e
            else:
                self.uncertain_version = None
                self.version = result.engine.version
                self.saved_state = state
                self.summary.processed += 1
                self.handled += 1
                log.info(
                    "engine %s: processed sequence %d (attempt %s), state version %d",
                    self.engine.engine_id,
                    event.sequence,
                    event.delivery.attempt if event.delivery else "?",
                    self.version,
                )
                return
        message = str(error) or type(error).__name__
        self._forget_unsaved()
        try:
            await hub.complete_event(
                event.id,
                self.engine.engine_id,
                ProcessingStatus.FAILED,
                error=message,
                lease_id=lease_id,
                expected_version=self.version,
                run_id=self.run_id,
            )
        except HubError as e:
            if not self._refused(e, event):
                raise
            raise _Restart(f"could not record sequence {event.sequence} as failed: {e}") from e
        self.summary.failed += 1
        self.handled += 1
        log.warning(
            "engine %s: sequence %d failed (attempt %s): %s",
            self.engine.engine_id,
            event.sequence,
            event.delivery.attempt if event.delivery else "?",
            message,
        )

    def _refused(self, error: HubError, event: Event) -> bool:
        """Handles a completion the server refused; False when ``error`` is to propagate.

        LEASE_LOST: let go. VERSION_CONFLICT: another instance saved first: start
        over from the stored state. RUN_CLOSED: the run is over. Connection
        failures propagate (the session restarts). Other refusals: the outcome is
        invalid, so the event fails (True).
        """
        if isinstance(error, LeaseLost):
            log.warning(
                "engine %s: lease lost on sequence %d; someone else has it now",
                self.engine.engine_id,
                event.sequence,
            )
            raise _LetGo() from error
        if isinstance(error, VersionConflict):
            raise _Restart(
                f"state version conflict on sequence {event.sequence}: another instance with"
                " this engine id saved first"
            ) from error
        if isinstance(error, RunClosed):
            raise error
        return not error.retryable

    def _forget_unsaved(self) -> None:
        """Back to the last saved state when nothing else is in progress (max_in_flight 1)."""
        if self.options.max_in_flight == 1:
            self.engine.load_state(copy.deepcopy(self.saved_state))


class _LetGo(Exception):
    """The event's lease was lost: drop it and go on."""


async def run_engine(
    engine: BaseEngine,
    run_id: UUID | str,
    *,
    url: str,
    api_key: str | None = None,
    max_in_flight: int = 1,
    lease_seconds: int | None = None,
    group: str | None = None,
    event_types: Sequence[str] | None = None,
    max_events: int | None = None,
    stop: asyncio.Event | None = None,
    handle_signals: bool = True,
    drain_seconds: float = 10.0,
    reconnect_initial_delay: float = 0.5,
    reconnect_max_delay: float = 30.0,
    max_reconnect_attempts: int | None = None,
) -> EngineRunSummary:
    """Runs ``engine`` on run ``run_id`` until the run closes, ``max_events`` events
    are handled, or it is stopped.

    Args:
        engine: the engine; its ``engine_id`` resumes a known engine (its stored
            state is given to ``load_state``).
        run_id: the run to work on.
        url: the server's GraphQL endpoint (``http://host:port/graphql``; a bare
            ``http://host:port`` works too).
        api_key: an ``engine`` (or ``admin``) key when the server has keys.
        max_in_flight: how many events are worked on at once (1..1000).
        lease_seconds: each delivery's lease (default: the event type's); the
            lease is extended every third of it while ``process_event`` runs.
        group: share the run's work with the engines of this type registered
            with the same group (each event goes to one of them).
        event_types: only events of these types (default: all routed to it).
        max_events: return after this many events are completed (PROCESSED or
            FAILED); the rest of the window is released.
        stop: set it to stop the engine (as SIGTERM does).
        handle_signals: stop on SIGTERM and SIGINT (only from the main thread);
            a second signal gives up the work in progress at once.
        drain_seconds: on stop, how long work in progress may go on to be
            completed before it is released (given back to the server).
        reconnect_initial_delay, reconnect_max_delay: the exponential backoff
            (with jitter) between attempts to reach a server that is gone.
        max_reconnect_attempts: consecutive failed attempts before giving up
            (default: never give up).

    Returns an :class:`EngineRunSummary`. Raises HubError for what retrying
    cannot mend (an unknown run, a refused key, an engine id registered with
    another run or type).
    """
    if not 1 <= max_in_flight <= 1000:
        raise ValueError("max_in_flight must be between 1 and 1000")
    if lease_seconds is not None and not 1 <= lease_seconds <= 86_400:
        raise ValueError("lease_seconds must be between 1 and 86400")
    stop_event = stop if stop is not None else asyncio.Event()
    options = _Options(
        max_in_flight=max_in_flight,
        lease_seconds=lease_seconds,
        group=group,
        event_types=list(event_types) if event_types is not None else None,
        max_events=max_events,
        drain_seconds=drain_seconds,
        reconnect_initial_delay=reconnect_initial_delay,
        reconnect_max_delay=reconnect_max_delay,
        max_reconnect_attempts=max_reconnect_attempts,
    )
    runner = _Runner(engine, UUID(str(run_id)), url, api_key, options, stop_event)
    if max_events is not None and max_events <= 0:
        return runner._done("max_events")
    with _signals(stop_event, runner, enabled=handle_signals):
        return await runner.run()


@contextlib.contextmanager
def _signals(stop: asyncio.Event, runner: _Runner, *, enabled: bool) -> Iterator[None]:
    """SIGTERM/SIGINT set ``stop``; a second one also drops the drain. Restored on exit."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    if enabled and threading.current_thread() is threading.main_thread():

        def on_signal(signum: signal.Signals) -> None:
            if stop.is_set():
                runner.force.set()
                log.warning(
                    "engine %s: %s again; giving up the work in progress",
                    runner.engine.engine_id,
                    signum.name,
                )
            else:
                log.info("engine %s: %s; stopping", runner.engine.engine_id, signum.name)
            stop.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(signum, on_signal, signum)
            except (NotImplementedError, RuntimeError, ValueError):  # pragma: no cover
                continue
            installed.append(signum)
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
