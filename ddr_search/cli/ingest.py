"""`ddr-search ingest`: a thin layer over DDRSearch.ingest (validate the whole file, then embed and write)."""

from __future__ import annotations

from pathlib import Path

import click

from ddr_search.settings import Settings


@click.command("ingest")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--domain", help="Domain of every document (a slug, e.g. legal): the prior for its queries.")
@click.option("--skip-invalid", is_flag=True, help="Skip bad lines (each is reported) instead of stopping.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Documents per embed+write batch [DDR_BATCH_SIZE].")
@click.option("--no-wait", is_flag=True, help="With DDR_BROKER_URL: enqueue, print the job id, return at once.")
@click.option(
    "--allow-domain-change",
    is_flag=True,
    help="Move documents stored already under another domain (ids are global) instead of refusing.",
)
def ingest(
    path: Path, domain: str | None, skip_invalid: bool, batch_size: int | None, no_wait: bool, allow_domain_change: bool
) -> None:
    """Embed a JSONL file ({"id","title","text","metadata"}; BEIR "_id" too) into the search backend.

    Every line is validated before anything is written: a bad file names its file, line and field and
    leaves the store unchanged. Re-running the same ingest is safe (documents are upserted by id) and
    resumes an interrupted one: documents stored already with the same content are not encoded again.
    """
    from ddr_search.client import DDRSearch
    from ddr_search.ingest import describe_skipped

    settings = Settings()
    if settings.broker_url is not None:  # the workers embed it: docs/workers.md
        wait = not no_wait
        ingest_with_workers(
            settings,
            path,
            domain=domain,
            skip_invalid=skip_invalid,
            batch_size=batch_size,
            wait=wait,
            allow_domain_change=allow_domain_change,
        )
        return
    if no_wait:
        raise click.UsageError("--no-wait needs a broker: set DDR_BROKER_URL and start `ddr-search worker`")

    with DDRSearch() as client:
        report = client.ingest(
            path,
            domain=domain,
            skip_invalid=skip_invalid,
            batch_size=batch_size,
            progress=True,
            allow_domain_change=allow_domain_change,
        )
    for line in describe_skipped(report.skipped):
        click.echo(line, err=True)
    skipped = f", skipped {len(report.skipped)} invalid lines" if report.skipped else ""
    click.echo(report.summary() + skipped)


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
    from ddr_search.cli.jobs import render, skipped_reasons
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
