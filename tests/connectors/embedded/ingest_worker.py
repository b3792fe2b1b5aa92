"""A separate process that ingests a JSONL file through the real ingest path (for kill/concurrency tests).

    python -m tests.connectors.embedded.ingest_worker HOME FILE [--batch-size N] [--delay S]

Uses the HashingEncoder test double (see doubles.py for why) with the real DDRSearch client,
validation, batching, embed_and_index and EmbeddedBackend.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ddr_search.client import DDRSearch
from ddr_search.settings import Settings
from tests.doubles import HashingEncoder


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("home", type=Path)
    parser.add_argument("file", type=Path)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds of 'embedding' per batch")
    parser.add_argument("--domain")
    args = parser.parse_args()
    with DDRSearch(Settings(home=args.home), encoder=HashingEncoder(delay_s=args.delay)) as client:
        report = client.ingest(args.file, domain=args.domain, batch_size=args.batch_size)
    print(f"indexed {report.indexed}", flush=True)


if __name__ == "__main__":
    main()
