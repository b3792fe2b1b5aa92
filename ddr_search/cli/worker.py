"""`ddr-search worker`, and `ddr-search ingest` when a broker is configured (the workers embed the file)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ddr_search.cli.main import cli
from ddr_search.settings import Settings


def ingest_with_workers(
    settings: Settings,
    path: Path,
    *,
    domain: str | None,
    skip_invalid: bool,
    batch_size: int | None,
    wait: bool,
    allow_domain_change: bool = False,
) -> None:
    """`ddr-search ingest` when a broker is configured: enqueue, then follow or print the job id.

    Exits 1 when any document failed (each is listed with its reason) or the job could not be enqueued.
    """
    from ddr_search.cli.status import render, skipped_reasons
    from ddr_search.client import DDRSearch

    client = DDRSearch(settings)
    job_id = client.enqueue(
        path, domain, skip_invalid=skip_invalid, batch_size=batch_size, allow_domain_change=allow_domain_change
    )
    for reason in skipped_reasons(client.job(job_id)):
        click.echo(f"skipped {reason}", err=True)
    if not wait:
        click.echo(job_id)
        return
    status = client.job(job_id, wait=True, progress=True)
    if status.failures or status.error:
        click.echo("\n".join(render(status)), err=True)
    click.echo(
        f"indexed {status.indexed} of {status.documents} documents from {path} (domain: {domain or 'none'}, "
        f"job {job_id}, failed {len(status.failures)})"
    )
    if status.failures or status.error:
        raise SystemExit(1)


@cli.command("worker")
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
