"""How a worker job is shown, in one place: `ddr-search status` and `ddr-search ingest` with a broker."""

from __future__ import annotations

from typing import TYPE_CHECKING

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
