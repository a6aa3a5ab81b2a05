"""Runs a CountingEngine in its own process (for the kill -9 and SIGTERM tests).

    python engine_main.py URL RUN_ID ENGINE_ID [--work-seconds S] [--max-in-flight N]

Prints ``working``/``processed`` lines per event and, at the end, ``summary
<json>``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys

from engines import CountingEngine

from scenario_hub import run_engine


async def main(args: argparse.Namespace) -> int:
    engine = CountingEngine(args.engine_id, work_seconds=args.work_seconds, announce=True)
    summary = await run_engine(
        engine,
        args.run_id,
        url=args.url,
        api_key=args.api_key,
        event_types=["prompt"],
        max_in_flight=args.max_in_flight,
        lease_seconds=args.lease_seconds,
        reconnect_max_delay=2.0,
    )
    print(
        "summary "
        + json.dumps(
            {
                "stop_reason": summary.stop_reason,
                "processed": summary.processed,
                "failed": summary.failed,
                "reconnects": summary.reconnects,
                "version": summary.version,
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("run_id")
    parser.add_argument("engine_id")
    parser.add_argument("--work-seconds", type=float, default=0.0)
    parser.add_argument("--max-in-flight", type=int, default=1)
    parser.add_argument("--lease-seconds", type=int, default=None)
    parser.add_argument("--api-key", default=None)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    sys.exit(asyncio.run(main(parser.parse_args())))
