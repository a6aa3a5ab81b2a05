#!/usr/bin/env python3
"""End-to-end check of engine.py against a running scenario-hub.

Seeds a run over GraphQL/HTTP (a scenario template, a RUNNING run, the
`prompt` and `reply` event types, N prompts), runs engine.py for K < N
events, runs it again with the same --engine-id for the rest, then checks
what the server stored: one PROCESSED record per prompt, N replies, and the
engine's state. Exits non-zero with a message on the first thing wrong.

`check.sh` starts a fresh server and calls this; by hand:

    python check.py --url http://127.0.0.1:8000/graphql [--admin-key K --engine-key K]

It uses only the standard library, so that it checks the server's answers
independently of the client library the engine uses.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ENGINE = Path(__file__).with_name("engine.py")


class CheckFailed(Exception):
    pass


class Api:
    def __init__(self, url: str, key: str | None) -> None:
        self.url = url
        self.key = key

    def call(self, query: str, allow: tuple[str, ...] = (), **variables: Any) -> dict[str, Any]:
        """Runs one operation; GraphQL errors whose code is in `allow` are ignored."""
        body = json.dumps({"query": query, "variables": variables}).encode()
        request = urllib.request.Request(self.url, data=body, method="POST")
        request.add_header("Content-Type", "application/json")
        if self.key:
            request.add_header("Authorization", f"Bearer {self.key}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                answer = json.load(response)
        except urllib.error.HTTPError as e:  # 4xx/5xx still carry GraphQL errors
            answer = json.loads(e.read() or b"{}")
        except urllib.error.URLError as e:
            raise CheckFailed(f"cannot reach {self.url}: {e.reason}") from e
        errors = answer.get("errors") or []
        codes = {(e.get("extensions") or {}).get("code") for e in errors}
        if errors and not codes <= set(allow):
            raise CheckFailed(f"GraphQL errors from {query.split('(')[0].strip()}: {errors}")
        return answer.get("data") or {}


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


PROMPT_SCHEMA = {
    "type": "object",
    "required": ["text"],
    "properties": {"text": {"type": "string"}},
}
REPLY_SCHEMA = {
    "type": "object",
    "required": ["repliedTo", "text"],
    "properties": {"repliedTo": {"type": "integer"}, "text": {"type": "string"}},
}


def seed(api: Api, prompts: int) -> tuple[str, list[dict[str, Any]]]:
    """A RUNNING run with the event types and `prompts` prompt events."""
    template = api.call(
        "mutation($input: CreateScenarioTemplateInput!) {"
        " createScenarioTemplate(input: $input) { id } }",
        input={"name": f"python engine check {uuid.uuid4()}"},
    )["createScenarioTemplate"]["id"]
    run = api.call(
        "mutation($input: CreateScenarioRunInput!) { createScenarioRun(input: $input) { id } }",
        input={"templateId": template, "name": "python engine check"},
    )["createScenarioRun"]["id"]
    status = api.call(
        "mutation($run: UUID!) { setRunStatus(runId: $run, status: RUNNING) { status } }", run=run
    )["setRunStatus"]["status"]
    expect(status == "RUNNING", f"setRunStatus answered {status}")
    for name, schema in (("prompt", PROMPT_SCHEMA), ("reply", REPLY_SCHEMA)):
        # CONFLICT: the type exists already (a server used before); fine.
        api.call(
            "mutation($input: CreateEventTypeInput!) { createEventType(input: $input) { name } }",
            allow=("CONFLICT",),
            input={"name": name, "category": "example", "payloadSchema": schema},
        )
    # Priorities 0..2, so that the backlog comes out of sequence order.
    inputs = [
        {
            "runId": run,
            "eventType": "prompt",
            "priority": i % 3,
            "payload": {"text": f"prompt {i}"},
            "idempotencyKey": f"prompt-{i}",
        }
        for i in range(prompts)
    ]
    published = api.call(
        "mutation($inputs: [EventInput!]!) { publishEvents(inputs: $inputs) { id sequence } }",
        inputs=inputs,
    )["publishEvents"]
    expect(len(published) == prompts, f"published {len(published)} prompts, not {prompts}")
    return run, published


def run_engine(url: str, run: str, engine_id: str, key: str | None, max_events: int) -> None:
    command = [
        sys.executable, "-u", str(ENGINE),
        "--url", url, "--run-id", run, "--engine-id", engine_id,
        "--engine-type", "PromptEngine", "--max-events", str(max_events),
    ]  # fmt: skip
    if key:
        command += ["--api-key", key]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as e:
        raise CheckFailed(
            f"engine.py did not handle {max_events} events within 60 s; its output:\n"
            f"{e.stdout or ''}{e.stderr or ''}"
        ) from e
    output = (done.stdout + done.stderr).strip()
    print("\n".join(f"    {line}" for line in output.splitlines()))
    expect(done.returncode == 0, f"engine.py exited {done.returncode}")


def engine_state(api: Api, engine_id: str) -> tuple[dict[str, Any], int]:
    engine = api.call(
        "query($id: UUID!) { engine(engineId: $id) { state version } }", id=engine_id
    )["engine"]
    expect(engine is not None, f"engine {engine_id} is not registered")
    return engine["state"], engine["version"]


def all_events(api: Api, run: str, event_type: str, fields: str) -> list[dict[str, Any]]:
    nodes: list[dict[str, Any]] = []
    after = None
    while True:
        page = api.call(
            "query($run: UUID!, $types: [String!], $after: String) {"
            " events(runId: $run, filter: {eventTypes: $types}, first: 100, after: $after) {"
            f" nodes {{ {fields} }} pageInfo {{ hasNextPage endCursor }} }} }}",
            run=run,
            types=[event_type],
            after=after,
        )["events"]
        nodes += page["nodes"]
        if not page["pageInfo"]["hasNextPage"]:
            return nodes
        after = page["pageInfo"]["endCursor"]


def check(args: argparse.Namespace) -> None:
    n, k = args.prompts, args.first_batch
    expect(0 < k < n, "--first-batch must be between 0 and --prompts")
    admin = Api(args.url, args.admin_key)
    engine_key = args.engine_key or args.admin_key
    engine_id = str(uuid.uuid4())

    run, published = seed(admin, n)
    print(f"seeded run {run} with {n} prompts; engine {engine_id}")

    print(f"engine.py, first start, --max-events {k}:")
    run_engine(args.url, run, engine_id, engine_key, k)
    state, version = engine_state(admin, engine_id)
    expect(
        state.get("handled") == k and version == k + 1,
        f"after the first start the stored state is {state} version {version};"
        f" expected handled {k}, version {k + 1}",
    )

    print(f"engine.py, restarted with the same --engine-id, --max-events {n - k}:")
    run_engine(args.url, run, engine_id, engine_key, n - k)

    # Every prompt: exactly one processing record, by our engine, PROCESSED once.
    prompts = all_events(
        admin, run, "prompt", "id sequence processedBy { engineId status attempts }"
    )
    expect(len(prompts) == n, f"{len(prompts)} prompt events in the run, expected {n}")
    for p in prompts:
        records = p["processedBy"]
        expect(
            len(records) == 1
            and records[0]["engineId"] == engine_id
            and records[0]["status"] == "PROCESSED"
            and records[0]["attempts"] == 1,
            f"prompt sequence {p['sequence']}: processing records {records}, expected one"
            f" PROCESSED record by {engine_id} with attempts 1",
        )

    # N replies, one per prompt, emitted by the engine, answering that prompt.
    replies = all_events(admin, run, "reply", "sequence sourceEngineId parentEventId payload")
    expect(len(replies) == n, f"{len(replies)} reply events in the run, expected {n}")
    by_id = {p["id"]: p for p in published}
    parents = [r["parentEventId"] for r in replies]
    expect(
        sorted(parents) == sorted(by_id),
        "the replies' parentEventId are not the prompts, one each",
    )
    for r in replies:
        expect(
            r["sourceEngineId"] == engine_id,
            f"reply {r['sequence']} has source {r['sourceEngineId']}",
        )
        expect(
            r["payload"].get("repliedTo") == by_id[r["parentEventId"]]["sequence"],
            f"reply {r['sequence']} payload {r['payload']} does not name its prompt's sequence",
        )

    # Nothing left for the engine, and its state counts every prompt.
    pending = admin.call(
        "query($run: UUID!, $engine: UUID!) { events(runId: $run,"
        ' filter: {pendingFor: $engine, eventTypes: ["prompt"]}, first: 10)'
        " { nodes { sequence } } }",
        run=run,
        engine=engine_id,
    )["events"]["nodes"]
    expect(not pending, f"prompts still pending for the engine: {pending}")
    state, version = engine_state(admin, engine_id)
    expect(
        state.get("handled") == n and version == n + 1,
        f"final stored state {state} version {version}; expected handled {n}, version {n + 1}",
    )
    print(
        f"ok: {n} prompts processed once each, {n} replies, state handled {n} at version {version}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000/graphql")
    parser.add_argument("--admin-key", help="key that seeds and reads (when the server has keys)")
    parser.add_argument("--engine-key", help="key the engine uses (default: the admin key)")
    parser.add_argument("--prompts", type=int, default=20, help="N prompt events")
    parser.add_argument("--first-batch", type=int, default=7, help="K events on the first start")
    args = parser.parse_args()
    started = time.monotonic()
    try:
        check(args)
    except CheckFailed as e:
        print(f"CHECK FAILED: {e}", file=sys.stderr)
        return 1
    print(f"python engine check passed in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
