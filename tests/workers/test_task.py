"""The task's own logic, in this process: retries with backoff, giving up, per-document failures, records.

The encoder and the embedded backend are the real ones. Two test doubles, named as such, stand in for
what cannot be made to fail on demand: a backend wrapper that raises BackendError for its first N
upserts, and an encoder wrapper that fails on one marked text (no real input makes MiniLM fail).
"""

from __future__ import annotations

import uuid

import pytest

from ddr_search.errors import BackendError
from ddr_search.types import Document
from tests.workers.conftest import REDIS_URL

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def encoder():
    from ddr_search.model.encoder import TorchEncoder

    return TorchEncoder.load()


@pytest.fixture()
def backend(tmp_path, encoder):
    from ddr_search import factory
    from ddr_search.settings import Settings

    store = factory.build_backend(Settings(home=tmp_path / "home"), encoder.dimension)
    yield store
    store.close()


class FlakyBackendDouble:
    """Test double: the real backend, except that its first `failures` upserts raise BackendError."""

    def __init__(self, real, failures: int) -> None:
        self.real, self.failures, self.calls = real, failures, 0

    def upsert(self, documents) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise BackendError(f"simulated outage (upsert {self.calls})")
        self.real.upsert(documents)

    def __getattr__(self, name):
        return getattr(self.real, name)


class FailingEncoderDouble:
    """Test double: the real encoder, failing on any batch that contains the text 'POISON'."""

    def __init__(self, real) -> None:
        self.real = real
        self.dimension, self.version = real.dimension, real.version

    def encode_passages(self, texts, *, batch_size=32):
        if any("POISON" in t for t in texts):
            raise RuntimeError("tokenizer blew up")
        return self.real.encode_passages(texts, batch_size=batch_size)


def payloads(n: int, prefix: str = "p") -> list[dict]:
    from workers.payload import to_payload

    return [to_payload(Document(id=f"{prefix}{i}", text=f"tok{prefix}{i} passage number {i}")) for i in range(n)]


def eager_app(encoder, backend, max_retries: int = 3):
    from ddr_search.settings import Settings, WorkerSettings
    from workers.app import create_app

    settings = Settings(broker_url=REDIS_URL, workers=WorkerSettings(jobs_url=REDIS_URL, max_retries=max_retries))
    app = create_app(settings, lambda: encoder, lambda dimension: backend)
    app.conf.task_always_eager = True  # apply() runs here; retries run here too, without the countdown
    return app


def new_job(documents: int, batches: int):
    from workers.jobs import JobStore

    jobs = JobStore.from_url(REDIS_URL)
    job_id = f"test-{uuid.uuid4().hex}"
    jobs.create(job_id, documents=documents, batches=batches)
    return jobs, job_id


def test_transient_backend_errors_are_retried_then_the_batch_is_indexed(redis_url, encoder, backend):
    from workers.app import EMBED_TASK

    flaky = FlakyBackendDouble(backend, failures=2)
    app = eager_app(encoder, flaky)
    jobs, job_id = new_job(5, 1)
    app.tasks[EMBED_TASK].apply(args=[job_id, 0, payloads(5)])
    assert flaky.calls == 3
    status = jobs.status(job_id)
    assert (status.state.value, status.indexed, status.failures) == ("done", 5, {})
    assert backend.count() == 5


def test_a_backend_that_stays_down_fails_the_batch_with_the_reason_and_finishes_the_job(redis_url, encoder, backend):
    from workers.app import EMBED_TASK

    app = eager_app(encoder, FlakyBackendDouble(backend, failures=100), max_retries=2)
    jobs, job_id = new_job(3, 1)
    app.tasks[EMBED_TASK].apply(args=[job_id, 0, payloads(3)])
    status = jobs.status(job_id)
    assert (status.state.value, status.indexed) == ("done", 0)
    assert sorted(status.failures) == ["p0", "p1", "p2"]
    assert status.failures["p0"].startswith("gave up after 2 retries: BackendError: simulated outage")
    assert backend.count() == 0


def test_backoff_is_exponential_capped_and_jittered():
    from workers.app import MAX_BACKOFF_S, backoff_s

    for retries in range(10):
        delay = backoff_s(retries)
        assert min(MAX_BACKOFF_S, 2**retries) * 0.5 <= delay <= min(MAX_BACKOFF_S, 2**retries)


def test_an_encoding_failure_is_isolated_to_its_document(encoder, backend):
    from workers.batch import index_batch

    items = payloads(6)
    items[2]["text"] = "POISON pill"
    items.append({"title": "no id at all", "text": "x"})
    items.append("not an object")
    outcome = index_batch(items, FailingEncoderDouble(encoder), backend)
    assert outcome.indexed == 5
    assert outcome.failures["p2"] == "encoding failed: RuntimeError: tokenizer blew up"
    assert "field 'id'" in outcome.failures["<item 6>"]
    assert "expected a JSON object, got str" in outcome.failures["<item 7>"]  # the ingest reader's message
    assert sorted(backend.get([f"p{i}" for i in range(6)])) == ["p0", "p1", "p3", "p4", "p5"]


def test_redelivered_batch_changes_neither_the_store_nor_the_job(redis_url, encoder, backend):
    from workers.app import EMBED_TASK

    app = eager_app(encoder, backend)
    jobs, job_id = new_job(8, 2)
    task = app.tasks[EMBED_TASK]
    first, second = payloads(4, "a"), payloads(4, "b")
    task.apply(args=[job_id, 0, first])
    task.apply(args=[job_id, 0, first])  # the same message again, as after a worker died before its ack
    once = jobs.status(job_id)
    assert (once.batches_done, once.indexed, backend.count()) == (1, 4, 4)
    task.apply(args=[job_id, 1, second])
    status = jobs.status(job_id)
    assert (status.state.value, status.indexed, status.batches_done) == ("done", 8, 2)
    assert backend.count() == 8


def test_without_a_broker_the_same_batch_code_runs_in_process(encoder, backend):
    from workers.ingest import run_inline

    documents = [Document(id=f"i{i}", text=f"inline {i}") for i in range(7)] + [Document(id="e", text="")]
    result = run_inline(documents, encoder, backend, batch_size=3)
    assert (result.documents, result.indexed, list(result.failures)) == (8, 7, ["e"])
    assert backend.count() == 7


def test_a_broken_worker_still_finishes_the_job_saying_why(redis_url):
    from ddr_search.settings import Settings, WorkerSettings
    from workers.app import EMBED_TASK, create_app

    def no_model():
        raise FileNotFoundError("no model at /nowhere")

    settings = Settings(broker_url=REDIS_URL, workers=WorkerSettings(jobs_url=REDIS_URL))
    app = create_app(settings, no_model, lambda dimension: None)
    app.conf.task_always_eager = True
    jobs, job_id = new_job(2, 1)
    result = app.tasks[EMBED_TASK].apply(args=[job_id, 0, payloads(2)])
    assert isinstance(result.result, FileNotFoundError)  # raised, so Celery logs the traceback too
    status = jobs.status(job_id)
    assert (status.state.value, status.indexed) == ("done", 0)
    assert status.failures == {
        "p0": "worker error: FileNotFoundError: no model at /nowhere",
        "p1": "worker error: FileNotFoundError: no model at /nowhere",
    }
