"""ddr-search on a real OpenSearch 2.19.1 node (k-NN lucene + neural-search) against the embedded store,
with SciFact, in one run.

- quality: NDCG@10 / R@100 (ir-measures) of bm25, dense and hybrid (min_max 0.5/0.5 and rrf) on both
  backends, from the same passage and query vectors: the connector must lose nothing (|delta| <= 0.002);
- hybrid latency: p50 / p95 of `hybrid_search` native (with and without per-hit sub-scores) vs
  client-side fusion, interleaved query by query (vectors precomputed: backend time only);
- ingest: documents/s of the bulk path alone (precomputed vectors), of passage encoding alone, and end to
  end through two real `ddr-search worker` processes (Redis broker) writing to the node.

    python bench/opensearch.py [--worker-documents 400] [--queries 300]

Starts the test node with tests/engines if it is not running (`scripts/services` does too).
Writes bench/reports/opensearch.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
REPORTS = REPO / "bench" / "reports"
SHARED = Path(os.environ.get("DDR_SHARED_DATA", REPO.parent / "shared" / "data"))
SCIFACT = SHARED / "beir" / "scifact"
NODE = "opensearch-2.19.1"
DDR_SEARCH = Path(sys.executable).parent / "ddr-search"
REDIS_URL = "redis://localhost:6379/0"


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    return {"p50_ms": float(np.percentile(samples_ms, 50)), "p95_ms": float(np.percentile(samples_ms, 95))}


def scores(runs: dict[str, list[tuple[str, float]]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    import ir_measures
    from ir_measures import R, nDCG

    qrel_rows = [ir_measures.Qrel(q, d, r) for q, ds in qrels.items() for d, r in ds.items()]
    run_rows = [ir_measures.ScoredDoc(q, d, s) for q, hits in runs.items() for d, s in hits]
    result = ir_measures.calc_aggregate([nDCG @ 10, R @ 100], qrel_rows, run_rows)
    return {"ndcg@10": result[nDCG @ 10], "recall@100": result[R @ 100]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--worker-documents", type=int, default=400)
    args = parser.parse_args()

    from connectors.embedded import EmbeddedBackend
    from connectors.opensearch import OpenSearchBackend, admin
    from connectors.opensearch.client import build_client
    from ddr_search.data.beir import load_beir
    from ddr_search.factory import build_encoder
    from ddr_search.fusion import FusionConfig, Technique, fuse
    from ddr_search.settings import OpenSearchSettings, Settings
    from ddr_search.training.passages import encode_cached
    from ddr_search.types import Document, IndexedDocument, passage_text
    from tests.engines.node import start

    record = start(NODE)
    corpus, queries, qrels = load_beir(SCIFACT, "test")
    qids = [q for q in queries if q in qrels][: args.queries]
    qrels = {q: qrels[q] for q in qids}
    docs = [Document(i, c.get("text", ""), c.get("title", "")) for i, c in corpus.items()]
    encoder = build_encoder(Settings())
    texts = [passage_text(d.title, d.text) for d in docs]

    started = time.perf_counter()
    sample = texts[:200]
    encoder.encode_passages(sample)
    encode_rate = len(sample) / (time.perf_counter() - started)
    vectors = encode_cached(encoder, texts, REPO / ".ddr" / "cache", show_progress=True)
    query_vectors = encoder.encode_queries([queries[q] for q in qids]).vectors
    items = [IndexedDocument(d, v, encoder.version) for d, v in zip(docs, vectors, strict=True)]

    work = Path(tempfile.mkdtemp(prefix="ddr-bench-os-"))
    embedded = EmbeddedBackend(work / "embedded", encoder.dimension)
    embedded.upsert(items)
    embedded.refresh()

    alias = f"ddr-bench-{uuid.uuid4().hex[:6]}"
    settings = OpenSearchSettings(url=str(record["url"]), index=alias, knn_engine="lucene", replicas=0,
                                  timeout_s=60)
    configs = [FusionConfig(), FusionConfig(Technique.RRF)]
    native = OpenSearchBackend(build_client(settings), alias=alias, url=settings.url, dimension=encoder.dimension,
                               hybrid="native")
    client_side = OpenSearchBackend(build_client(settings), alias=alias, url=settings.url,
                                    dimension=encoder.dimension, hybrid="client")
    report: dict[str, object] = {}
    try:
        admin.setup(native, settings, dimension=encoder.dimension, encoder_version=encoder.version,
                    fusion_configs=configs)
        started = time.perf_counter()
        native.upsert(items)
        native.refresh()
        bulk_s = time.perf_counter() - started

        quality: dict[str, dict[str, dict[str, float]]] = {}
        runs: dict[str, dict[str, dict[str, list[tuple[str, float]]]]] = {"embedded": {}, "opensearch": {}}
        for qi, q in enumerate(qids):
            text, vector = queries[q], query_vectors[qi]
            e_bm25, e_dense = embedded.bm25_search(text, 100), embedded.dense_search(vector, 100)
            runs["embedded"].setdefault("bm25", {})[q] = e_bm25
            runs["embedded"].setdefault("dense", {})[q] = e_dense
            runs["opensearch"].setdefault("bm25", {})[q] = client_side.bm25_search(text, 100)
            runs["opensearch"].setdefault("dense", {})[q] = client_side.dense_search(vector, 100)
            for config in configs:
                name = f"hybrid {config.technique.value}"
                fused = fuse([e_bm25, e_dense], config, k=100)
                runs["embedded"].setdefault(name, {})[q] = [(f.id, f.score) for f in fused]
                hits = native.hybrid_search(text, vector, 100, config=config, candidates=100, sub_scores=False)
                runs["opensearch"].setdefault(name, {})[q] = [(f.id, f.score) for f in hits]
        for backend_name, by_mode in runs.items():
            for mode, mode_runs in by_mode.items():
                quality.setdefault(mode, {})[backend_name] = scores(mode_runs, qrels)

        variants = {
            "native, sub-scores (2 round trips)": lambda t, v: native.hybrid_search(t, v, 10),
            "native, fused score only (1 round trip)": lambda t, v: native.hybrid_search(t, v, 10, sub_scores=False),
            "client-side fusion (1 _msearch)": lambda t, v: client_side.hybrid_search(t, v, 10),
        }
        latency: dict[str, list[float]] = {name: [] for name in variants}
        for qi, q in enumerate(qids):  # interleaved: machine noise hits every variant alike
            for name, call in variants.items():
                t0 = time.perf_counter()
                call(queries[q], query_vectors[qi])
                latency[name].append((time.perf_counter() - t0) * 1000)
        report["latency"] = {name: percentiles(samples) for name, samples in latency.items()}

        report["ingest"] = {
            "documents": len(items),
            "bulk_only_docs_per_s": len(items) / bulk_s,
            "encode_only_docs_per_s": encode_rate,
            "workers": workers_ingest(settings, docs[: args.worker_documents], work),
        }
        report["quality"] = quality
        report["max_abs_ndcg_delta"] = max(abs(v["opensearch"]["ndcg@10"] - v["embedded"]["ndcg@10"])
                                           for v in quality.values())
    finally:
        from tests.connectors.opensearch.conftest import clean_up

        clean_up(settings)
        embedded.close()
    report["setup"] = {
        "node": f"OpenSearch {record['version']} (integ-test zip + k-NN 2.19.1.0 lucene + neural-search 2.19.1.0), "
                "1 shard, 0 replicas, 1 GB heap, on this machine",
        "encoder": encoder.version,
        "queries": len(qids),
        "documents": len(docs),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, shared",
    }
    write_reports(report)


def workers_ingest(settings, docs, work: Path) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Two real worker processes (concurrency 1 each) embed and bulk-index `docs`; documents/s end to end."""
    from connectors.opensearch import admin
    from ddr_search.data.documents import read_documents
    from ddr_search.factory import build_celery_app, build_encoder, build_job_store
    from ddr_search.settings import Settings
    from workers.ingest import submit, wait

    alias = settings.index + "-workers"
    queue = f"ddr-bench-{uuid.uuid4().hex[:6]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DDR_")}
    env.update(DDR_HOME=str(work / "home"), DDR_BROKER_URL=REDIS_URL, DDR_WORKERS__QUEUE=queue,
               DDR_WORKERS__JOBS_URL=REDIS_URL, DDR_OPENSEARCH__URL=str(settings.url),
               DDR_OPENSEARCH__INDEX=alias, DDR_OPENSEARCH__KNN_ENGINE="lucene", DDR_OPENSEARCH__REPLICAS="0")
    corpus = work / "workers.jsonl"
    with corpus.open("w") as f:
        for d in docs:
            f.write(json.dumps({"id": d.id, "title": d.title, "text": d.text}) + "\n")
    saved = {k: os.environ.get(k) for k in env if k.startswith("DDR_")}
    os.environ.update({k: v for k, v in env.items() if k.startswith("DDR_")})
    workers = [subprocess.Popen([str(DDR_SEARCH), "worker", "--concurrency", "1"], env=env,
                                stdout=(work / f"worker{i}.log").open("w"), stderr=subprocess.STDOUT,
                                start_new_session=True) for i in range(2)]
    try:
        app_settings = Settings()
        encoder = build_encoder(app_settings)
        target = settings.model_copy(update={"index": alias})
        from connectors.opensearch import OpenSearchBackend
        from connectors.opensearch.client import build_client

        backend = OpenSearchBackend(build_client(target), alias=alias, url=target.url, dimension=encoder.dimension)
        admin.setup(backend, target, dimension=encoder.dimension, encoder_version=encoder.version)
        jobs = build_job_store(app_settings)
        app = build_celery_app(app_settings)
        warm = submit(app, jobs, lambda: read_documents(corpus), batch_size=8, total=None)  # loads every encoder
        wait(jobs, warm, progress=False, timeout_s=600)
        started = time.perf_counter()
        job = submit(app, jobs, lambda: read_documents(corpus), batch_size=32)
        status = wait(jobs, job, progress=False, timeout_s=1800)
        seconds = time.perf_counter() - started
        backend.refresh()
        assert status.indexed == len(docs) and backend.count() == len(docs), status
        return {"documents": len(docs), "worker_processes": 2, "docs_per_s": len(docs) / seconds}
    finally:
        for w in workers:
            os.killpg(w.pid, 15)
            w.wait(timeout=30)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        from tests.connectors.opensearch.conftest import clean_up

        clean_up(settings.model_copy(update={"index": alias}))


def write_reports(report: dict[str, object]) -> None:
    REPORTS.mkdir(parents=True, exist_ok=True)
    (REPORTS / "opensearch.json").write_text(json.dumps(report, indent=2) + "\n")
    setup = report["setup"]
    lines = ["# ddr-search on a real OpenSearch node vs the embedded store (SciFact)", "",
             f"Node: {setup['node']}. Encoder: `{setup['encoder']}`. {setup['documents']} documents, "
             f"{setup['queries']} test queries. Machine: {setup['machine']}: ratios within this run mean something,",
             "absolute times are upper bounds. Reproduce: `python bench/opensearch.py`.", "",
             "## Quality (same passage and query vectors on both backends)", "",
             "| mode | NDCG@10 embedded | NDCG@10 OpenSearch | delta | R@100 embedded | R@100 OpenSearch |",
             "|---|---|---|---|---|---|"]
    for mode, by in report["quality"].items():
        e, o = by["embedded"], by["opensearch"]
        lines.append(f"| {mode} | {e['ndcg@10']:.4f} | {o['ndcg@10']:.4f} | {o['ndcg@10'] - e['ndcg@10']:+.4f} | "
                     f"{e['recall@100']:.4f} | {o['recall@100']:.4f} |")
    delta = report["max_abs_ndcg_delta"]
    lines += ["", f"Largest |NDCG@10 delta|: {delta:.4f} (target <= 0.002). OpenSearch hybrid is "
              "the native `hybrid` query with the setup-made pipeline; embedded hybrid is `ddr_search.fusion`.", "",
              "## Hybrid query latency (k = 10, 100 candidates per sub-query; query vectors precomputed)", "",
              "| path | p50 ms | p95 ms |", "|---|---|---|"]
    for name, p in report["latency"].items():
        lines.append(f"| {name} | {p['p50_ms']:.1f} | {p['p95_ms']:.1f} |")
    ingest = report["ingest"]
    workers = ingest["workers"]
    lines += ["", "## Ingest", "",
              "| what | documents/s |", "|---|---|",
              f"| passage encoding alone (this process, {ingest['documents']} docs' encoder) | "
              f"{ingest['encode_only_docs_per_s']:.1f} |",
              f"| bulk indexing alone (precomputed vectors, {ingest['documents']} docs, one client) | "
              f"{ingest['bulk_only_docs_per_s']:.0f} |",
              f"| end to end through {workers['worker_processes']} `ddr-search worker` processes "
              f"({workers['documents']} docs, Redis) | {workers['docs_per_s']:.1f} |", "",
              "Encoding, not the node, bounds ingest: the bulk path alone is orders of magnitude faster."]
    (REPORTS / "opensearch.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
