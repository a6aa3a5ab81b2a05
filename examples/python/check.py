#!/usr/bin/env python3
"""End-to-end check of engine.py against a running scenario-hub.

Seeds a run over GraphQL/HTTP (a scenario template, a RUNNING run, the
`prompt` and `reply` event types, N prompts), runs engine.py for K < N
events (three at a time), runs it again with the same --engine-id for the
rest, then checks what the server stored: one PROCESSED record per prompt,
N replies, and the engine's state. Then a fork of a run half done: the
engine, given the fork's copy of itself, resumes in the fork. Then leases, each on a run of its own:
prompts that take longer than their lease are kept by the engine's
heartbeat (each delivered once), and an engine whose event a restarted
instance took over hears LEASE_LOST, lets go and keeps running. Last, three
engines with the same --group share one run's prompts: each prompt processed
once, by one of them, and more than one of them did some of the work. Exits
non-zero with a message on the first thing wrong.

`check.sh` starts a fresh server and calls this; by hand:

    python check.py --url http://127.0.0.1:8000/graphql [--admin-key K --engine-key K]

It uses only the standard library, so that it checks the server's answers
independently of the client library the engine uses.
"""

from __future__ import annotations

import argparse
import json
import queue
import subprocess
import sys
import threading
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
    """A RUNNING run with the event types and `prompts` prompt events (none for 0)."""
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
    return run, publish_prompts(api, run, prompts) if prompts else []


def publish_prompts(api: Api, run: str, prompts: int) -> list[dict[str, Any]]:
    """Publishes `prompts` prompt events in one batch; returns their ids and sequences."""
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
    published: list[dict[str, Any]] = api.call(
        "mutation($inputs: [EventInput!]!) { publishEvents(inputs: $inputs) { id sequence } }",
        inputs=inputs,
    )["publishEvents"]
    expect(len(published) == prompts, f"published {len(published)} prompts, not {prompts}")
    return published


def engine_command(url: str, run: str, engine_id: str, key: str | None, *extra: str) -> list[str]:
    command = [
        sys.executable, "-u", str(ENGINE),
        "--url", url, "--run-id", run, "--engine-id", engine_id,
        "--engine-type", "PromptEngine", *extra,
    ]  # fmt: skip
    if key:
        command += ["--api-key", key]
    return command


def run_engine(
    url: str, run: str, engine_id: str, key: str | None, max_events: int, *extra: str
) -> list[str]:
    """Runs engine.py until it has handled `max_events`; returns its output lines."""
    command = engine_command(url, run, engine_id, key, "--max-events", str(max_events), *extra)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as e:
        output = [o.decode() if isinstance(o, bytes) else o or "" for o in (e.stdout, e.stderr)]
        raise CheckFailed(
            f"engine.py did not handle {max_events} events within 60 s; its output:\n"
            + "".join(output)
        ) from e
    lines = (done.stdout + done.stderr).strip().splitlines()
    print("\n".join(f"    {line}" for line in lines))
    expect(done.returncode == 0, f"engine.py exited {done.returncode}")
    return lines


class Background:
    """An engine.py running in the background, its output read line by line."""

    def __init__(self, command: list[str]) -> None:
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 30) -> None:
        """Reads (and shows) its output up to a line containing `text`."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise CheckFailed(f"engine.py printed no {text!r} within {timeout} s") from None
            print(f"    {line}")
            if text in line:
                return

    def finish(self, timeout: float = 30) -> int:
        """Shows the rest of its output once it exits; returns its exit code."""
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise CheckFailed(f"engine.py did not exit within {timeout} s") from None
        self.reader.join(timeout=5)  # up to the end of its output
        while not self.lines.empty():
            print(f"    {self.lines.get()}")
        return code

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


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

    print(f"engine.py, first start, --max-events {k} --max-in-flight 3:")
    run_engine(args.url, run, engine_id, engine_key, k, "--max-in-flight", "3")
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

    check_fork(args.url, admin, engine_key)
    check_heartbeat(args.url, admin, engine_key)
    check_lease_lost(args.url, admin, engine_key)
    check_group(args.url, admin, engine_key, args.group_prompts)


def expect_processed_once(api: Api, run: str, engine_id: str, n: int) -> None:
    """Each prompt of the run PROCESSED once, by `engine_id`, whose state counts n."""
    for p in all_events(api, run, "prompt", "sequence processedBy { engineId status attempts }"):
        expect(
            p["processedBy"] == [{"engineId": engine_id, "status": "PROCESSED", "attempts": 1}],
            f"prompt sequence {p['sequence']}: processing records {p['processedBy']}",
        )
    state, version = engine_state(api, engine_id)
    expect(
        state.get("handled") == n and version == n + 1,
        f"stored state {state} version {version}; expected handled {n}, version {n + 1}",
    )


def check_fork(url: str, admin: Api, engine_key: str | None, n: int = 8, k: int = 3) -> None:
    """A run forked after k of n prompts: engine.py, given the fork's copy of
    the engine, resumes from the forked state and handles the fork's backlog;
    the source run stays as it was."""
    run, _ = seed(admin, n)
    source_engine = str(uuid.uuid4())
    print(f"fork: engine.py handles {k} of {n} prompts of run {run}, then the run is forked:")
    run_engine(url, run, source_engine, engine_key, k)
    at = admin.call("query($run: UUID!) { scenarioRun(id: $run) { lastSequence } }", run=run)[
        "scenarioRun"
    ]["lastSequence"]
    fork = admin.call(
        "mutation($run: UUID!, $at: Int!) { forkRun(input: {runId: $run, atSequence: $at}) {"
        " id lastSequence engines { engineId state version forkedFrom { engineId } } } }",
        run=run,
        at=at,
    )["forkRun"]
    expect(fork["lastSequence"] == at, f"the fork's lastSequence is {fork['lastSequence']}")
    copies = [e for e in fork["engines"] if e["forkedFrom"]["engineId"] == source_engine]
    expect(len(copies) == 1, f"the fork's engines: {fork['engines']}")
    copy = copies[0]
    expect(
        copy["state"].get("handled") == k and copy["version"] == 1,
        f"the forked engine starts at {copy['state']} version {copy['version']}",
    )
    admin.call(
        "mutation($run: UUID!) { setRunStatus(runId: $run, status: RUNNING) { status } }",
        run=fork["id"],
    )
    print(f"engine.py on fork {fork['id']} as {copy['engineId']}:")
    run_engine(url, fork["id"], copy["engineId"], engine_key, n - k)

    # Every prompt of the fork processed once by the copy (the first k by
    # the source, whose records the fork holds as the copy's), one reply each.
    for p in all_events(admin, fork["id"], "prompt", "sequence processedBy { engineId status }"):
        expect(
            p["processedBy"] == [{"engineId": copy["engineId"], "status": "PROCESSED"}],
            f"fork prompt {p['sequence']}: records {p['processedBy']}",
        )
    replies = all_events(admin, fork["id"], "reply", "sequence")
    expect(len(replies) == n, f"{len(replies)} replies in the fork, expected {n}")
    state, version = engine_state(admin, copy["engineId"])
    expect(
        state.get("handled") == n and version == n - k + 1,
        f"the forked engine ends at {state} version {version}",
    )
    # The source run is as the fork found it: k done, the rest waiting.
    state, version = engine_state(admin, source_engine)
    expect(state.get("handled") == k, f"the source engine's state changed: {state}")
    left = admin.call(
        "query($run: UUID!, $engine: UUID!) { events(runId: $run,"
        ' filter: {pendingFor: $engine, eventTypes: ["prompt"]}) { nodes { sequence } } }',
        run=run,
        engine=source_engine,
    )["events"]["nodes"]
    expect(len(left) == n - k, f"{len(left)} prompts pending in the source, expected {n - k}")
    print(f"ok: the fork's engine resumed at handled {k} and handled the fork's {n - k} prompts")


def check_heartbeat(url: str, admin: Api, engine_key: str | None) -> None:
    """Prompts that take 2.5 s against a 1 s lease: only the heartbeat keeps them."""
    run, _ = seed(admin, 3)
    engine_id = str(uuid.uuid4())
    print("engine.py, 2.5 s per prompt, --lease-seconds 1 --max-in-flight 3:")
    lines = run_engine(
        url, run, engine_id, engine_key, 3,
        "--lease-seconds", "1", "--work-seconds", "2.5", "--max-in-flight", "3",
    )  # fmt: skip
    completed = [line for line in lines if "processed sequence" in line]
    expect(
        len(completed) == 3 and all("(attempt 1)" in line for line in completed),
        "each prompt should be completed once, on its first delivery",
    )
    expect(not any("lease lost" in line for line in lines), "a lease was lost")
    expect_processed_once(admin, run, engine_id, 3)
    print("ok: the heartbeat kept each lease; every prompt delivered once")


def check_lease_lost(url: str, admin: Api, engine_key: str | None) -> None:
    """A hung engine whose prompt a restarted instance takes over: LEASE_LOST, no crash."""
    run, _ = seed(admin, 1)
    engine_id = str(uuid.uuid4())
    print("engine.py, hung on its prompt (--work-seconds 600, --lease-seconds 2):")
    hung = Background(
        engine_command(url, run, engine_id, engine_key, "--work-seconds", "600",
                       "--lease-seconds", "2")
    )  # fmt: skip
    restarted: Background | None = None
    try:
        hung.wait_for("working on sequence")
        print("engine.py, restarted with the same --engine-id, --max-events 1:")
        restarted = Background(
            engine_command(url, run, engine_id, engine_key, "--max-events", "1")
        )
        hung.wait_for("lease lost on sequence")
        expect(hung.process.poll() is None, "the hung engine.py exited on LEASE_LOST")
        hung.stop()
        restarted.wait_for("handled 1 events, stopping")
        expect(restarted.process.wait(timeout=30) == 0, "the restarted engine.py failed")
    finally:
        hung.stop()
        if restarted is not None:
            restarted.stop()
    expect_processed_once(admin, run, engine_id, 1)
    print("ok: the hung engine let go of its lost lease; the restarted one completed the prompt")


def check_group(url: str, admin: Api, engine_key: str | None, n: int, members: int = 3) -> None:
    """Three engines with one --group on one run: each prompt goes to one of them."""
    run, _ = seed(admin, 0)
    group = "narrators"
    ids = [str(uuid.uuid4()) for _ in range(members)]
    print(f"{members} engine.py with --group {group} on run {run}, then {n} prompts:")
    engines: list[Background] = []
    try:
        for engine_id in ids:
            # 0.1 s per prompt, one at a time: no member can take them all.
            extra = ("--group", group, "--work-seconds", "0.1")
            engines.append(Background(engine_command(url, run, engine_id, engine_key, *extra)))
        for engine in engines:
            engine.wait_for(f"in group {group!r}")
        published = publish_prompts(admin, run, n)

        # Wait until no prompt is pending for the group (in flight included):
        # pendingFor a member means pending for its group. (Its pendingCount
        # would count the replies too, which the members do not subscribe to.)
        deadline = time.monotonic() + 60
        while True:
            pending = admin.call(
                "query($run: UUID!, $engine: UUID!) { events(runId: $run,"
                ' filter: {pendingFor: $engine, eventTypes: ["prompt"]}, first: 100)'
                " { nodes { sequence } } }",
                run=run,
                engine=ids[0],
            )["events"]["nodes"]
            if not pending:
                break
            expect(time.monotonic() < deadline, f"{len(pending)} prompts still pending after 60 s")
            time.sleep(0.2)

        # Closing the run completes the members' streams: each exits 0.
        admin.call(
            "mutation($run: UUID!) { setRunStatus(runId: $run, status: COMPLETED) { status } }",
            run=run,
        )
        for engine_id, engine in zip(ids, engines):
            print(f"  member {engine_id}:")
            expect(engine.finish() == 0, f"group member {engine_id} exited non-zero")
    finally:
        for engine in engines:
            engine.stop()

    # Each prompt: one processing record, PROCESSED once, by one of the members.
    prompts = all_events(admin, run, "prompt", "id processedBy { engineId status attempts }")
    expect(len(prompts) == n, f"{len(prompts)} prompt events in the run, expected {n}")
    expect({p["id"] for p in prompts} == {p["id"] for p in published}, "not the published prompts")
    done_by: dict[str, int] = dict.fromkeys(ids, 0)
    processed_by: dict[str, str] = {}
    for p in prompts:
        records = p["processedBy"]
        expect(
            len(records) == 1
            and records[0]["engineId"] in done_by
            and records[0]["status"] == "PROCESSED"
            and records[0]["attempts"] == 1,
            f"prompt {p['id']}: processing records {records}, expected one PROCESSED record"
            " by a member of the group",
        )
        done_by[records[0]["engineId"]] += 1
        processed_by[p["id"]] = records[0]["engineId"]
    busy = [engine_id for engine_id, count in done_by.items() if count]
    expect(len(busy) > 1, f"one member did all the work: {done_by}")

    # One reply per prompt, from the member that processed it.
    replies = all_events(admin, run, "reply", "sourceEngineId parentEventId")
    expect(
        sorted((r["parentEventId"], r["sourceEngineId"]) for r in replies)
        == sorted(processed_by.items()),
        "the replies are not one per prompt, each from the member that processed it",
    )

    # Each member: in the group, its own state counting what it did.
    for engine_id in ids:
        stored = admin.call(
            "query($id: UUID!) { engine(engineId: $id) { group state version } }", id=engine_id
        )["engine"]
        count = done_by[engine_id]
        expect(
            stored["group"] == group
            and stored["state"].get("handled") == count
            and stored["version"] == count + 1,
            f"member {engine_id}: {stored}; expected group {group}, handled {count},"
            f" version {count + 1}",
        )
    print(
        f"ok: {n} prompts processed once each by the group, split"
        f" {sorted(done_by.values(), reverse=True)} among {members} members"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000/graphql")
    parser.add_argument("--admin-key", help="key that seeds and reads (when the server has keys)")
    parser.add_argument("--engine-key", help="key the engine uses (default: the admin key)")
    parser.add_argument("--prompts", type=int, default=20, help="N prompt events")
    parser.add_argument("--first-batch", type=int, default=7, help="K events on the first start")
    parser.add_argument(
        "--group-prompts", type=int, default=30, help="prompts for the three group members"
    )
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
