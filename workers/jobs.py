"""Durable job records in Redis: created before the first batch is enqueued, updated by every batch.

Keys (all expire JOB_TTL_S after the last write):
  ddr:job:<id>           hash  state, documents, batches, created, source, error
  ddr:job:<id>:batches   hash  batch index -> documents indexed (HSET: a redelivered batch counts once)
  ddr:job:<id>:failures  hash  document id -> reason
  ddr:job:<id>:skipped   hash  input line -> why the reader skipped it (--skip-invalid)
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from ddr_search.errors import DDRSearchError

if TYPE_CHECKING:
    import redis

JOB_TTL_S = 7 * 24 * 3600
PREFIX = "ddr:job:"


class JobState(StrEnum):
    ENQUEUING = "enqueuing"  # the record exists, batches are being published
    QUEUED = "queued"  # every batch is published; workers are on it
    DONE = "done"  # every batch has been processed (some documents may have failed)
    FAILED = "failed"  # publishing stopped part-way: see `error`; re-run the ingest (idempotent)


class UnknownJobError(DDRSearchError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class JobStoreError(DDRSearchError, ConnectionError):
    """The Redis that holds job records is unreachable."""


@dataclass(frozen=True)
class JobStatus:
    id: str
    state: JobState
    documents: int
    batches: int
    batches_done: int
    indexed: int
    failures: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # input lines left out before enqueueing
    source: str = ""
    error: str | None = None
    created: float = 0.0

    @property
    def processed(self) -> int:
        """Documents a worker has finished with, indexed or failed."""
        return self.indexed + len(self.failures)

    @property
    def finished(self) -> bool:
        return self.state in (JobState.DONE, JobState.FAILED)

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "state": self.state.value,
            "documents": self.documents,
            "indexed": self.indexed,
            "failed": len(self.failures),
            "batches": self.batches,
            "batches_done": self.batches_done,
            "source": self.source,
            "error": self.error,
            "created": self.created,
            "failures": self.failures,
            "skipped": self.skipped,
        }


class JobStore:
    """Job records on a Redis client; cheap to create, one per process."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    def _where(self) -> str:
        kwargs = self._redis.connection_pool.connection_kwargs
        return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Redis failures become JobStoreError (a ConnectionError: the task retries it)."""
        import redis

        try:
            yield
        except redis.RedisError as e:
            raise JobStoreError(
                f"cannot reach the Redis job store at {self._where()} ({type(e).__name__}: {e}): "
                "start Redis or set DDR_WORKERS__JOBS_URL"
            ) from e

    @classmethod
    def from_url(cls, url: str, *, timeout_s: float = 5.0) -> JobStore:
        import redis

        return cls(
            redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s, decode_responses=True)
        )

    def ping(self) -> None:
        with self._errors():
            self._redis.ping()

    def create(
        self,
        job_id: str,
        *,
        documents: int,
        batches: int,
        source: str = "",
        skipped: Mapping[str, str] | None = None,
    ) -> None:
        key = PREFIX + job_id
        with self._errors(), self._redis.pipeline() as pipe:
            pipe.hset(
                key,
                mapping={
                    "state": JobState.ENQUEUING.value,
                    "documents": documents,
                    "batches": batches,
                    "created": time.time(),
                    "source": source,
                },
            )
            pipe.expire(key, JOB_TTL_S)
            if skipped:
                pipe.hset(key + ":skipped", mapping=dict(skipped))
                pipe.expire(key + ":skipped", JOB_TTL_S)
            pipe.execute()

    def set_state(self, job_id: str, state: JobState, error: str | None = None) -> None:
        key = PREFIX + job_id
        mapping: dict[str, str] = {"state": state.value}
        if error is not None:
            mapping["error"] = error
        with self._errors(), self._redis.pipeline() as pipe:
            pipe.hset(key, mapping=mapping)
            pipe.expire(key, JOB_TTL_S)
            pipe.execute()

    def record_batch(self, job_id: str, index: int, indexed: int, failures: dict[str, str]) -> None:
        """Idempotent: recording the same batch again (a redelivery) changes nothing."""
        key = PREFIX + job_id
        with self._errors(), self._redis.pipeline() as pipe:  # MULTI/EXEC: the batch and its failures land together
            pipe.hset(key + ":batches", str(index), indexed)
            if failures:
                pipe.hset(key + ":failures", mapping=failures)
            for name in (key, key + ":batches", key + ":failures"):
                pipe.expire(name, JOB_TTL_S)
            pipe.execute()

    def resolve(self, job_id: str) -> str:
        """A job id, or a unique prefix of one (ingest shows the first 8 characters on its progress bar)."""
        with self._errors():
            if self._redis.exists(PREFIX + job_id) or len(job_id) < 4:
                return job_id
            matches = {k.removeprefix(PREFIX).split(":")[0] for k in self._redis.scan_iter(PREFIX + job_id + "*")}
        if len(matches) > 1:
            raise UnknownJobError(f"job id {job_id!r} is ambiguous: {len(matches)} jobs start with it; give more of it")
        return matches.pop() if matches else job_id

    def status(self, job_id: str) -> JobStatus:
        job_id = self.resolve(job_id)
        key = PREFIX + job_id
        with self._errors(), self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(key)
            pipe.hvals(key + ":batches")
            pipe.hgetall(key + ":failures")
            pipe.hgetall(key + ":skipped")
            record, done, failures, skipped = pipe.execute()
        if not record:
            raise UnknownJobError(f"no job {job_id!r} (jobs are kept {JOB_TTL_S // 86400} days)")
        batches = int(record["batches"])
        state = JobState(record["state"])
        if state is not JobState.FAILED and len(done) >= batches:
            state = JobState.DONE
        return JobStatus(
            id=job_id,
            state=state,
            documents=int(record["documents"]),
            batches=batches,
            batches_done=len(done),
            indexed=sum(int(n) for n in done),
            failures=dict(failures),
            skipped=dict(skipped),
            source=record.get("source", ""),
            error=record.get("error"),
            created=float(record.get("created", 0.0)),
        )


def dumps(status: JobStatus) -> str:
    return json.dumps(status.to_json(), indent=2)
