"""`ddr-search status JOB`: progress and per-document failures of an ingest run by the workers."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from ddr_search.cli.main import cli
from ddr_search.settings import Settings

if TYPE_CHECKING:
    from workers.jobs import JobStatus


def render(status: JobStatus) -> list[str]:
    """Human-readable lines: state, counts, then each failed document with its reason."""
    lines = [
        f"job {status.id}: {status.state.value}",
        f"  documents: {status.documents}, indexed {status.indexed}, failed {len(status.failures)}, "
        f"pending {max(0, status.documents - status.processed)}",
        f"  batches: {status.batches_done} of {status.batches} done",
    ]
    if status.source:
        lines.append(f"  source: {status.source}")
    if status.error:
        lines.append(f"  error: {status.error}")
    if status.skipped:
        lines.append(f"  skipped input lines (--skip-invalid): {len(status.skipped)}")
        lines.extend(f"    {reason}" for reason in skipped_reasons(status))
    if status.failures:
        lines.append("  failed documents:")
        lines.extend(f"    {doc_id}: {reason}" for doc_id, reason in sorted(status.failures.items()))
    return lines


def skipped_reasons(status: JobStatus) -> list[str]:
    """Why each input line was left out before enqueueing, in line order."""
    return [reason for _, reason in sorted(status.skipped.items(), key=_line_number)]


def _line_number(item: tuple[str, str]) -> int:
    return int(item[0].split()[-1]) if item[0].split()[-1].isdigit() else 0


@cli.command("status")
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
