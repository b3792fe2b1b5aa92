"""`ddr-search worker`, and the edge wiring of workers/: settings -> Celery app, job store, enqueued ingest."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ddr_search.cli.main import cli
from ddr_search.settings import Settings

if TYPE_CHECKING:
    from celery import Celery

    from ddr_search.types import Backend, Encoder
    from workers.jobs import JobStatus, JobStore


def build_app(settings: Settings, *, processes: int = 1, threads: int | None = None) -> Celery:
    """The Celery app with factory-built parts; by default the CPUs' threads split across the processes."""
    from ddr_search import factory
    from workers.app import create_app

    threads = threads or max(1, (os.cpu_count() or 1) // processes)

    def make_encoder() -> Encoder:
        import torch

        torch.set_num_threads(threads)
        return factory.build_encoder(settings)

    def make_backend(dimension: int) -> Backend:
        return factory.build_backend(settings, dimension)

    return create_app(settings, make_encoder, make_backend)


def build_jobs(settings: Settings) -> JobStore:
    from workers.app import jobs_url
    from workers.jobs import JobStore

    return JobStore.from_url(jobs_url(settings))


def enqueue_file(
    settings: Settings,
    path: Path,
    *,
    domain: str | None,
    skip_invalid: bool,
    batch_size: int,
    wait: bool,
) -> tuple[str, JobStatus | None, list[str]]:
    """Validate the file as the in-process ingest does, then hand it to the workers.

    Returns the job id, the final status when `wait`, and one line per skipped input line.
    """
    from ddr_search.data.documents import check_file, read_documents
    from ddr_search.ingest import describe_skipped
    from workers.ingest import submit
    from workers.ingest import wait as wait_for

    check = check_file(path, domain=domain, skip_invalid=skip_invalid)
    app = build_app(settings)
    jobs = build_jobs(settings)
    job_id = submit(
        app,
        jobs,
        lambda: read_documents(check.path, domain=domain, skip_lines=check.skipped_lines),
        batch_size=batch_size,
        total=check.documents,
        source=str(check.path),
        skipped={f"line {e.line}": str(e) for e in check.skipped},
    )
    status = wait_for(jobs, job_id, progress=True) if wait else None
    return job_id, status, describe_skipped(check.skipped)


def ingest_with_workers(
    settings: Settings,
    path: Path,
    *,
    domain: str | None,
    skip_invalid: bool,
    batch_size: int | None,
    wait: bool,
) -> None:
    """`ddr-search ingest` when a broker is configured: enqueue, then follow or print the job id.

    Exits 1 when any document failed (each is listed with its reason) or the job could not be enqueued.
    """
    job_id, status, skipped = enqueue_file(
        settings,
        path,
        domain=domain,
        skip_invalid=skip_invalid,
        batch_size=batch_size or settings.batch_size,
        wait=wait,
    )
    for line in skipped:
        click.echo(line, err=True)
    if status is None:
        click.echo(job_id)
        return
    from ddr_search.cli.status import render

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
    settings = Settings()
    processes = concurrency or os.cpu_count() or 1
    app = build_app(settings, processes=processes, threads=threads)
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
