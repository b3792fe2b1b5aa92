"""Crash safety (SIGKILL mid-ingest) and several writer processes, through the real ingest path.

Thousands of documents: the encoder is the HashingEncoder test double (doubles.py says why); the
store, the ingest path and the processes are real. tests/cli/test_ingest_search.py repeats the kill
with the real encoder and the real `ddr-search ingest` command at a smaller size.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from connectors.embedded import EmbeddedBackend
from ddr_search.client import DDRSearch
from ddr_search.settings import Settings
from tests.doubles import HashingEncoder, hash_vector

REPO = Path(__file__).resolve().parents[3]
WORKER = "tests.connectors.embedded.ingest_worker"
TOPICS = ["court", "fraud", "heart", "lung", "cache", "index", "query", "vector", "token", "graph"]


def write_corpus(path: Path, ids: range, tag: str = "") -> Path:
    with path.open("w") as f:
        for i in ids:
            record = {
                "id": f"doc-{i}",
                "title": f"title {i}",
                "text": f"{TOPICS[i % 10]} {TOPICS[i * 3 % 10]} {tag}{i}",
            }
            f.write(json.dumps(record) + "\n")
    return path


def start_worker(home: Path, file: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", WORKER, str(home), str(file), *extra],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stored_rows(home: Path) -> list[tuple[str, str, str, np.ndarray]]:
    backend = EmbeddedBackend(Settings(home=home).embedded_dir)
    rows = backend.store.db.execute("SELECT id, title, text, vector FROM documents").fetchall()
    backend.close()
    return [(i, title, text, np.frombuffer(v, dtype="<f4")) for i, title, text, v in rows]


def assert_rows_consistent(rows) -> None:
    """Each stored vector belongs to its own stored text: no half-written or mixed rows."""
    for _id, title, text, vector in rows:
        np.testing.assert_allclose(vector, hash_vector(f"{title} {text}"), atol=1e-6)


@pytest.mark.slow
def test_sigkill_mid_ingest_keeps_the_last_committed_state_and_a_rerun_completes(tmp_path):
    home = tmp_path / "home"
    previous = write_corpus(tmp_path / "previous.jsonl", range(100_000, 100_050))
    big = write_corpus(tmp_path / "big.jsonl", range(3000))
    done = subprocess.run(
        [sys.executable, "-m", WORKER, str(home), str(previous)], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr

    proc = start_worker(home, big, "--batch-size", "50", "--delay", "0.05")
    backend = EmbeddedBackend(Settings(home=home).embedded_dir)
    deadline = time.monotonic() + 60
    while backend.count() < 50 + 500:
        assert proc.poll() is None, f"ingest ended before the kill: {proc.communicate()}"
        assert time.monotonic() < deadline, "ingest made no progress"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL

    partial = backend.count()
    assert 550 <= partial < 3050, "the kill must land mid-ingest"
    assert (partial - 50) % 50 == 0, "a batch is one transaction: all of it or none of it"
    backend.close()

    with DDRSearch(Settings(home=home), encoder=HashingEncoder()) as client:
        hits = client.search("title 100007", k=3, mode="bm25")
        assert hits and hits[0].id == "doc-100007"
        hybrid = client.search("court fraud", k=5)
        assert len(hybrid) == 5

    rerun = subprocess.run(
        [sys.executable, "-m", WORKER, str(home), str(big), "--batch-size", "50"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert rerun.returncode == 0, rerun.stderr
    rows = stored_rows(home)
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids)) == 3050
    assert set(ids) == {f"doc-{i}" for i in range(3000)} | {f"doc-{i}" for i in range(100_000, 100_050)}
    assert_rows_consistent(rows)
    with DDRSearch(Settings(home=home), encoder=HashingEncoder()) as client:
        snapshot = client.backend.snapshot()
        assert len(snapshot.ids) == len(set(snapshot.ids.tolist())) == 3050
        assert client.search("title 2999", k=1, mode="bm25")[0].id == "doc-2999"


@pytest.mark.slow
def test_two_writer_processes_store_every_document_once(tmp_path):
    """Issue 6 item 4: overlapping ingests from two processes; a third process searches meanwhile."""
    home = tmp_path / "home"
    first = write_corpus(tmp_path / "a.jsonl", range(0, 1200), tag="a")
    second = write_corpus(tmp_path / "b.jsonl", range(600, 1800), tag="b")
    writers = [start_worker(home, f, "--batch-size", "20", "--delay", "0.002") for f in (first, second)]
    searched = 0
    with DDRSearch(Settings(home=home), encoder=HashingEncoder()) as client:
        while any(w.poll() is None for w in writers):
            if client.backend.count():
                hits = client.search("court fraud", k=5)
                assert len({h.id for h in hits}) == len(hits)
                searched += 1
            time.sleep(0.05)
    for writer in writers:
        _out, err = writer.communicate()
        assert writer.returncode == 0, err
    rows = stored_rows(home)
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids)) == 1800
    assert_rows_consistent(rows)
    overlap = {text.split()[-1][0] for i, _, text, _ in rows if 600 <= int(i.split("-")[1]) < 1200}
    assert overlap <= {"a", "b"}
    with DDRSearch(Settings(home=home), encoder=HashingEncoder()) as client:
        snapshot = client.backend.snapshot()
        assert sorted(snapshot.ids.tolist()) == sorted(ids)
        for i in (0, 900, 1799):
            doc = client.backend.get([f"doc-{i}"])[f"doc-{i}"]
            top = client.backend.dense_search(hash_vector(f"{doc.title} {doc.text}"), 1)
            assert top[0][0] == f"doc-{i}"
    assert searched > 0
