"""The must-hold guarantees, with the real broker and real `ddr-search worker` subprocesses.

Every test has its own DDR_HOME (the embedded backend) and its own queue.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.workers.conftest import (
    AMQP_URL,
    REDIS_URL,
    WorkerProcess,
    delete_queue,
    worker_env,
    write_corpus,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def use_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for key, value in env.items():
        if key.startswith("DDR_"):
            monkeypatch.setenv(key, value)


def open_backend(home: Path):
    from ddr_search import factory
    from ddr_search.settings import Settings

    return factory.build_backend(Settings(home=home))


def assert_exactly_once(home: Path, ids: list[str]) -> None:
    backend = open_backend(home)
    try:
        assert backend.count() == len(ids)
        found = backend.get(ids)
        assert sorted(found) == sorted(ids)
        for doc_id in ids[:: max(1, len(ids) // 20)]:  # searchable: its unique token finds it, once
            hits = [hit_id for hit_id, _ in backend.bm25_search(f"tok{doc_id}", 5)]
            assert hits.count(doc_id) == 1 and hits[0] == doc_id, (doc_id, hits)
    finally:
        backend.close()


def test_2000_documents_through_two_worker_processes_are_each_searchable_once(
    tmp_path, monkeypatch, redis_url, queue_name
):
    from ddr_search.cli.worker import build_jobs, enqueue_file
    from ddr_search.settings import Settings

    env = worker_env(tmp_path / "home", redis_url, queue_name)
    use_env(monkeypatch, env)
    ids = write_corpus(tmp_path / "corpus.jsonl", 2000)
    worker = WorkerProcess(env, tmp_path / "worker.log", concurrency=2)
    try:
        worker.wait_ready()
        job_id, status, skipped = enqueue_file(
            Settings(), tmp_path / "corpus.jsonl", domain=None, skip_invalid=False, batch_size=100, wait=True
        )
        assert status is not None and status.state.value == "done"
        assert (status.indexed, status.failures, status.batches_done, skipped) == (2000, {}, 20, [])
        assert build_jobs(Settings()).status(job_id).indexed == 2000
    finally:
        worker.stop()
        delete_queue(redis_url, queue_name)
    assert_exactly_once(tmp_path / "home", ids)


@pytest.mark.parametrize("broker", ["redis", "amqp"])
def test_sigkilled_worker_loses_nothing_and_duplicates_nothing(tmp_path, monkeypatch, broker, queue_name, request):
    """Kill a pool process, then the whole worker (main + pool), mid-job; a new worker finishes the job."""
    from ddr_search.cli.worker import build_app, build_jobs
    from ddr_search.data.documents import read_documents
    from ddr_search.settings import Settings
    from workers.ingest import submit, wait

    url = request.getfixturevalue("redis_url" if broker == "redis" else "amqp_url")
    # Redis redelivers a dead worker's batch after the visibility timeout: short here, 600 s by default.
    env = worker_env(tmp_path / "home", url, queue_name, DDR_WORKERS__VISIBILITY_TIMEOUT_S="8")
    use_env(monkeypatch, env)
    ids = write_corpus(tmp_path / "corpus.jsonl", 1000)
    settings = Settings()
    jobs = build_jobs(settings)
    first = WorkerProcess(env, tmp_path / "worker1.log")
    second = None
    try:
        first.wait_ready()
        job_id = submit(build_app(settings), jobs, lambda: read_documents(tmp_path / "corpus.jsonl"), batch_size=40)

        def progress_reaches(batches: int, timeout_s: float = 120) -> None:
            deadline = time.monotonic() + timeout_s
            while jobs.status(job_id).batches_done < batches:
                assert time.monotonic() < deadline, f"stuck at {jobs.status(job_id)}"
                time.sleep(0.1)

        progress_reaches(3)
        (pool,) = first.pool_pids()
        import os
        import signal

        os.kill(pool, signal.SIGKILL)  # the pool process dies mid-batch: its batch is rejected and requeued
        progress_reaches(jobs.status(job_id).batches_done + 3)
        first.sigkill()  # now the whole worker, with a batch in flight and unacknowledged
        assert not jobs.status(job_id).finished
        second = WorkerProcess(env, tmp_path / "worker2.log")
        status = wait(jobs, job_id, progress=False, timeout_s=240)
        assert (status.state.value, status.indexed, status.failures) == ("done", 1000, {})
        assert "WorkerLostError" in (tmp_path / "worker1.log").read_text()
    finally:
        first.stop()
        if second is not None:
            second.stop()
        delete_queue(url, queue_name)
    assert_exactly_once(tmp_path / "home", ids)


def test_invalid_document_is_reported_and_the_rest_of_its_batch_indexed(tmp_path, monkeypatch, redis_url, queue_name):
    import subprocess

    from ddr_search.cli.worker import build_app, build_jobs
    from ddr_search.settings import Settings
    from ddr_search.types import Document
    from tests.workers.conftest import DDR_SEARCH
    from workers.ingest import submit, wait

    env = worker_env(tmp_path / "home", redis_url, queue_name)
    use_env(monkeypatch, env)
    documents = [Document(id=f"ok{i}", text=f"tokok{i} a fine document") for i in range(9)]
    documents.insert(4, Document(id="blank", text="   "))  # passes no reader, but producers other than ours exist
    settings = Settings()
    jobs = build_jobs(settings)
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        worker.wait_ready()
        job_id = submit(build_app(settings), jobs, lambda: documents, batch_size=64)
        status = wait(jobs, job_id, progress=False, timeout_s=120)
        report = subprocess.run(
            [str(DDR_SEARCH), "status", job_id], env=env, capture_output=True, text=True, timeout=60
        )
    finally:
        worker.stop()
        delete_queue(redis_url, queue_name)
    assert (status.state.value, status.indexed, status.batches_done) == ("done", 9, 1)
    assert list(status.failures) == ["blank"]
    assert "field 'text': is empty" in status.failures["blank"]
    assert report.returncode == 0, report.stderr
    assert "indexed 9, failed 1" in report.stdout and "blank: invalid document" in report.stdout
    assert_exactly_once(tmp_path / "home", [d.id for d in documents if d.id != "blank"])


_ = (AMQP_URL, REDIS_URL)
