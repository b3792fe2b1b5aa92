"""ddr-search on real OpenSearch 2.19.1 (k-NN lucene + neural-search) and Elasticsearch 8.19.8 nodes against
the embedded store, with SciFact, in one run.

- quality: NDCG@10 / R@100 (ir-measures) of bm25, dense and hybrid (min_max 0.5/0.5 and rrf) on every
  backend, from the same passage and query vectors: a connector must lose nothing (|delta| <= 0.002;
  Elasticsearch runs DDR_ELASTICSEARCH__ANALYZER=client: the embedded tokenizer's terms, split on whitespace
  by the node, whose zip lacks the stemmer);
- hybrid latency: p50 / p95 of `hybrid_search` (OpenSearch native with and without per-hit sub-scores,
  client-side fusion on both engines), interleaved query by query (vectors precomputed: backend time only);
- ingest: documents/s of the bulk path alone (precomputed vectors) per engine, of passage encoding alone,
  and end to end through two real `ddr-search worker` processes (Redis broker) writing to OpenSearch;
- filters: embedded dense search at 100,000 documents with and without a metadata filter (p50, and recall
  against exact filtered search).

    python bench/clusters.py [--worker-documents 400] [--queries 300]

Starts the test nodes with tests/engines if they are not running (`scripts/services` does too).
Writes bench/reports/clusters.{json,md}.
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
from _common import BEIR

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
REPORTS = REPO / "bench" / "reports"
SCIFACT = BEIR / "scifact"
OS_NODE, ES_NODE = "opensearch-2.19.1", "elasticsearch-8.19.8"
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

    from connectors.elasticsearch import ElasticsearchBackend
    from connectors.elasticsearch import admin as es_admin
    from connectors.elasticsearch.client import build_client as es_client
    from connectors.embedded import EmbeddedBackend
    from connectors.opensearch import OpenSearchBackend, admin
    from connectors.opensearch.client import build_client
    from ddr_search.data.beir import load_beir
    from ddr_search.factory import build_encoder
    from ddr_search.fusion import FusionConfig, Technique, fuse
    from ddr_search.settings import ElasticsearchSettings, OpenSearchSettings, Settings
    from ddr_search.training.passages import encode_cached
    from ddr_search.types import Document, IndexedDocument, passage_text
    from tests.engines.node import start

    os_node, es_node = start(OS_NODE), start(ES_NODE)
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

    work = Path(tempfile.mkdtemp(prefix="ddr-bench-clusters-"))
    embedded = EmbeddedBackend(work / "embedded", encoder.dimension)
    embedded.upsert(items)
    embedded.refresh()

    alias = f"ddr-bench-{uuid.uuid4().hex[:6]}"
    os_settings = OpenSearchSettings(
        url=str(os_node["url"]), index=alias, knn_engine="lucene", replicas=0, timeout_s=60
    )
    es_settings = ElasticsearchSettings(
        url=str(es_node["url"]),
        username=str(es_node["username"]),
        password=str(es_node["password"]),
        index=alias,
        analyzer="client",
        replicas=0,
        timeout_s=60,
    )
    configs = [FusionConfig(), FusionConfig(Technique.RRF)]
    os_kwargs = {
        "alias": alias,
        "url": os_settings.url,
        "dimension": encoder.dimension,
        "ef_search": os_settings.hnsw_ef_search,
    }
    native = OpenSearchBackend(build_client(os_settings), hybrid="native", **os_kwargs)
    os_client = OpenSearchBackend(build_client(os_settings), hybrid="client", **os_kwargs)
    es = ElasticsearchBackend(
        es_client(es_settings),
        alias=alias,
        url=es_settings.url,
        dimension=encoder.dimension,
        num_candidates=es_settings.num_candidates,
        client_tokens=True,
    )
    report: dict[str, object] = {}
    try:
        admin.setup(
            native, os_settings, dimension=encoder.dimension, encoder_version=encoder.version, fusion_configs=configs
        )
        es_admin.setup(es, es_settings, dimension=encoder.dimension, encoder_version=encoder.version)
        bulk: dict[str, float] = {}
        for name, backend in (("opensearch", native), ("elasticsearch", es)):
            started = time.perf_counter()
            backend.upsert(items)
            backend.refresh()
            bulk[name] = len(items) / (time.perf_counter() - started)

        searchers = {"embedded": embedded, "opensearch": os_client, "elasticsearch": es}
        runs: dict[str, dict[str, dict[str, list[tuple[str, float]]]]] = {name: {} for name in searchers}
        for qi, q in enumerate(qids):
            text, vector = queries[q], query_vectors[qi]
            for name, backend in searchers.items():
                b, d = backend.bm25_search(text, 100), backend.dense_search(vector, 100)
                runs[name].setdefault("bm25", {})[q] = b
                runs[name].setdefault("dense", {})[q] = d
                for config in configs:
                    mode = f"hybrid {config.technique.value}"
                    if name == "opensearch":  # the native pipeline, as a cluster with neural-search fuses
                        hits = native.hybrid_search(text, vector, 100, config=config, candidates=100, sub_scores=False)
                    else:
                        hits = fuse([b, d], config, k=100)
                    runs[name].setdefault(mode, {})[q] = [(f.id, f.score) for f in hits]
        quality: dict[str, dict[str, dict[str, float]]] = {}
        for name, by_mode in runs.items():
            for mode, mode_runs in by_mode.items():
                quality.setdefault(mode, {})[name] = scores(mode_runs, qrels)

        variants = {
            "OpenSearch native, sub-scores (2 round trips)": lambda t, v: native.hybrid_search(t, v, 10),
            "OpenSearch native, fused score only (1 round trip)": lambda t, v: native.hybrid_search(
                t, v, 10, sub_scores=False
            ),
            "OpenSearch client-side fusion (1 _msearch, the default)": lambda t, v: os_client.hybrid_search(t, v, 10),
            "Elasticsearch client-side fusion (1 _msearch)": lambda t, v: es.hybrid_search(t, v, 10),
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
            "bulk_only_docs_per_s": bulk,
            "encode_only_docs_per_s": encode_rate,
            "workers": workers_ingest(os_settings, docs[: args.worker_documents], work),
        }
        report["quality"] = quality
        report["max_abs_ndcg_delta"] = {
            name: max(abs(v[name]["ndcg@10"] - v["embedded"]["ndcg@10"]) for v in quality.values())
            for name in ("opensearch", "elasticsearch")
        }
        report["filters"] = filtered_latency(encoder.dimension, work)
    finally:
        from tests.connectors.elasticsearch.conftest import clean_up as es_clean_up
        from tests.connectors.opensearch.conftest import clean_up

        clean_up(os_settings)
        es_clean_up(es_settings)
        embedded.close()
    report["setup"] = {
        "nodes": f"OpenSearch {os_node['version']} (integ-test zip + k-NN 2.19.1.0 lucene + neural-search "
        f"2.19.1.0) and Elasticsearch {es_node['version']} (integ-test zip, client analysis), 1 shard, "
        "0 replicas, 1 GB heap each, on this machine",
        "encoder": encoder.version,
        "queries": len(qids),
        "documents": len(docs),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, shared",
    }
    write_reports(report)


def filtered_latency(dimension: int, work: Path, n: int = 100_000, queries: int = 50) -> dict[str, object]:
    """Embedded dense search at `n` documents: unfiltered vs a 1% metadata filter (p50 ms), and the filtered
    results against an exact filtered scan (recall@10; the filter applies before top-k, so it must be 1)."""
    from connectors.embedded import EmbeddedBackend
    from ddr_search.filters import parse_filters
    from ddr_search.types import Document, IndexedDocument

    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((n, dimension)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    langs = np.where(rng.random(n) < 0.01, "rare", "common")
    store = EmbeddedBackend(work / "filtered", dimension)
    started = time.perf_counter()
    for i in range(0, n, 5000):
        store.upsert(
            [
                IndexedDocument(
                    Document(f"s{j}", f"synthetic {j}", "", None, {"lang": str(langs[j]), "year": 2000 + j % 25}),
                    matrix[j],
                    "synthetic",
                )
                for j in range(i, min(n, i + 5000))
            ]
        )
    store.refresh()
    write_s = time.perf_counter() - started
    rare = np.flatnonzero(langs == "rare")
    filters = parse_filters({"lang": "rare"})
    plain_ms, filtered_ms, recalls = [], [], []
    store.dense_search(matrix[1], 10)  # warm: loads the snapshot and builds the coarse scorer
    t0 = time.perf_counter()
    store.dense_search(matrix[0], 10, filters=filters)  # the first use: SQLite evaluates the filter
    first_ms = (time.perf_counter() - t0) * 1000
    for _ in range(queries):
        query = rng.standard_normal(dimension).astype(np.float32)
        query /= np.linalg.norm(query)
        t0 = time.perf_counter()
        store.dense_search(query, 10)
        plain_ms.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        got = store.dense_search(query, 10, filters=filters)
        filtered_ms.append((time.perf_counter() - t0) * 1000)
        exact = {f"s{j}" for j in rare[np.argsort(-(matrix[rare] @ query))[:10]]}
        recalls.append(len(exact & {i for i, _ in got}) / 10)
    store.close()
    return {
        "documents": n,
        "matching": len(rare),
        "write_s": write_s,
        "first_filtered_ms": first_ms,
        "unfiltered_p50_ms": float(np.percentile(plain_ms, 50)),
        "filtered_p50_ms": float(np.percentile(filtered_ms, 50)),
        "filtered_recall@10": float(np.mean(recalls)),
    }


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
    env.update(
        DDR_HOME=str(work / "home"),
        DDR_BROKER_URL=REDIS_URL,
        DDR_WORKERS__QUEUE=queue,
        DDR_WORKERS__JOBS_URL=REDIS_URL,
        DDR_OPENSEARCH__URL=str(settings.url),
        DDR_OPENSEARCH__INDEX=alias,
        DDR_OPENSEARCH__KNN_ENGINE="lucene",
        DDR_OPENSEARCH__REPLICAS="0",
    )
    corpus, warm_corpus = work / "workers.jsonl", work / "warm.jsonl"
    for path, prefix, chosen in ((corpus, "", docs), (warm_corpus, "warm-", docs[:16])):
        with path.open("w") as f:  # other ids for the warm-up: stored documents are not encoded again
            for d in chosen:
                f.write(json.dumps({"id": prefix + d.id, "title": d.title, "text": d.text}) + "\n")
    saved = {k: os.environ.get(k) for k in env if k.startswith("DDR_")}
    os.environ.update({k: v for k, v in env.items() if k.startswith("DDR_")})
    workers = [
        subprocess.Popen(
            [str(DDR_SEARCH), "worker", "--concurrency", "1"],
            env=env,
            stdout=(work / f"worker{i}.log").open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for i in range(2)
    ]
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
        warm = submit(app, jobs, lambda: read_documents(warm_corpus), batch_size=8)  # loads every encoder
        wait(jobs, warm, progress=False, timeout_s=600)
        started = time.perf_counter()
        job = submit(app, jobs, lambda: read_documents(corpus), batch_size=32)
        status = wait(jobs, job, progress=False, timeout_s=1800)
        seconds = time.perf_counter() - started
        backend.refresh()
        assert status.indexed == len(docs) and backend.count() == len(docs) + 16, status
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
    (REPORTS / "clusters.json").write_text(json.dumps(report, indent=2) + "\n")
    setup = report["setup"]
    names = ("embedded", "opensearch", "elasticsearch")
    lines = [
        "# ddr-search on real OpenSearch and Elasticsearch nodes vs the embedded store (SciFact)",
        "",
        f"Nodes: {setup['nodes']}. Encoder: `{setup['encoder']}`. {setup['documents']} documents, "
        f"{setup['queries']} test queries. Machine: {setup['machine']}: ratios within this run mean",
        "something, absolute times are upper bounds. Reproduce: `python bench/clusters.py`.",
        "",
        "## Quality (the same passage and query vectors on every backend)",
        "",
        "| mode | "
        + " | ".join(f"NDCG@10 {n}" for n in names)
        + " | "
        + " | ".join(f"R@100 {n}" for n in names)
        + " |",
        "|---|" + "---|" * (2 * len(names)),
    ]
    for mode, by in report["quality"].items():
        lines.append(
            f"| {mode} | "
            + " | ".join(f"{by[n]['ndcg@10']:.4f}" for n in names)
            + " | "
            + " | ".join(f"{by[n]['recall@100']:.4f}" for n in names)
            + " |"
        )
    deltas = report["max_abs_ndcg_delta"]
    lines += [
        "",
        f"Largest |NDCG@10 delta| against the embedded store: OpenSearch {deltas['opensearch']:.4f} "
        f"(every mode; target <= 0.002), Elasticsearch {deltas['elasticsearch']:.4f} (every mode; its node "
        "lacks analysis-common, so it indexes the embedded tokenizer's terms, `DDR_ELASTICSEARCH__ANALYZER=client`; "
        "Lucene keeps document lengths in one byte, bm25s exactly). OpenSearch hybrid here is the native "
        "`hybrid` query with the setup-made pipeline; embedded and Elasticsearch hybrid is `ddr_search.fusion`.",
        "",
        "## Hybrid query latency (k = 10, 100 candidates per sub-query; query vectors precomputed)",
        "",
        "| path | p50 ms | p95 ms |",
        "|---|---|---|",
    ]
    for name, p in report["latency"].items():
        lines.append(f"| {name} | {p['p50_ms']:.1f} | {p['p95_ms']:.1f} |")
    ingest = report["ingest"]
    workers = ingest["workers"]
    bulk = ingest["bulk_only_docs_per_s"]
    lines += [
        "",
        "## Ingest",
        "",
        "| what | documents/s |",
        "|---|---|",
        f"| passage encoding alone (this process) | {ingest['encode_only_docs_per_s']:.1f} |",
        f"| OpenSearch bulk alone (precomputed vectors, {ingest['documents']} docs, one client) | "
        f"{bulk['opensearch']:.0f} |",
        f"| Elasticsearch bulk alone (same) | {bulk['elasticsearch']:.0f} |",
        f"| end to end through {workers['worker_processes']} `ddr-search worker` processes into OpenSearch "
        f"({workers['documents']} docs, Redis) | {workers['docs_per_s']:.1f} |",
        "",
        "Encoding, not the engine, bounds ingest: either bulk path alone is far faster.",
    ]
    f = report["filters"]
    heading = f"## Metadata filters on the embedded store ({f['documents']:,} documents, {f['matching']} match)"
    lines += [
        "",
        heading,
        "",
        "| search | p50 ms |",
        "|---|---|",
        f"| dense top-10, no filter | {f['unfiltered_p50_ms']:.1f} |",
        f"| dense top-10, `lang = rare`, first use (SQLite evaluates the filter) | {f['first_filtered_ms']:.1f} |",
        f"| dense top-10, `lang = rare`, later queries (the row mask is cached per snapshot) | "
        f"{f['filtered_p50_ms']:.1f} |",
        "",
        f"Filtered recall@10 against an exact scan of the matching documents: {f['filtered_recall@10']:.3f}.",
    ]
    (REPORTS / "clusters.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
