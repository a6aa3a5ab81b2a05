"""Helpers for tests that run engines in subprocesses and wait on the server."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

from scenario_hub import Event, Hub

TESTS = Path(__file__).resolve().parent


class EngineProcess:
    """``engine_main.py`` in a subprocess; its standard output read line by line."""

    def __init__(self, process: asyncio.subprocess.Process, stderr: IO[bytes], log: Path) -> None:
        self.process = process
        self.stderr = stderr
        self.log = log
        self.lines: list[str] = []

    @classmethod
    async def start(
        cls, url: str, run_id: uuid.UUID, engine_id: uuid.UUID, log: Path, *extra: str
    ) -> EngineProcess:
        stderr = open(log, "ab")
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-u",
            str(TESTS / "engine_main.py"),
            url,
            str(run_id),
            str(engine_id),
            *extra,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            cwd=str(TESTS),
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        return cls(process, stderr, log)

    def describe(self) -> str:
        return "stdout:\n" + "\n".join(self.lines) + "\nstderr:\n" + self.log.read_text()[-4000:]

    async def _readline(self, timeout: float) -> str | None:
        assert self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not raw:
            return None
        line = raw.decode().rstrip("\n")
        self.lines.append(line)
        return line

    async def wait_for(self, prefix: str, count: int = 1, timeout: float = 30.0) -> str:
        """Reads up to the ``count``-th new line starting with ``prefix``; returns it."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            left = deadline - time.monotonic()
            try:
                line = await self._readline(max(left, 0.01))
            except asyncio.TimeoutError:
                raise AssertionError(f"no {prefix!r} line within {timeout} s\n{self.describe()}")
            if line is None:
                raise AssertionError(f"engine exited before {prefix!r}\n{self.describe()}")
            if line.startswith(prefix):
                seen += 1
                if seen >= count:
                    return line

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process.returncode is None:
            self.process.send_signal(sig)

    async def finish(self, timeout: float = 30.0) -> tuple[int, dict[str, Any] | None]:
        """Waits for the exit; returns the exit code and the printed summary."""
        try:
            while await self._readline(timeout) is not None:
                pass
            code = await asyncio.wait_for(self.process.wait(), timeout)
        except asyncio.TimeoutError:
            self.kill()
            await self.process.wait()
            raise AssertionError(f"engine did not exit within {timeout} s\n{self.describe()}")
        finally:
            self.stderr.close()
        summary = None
        for line in self.lines:
            if line.startswith("summary "):
                summary = json.loads(line.removeprefix("summary "))
        return code, summary

    async def close(self) -> None:
        self.kill()
        await self.process.wait()
        self.stderr.close()


async def wait_until(
    condition: Callable[[], Awaitable[bool] | bool],
    timeout: float = 30.0,
    interval: float = 0.1,
    what: str = "condition",
) -> None:
    """Polls ``condition()`` (sync or async) until it is true."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(interval)


async def pending(
    hub: Hub, run_id: uuid.UUID, engine_id: uuid.UUID, types: list[str]
) -> list[Event]:
    page = await hub.events(run_id, event_types=types, pending_for=engine_id, first=500)
    return page.nodes


async def wait_done(
    hub: Hub, run_id: uuid.UUID, engine_id: uuid.UUID, types: list[str], timeout: float = 30.0
) -> None:
    """Waits until no event of ``types`` is pending for the engine."""

    async def nothing_pending() -> bool:
        return not await pending(hub, run_id, engine_id, types)

    await wait_until(nothing_pending, timeout, what=f"no {types} pending for {engine_id}")


def assert_processed_once(events: list[Event], engine_id: uuid.UUID) -> None:
    """Each event: exactly one processing record, PROCESSED once, by ``engine_id``."""
    for event in events:
        records = [(p.engine_id, p.status.value, p.attempts) for p in event.processed_by]
        assert records == [
            (engine_id, "PROCESSED", 1)
        ], f"sequence {event.sequence}: records {records}"
