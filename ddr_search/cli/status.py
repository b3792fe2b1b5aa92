"""`ddr-search status JOB`: progress and per-document failures of an ingest run by the workers."""

from __future__ import annotations

import json

import click

from ddr_search.cli.jobs import render
from ddr_search.settings import Settings


@click.command("status")
@click.argument("job_id")
@click.option("--wait", "follow", is_flag=True, help="Show a progress bar until the job finishes.")
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
def status(job_id: str, follow: bool, as_json: bool) -> None:
    """Report an ingest job's progress and every document that failed, with its reason.

    Exits 1 when the job failed to enqueue (re-run the ingest: it is idempotent).
    """
    from ddr_search.client import DDRSearch
    from workers.jobs import JobState

    result = DDRSearch(Settings()).job(job_id, wait=follow, progress=not as_json)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        click.echo("\n".join(render(result)))
    if result.state is JobState.FAILED:
        raise SystemExit(1)
