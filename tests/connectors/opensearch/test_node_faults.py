"""Faults of a real node: SIGKILL during a worker ingest and start again, down at search time, 429 from bulk.

The node is one of its own (tests/engines FAULTS_ENGINE: the 2.19.1 distribution, a write pool of one
thread with a queue of one), started here and stopped at the end, since these tests kill it.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.opensearch import admin
from connectors.opensearch.client import build_client
from ddr_search.errors import BackendError
from ddr_search.settings import OpenSearchSettings
from ddr_search.types import Document
from tests.connectors.opensearch.conftest import Target, clean_up
from tests.doubles import HashEncoder, indexed
from tests.engines.catalog import FAULTS_ENGINE
from tests.engines.node import EngineError, kill, restart, start, stop

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture(scope="module")
def node() -> Iterator[dict[str, object]]:
    try:
        record = start(FAULTS_ENGINE.name)
    except (EngineError, OSError) as e:
        from tests.conftest import service_missing

        service_missing(f"could not start the {FAULTS_ENGINE.name} node: {e}")
    try:
        yield record
    finally:
        stop(FAULTS_ENGINE.name)


@pytest.fixture()
def target(node: dict[str, object]) -> Iterator[Target]:
    settings = OpenSearchSettings(
        url=str(node["url"]), index=f"ddr-test-{uuid.uuid4().hex[:8]}", knn_engine="lucene", replicas=0, timeout_s=5
    )
    try:
        yield Target("faults", settings)
    finally:
        clean_up(settings)


def many(n: int, prefix: str = "x") -> list[Document]:
    return [Document(f"{prefix}{i}", f"note {i} about topic {i % 7}", f"title {i % 13}", "legal") for i in range(n)]


def write_rejections(settings: OpenSearchSettings) -> int:
    stats = build_client(settings).nodes.stats(metric="thread_pool")
    return sum(int(n["thread_pool"]["write"]["rejected"]) for n in stats["nodes"].values())


def test_bulk_429s_from_a_full_write_queue_are_retried_and_lose_nothing(target: Target) -> None:
    backend = target.backend(16, chunk_size=25, initial_backoff_s=0.05, max_retries=12)
    admin.setup(backend, target.settings, dimension=16, encoder_version="hash-a")
    before = write_rejections(target.settings)
    docs = [many(200, prefix=f"t{t}-") for t in range(6)]
    errors: list[BaseException] = []

    def write(part: list[Document]) -> None:
        try:
            target.backend(16, chunk_size=25, initial_backoff_s=0.05, max_retries=12).upsert(
                indexed(HashEncoder(), part)
            )
        except BaseException as e:  # reported below; a thread's exception would vanish
            errors.append(e)

    threads = [threading.Thread(target=write, args=(part,)) for part in docs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert write_rejections(target.settings) > before, "the node never answered 429: the test proved nothing"
    backend.refresh()
    assert backend.count() == 1200
    assert len(backend.get([d.id for part in docs for d in part])) == 1200


def test_node_down_at_search_time_is_one_clear_error_within_the_timeout(target: Target) -> None:
    backend = target.backend(16)
    admin.setup(backend, target.settings, dimension=16, encoder_version="hash-a")
    backend.upsert(indexed(HashEncoder(), many(10)))
    backend.refresh()
    record = kill(FAULTS_ENGINE.name)
    try:
        started = time.monotonic()
        with pytest.raises(BackendError) as caught:
            backend.bm25_search("note", 3)
        assert time.monotonic() - started < target.settings.timeout_s + 1
        message = str(caught.value)
        assert "\n" not in message and "connection failed (is the cluster up and the URL right?)" in message
    finally:
        restart(record)
    backend.refresh()
    assert backend.count() == 10  # acknowledged writes survive the kill


def test_sigkilled_node_during_a_worker_ingest_loses_and_duplicates_nothing(
    target: Target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real `ddr-search worker` writes to the node; the node dies mid-job and comes back on the same port:
    the worker's retries (backoff) carry every batch through, each document is stored once, and the job
    record says done with no failure."""
    from ddr_search.data.documents import read_documents
    from ddr_search.factory import build_celery_app, build_job_store
    from ddr_search.settings import Settings
    from tests.conftest import service_missing
    from tests.workers.conftest import REDIS_URL, WorkerProcess, delete_queue, reachable, worker_env, write_corpus
    from workers.ingest import submit, wait

    if not reachable(6379):
        service_missing("Redis is not running on localhost:6379")
    queue = f"ddr-test-nodekill-{uuid.uuid4().hex[:8]}"
    env = worker_env(
        tmp_path / "home",
        REDIS_URL,
        queue,
        DDR_OPENSEARCH__URL=str(target.settings.url),
        DDR_OPENSEARCH__INDEX=target.settings.index,
        DDR_OPENSEARCH__KNN_ENGINE="lucene",
        DDR_OPENSEARCH__REPLICAS="0",
        DDR_OPENSEARCH__TIMEOUT_S="5",
        DDR_WORKERS__MAX_RETRIES="10",
    )
    for key, value in env.items():
        if key.startswith("DDR_"):
            monkeypatch.setenv(key, value)
    ids = write_corpus(tmp_path / "corpus.jsonl", 400)
    settings = Settings()
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        worker.wait_ready()
        from ddr_search.factory import build_encoder

        encoder = build_encoder(settings)
        admin.setup(
            target.backend(encoder.dimension),
            target.settings,
            dimension=encoder.dimension,
            encoder_version=encoder.version,
        )
        jobs = build_job_store(settings)
        job_id = submit(
            build_celery_app(settings), jobs, lambda: read_documents(tmp_path / "corpus.jsonl"), batch_size=20
        )
        deadline = time.monotonic() + 300
        while jobs.status(job_id).batches_done < 3:
            assert time.monotonic() < deadline, f"stuck at {jobs.status(job_id)}"
            time.sleep(0.1)
        record = kill(FAULTS_ENGINE.name)
        time.sleep(3)  # batches fail meanwhile and back off
        restart(record)
        status = wait(jobs, job_id, progress=False, timeout_s=300)
        assert (status.state.value, status.indexed, status.failures) == ("done", 400, {})
        assert "retrying in" in (tmp_path / "worker.log").read_text()  # the kill was felt, and retried
    finally:
        worker.stop()
        delete_queue(REDIS_URL, queue)
    backend = target.backend(384)
    backend.refresh()
    assert backend.count() == 400
    assert sorted(backend.get(ids)) == sorted(ids)
