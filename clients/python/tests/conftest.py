"""Fixtures: the real scenario-hub server on a temporary SQLite database.

The binary is ``target/debug/scenario-hub`` of this repository, or
``$SCENARIO_HUB_BIN``. Each test gets a fresh server (and database) on a free
127.0.0.1 port; ``HubServer.stop()``/``start()`` restart it on the same
database and port.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from scenario_hub import Conflict, EventInput, Hub, RunStatus

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parents[2]

PROMPT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["text"],
    "properties": {"text": {"type": "string"}, "fail": {"type": "boolean"}},
}
REPLY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["repliedTo"],
    "properties": {"repliedTo": {"type": "integer"}, "text": {"type": "string"}},
}


def server_binary() -> Path:
    binary = Path(os.environ.get("SCENARIO_HUB_BIN") or REPO / "target" / "debug" / "scenario-hub")
    if not binary.is_file():
        pytest.fail(
            f"no scenario-hub binary at {binary}: run `cargo build --bin scenario-hub` in {REPO}"
            " or set SCENARIO_HUB_BIN"
        )
    return binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class HubServer:
    """One scenario-hub process (restartable on the same database and port)."""

    def __init__(self, binary: Path, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.database_url = f"sqlite://{workdir / 'hub.db'}?mode=rwc"
        self.log_path = workdir / "server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The GraphQL endpoint."""
        return f"{self.base}/graphql"

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DATABASE_URL=self.database_url,
            BIND=f"127.0.0.1:{self.port}",
            LOG_FORMAT="text",
            RUST_LOG=env.get("RUST_LOG", "info"),
        )
        return env

    def cli(self, *args: str) -> str:
        """Runs ``scenario-hub ARGS`` on this database; returns its standard output."""
        done = subprocess.run(
            [str(self.binary), *args], env=self.env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, f"scenario-hub {' '.join(args)}: {done.stderr}"
        return done.stdout

    def start(self, timeout: float = 30.0) -> None:
        assert self.process is None, "already running"
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [str(self.binary), "serve"], env=self.env, stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"scenario-hub exited {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.base}/readyz", timeout=1) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"scenario-hub not ready within {timeout} s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stops the server (SIGTERM: gracefully; SIGKILL: at once) and waits for it."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@pytest.fixture
def hub_server(tmp_path: Path) -> Iterator[HubServer]:
    server = HubServer(server_binary(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        if os.environ.get("SCENARIO_HUB_TEST_LOG"):
            sys.stderr.write(server.log(200) + "\n")


@pytest.fixture
async def hub(hub_server: HubServer) -> AsyncIterator[Hub]:
    async with Hub(hub_server.url) as client:
        yield client


async def new_run(hub: Hub, **event_types: dict[str, Any]) -> uuid.UUID:
    """A RUNNING run, with the `prompt` and `reply` event types (and those given:
    name -> createEventType arguments)."""
    template = await hub.create_scenario_template(f"sdk test {uuid.uuid4()}")
    run = await hub.create_scenario_run(template.id, "sdk test run")
    await hub.set_run_status(run.id, RunStatus.RUNNING)
    types: dict[str, dict[str, Any]] = {
        "prompt": {"payload_schema": PROMPT_SCHEMA},
        "reply": {"payload_schema": REPLY_SCHEMA},
        **event_types,
    }
    for name, options in types.items():
        try:
            await hub.create_event_type(name, "test", **options)
        except Conflict:
            pass
    return run.id


async def publish_prompts(
    hub: Hub, run_id: uuid.UUID, count: int, *, start: int = 0, event_type: str = "prompt"
) -> list[uuid.UUID]:
    """Publishes ``count`` prompts (priorities 0..2); returns their ids."""
    events = await hub.publish_events(
        [
            EventInput(
                run_id=run_id,
                event_type=event_type,
                priority=i % 3,
                payload={"text": f"prompt {i}"},
                idempotency_key=f"{event_type}-{i}",
            )
            for i in range(start, start + count)
        ]
    )
    return [e.id for e in events]
