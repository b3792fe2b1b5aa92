"""Ingest through the workers: validate the whole input, check the broker, record the job, then enqueue.

Order matters for "nothing half-enqueued without a record": the job record exists before the first
batch is published, and a publish that fails part-way marks the job failed with how far it got.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ddr_search.batching import batched
from ddr_search.errors import DDRSearchError, InputError
from ddr_search.types import Backend, Document, Encoder
from workers.app import EMBED_TASK
from workers.batch import index_batch
from workers.jobs import JobState, JobStatus, JobStore
from workers.payload import to_payload

if TYPE_CHECKING:
    from celery import Celery

# A publish that cannot get through in about a second is reported, not retried for minutes.
PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.4, "interval_max": 1.0}
STALL_HINT_S = 15.0


class BrokerUnavailableError(DDRSearchError, ConnectionError):
    """The broker cannot be reached, or stopped accepting batches part-way."""


def check_broker(app: Celery, timeout_s: float = 5.0) -> None:
    """Connect once, quickly: a down broker is a clear error within seconds, before anything is recorded."""
    connection = app.connection_for_write()
    try:
        connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0.5, timeout=timeout_s)
    except Exception as e:  # kombu raises OperationalError and friends; all mean "not reachable"
        raise BrokerUnavailableError(
            f"cannot reach the broker at {connection.as_uri()} ({e}): start it, fix DDR_BROKER_URL, "
            "or unset it to ingest in-process"
        ) from e
    finally:
        connection.release()


def submit(
    app: Celery,
    jobs: JobStore,
    read: Callable[[], Iterable[Document]],
    *,
    batch_size: int,
    total: int | None = None,
    source: str = "",
    skipped: Mapping[str, str] | None = None,
) -> str:
    """Enqueue every document that `read()` yields, in batches; returns the job id.

    Without `total`, `read` is called twice: once to validate and count (a reader raises InputError
    naming file and line, before anything is recorded or sent), once to publish. A caller that has
    validated already passes `total`; `skipped` (input line -> reason) is kept on the job for
    `ddr-search status`. Raises BrokerUnavailableError.
    """
    documents = total if total is not None else sum(1 for _ in read())
    if documents == 0:
        raise InputError("no documents to ingest", path=source or None)
    batches = math.ceil(documents / batch_size)
    check_broker(app)
    jobs.ping()
    job_id = uuid.uuid4().hex
    jobs.create(job_id, documents=documents, batches=batches, source=source, skipped=skipped)
    sent = 0
    try:
        with app.producer_or_acquire() as producer:
            for index, batch in enumerate(batched(read(), batch_size)):
                app.send_task(
                    EMBED_TASK,
                    args=[job_id, index, [to_payload(d) for d in batch]],
                    producer=producer,
                    retry=True,
                    retry_policy=PUBLISH_RETRY,
                )
                sent += 1
        if sent != batches:
            raise InputError(f"the input changed while it was being enqueued ({sent} batches, expected {batches})")
    except BaseException as e:
        jobs.set_state(
            job_id, JobState.FAILED, error=f"publishing stopped after {sent} of {batches} batches: {type(e).__name__}"
        )
        if isinstance(e, DDRSearchError | KeyboardInterrupt):
            raise
        raise BrokerUnavailableError(
            f"job {job_id}: publishing failed after {sent} of {batches} batches ({e}). The job is marked "
            "failed; re-run the ingest once the broker is back (it is idempotent)"
        ) from e
    jobs.set_state(job_id, JobState.QUEUED)
    return job_id


class JobStalled(DDRSearchError, TimeoutError):
    """Waiting for a job gave up: nothing was processed for the stall timeout (the job itself is kept)."""


def wait(
    jobs: JobStore,
    job_id: str,
    *,
    progress: bool = True,
    poll_s: float = 0.5,
    timeout_s: float | None = None,
    stall_timeout_s: float | None = None,
) -> JobStatus:
    """Poll the job record until every batch is done (or the job failed); a tqdm bar in documents.

    `stall_timeout_s`: give up waiting (the job stays queued) when nothing was processed for that long,
    which almost always means no worker consumes the queue.
    """
    from tqdm.auto import tqdm

    job_id = jobs.resolve(job_id)
    status = jobs.status(job_id)
    started = last_change = time.monotonic()
    hinted = False
    with tqdm(total=status.documents, unit="doc", desc=f"job {job_id[:8]}", disable=not progress) as bar:
        while True:
            if status.processed != bar.n:
                bar.update(status.processed - bar.n)
                bar.set_postfix(failed=len(status.failures), refresh=False)
                last_change = time.monotonic()
            if status.finished:
                return status
            now = time.monotonic()
            if timeout_s is not None and now - started > timeout_s:
                raise TimeoutError(f"job {job_id} not finished after {timeout_s:.0f} s: {status.state.value}")
            if stall_timeout_s is not None and now - last_change > stall_timeout_s:
                raise JobStalled(
                    f"job {job_id}: nothing processed for {stall_timeout_s:.0f} s; is a worker consuming its queue? "
                    f"Start one with `ddr-search worker`. The job stays queued: `ddr-search status {job_id[:8]} "
                    "--follow` follows it"
                )
            if progress and not hinted and now - last_change > STALL_HINT_S:
                bar.write("no progress yet: is a worker running? (`ddr-search worker`)")
                hinted = True
            time.sleep(poll_s)
            status = jobs.status(job_id)


@dataclass
class InlineResult:
    documents: int = 0
    indexed: int = 0
    failures: dict[str, str] = field(default_factory=dict)


def run_inline(documents: Iterable[Document], encoder: Encoder, backend: Backend, *, batch_size: int) -> InlineResult:
    """No broker: the same batch code as the task, in this process."""
    result = InlineResult()
    for batch in batched(documents, batch_size):
        outcome = index_batch([to_payload(d) for d in batch], encoder, backend, batch_size=batch_size)
        result.documents += len(batch)
        result.indexed += outcome.indexed
        result.failures.update(outcome.failures)
    return result
