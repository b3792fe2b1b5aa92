"""The embedded store at 100k and 1M documents: exact search (int8 coarse scan + exact rescoring) against
the approximate graph (faiss HNSW + exact rescoring), in one run on one store per size.

Documents: the real passages of SciFact and NFCorpus (test corpora, encoded by the shipped
store's passage encoder; read from the evaluation cache) plus synthetic ones up to the size (each a blend
of two real vectors, weights 0.5-1 and the rest, plus a little noise, renormalised; its text a slice of the
first source's words), so real queries meet the geometry of the real corpus, densely filled. Queries: the
real test questions of both sets.

- recall@10 of the graph against exact search, for every query, unfiltered and with a domain filter
  (the source set) and a rare metadata filter (~1% of the rows, scanned exactly);
- dense and hybrid p50 / p95 of the backend, and end to end through `DDRSearch.search` (query encoding by
  the default encoder with auto routing + hybrid search), exact vs graph, interleaved query by query;
- build: seconds to write the store, to build the snapshot (with and without the graph), resident
  memory and files on disk.

    python bench/ann.py [--sizes 100000 1000000] [--queries 300]

Writes bench/reports/ann.{json,md,png}. Needs ~6 GB of RAM and ~8 GB of disk at 1M.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import BEIR, REPORTS, machine

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SETS = ("scifact", "nfcorpus")
TARGET_P50_MS = 20.0
TARGET_RECALL = 0.99


def real_data(encoder) -> tuple[np.ndarray, list[str], list[str], list[str], list[str]]:
    """Real passage vectors, texts and set names; real test questions and their set names."""
    from ddr_search.data.beir import load_beir
    from ddr_search.training.passages import encode_cached
    from ddr_search.types import passage_text

    vectors, texts, sources, questions, question_sets = [], [], [], [], []
    for name in SETS:
        corpus, queries, qrels = load_beir(BEIR / name, "test")
        ids = list(corpus)
        set_texts = [passage_text(corpus[i].get("title", ""), corpus[i].get("text", "")) for i in ids]
        vectors.append(encode_cached(encoder, set_texts, ids=ids))
        texts += set_texts
        sources += [name] * len(ids)
        asked = [queries[q] for q in queries if q in qrels]
        questions += asked
        question_sets += [name] * len(asked)
    return np.concatenate(vectors).astype(np.float32), texts, sources, questions, question_sets


def grow(vectors: np.ndarray, texts: list[str], sources: list[str], size: int, seed: int = 0, version: str = ""):
    """Yield batches of IndexedDocuments: every real passage, then synthetic ones up to `size`, each a blend
    of two real passages (weights 0.5-1 / the rest) plus a little noise, renormalised: spread through the
    space the real corpus spans, as a larger corpus of the same domains would be, not stacked on copies."""
    from ddr_search.types import Document, IndexedDocument

    rng = np.random.default_rng(seed)
    words = [t.split() for t in texts]
    real = len(vectors)
    for start in range(0, size, 20_000):
        rows = np.arange(start, min(size, start + 20_000))
        first = np.where(rows < real, rows, rng.integers(0, real, len(rows)))
        second = rng.integers(0, real, len(rows))
        weight = np.where(rows < real, 1.0, rng.uniform(0.5, 1.0, len(rows)))[:, None].astype(np.float32)
        noise = rng.standard_normal((len(rows), vectors.shape[1])).astype(np.float32)
        noise *= np.where(rows < real, 0.0, 0.3)[:, None] / np.linalg.norm(noise, axis=1, keepdims=True)
        batch = weight * vectors[first] + (1 - weight) * vectors[second] + noise
        batch /= np.linalg.norm(batch, axis=1, keepdims=True)
        docs = []
        for row, source, vector in zip(rows, first, batch, strict=True):
            w = words[source]
            offset = int(rng.integers(0, max(1, len(w) - 30)))
            text = texts[source] if row < real else " ".join(w[offset : offset + 30])
            metadata = {"bucket": "rare" if row % 100 == 0 else "common"}
            docs.append(IndexedDocument(Document(f"d{row}", text, "", sources[source], metadata), vector, version))
        yield docs


def rss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def folder_mb(path: Path, pattern: str = "*") -> float:
    return sum(p.stat().st_size for p in path.rglob(pattern) if p.is_file()) / 1e6


def percentiles(samples: list[float]) -> dict[str, float]:
    return {"p50": round(float(np.percentile(samples, 50)), 2), "p95": round(float(np.percentile(samples, 95)), 2)}


def measure_size(size: int, data, questions, question_sets, query_vectors, encoder, work: Path, limit: int) -> dict:
    """Build one store of `size` documents and measure it (see the module docstring)."""
    from connectors.embedded import EmbeddedBackend
    from connectors.embedded import ann as graphs
    from connectors.embedded.ann import AnnConfig
    from ddr_search.client import DDRSearch
    from ddr_search.filters import parse_filters
    from ddr_search.settings import EmbeddedSettings, Settings

    home = work / f"home-{size}"
    store = EmbeddedBackend(home / "embedded", 384, ann=AnnConfig())
    started = time.perf_counter()
    for batch in grow(*data, size, version=encoder.version):
        store.upsert(batch)
    write_s = time.perf_counter() - started
    started = time.perf_counter()
    store.refresh()  # vectors, BM25 and the graph (at AnnConfig.min_rows or more)
    snapshot_s = time.perf_counter() - started
    snapshot = store.snapshot()
    if snapshot.ann is None:
        raise SystemExit(f"{size} documents: no graph was built (DDR_EMBEDDED__ANN_MIN_DOCUMENTS is larger)")
    generation = next((home / "embedded" / "cache").glob("gen-*"))
    graph_mb = folder_mb(generation, "ann*")
    graph_s = json.loads((generation / graphs.BUILD_INFO).read_text())["seconds"]
    exact = EmbeddedBackend(home / "embedded", 384, ann=AnnConfig(enabled=False))
    rss_loaded = rss_mb()

    def client(ann: str) -> DDRSearch:
        return DDRSearch(Settings(home=home, embedded=EmbeddedSettings(ann=ann)), encoder=encoder)

    ddr_exact, ddr_graph = client("off"), client("auto")
    exact.dense_search(query_vectors[0], 10)  # warm: the int8 coarse scorer of the exact path
    for ddr in (ddr_exact, ddr_graph):
        ddr.search(questions[0], k=10)
    rare = parse_filters({"bucket": "rare"})
    recalls: dict[str, list[float]] = {}
    timings: dict[str, list[float]] = {}

    def timed(name: str, call, *args, **kwargs):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        result = call(*args, **kwargs)
        timings.setdefault(name, []).append((time.perf_counter() - t0) * 1000)
        return result

    for i in range(min(limit, len(questions))):
        text, vector = questions[i], query_vectors[i]
        for label, kwargs in (
            ("unfiltered", {}),
            ("domain filter (source set)", {"domain": question_sets[i]}),
            ("metadata filter (1% of rows)", {"filters": rare}),
        ):
            got = timed(f"dense, graph, {label}", store.dense_search, vector, 10, **kwargs)
            want = timed(f"dense, exact, {label}", exact.dense_search, vector, 10, **kwargs)
            recalls.setdefault(label, []).append(len({d for d, _ in got} & {d for d, _ in want}) / max(1, len(want)))
        timed("end to end, exact (encode + hybrid)", ddr_exact.search, text, k=10)
        timed("end to end, graph (encode + hybrid)", ddr_graph.search, text, k=10)
    result = {
        "documents": size,
        "write_s": round(write_s, 1),
        "snapshot_build_s": round(snapshot_s, 1),
        "graph_build_s": graph_s,
        "graph_mb": round(graph_mb, 1),
        "store_mb": round(folder_mb(home / "embedded"), 1),
        "peak_rss_mb": round(rss_loaded, 0),
        "recall@10": {k: round(float(np.mean(v)), 4) for k, v in recalls.items()},
        "latency_ms": {k: percentiles(v) for k, v in timings.items()},
    }
    for closing in (store, exact, ddr_exact, ddr_graph):
        closing.close()
    shutil.rmtree(home, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--onnx", type=Path, help="an ONNX export for the query encoder (DDR_ONNX_DIR)")
    args = parser.parse_args()

    from connectors.embedded.ann import AnnConfig
    from ddr_search.factory import build_encoder
    from ddr_search.settings import Settings

    encoder = build_encoder(Settings(onnx_dir=args.onnx))
    vectors, texts, sources, questions, question_sets = real_data(encoder)
    order = np.random.default_rng(1).permutation(len(questions))  # both sets interleaved
    questions = [questions[i] for i in order]
    question_sets = [question_sets[i] for i in order]
    query_vectors = encoder.encode_queries(questions[: args.queries]).vectors
    work = args.work or Path(tempfile.mkdtemp(prefix="ddr-bench-ann-"))
    results = []
    for size in args.sizes:
        print(f"{size} documents ...", file=sys.stderr)
        results.append(
            measure_size(
                size, (vectors, texts, sources), questions, question_sets, query_vectors, encoder, work, args.queries
            )
        )
        print(json.dumps(results[-1], indent=2), file=sys.stderr)
    config = AnnConfig()
    report = {
        "benchmark": "ann",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine("faiss-cpu", "numpy", "torch", "bm25s"),
        "real_documents": len(vectors),
        "queries": min(args.queries, len(questions)),
        "encoder": type(encoder).__name__ + (f" ({encoder.precision})" if hasattr(encoder, "precision") else ""),
        "graph": {"m": config.m, "ef_construction": config.ef_construction, "ef_search": config.ef_search},
        "targets": {"p50_ms_end_to_end_at_1m": TARGET_P50_MS, "recall@10": TARGET_RECALL},
        "results": results,
    }
    REPORTS.mkdir(parents=True, exist_ok=True)
    (REPORTS / "ann.json").write_text(json.dumps(report, indent=2) + "\n")
    (REPORTS / "ann.md").write_text(markdown(report))
    plot(report)
    print(markdown(report))


def markdown(report: dict) -> str:
    g = report["graph"]
    lines = [
        "# Embedded search past one million documents: exact scan vs HNSW graph",
        "",
        f"{report['real_documents']} real passages (SciFact and NFCorpus test corpora, the shipped passage "
        "encoder) and blends of them up to each size; "
        f"{report['queries']} real test questions of both sets. Graph: faiss HNSW, M {g['m']}, "
        f"efConstruction {g['ef_construction']}, efSearch {g['ef_search']}; its candidates rescored exactly. "
        f"Exact: the int8 coarse scan + exact rescoring. Query encoder: {report['encoder']} (auto routing). "
        f"Machine: {report['machine']['cpu']}, {report['machine']['cpu_count']} cores (shared): compare rows of one "
        "run; absolute times are context.",
        "",
        "| documents | write s | snapshot build s (of which the graph) | graph MB | store MB | peak RSS MB |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        lines.append(
            f"| {r['documents']:,} | {r['write_s']} | {r['snapshot_build_s']} ({r['graph_build_s']}) | "
            f"{r['graph_mb']} | {r['store_mb']} | {r['peak_rss_mb']:.0f} |"
        )
    lines += [
        "",
        "## Recall@10 of the graph against exact search",
        "",
        "| documents | " + " | ".join(report["results"][0]["recall@10"]) + " |",
        "|---|" + "---|" * len(report["results"][0]["recall@10"]),
    ]
    for r in report["results"]:
        lines.append(f"| {r['documents']:,} | " + " | ".join(f"{v:.4f}" for v in r["recall@10"].values()) + " |")
    lines += ["", "## Latency (ms, p50 / p95)", "", "| documents | search | p50 | p95 |", "|---|---|---|---|"]
    for r in report["results"]:
        for name, t in r["latency_ms"].items():
            lines.append(f"| {r['documents']:,} | {name} | {t['p50']} | {t['p95']} |")
    largest = report["results"][-1]
    e2e = largest["latency_ms"]["end to end, graph (encode + hybrid)"]["p50"]
    worst_recall = min(largest["recall@10"].values())
    lines += [
        "",
        f"Targets at {largest['documents']:,} documents: end-to-end p50 <= {TARGET_P50_MS:.0f} ms: "
        f"{'met' if e2e <= TARGET_P50_MS else 'not met'} ({e2e} ms); recall@10 >= {TARGET_RECALL}: "
        f"{'met' if worst_recall >= TARGET_RECALL else 'not met'} (lowest {worst_recall:.4f}).",
        "",
        "![latency](ann.png)",
        "",
        "Reproduce: `ddr-search export --int8 --out DIR`, then `python bench/ann.py --onnx DIR` (about 25 minutes "
        "here; `--sizes 200000` alone takes a few).",
        "",
    ]
    return "\n".join(lines)


def plot(report: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in report["results"][0]["latency_ms"] if n.startswith("dense") and "unfiltered" in n]
    names += [n for n in report["results"][0]["latency_ms"] if n.startswith("end to end")]
    sizes = [r["documents"] for r in report["results"]]
    fig, ax = plt.subplots(figsize=(7, 4))
    for name in names:
        ax.plot(sizes, [r["latency_ms"][name]["p50"] for r in report["results"]], marker="o", label=name)
    ax.axhline(TARGET_P50_MS, color="grey", linestyle=":", label="target (end to end, 1M)")
    ax.set_xscale("log")
    ax.set_xlabel("documents")
    ax.set_ylabel("p50 ms")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(REPORTS / "ann.png", dpi=120)


if __name__ == "__main__":
    main()
