"""`python -m tests.engines up|down|status [NAME ...]`: the test nodes, from scripts/services and by hand."""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from tests.engines.catalog import DEFAULT_ENGINES, ENGINES
from tests.engines.node import EngineError, assemble, assembled, running, start, stop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.engines", description=__doc__)
    parser.add_argument("action", choices=("up", "down", "status"))
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"default: {' '.join(DEFAULT_ENGINES)}")
    args = parser.parse_args(argv)
    names = args.names or list(DEFAULT_ENGINES)
    if unknown := sorted(set(names) - set(ENGINES)):
        parser.error(f"unknown engine {', '.join(unknown)}; known: {', '.join(ENGINES)}")
    if args.action == "down":
        for name in names:
            stop(name)
            print(f"{name}: stopped")
        return 0
    if args.action == "status":
        for name in names:
            record = running(name)
            print(f"{name}: {'up at ' + str(record['url']) if record else 'down'}")
        return 0
    began = time.monotonic()
    try:
        for name in names:  # assembly uses Maven's cache: one at a time; never under a running node
            if not assembled(ENGINES[name]):
                stop(name)
                assemble(ENGINES[name])
        with ThreadPoolExecutor(len(names)) as pool:  # the nodes boot in parallel
            records = list(pool.map(start, names))
    except EngineError as e:
        print(f"engines: {e}", file=sys.stderr)
        return 1
    for record in records:
        print(f"{record['name']}: up at {record['url']} ({json.dumps({'pid': record['pid']})})")
    print(f"engines ready in {time.monotonic() - began:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
