"""The must-hold guarantees, with the real broker and real `ddr-search worker` subprocesses.

Every test has its own DDR_HOME (the embedded backend) and its own queue.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.workers.conftest import (
    DDR_SEARCH,
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


def assert_exactly_once(home: Path, ids: list[str], domain: str | None = None) -> None:
    """Every id stored once: the count (of this test's own domain in a shared store) equals the ids."""
    backend = open_backend(home)
    try:
        assert backend.count(domain) == len(ids)
        found = backend.get(ids)
        assert sorted(found) == sorted(ids)
        for doc_id in ids[:: max(1, len(ids) // 20)]:  # searchable: its unique token finds it, once
            hits = [hit_id for hit_id, _ in backend.bm25_search(f"tok{doc_id}", 5)]
            assert hits.count(doc_id) == 1 and hits[0] == doc_id, (doc_id, hits)
    finally:
        backend.close()


@dataclass
class SharedWorker:
    home: Path
    env: dict[str, str]
    queue: str
    worker: WorkerProcess

    def settings(self):
        from ddr_search.settings import Settings, WorkerSettings

        return Settings(
            home=self.home, broker_url=REDIS_URL, workers=WorkerSettings(queue=self.queue, jobs_url=REDIS_URL)
        )

    def cli(self, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(DDR_SEARCH), *args], env=self.env, capture_output=True, text=True, timeout=timeout_s)


@pytest.fixture(scope="module")
def shared_worker(tmp_path_factory, redis_url) -> Iterator[SharedWorker]:
    """One `ddr-search worker --concurrency 2` (two writer processes) for the tests that do not kill it."""
    root = tmp_path_factory.mktemp("shared-worker")
    queue = f"ddr-test-shared-{uuid.uuid4().hex[:8]}"
    env = worker_env(root / "home", redis_url, queue)
    worker = WorkerProcess(env, root / "worker.log", concurrency=2)
    try:
        worker.wait_ready()
        yield SharedWorker(root / "home", env, queue, worker)
    finally:
        worker.stop()
        delete_queue(redis_url, queue)


def test_2000_documents_through_ddr_search_ingest_are_each_searchable_once(tmp_path, shared_worker):
    ids = write_corpus(tmp_path / "corpus.jsonl", 2000)
    done = shared_worker.cli("ingest", str(tmp_path / "corpus.jsonl"), "--batch-size", "100", "--domain", "d2000")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "indexed 2000 of 2000 documents" in done.stdout and "failed 0" in done.stdout
    assert "2000/2000" in done.stderr  # the progress bar ran to the end
    assert_exactly_once(shared_worker.home, ids, domain="d2000")


def test_no_wait_returns_a_job_id_that_status_follows(tmp_path, shared_worker):
    ids = write_corpus(tmp_path / "corpus.jsonl", 50, prefix="w")
    with (tmp_path / "corpus.jsonl").open("a") as f:
        f.write('{"id": "w-bad", "text": 7}\n')  # line 51: skipped by the reader, kept on the job
    started = time.monotonic()
    queued = shared_worker.cli(
        "ingest",
        str(tmp_path / "corpus.jsonl"),
        "--no-wait",
        "--skip-invalid",
        "--batch-size",
        "10",
        "--domain",
        "nowait",
    )
    assert queued.returncode == 0, queued.stderr[-3000:]
    job_id = queued.stdout.strip()
    assert len(job_id) == 32 and time.monotonic() - started < 60
    followed = shared_worker.cli("status", job_id[:8], "--wait")  # the short id the progress bar shows
    assert followed.returncode == 0, followed.stderr[-3000:]
    assert f"job {job_id}: done" in followed.stdout and "indexed 50, failed 0" in followed.stdout
    as_json = json.loads(shared_worker.cli("status", job_id, "--json").stdout)
    assert (as_json["state"], as_json["indexed"], as_json["batches_done"]) == ("done", 50, 5)
    assert list(as_json["skipped"]) == ["line 51"] and "field 'text'" in as_json["skipped"]["line 51"]
    assert "skipped input lines (--skip-invalid): 1" in followed.stdout
    assert_exactly_once(shared_worker.home, ids, domain="nowait")
    unknown = shared_worker.cli("status", "no-such-job")
    assert unknown.returncode == 1 and "no job 'no-such-job'" in unknown.stderr


def test_the_python_client_enqueues_and_follows_a_job(tmp_path, shared_worker):
    from ddr_search.client import DDRSearch

    ids = write_corpus(tmp_path / "corpus.jsonl", 120, prefix="py")
    client = DDRSearch(shared_worker.settings())
    job_id = client.enqueue(tmp_path / "corpus.jsonl", "pyclient", batch_size=25)
    status = client.job(job_id, wait=True, timeout_s=300)
    assert (status.state.value, status.indexed, status.batches_done, status.failures) == ("done", 120, 5, {})
    assert client.job(job_id).indexed == 120  # the record outlives the wait
    assert_exactly_once(shared_worker.home, ids, domain="pyclient")


def test_invalid_document_is_reported_and_the_rest_of_its_batch_indexed(shared_worker):
    from ddr_search.factory import build_celery_app, build_job_store
    from ddr_search.types import Document
    from workers.ingest import submit, wait

    documents = [Document(id=f"ok{i}", text=f"tokok{i} a fine document", domain="invalid") for i in range(9)]
    documents.insert(
        4, Document(id="blank", text="   ", domain="invalid")
    )  # no reader passes it; other producers exist
    settings = shared_worker.settings()
    jobs = build_job_store(settings)
    job_id = submit(build_celery_app(settings), jobs, lambda: documents, batch_size=64)
    status = wait(jobs, job_id, progress=False, timeout_s=120)
    assert (status.state.value, status.indexed, status.batches_done) == ("done", 9, 1)
    assert list(status.failures) == ["blank"]
    assert "field 'text': is empty" in status.failures["blank"]
    report = shared_worker.cli("status", job_id)
    assert report.returncode == 0, report.stderr
    assert "indexed 9, failed 1" in report.stdout and "blank: invalid document" in report.stdout
    assert_exactly_once(shared_worker.home, [d.id for d in documents if d.id != "blank"], domain="invalid")


@pytest.mark.parametrize("broker", ["redis", "amqp"])
def test_sigkilled_worker_loses_nothing_and_duplicates_nothing(tmp_path, monkeypatch, broker, queue_name, request):
    """Kill a pool process (Redis), then the whole worker (main + pool), mid-batch; a new worker finishes."""
    from ddr_search.data.documents import read_documents
    from ddr_search.factory import build_celery_app, build_job_store
    from ddr_search.settings import Settings
    from workers.ingest import submit, wait

    url = request.getfixturevalue("redis_url" if broker == "redis" else "amqp_url")
    # Redis redelivers a dead worker's batch after the visibility timeout: short here, 600 s by default.
    env = worker_env(tmp_path / "home", url, queue_name, DDR_WORKERS__VISIBILITY_TIMEOUT_S="12")
    use_env(monkeypatch, env)
    ids = write_corpus(tmp_path / "corpus.jsonl", 300)
    settings = Settings()
    jobs = build_job_store(settings)
    first = WorkerProcess(env, tmp_path / "worker1.log")
    second = None
    try:
        first.wait_ready()
        app = build_celery_app(settings)
        job_id = submit(app, jobs, lambda: read_documents(tmp_path / "corpus.jsonl"), batch_size=20)

        def progress_reaches(batches: int, timeout_s: float = 120) -> None:
            deadline = time.monotonic() + timeout_s
            while jobs.status(job_id).batches_done < batches:
                assert time.monotonic() < deadline, f"stuck at {jobs.status(job_id)}"
                time.sleep(0.1)

        if broker == "redis":  # the requeue-on-loss path is Celery's own; once is enough (a model reload)
            # The pool process logs this inside its first batch (the encoder loads lazily, for seconds):
            # a kill now is certainly mid-batch. Batches after it take milliseconds, too short to aim at.
            first.wait_for_log("loading the passage encoder")
            (pool,) = first.pool_pids()
            os.kill(pool, signal.SIGKILL)  # the pool process dies mid-batch: its batch is rejected, requeued
        progress_reaches(2)
        first.wait_busy()
        first.sigkill()  # now the whole worker, with a batch in flight and unacknowledged
        assert not jobs.status(job_id).finished
        second = WorkerProcess(env, tmp_path / "worker2.log")
        status = wait(jobs, job_id, progress=False, timeout_s=240)
        assert (status.state.value, status.indexed, status.failures) == ("done", 300, {})
        if broker == "redis":
            assert "WorkerLostError" in (tmp_path / "worker1.log").read_text()
    finally:
        first.stop()
        if second is not None:
            second.stop()
        delete_queue(url, queue_name)
    assert_exactly_once(tmp_path / "home", ids)


def test_an_ingest_nobody_consumes_stops_waiting_with_one_line_and_stays_queued(tmp_path, redis_url, queue_name):
    """No worker on the queue: `ingest` gives up after the stall timeout and says what to do."""
    write_corpus(tmp_path / "corpus.jsonl", 5)
    env = worker_env(tmp_path / "home", redis_url, queue_name, DDR_WORKERS__STALL_TIMEOUT_S="2")
    try:
        done = subprocess.run(
            [str(DDR_SEARCH), "ingest", str(tmp_path / "corpus.jsonl")],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        delete_queue(redis_url, queue_name)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "nothing processed for 2 s; is a worker consuming its queue?" in errors[0]
    assert "Traceback" not in done.stderr
