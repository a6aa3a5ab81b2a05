#!/usr/bin/env python3
"""Compares the schema a running scenario-hub serves over introspection with
the checked-in SDL (schema.graphql), using graphql-core's standard schema
diff (`find_breaking_changes`, `find_dangerous_changes`) both ways.

A server whose introspection and SDL describe the same schema shows no
change in either direction; any breaking or dangerous change is listed and
the exit status is 1. `run.sh` starts a fresh server and calls this; by hand:

    python diff.py --url http://127.0.0.1:8000/graphql --sdl schema.graphql

Starts nothing itself. `--token` adds an `Authorization: Bearer` header for
a server with API keys.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import urllib.request
from pathlib import Path

import graphql
from graphql import (
    GraphQLSchema,
    build_client_schema,
    build_schema,
    find_breaking_changes,
    find_dangerous_changes,
    get_introspection_query,
)


def introspection_query() -> str:
    """The fullest standard introspection query this graphql-core writes
    (everything GraphiQL and code generators ask for)."""
    wanted = {
        "descriptions": True,
        "specified_by_url": True,
        "directive_is_repeatable": True,
        "schema_description": True,
        "input_value_deprecation": True,
        "one_of": True,  # graphql-core 3.3
        "input_object_one_of": True,  # graphql-core 3.2
    }
    accepted = inspect.signature(get_introspection_query).parameters
    return get_introspection_query(**{k: v for k, v in wanted.items() if k in accepted})


def served_schema(url: str, token: str | None) -> GraphQLSchema:
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    body = json.dumps({"query": introspection_query()}).encode()
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        result = json.load(response)
    if result.get("errors"):
        raise SystemExit(f"introspection failed: {json.dumps(result['errors'])}")
    return build_client_schema(result["data"])


def changes(old: GraphQLSchema, new: GraphQLSchema) -> list[str]:
    found = [f"BREAKING {c.type.name}: {c.description}" for c in find_breaking_changes(old, new)]
    found += [f"DANGEROUS {c.type.name}: {c.description}" for c in find_dangerous_changes(old, new)]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the server's GraphQL endpoint")
    parser.add_argument("--sdl", required=True, type=Path, help="the SDL file (schema.graphql)")
    parser.add_argument("--token", help="API key, sent as Authorization: Bearer")
    args = parser.parse_args()

    served = served_schema(args.url, args.token)
    sdl = build_schema(args.sdl.read_text(encoding="utf-8"))

    failed = False
    for label, old, new in [
        (f"{args.sdl} -> served", sdl, served),
        (f"served -> {args.sdl}", served, sdl),
    ]:
        found = changes(old, new)
        if found:
            failed = True
            print(f"{label}: {len(found)} change(s)")
            for line in found:
                print(f"  {line}")
        else:
            print(f"{label}: no breaking or dangerous change")
    print(f"graphql-core {graphql.__version__}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
