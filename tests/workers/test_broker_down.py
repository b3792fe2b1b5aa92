"""The broker unavailable: a clear error within seconds, and never batches in a queue without a job record."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.workers.conftest import REDIS_URL, closed_port, write_corpus

pytestmark = pytest.mark.integration


def settings_for(tmp_path: Path, broker: str, queue: str = "ddr-test-unused"):
    from ddr_search.settings import Settings, WorkerSettings

    return Settings(home=tmp_path / "home", broker_url=broker, workers=WorkerSettings(queue=queue, jobs_url=REDIS_URL))


def jobs_for_source(source: str) -> list[str]:
    import redis

    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    return [
        key
        for key in client.scan_iter("ddr:job:*", count=1000)
        if key.count(":") == 2 and client.hget(key, "source") == source
    ]


@pytest.mark.parametrize("scheme", ["redis", "amqp"])
def test_unreachable_broker_is_a_clear_error_within_seconds_and_records_nothing(tmp_path, redis_url, scheme):
    from ddr_search.client import DDRSearch
    from workers.ingest import BrokerUnavailableError

    port = closed_port()
    broker = f"redis://:s3cret@localhost:{port}/0" if scheme == "redis" else f"amqp://guest:s3cret@localhost:{port}//"
    corpus = tmp_path / "corpus.jsonl"
    write_corpus(corpus, 50)
    import celery.app  # noqa: F401  # time the broker check, not a cold import on a busy machine

    started = time.monotonic()
    with pytest.raises(BrokerUnavailableError) as raised:
        DDRSearch(settings_for(tmp_path, broker)).enqueue(corpus, batch_size=10)
    assert time.monotonic() - started < 5
    message = str(raised.value)
    assert f":{port}" in message and "cannot reach the broker" in message
    assert "s3cret" not in message
    assert jobs_for_source(str(corpus)) == []


class CuttableProxy:
    """A real TCP relay to Redis that can be cut, to take the broker away in the middle of a publish."""

    def __init__(self, port: int) -> None:
        self.target = ("localhost", port)
        self.listener = socket.create_server(("localhost", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.cut_done = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.cut_done.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.cut_done.is_set():
                client.close()
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.cut_done.set()
        with contextlib.suppress(OSError):  # close() alone does not wake a blocked accept()
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for s in self.sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass


def test_broker_lost_mid_publish_marks_the_job_failed_with_how_far_it_got(tmp_path, redis_url, queue_name):
    import redis

    from ddr_search.factory import build_celery_app, build_job_store
    from ddr_search.types import Document
    from workers.ingest import BrokerUnavailableError, submit
    from workers.jobs import JobState

    proxy = CuttableProxy(6379)
    settings = settings_for(tmp_path, f"redis://localhost:{proxy.port}/0", queue=queue_name)
    jobs = build_job_store(settings)  # the job store stays reachable: only the broker goes away
    calls = 0

    def read():
        nonlocal calls
        calls += 1
        for i in range(100):
            if calls == 2 and i == 30:  # publishing pass, batches 0-2 sent: the broker disappears
                proxy.cut()
            yield Document(id=f"c{i}", text=f"document {i}")

    direct = redis.Redis.from_url(REDIS_URL)
    try:
        started = time.monotonic()
        with pytest.raises(BrokerUnavailableError, match=r"publishing failed after 3 of 10 batches") as raised:
            submit(build_celery_app(settings), jobs, read, batch_size=10, source=f"cut-{queue_name}")
        assert time.monotonic() - started < 20
        job_id = str(raised.value).split()[1].rstrip(":")
        status = jobs.status(job_id)
        assert status.state is JobState.FAILED
        assert status.error == "publishing stopped after 3 of 10 batches: OperationalError" or (
            status.error.startswith("publishing stopped after 3 of 10 batches")
        )
        assert direct.llen(queue_name) == 3  # exactly what the record says was published
    finally:
        direct.delete(queue_name)


def test_unreachable_job_store_is_a_clear_error_and_nothing_is_enqueued(tmp_path, redis_url, queue_name):
    import redis

    from ddr_search.client import DDRSearch
    from ddr_search.settings import Settings, WorkerSettings
    from workers.jobs import JobStoreError

    port = closed_port()
    settings = Settings(
        home=tmp_path / "home",
        broker_url=REDIS_URL,
        workers=WorkerSettings(queue=queue_name, jobs_url=f"redis://:s3cret@localhost:{port}/0"),
    )
    corpus = tmp_path / "corpus.jsonl"
    write_corpus(corpus, 20)
    with pytest.raises(JobStoreError, match=rf"cannot reach the Redis job store at localhost:{port}/0") as raised:
        DDRSearch(settings).enqueue(corpus, batch_size=10)
    assert "s3cret" not in str(raised.value)
    assert redis.Redis.from_url(REDIS_URL).llen(queue_name) == 0
