"""Real services for the worker tests: Redis and RabbitMQ on localhost, `ddr-search worker` subprocesses."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import service_missing

REDIS_URL = os.environ.get("DDR_TEST_REDIS_URL", "redis://localhost:6379/0")
AMQP_URL = os.environ.get("DDR_TEST_AMQP_URL", "amqp://guest:guest@localhost:5672//")
DDR_SEARCH = Path(sys.executable).parent / "ddr-search"


def reachable(port: int) -> bool:
    try:
        with socket.create_connection(("localhost", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> str:
    if not reachable(6379):
        service_missing("Redis is not running on localhost:6379")
    return REDIS_URL


@pytest.fixture(scope="session")
def amqp_url() -> str:
    if not reachable(5672):
        service_missing("RabbitMQ is not running on localhost:5672")
    return AMQP_URL


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def write_corpus(path: Path, n: int, prefix: str = "d") -> list[str]:
    """Short, distinct documents (a unique token each) so 2,000 embed in seconds, not minutes."""
    ids = [f"{prefix}{i}" for i in range(n)]
    with path.open("w") as f:
        for i, doc_id in enumerate(ids):
            f.write(
                json.dumps({"id": doc_id, "title": f"note {i % 13}", "text": f"tok{prefix}{i} about topic {i % 7}"})
            )
            f.write("\n")
    return ids


def children(pid: int) -> list[int]:
    """Direct child pids, from /proc (the prefork pool processes of a worker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


class WorkerProcess:
    """A real `ddr-search worker` in its own process group, so the whole worker can be SIGKILLed."""

    def __init__(self, env: dict[str, str], log: Path, concurrency: int = 1) -> None:
        self.log = log
        self.handle = log.open("ab")
        self.proc = subprocess.Popen(
            [str(DDR_SEARCH), "worker", "--concurrency", str(concurrency), "--loglevel", "info"],
            env=env,
            stdout=self.handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout_s: float = 90) -> None:
        self.wait_for_log(" ready.", timeout_s)

    def wait_for_log(self, text: str, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if text in self.log.read_text(errors="replace"):
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} in the worker log after {timeout_s} s:\n{self.log.read_text()[-3000:]}")

    def busy(self) -> bool:
        """A batch is running: the log shows more tasks received than finished."""
        text = self.log.read_text(errors="replace")
        finished = text.count("] succeeded in ") + text.count("] retry: ") + text.count("raised error: WorkerLostError")
        return text.count("] received") > finished

    def wait_busy(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.busy():
            assert time.monotonic() < deadline, f"worker idle for {timeout_s} s"
            time.sleep(0.05)

    def pool_pids(self) -> list[int]:
        return children(self.proc.pid)

    def sigkill(self) -> None:
        """Like a machine dying: the main process and its pool, no chance to requeue or ack anything."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.handle.close()


def worker_env(home: Path, broker: str, queue: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DDR_")}
    env.update(
        DDR_HOME=str(home),
        DDR_BROKER_URL=broker,
        DDR_WORKERS__QUEUE=queue,
        DDR_WORKERS__JOBS_URL=REDIS_URL,
        ORT_DISABLE_TELEMETRY="1",
        **extra,
    )
    return env


def delete_queue(broker: str, queue: str) -> None:
    from kombu import Connection

    with Connection(broker, connect_timeout=3) as conn:
        channel = conn.channel()
        with contextlib.suppress(Exception):  # already gone: nothing to clean
            channel.queue_delete(queue)


@pytest.fixture()
def queue_name(request: pytest.FixtureRequest) -> Iterator[str]:
    """A queue of this test's own, so leftovers of an earlier run can never reach its worker."""
    yield f"ddr-test-{request.node.name[:40]}-{uuid.uuid4().hex[:8]}".replace("[", "-").replace("]", "")


def ingest_through_a_worker(env: dict[str, str], corpus: Path, log: Path, batch_size: int = 20):  # type: ignore[no-untyped-def]
    """Start a real `ddr-search worker` with `env`, run one job over `corpus` through it, stop it and delete
    its queue; returns the job's final status. The caller's environment must hold the same DDR_* settings."""
    from ddr_search.data.documents import read_documents
    from ddr_search.factory import build_celery_app, build_job_store
    from ddr_search.settings import Settings
    from workers.ingest import submit, wait

    settings = Settings()
    worker = WorkerProcess(env, log)
    try:
        worker.wait_ready()
        jobs = build_job_store(settings)
        job = submit(build_celery_app(settings), jobs, lambda: read_documents(corpus), batch_size=batch_size)
        return wait(jobs, job, progress=False, timeout_s=300)
    finally:
        worker.stop()
        delete_queue(REDIS_URL, env["DDR_WORKERS__QUEUE"])
