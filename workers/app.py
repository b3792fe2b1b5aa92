"""The Celery app factory and the one task: embed and index a batch, loading nothing global at import.

The edge (the CLI) passes in how to build the encoder and the backend, so this package depends on the
ddr_search core only. Delivery guarantees (docs/workers.md):
- `acks_late` + `task_reject_on_worker_lost` + prefetch 1: a batch is acknowledged only after it is
  indexed and recorded, so a worker that dies (even SIGKILL) leaves its batch to be redelivered.
- Redis broker: an unacknowledged batch of a dead worker becomes visible again after
  `visibility_timeout` (settings.workers.visibility_timeout_s). It must exceed the longest batch plus
  its retry backoff; a shorter one only causes duplicate work, never duplicate documents.
- RabbitMQ: redelivery happens as soon as the dead worker's connection closes; publishes are confirmed.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ddr_search.errors import ConfigError
from ddr_search.settings import Settings
from ddr_search.types import Backend, Encoder
from workers.batch import TRANSIENT_ERRORS, BatchOutcome, index_batch
from workers.jobs import JobStore

if TYPE_CHECKING:
    from celery import Celery

EMBED_TASK = "ddr_search.embed_batch"
REDIS_SCHEMES = ("redis", "rediss")
AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")
MAX_BACKOFF_S = 60.0

log = logging.getLogger(__name__)

MakeEncoder = Callable[[], Encoder]
MakeBackend = Callable[[int], Backend]  # receives the encoder's dimension


def broker_scheme(settings: Settings) -> str:
    if settings.broker_url is None:
        raise ConfigError("no broker configured: set DDR_BROKER_URL (redis://... or amqp://...)")
    scheme = urlsplit(settings.broker_url.get_secret_value()).scheme
    if scheme not in REDIS_SCHEMES + AMQP_SCHEMES:
        raise ConfigError(f"DDR_BROKER_URL scheme {scheme!r} is not supported: use redis:// or amqp://")
    return scheme


def jobs_url(settings: Settings) -> str:
    """Job records live in Redis: the broker itself when it is Redis, else DDR_WORKERS__JOBS_URL."""
    configured = settings.workers.jobs_url.get_secret_value() if settings.workers.jobs_url else ""
    if configured:
        if urlsplit(configured).scheme not in (*REDIS_SCHEMES, "unix"):
            raise ConfigError("DDR_WORKERS__JOBS_URL must be a Redis URL (redis://host:6379/0)")
        return configured
    if broker_scheme(settings) in REDIS_SCHEMES:
        return settings.broker_url.get_secret_value()  # type: ignore[union-attr]  # checked above
    raise ConfigError("a RabbitMQ broker needs a Redis for job records: set DDR_WORKERS__JOBS_URL=redis://host:6379/0")


def backoff_s(retries: int) -> float:
    """Exponential (1, 2, 4, ... s, at most 60 s) with jitter so retrying workers do not stampede."""
    return min(MAX_BACKOFF_S, 2.0**retries) * random.uniform(0.5, 1.0)


class WorkerParts:
    """Encoder, backend and job store, built once per process on first use.

    Keyed by pid: a prefork child must build its own (torch threads, SQLite and Redis connections do
    not survive fork), and the parent never loads the model at all.
    """

    def __init__(self, settings: Settings, make_encoder: MakeEncoder, make_backend: MakeBackend) -> None:
        self._settings = settings
        self._make_encoder = make_encoder
        self._make_backend = make_backend
        self._pid: int | None = None
        self._encoder: Encoder | None = None
        self._backend: Backend | None = None
        self._jobs: JobStore | None = None

    def _ensure(self) -> None:
        if self._pid != os.getpid():
            self._encoder = self._backend = self._jobs = None
            self._pid = os.getpid()

    def jobs(self) -> JobStore:
        self._ensure()
        if self._jobs is None:
            self._jobs = JobStore.from_url(jobs_url(self._settings))
        return self._jobs

    def encoder_and_backend(self) -> tuple[Encoder, Backend]:
        self._ensure()
        if self._encoder is None or self._backend is None:
            log.info("loading the passage encoder and the backend in process %d", os.getpid())
            self._encoder = self._make_encoder()
            self._backend = self._make_backend(self._encoder.dimension)
        return self._encoder, self._backend


def create_app(settings: Settings, make_encoder: MakeEncoder, make_backend: MakeBackend) -> Celery:
    """A Celery app for `settings.broker_url` with the embed task registered on it."""
    from celery import Celery

    scheme = broker_scheme(settings)
    jobs_url(settings)  # fail now, not in the first task, when a RabbitMQ broker has no job store
    options = settings.workers
    app = Celery("ddr_search", broker=settings.broker_url.get_secret_value(), set_as_current=False)  # type: ignore[union-attr]
    if scheme in REDIS_SCHEMES:
        transport = {
            "visibility_timeout": options.visibility_timeout_s,
            # Sweep for abandoned batches often enough that a short timeout means a short wait.
            "unacked_restore_interval": max(1, min(10, options.visibility_timeout_s // 4)),
            "unacked_restore_throttle": 1,
            "socket_connect_timeout": 5,
        }
    else:
        transport = {"confirm_publish": True}
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=options.queue,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        task_ignore_result=True,
        broker_connection_timeout=5,
        broker_connection_retry_on_startup=True,
        broker_transport_options=transport,
    )
    parts = WorkerParts(settings, make_encoder, make_backend)

    @app.task(
        bind=True,
        name=EMBED_TASK,
        shared=False,  # a shared task would leak this app's parts into every app created after it
        acks_late=True,
        reject_on_worker_lost=True,
        max_retries=options.max_retries,
        ignore_result=True,
    )
    def embed_batch(self, job_id: str, index: int, documents: list[object]) -> dict[str, int]:  # type: ignore[no-untyped-def]
        """Embed and index one batch, then record it on the job (both idempotent: safe to redeliver)."""
        try:
            encoder, backend = parts.encoder_and_backend()
            outcome = index_batch(documents, encoder, backend, batch_size=len(documents) or 1)
        except TRANSIENT_ERRORS as e:
            if self.request.retries < self.max_retries:
                delay = backoff_s(self.request.retries)
                log.warning("job %s batch %d: %s; retrying in %.1f s", job_id, index, e, delay)
                raise self.retry(exc=e, countdown=delay) from e
            reason = f"gave up after {self.max_retries} retries: {type(e).__name__}: {e}"
            outcome = BatchOutcome.all_failed(documents, reason)
        except Exception as e:
            # A broken worker (no model, bad settings): the job must still finish, saying why.
            outcome = BatchOutcome.all_failed(documents, f"worker error: {type(e).__name__}: {e}")
            parts.jobs().record_batch(job_id, index, outcome.indexed, outcome.failures)
            raise
        try:
            parts.jobs().record_batch(job_id, index, outcome.indexed, outcome.failures)
        except TRANSIENT_ERRORS as e:  # the job store is down: redo the (idempotent) batch later
            raise self.retry(exc=e, countdown=backoff_s(self.request.retries)) from e
        refresh_when_finished(job_id)
        return {"indexed": outcome.indexed, "failed": len(outcome.failures)}

    def refresh_when_finished(job_id: str) -> None:
        """After a job's last batch, one refresh makes all of it searchable (batches never wait for one)."""
        try:
            if not parts.jobs().status(job_id).finished:
                return
            parts.encoder_and_backend()[1].refresh()
        except TRANSIENT_ERRORS as e:  # the index's own refresh interval makes the documents visible anyway
            log.warning("job %s finished but the final refresh failed: %s", job_id, e)

    return app
