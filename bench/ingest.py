"""Ingest throughput: in-process vs 1 and 2 Celery worker processes, same corpus, one run.

Every system embeds the same documents (the first N SciFact passages, title + text, up to 256
tokens) with one torch thread per process, into a fresh embedded store, and must end with every
document stored exactly once, each with the passage encoder eager and compiled (DDR_PASSAGE_COMPILE=off
/ on). Workers are real `ddr-search worker` subprocesses on a real broker (Redis by default); each is
warmed up first (every pool process loads its encoder, and compiles it, on a small job), so documents/s
measures steady-state embedding + indexing + queueing, from the first publish to the last batch
recorded. The in-process baseline is the same batch code (workers.ingest.run_inline), warmed up the
same way on two passages.

    python bench/ingest.py [--documents 1000] [--batch-size 64] [--broker redis://localhost:6379/0]

Writes bench/reports/ingest.{json,md}.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from _common import BEIR, machine

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
REPORTS = REPO / "bench" / "reports"
SCIFACT = BEIR / "scifact" / "corpus.jsonl"
DEMO = REPO / "ddr_search" / "demo"
DDR_SEARCH = Path(sys.executable).parent / "ddr-search"


def write_corpus(path: Path, limit: int) -> str:
    """The first `limit` SciFact passages (or the shipped demo corpus when SciFact is absent)."""
    sources = [SCIFACT] if SCIFACT.exists() else sorted(DEMO.glob("*.jsonl"))
    written = 0
    with path.open("w") as out:
        for source in sources:
            with source.open() as f:
                for line in f:
                    if written == limit:
                        break
                    record = json.loads(line)
                    doc_id = record.get("_id", record.get("id"))
                    out.write(json.dumps({"id": doc_id, "title": record.get("title", ""), "text": record["text"]}))
                    out.write("\n")
                    written += 1
    return "BEIR SciFact corpus" if sources == [SCIFACT] else "ddr-search demo corpus"


def settings_for(home: Path, broker: str | None, queue: str, compiled: str = "auto"):
    from ddr_search.settings import Settings, WorkerSettings

    return Settings(home=home, broker_url=broker, workers=WorkerSettings(queue=queue), passage_compile=compiled)


def stored(settings) -> int:
    from ddr_search import factory

    backend = factory.build_backend(settings)
    try:
        return backend.count()
    finally:
        backend.close()


def run_inline(corpus: Path, home: Path, batch_size: int, compiled: str) -> dict[str, float]:
    import torch

    from ddr_search import factory
    from ddr_search.data.documents import read_documents
    from workers.ingest import run_inline as inline

    torch.set_num_threads(1)
    settings = settings_for(home, None, "unused", compiled)
    started = time.perf_counter()
    encoder = factory.build_encoder(settings)
    encoder.encode_passages(["a warm-up passage", "another warm-up passage"])  # compiles, when on
    backend = factory.build_backend(settings, encoder.dimension)
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    result = inline(read_documents(corpus), encoder, backend, batch_size=batch_size)
    elapsed = time.perf_counter() - started
    backend.close()
    assert not result.failures, result.failures
    return {"elapsed_s": elapsed, "warmup_s": load_s, "stored": stored(settings), "documents": result.documents}


def run_workers(
    corpus: Path, home: Path, batch_size: int, broker: str, processes: int, compiled: str, log: Path
) -> dict[str, float]:
    from ddr_search.data.documents import read_documents
    from ddr_search.factory import build_celery_app, build_job_store
    from ddr_search.types import Document
    from workers.ingest import submit, wait

    queue = f"ddr-bench-{uuid.uuid4().hex[:8]}"
    settings = settings_for(home, broker, queue)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DDR_")}
    env.update(DDR_HOME=str(home), DDR_BROKER_URL=broker, DDR_WORKERS__QUEUE=queue, DDR_PASSAGE_COMPILE=compiled)
    with log.open("wb") as handle:
        worker = subprocess.Popen(
            [str(DDR_SEARCH), "worker", "--concurrency", str(processes), "--threads", "1", "--loglevel", "info"],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        app, jobs = build_celery_app(settings), build_job_store(settings)
        started = time.perf_counter()
        warm = [Document(id=f"warmup-{i}", text=f"warm-up passage {i}") for i in range(4 * processes)]
        while log.read_text(errors="replace").count("loading the passage encoder") < processes:
            job_id = submit(app, jobs, lambda: warm, batch_size=2)
            wait(jobs, job_id, progress=False, timeout_s=600)
        warmup_s = time.perf_counter() - started
        documents = sum(1 for _ in read_documents(corpus))
        started = time.perf_counter()
        job_id = submit(app, jobs, lambda: read_documents(corpus), batch_size=batch_size, total=documents)
        status = wait(jobs, job_id, progress=False, timeout_s=3600)
        elapsed = time.perf_counter() - started
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)
    assert status.state.value == "done" and not status.failures, status
    return {
        "elapsed_s": elapsed,
        "warmup_s": warmup_s,
        "stored": stored(settings) - len(warm),
        "documents": status.indexed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--broker", default="redis://localhost:6379/0")
    parser.add_argument("--report-only", action="store_true", help="Re-render the report from the JSON.")
    args = parser.parse_args()
    if args.report_only:
        write_report(json.loads((REPORTS / "ingest.json").read_text()))
        return

    rows = []
    with tempfile.TemporaryDirectory(prefix="ddr-bench-ingest-") as tmp:
        root = Path(tmp)
        corpus_path = root / "corpus.jsonl"
        corpus = write_corpus(corpus_path, args.documents)
        systems = [("in-process (no broker)", None), ("1 worker process", 1), ("2 worker processes", 2)]
        for (system, processes), compiled in itertools.product(systems, ("off", "on")):
            name = f"{system}, {'compiled' if compiled == 'on' else 'eager'}"
            load_before = os.getloadavg()[0]
            home = root / f"home-{processes or 0}-{compiled}"
            if processes is None:
                result = run_inline(corpus_path, home, args.batch_size, compiled)
            else:
                log = root / f"worker-{processes}-{compiled}.log"
                result = run_workers(corpus_path, home, args.batch_size, args.broker, processes, compiled, log)
            assert result["stored"] == result["documents"] == args.documents, result
            rows.append(
                {
                    "system": name,
                    "processes": processes or 1,
                    "passage_compile": compiled,
                    "documents": result["documents"],
                    "elapsed_s": round(result["elapsed_s"], 2),
                    "documents_per_s": round(result["documents"] / result["elapsed_s"], 2),
                    "warmup_s": round(result["warmup_s"], 2),
                    "load_average_before": round(load_before, 2),
                    "load_average_after": round(os.getloadavg()[0], 2),
                }
            )
            print(f"{name}: {rows[-1]['documents_per_s']} documents/s", flush=True)
    baseline = rows[0]["documents_per_s"]
    for row in rows:
        row["speedup_vs_inline"] = round(row["documents_per_s"] / baseline, 2)

    record = {
        "benchmark": "ingest",
        "corpus": corpus,
        "documents": args.documents,
        "batch_size": args.batch_size,
        "broker": args.broker.split("://")[0],
        "torch_threads_per_process": 1,
        "max_passage_tokens": 256,
        "machine": machine("torch", "transformers", "celery", "kombu", "redis", "numpy"),
        "results": rows,
    }
    write_report(record)


def write_report(record: dict) -> None:
    rows = record["results"]
    header = "| system | documents/s | x in-process eager | elapsed s | warm-up s | load avg before/after |"
    lines = [header, "|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row['system']} | {row['documents_per_s']} | {row['speedup_vs_inline']} | {row['elapsed_s']} | "
            f"{row['warmup_s']} | {row['load_average_before']} / {row['load_average_after']} |"
        )
    table = "\n".join(lines)
    print(table)
    REPORTS.mkdir(parents=True, exist_ok=True)
    (REPORTS / "ingest.json").write_text(json.dumps(record, indent=2) + "\n")
    m = record["machine"]
    (REPORTS / "ingest.md").write_text(
        "# Ingest throughput: in-process vs Celery workers\n\n"
        f"{record['documents']} documents of the {record['corpus']} (title + text, up to 256 tokens), batches "
        f"of {record['batch_size']}, one torch thread per process, {record['broker']} broker, embedded store. "
        "One run; every system warmed up first (each process loaded its encoder, and compiled it where "
        "compiled, on a small job: the warm-up column), so documents/s runs from the first publish to the last "
        "batch recorded. Eager = DDR_PASSAGE_COMPILE=off, compiled = on; the default (auto) compiles once a "
        "process is known to encode 8,192 passages (docs/performance.md).\n\n"
        f"{table}\n\n"
        f"Machine: {m['cpu']}, {m['cpu_count']} CPUs, Python {m['python']}, torch {m['versions']['torch']}, "
        f"celery {m['versions']['celery']}.\n\n"
        "How to read it: every process embeds on one thread, so on an idle 2-CPU machine 2 worker "
        "processes can approach twice one process, and one worker process should match in-process (the "
        "queue costs milliseconds per batch against seconds of embedding). The load average column says "
        "how much of the 2 CPUs other jobs took during each run: above 2, every system got a fraction of "
        "a core and the absolute numbers sit far below an idle machine's, so compare the rows of one run "
        "only, and treat differences of a few tens of percent as noise.\n\n"
        "Reproduce: `python bench/ingest.py` (Redis on localhost; `--broker amqp://...` needs "
        "DDR_WORKERS__JOBS_URL for job records). `--report-only` re-renders this page from the JSON.\n"
    )


if __name__ == "__main__":
    main()
