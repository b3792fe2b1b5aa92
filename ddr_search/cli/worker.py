"""`ddr-search worker`: a Celery worker that embeds and indexes the batches of queued ingests."""

from __future__ import annotations

import os

import click

from ddr_search.settings import Settings


@click.command("worker")
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(min=1),
    help="Worker processes, each with its own encoder [default: the CPU count].",
)
@click.option(
    "--loglevel",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    help="Celery's log level.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="Torch threads per worker process [default: the CPU count / concurrency].",
)
def worker(concurrency: int | None, loglevel: str, threads: int | None) -> None:
    """Start a Celery worker that embeds and indexes ingest batches (needs DDR_BROKER_URL).

    Each worker process loads the passage encoder once, on its first batch. Batches are acknowledged
    only after they are indexed, so a worker that dies loses nothing: its batch is redelivered.
    """
    from ddr_search.factory import build_celery_app

    settings = Settings()
    processes = concurrency or os.cpu_count() or 1
    app = build_celery_app(settings, processes=processes, threads=threads)
    app.worker_main(
        [
            "worker",
            f"--concurrency={processes}",
            f"--loglevel={loglevel.upper()}",
            f"--queues={settings.workers.queue}",
            f"--hostname=ddr-{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
        ]
    )
