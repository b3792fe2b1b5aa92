"""Query latency of the embedded backend: hybrid p50/p95 (query encoding included) and BM25 queries/s.

Two corpus sizes, the same 300 SciFact test queries:
  scifact  the real SciFact corpus (5,183 documents) with real passage vectors (the frozen encoder,
           read from the shared passage cache, .ddr/cache, or encoded once), plus NDCG@10 as a check
           that the embedded path ranks as docs/architecture.md section 6 measured (hybrid min-max 0.5/0.5: 0.728);
  100k     100,000 synthetic documents: random unit vectors and text sampled from SciFact's word
           frequencies (so BM25 postings have realistic lengths). Latency only.
Every query runs alone through ddr_search.search.search (1 torch thread, as the client does), and each
stage is also timed on its own. Also measured at 100k: the dense kernel (numpy float32) against torch
float16 and int8 kernels, to size the next step toward the 20 ms target.

    python bench/search.py [--part scifact|100k|all] [--queries 300]

Writes bench/reports/search.{json,md,png}; a --part run updates its own section of the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from _common import SHARED_DATA, machine

REPO = Path(__file__).resolve().parents[1]

SCIFACT = SHARED_DATA / "beir" / "scifact"
REPORTS = REPO / "bench" / "reports"
WORK = REPO / ".ddr" / "bench-search"
SYNTHETIC_SIZE = 100_000
DIMENSION = 384
NAMES = ("scifact", "100k", "scifact_onnx_int8", "100k_onnx_int8")  # report sections: corpus [+ encoder]


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    a = np.asarray(samples_ms)
    return {"p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)), "mean": float(a.mean())}


def timed(fn, items):  # type: ignore[no-untyped-def]
    out, ms = [], []
    for item in items:
        start = time.perf_counter()
        out.append(fn(item))
        ms.append((time.perf_counter() - start) * 1000)
    return out, ms


def measure(backend, encoder, queries: dict[str, str], settings) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Hybrid end to end, then each stage alone, over the same queries (after a warm-up)."""
    import torch

    from ddr_search.search import search

    torch.set_num_threads(1)
    texts = list(queries.values())
    backend.refresh()
    for text in texts[:5]:
        search(text, backend=backend, encoder=encoder, settings=settings, k=10)
    hits, hybrid_ms = timed(lambda t: search(t, backend=backend, encoder=encoder, settings=settings, k=10), texts)
    encoded, encode_ms = timed(lambda t: encoder.encode_queries([t]).vectors[0], texts)
    _, dense_ms = timed(lambda v: backend.dense_search(v, settings.candidates), encoded)
    _, bm25_ms = timed(lambda t: backend.bm25_search(t, settings.candidates), texts)
    start = time.perf_counter()
    for text in texts:
        backend.bm25_search(text, 10)
    bm25_qps = len(texts) / (time.perf_counter() - start)
    run = {qid: {h.id: h.score for h in result} for qid, result in zip(queries, hits, strict=True)}
    return {
        "queries": len(texts),
        "hybrid_ms": percentiles(hybrid_ms),
        "stages_ms": {
            "encode_query": percentiles(encode_ms),
            "dense_top100": percentiles(dense_ms),
            "bm25_top100": percentiles(bm25_ms),
        },
        "bm25_queries_per_s_top10": bm25_qps,
        "samples_hybrid_ms": hybrid_ms,
        "_run": run,
    }


def load_queries(limit: int) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    from ddr_search.data.beir import load_beir

    _corpus, queries, qrels = load_beir(SCIFACT, "test")
    chosen = dict(list(queries.items())[:limit])
    return chosen, {q: qrels[q] for q in chosen}


def load_encoder(onnx_dir: Path | None):  # type: ignore[no-untyped-def]
    """The frozen torch encoder, or an ONNX Runtime export of it (int8 when exported), 1 thread a query."""
    if onnx_dir is None:
        from ddr_search.model.encoder import TorchEncoder

        return TorchEncoder.load(None)
    from onnx_export.runtime import OrtEncoder

    return OrtEncoder.load(onnx_dir, query_threads=1)


def part_scifact(limit: int, vectors_file: Path | None = None, onnx_dir: Path | None = None) -> dict[str, object]:
    import ir_measures
    from ir_measures import nDCG

    from connectors.embedded import EmbeddedBackend
    from ddr_search.model.encoder import passage_text
    from ddr_search.settings import SearchSettings
    from ddr_search.training.corpus import read_corpus
    from ddr_search.training.passages import encode_cached
    from ddr_search.types import Document, IndexedDocument

    encoder = load_encoder(onnx_dir)
    docs = read_corpus(SCIFACT / "corpus.jsonl")
    texts = [passage_text(d.title, d.text) for d in docs]
    started = time.perf_counter()
    if vectors_file is not None:  # precomputed passage vectors: check a few rows against the encoder
        vectors = np.load(vectors_file).astype(np.float32)
        rows = np.random.default_rng(0).choice(len(texts), 4, replace=False)
        fresh = encoder.encode_passages([texts[i] for i in rows])
        close = (  # int8 passage encoders move vectors a little: compare by cosine there
            np.abs(vectors[rows] - fresh).max() <= 1e-4
            if onnx_dir is None
            else (vectors[rows] * fresh).sum(axis=1).min() >= 0.95
        )
        if vectors.shape != (len(texts), encoder.dimension) or not close:
            raise SystemExit(f"{vectors_file} does not hold this encoder's SciFact passage vectors")
    else:
        vectors = encode_cached(encoder, texts, REPO / ".ddr" / "cache", show_progress=True)  # the shared cache
    encode_s = time.perf_counter() - started
    store = WORK / "scifact"
    backend = EmbeddedBackend(store)
    if backend.count() != len(docs) or set(backend.describe()["encoder_versions"]) != {encoder.version}:
        backend.delete([d.id for d in docs])
        started = time.perf_counter()
        for i in range(0, len(docs), 1000):
            backend.upsert(
                [
                    IndexedDocument(Document(id=d.id, title=d.title, text=d.text), v, encoder.version)
                    for d, v in zip(docs[i : i + 1000], vectors[i : i + 1000], strict=True)
                ]
            )
        write_s = time.perf_counter() - started
    else:
        write_s = None
    if onnx_dir is None:  # time a real build (what the first search waits for) once, in the torch run
        shutil.rmtree(store / "cache", ignore_errors=True)
    started = time.perf_counter()
    backend.refresh()
    snapshot_s = time.perf_counter() - started
    queries, qrels = load_queries(limit)
    result = measure(backend, encoder, queries, SearchSettings())
    run = result.pop("_run")
    qrels_list = [ir_measures.Qrel(q, d, r) for q, ds in qrels.items() for d, r in ds.items()]
    run_list = [ir_measures.ScoredDoc(q, d, s) for q, ds in run.items() for d, s in ds.items()]
    ndcg = ir_measures.calc_aggregate([nDCG @ 10], qrels_list, run_list)[nDCG @ 10]
    return {
        "documents": len(docs),
        "vectors": "real (frozen all-MiniLM-L6-v2, general module none)",
        "passage_encoding_s": round(encode_s, 1),
        "store_write_s": write_s,
        "snapshot_build_s": snapshot_s,
        "ndcg@10_hybrid_min_max_0.5": ndcg,
        **result,
    }


def synthetic_texts(n: int, seed: int = 0) -> list[str]:
    """Text with SciFact's word frequencies and document lengths drawn from 30-120 words."""
    counts: Counter[str] = Counter()
    with (SCIFACT / "corpus.jsonl").open() as f:
        for line in f:
            record = json.loads(line)
            counts.update(re.findall(r"[a-z]{2,}", (record["title"] + " " + record["text"]).lower()))
    words = np.array(list(counts))
    p = np.array(list(counts.values()), dtype=np.float64)
    p /= p.sum()
    rng = np.random.default_rng(seed)
    lengths = rng.integers(30, 121, size=n)
    flat = rng.choice(len(words), size=int(lengths.sum()), p=p)
    out, start = [], 0
    for length in lengths:
        out.append(" ".join(words[flat[start : start + length]]))
        start += length
    return out


def part_synthetic(limit: int, onnx_dir: Path | None = None) -> dict[str, object]:
    from connectors.embedded import EmbeddedBackend
    from ddr_search.settings import SearchSettings
    from ddr_search.types import Document, IndexedDocument

    encoder = load_encoder(onnx_dir)
    store = WORK / "synthetic-100k"
    backend = EmbeddedBackend(store)
    write_s = None
    if backend.count() != SYNTHETIC_SIZE:
        texts = synthetic_texts(SYNTHETIC_SIZE)
        rng = np.random.default_rng(1)
        started = time.perf_counter()
        for i in range(0, SYNTHETIC_SIZE, 5000):
            block = rng.standard_normal((min(5000, SYNTHETIC_SIZE - i), DIMENSION)).astype(np.float32)
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            backend.upsert(
                [
                    IndexedDocument(Document(id=f"s{i + j}", text=texts[i + j]), block[j], encoder.version)
                    for j in range(len(block))
                ]
            )
        write_s = time.perf_counter() - started
    if onnx_dir is None:  # time a real build (what the first search waits for) once, in the torch run
        shutil.rmtree(store / "cache", ignore_errors=True)
    started = time.perf_counter()
    backend.refresh()
    snapshot_s = time.perf_counter() - started
    started = time.perf_counter()
    EmbeddedBackend(store).snapshot()  # a second process-like instance loading the built snapshot
    load_s = time.perf_counter() - started
    queries, _ = load_queries(limit)
    result = measure(backend, encoder, queries, SearchSettings())
    result.pop("_run")
    kernels = dense_kernels(np.asarray(backend.snapshot().vectors), encoder.encode_queries(["a query"]).vectors[0])
    agreement = coarse_agreement(backend, encoder, list(queries.values()))
    return {
        "documents": SYNTHETIC_SIZE,
        "vectors": "synthetic (random unit vectors; text sampled from SciFact word frequencies)",
        "store_write_s": write_s,
        "snapshot_build_s": snapshot_s,
        "snapshot_load_s": load_s,
        **result,
        "dense_kernels_ms": kernels,
        "coarse_top100_identical_to_exact": agreement,
    }


def coarse_agreement(backend, encoder, texts: list[str]) -> float:  # type: ignore[no-untyped-def]
    """Fraction of queries whose coarse + rescored top 100 equals exact float32 search, ids and order."""
    from connectors.embedded import snapshot

    vectors = encoder.encode_queries(texts).vectors
    fast = [backend.dense_search(v, 100) for v in vectors]
    saved = snapshot.COARSE_FROM
    snapshot.COARSE_FROM = 10**12
    try:
        exact = [backend.dense_search(v, 100) for v in vectors]
    finally:
        snapshot.COARSE_FROM = saved
    same = [[i for i, _ in a] == [i for i, _ in b] for a, b in zip(fast, exact, strict=True)]
    return sum(same) / len(same)


def dense_kernels(matrix: np.ndarray, query: np.ndarray, repeats: int = 30) -> dict[str, float]:
    """One query against the whole matrix, single thread: what each storage type would cost."""
    import torch

    torch.set_num_threads(1)

    def clock(fn) -> float:  # type: ignore[no-untyped-def]
        fn()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - start) / repeats * 1000

    from connectors.embedded.snapshot import _matvec

    out = {
        "numpy_float32_matvec, BLAS (matrix @ q)": clock(lambda: matrix @ query),
        "numpy_float32_einsum (in use below 20k docs)": clock(lambda: _matvec(matrix, query)),
    }
    half = torch.from_numpy(matrix.astype(np.float16))
    q16 = torch.from_numpy(query).to(torch.float16)
    out["torch_float16_matvec (fallback without the int8 kernel)"] = clock(lambda: half @ q16)
    scale = np.abs(matrix).max(axis=1) / 127
    int8 = torch.from_numpy(np.round(matrix / scale[:, None]).astype(np.int8))
    scales = torch.from_numpy(scale.astype(np.float32)).to(torch.bfloat16)
    q = torch.from_numpy(query)[None].to(torch.bfloat16)
    try:
        out["torch_int8_weight_pack_mm (in use from 20k docs, + exact rescoring)"] = clock(
            lambda: torch._weight_int8pack_mm(q, int8, scales)
        )
    except (RuntimeError, AttributeError) as e:  # not every torch build has the CPU kernel
        out["torch_int8_weight_pack_mm (in use from 20k docs, + exact rescoring)"] = float("nan")
        print(f"int8 kernel unavailable: {e}", file=sys.stderr)
    return out


def write_reports(report: dict[str, object]) -> None:
    REPORTS.mkdir(parents=True, exist_ok=True)
    (REPORTS / "search.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# Embedded search latency (bench/search.py)",
        "",
        f"Machine: {report['machine']['cpu_count']} CPUs, Python {report['machine']['python']}, "
        f"torch {report['machine']['torch']}, bm25s {report['machine']['bm25s']}. "
        "Single torch thread per query. Each query runs alone, query encoding included.",
        "",
        "**Measured on a shared machine**: other engineers' jobs ran on the same 2 cores (the load average "
        "at the start of each run is in the table; 2.0 = both cores busy), which slows every stage, most of "
        "all query encoding. The runs with load near 1-3 are the representative ones; rerun "
        "`python bench/search.py` (and with `--onnx DIR` after `ddr-search export --int8 --out DIR`) on an "
        "idle machine to compare.",
        "",
        "| corpus | documents | hybrid p50 ms | hybrid p95 ms | encode p50 | dense p50 | BM25 p50 | "
        "BM25 q/s (top 10) | load avg at start |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in NAMES:
        part = report.get(name)
        if not part:
            continue
        stages = part["stages_ms"]
        lines.append(
            f"| {name} | {part['documents']:,} | {part['hybrid_ms']['p50']:.1f} | {part['hybrid_ms']['p95']:.1f} | "
            f"{stages['encode_query']['p50']:.1f} | {stages['dense_top100']['p50']:.1f} | "
            f"{stages['bm25_top100']['p50']:.1f} | {part['bm25_queries_per_s_top10']:.0f} | "
            f"{part['load_average_at_start'][0]:.1f} |"
        )
    if report.get("scifact_onnx_int8"):
        lines += [
            "",
            f"SciFact NDCG@10 with the int8 ONNX query encoder: "
            f"{report['scifact_onnx_int8']['ndcg@10_hybrid_min_max_0.5']:.3f}.",
        ]
    if report.get("scifact"):
        lines += [
            "",
            "SciFact NDCG@10 of the hybrid run with the torch fp32 query encoder: "
            f"{report['scifact']['ndcg@10_hybrid_min_max_0.5']:.3f} "
            "(docs/architecture.md section 6: 0.728).",
        ]
    if report.get("100k"):
        part = report["100k"]
        lines += [
            "",
            "Dense kernel at 100k documents, one query, single thread (ms):",
            "",
            "| kernel | ms |",
            "|---|---|",
        ]
        lines += [f"| {k} | {v:.1f} |" for k, v in part["dense_kernels_ms"].items()]
        lines += (
            []
            if "coarse_top100_identical_to_exact" not in part
            else [
                "",
                f"int8 coarse scoring + exact rescoring (the path in use) returned the same top 100 (ids and order) "
                f"as exact float32 search for "
                f"{100 * part['coarse_top100_identical_to_exact']:.0f}% of the queries.",
            ]
        )
        lines += [
            "",
            f"100k store: snapshot build {part['snapshot_build_s']:.1f} s, load {part['snapshot_load_s']:.2f} s.",
        ]
    lines += ["", "![latency](search.png)", ""]
    (REPORTS / "search.md").write_text("\n".join(lines))
    plot(report)


def plot(report: dict[str, object]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = [(n, report[n]) for n in NAMES if report.get(n)]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, part in parts:
        samples = np.sort(part["samples_hybrid_ms"])
        left.plot(samples, np.linspace(0, 1, len(samples)), label=f"{name} ({part['documents']:,} docs)")
    left.axvline(20, color="grey", linestyle="--", label="20 ms target")
    left.set_xlabel("hybrid query latency, ms (encoding included)")
    left.set_xlim(0, min(100, max(max(p["samples_hybrid_ms"]) for _, p in parts)))
    left.set_ylabel("fraction of queries")
    left.set_title("Latency distribution (CDF)")
    left.legend()
    stages = ["encode_query", "dense_top100", "bm25_top100"]
    x = np.arange(len(parts))
    bottom = np.zeros(len(parts))
    for stage in stages:
        values = np.array([p["stages_ms"][stage]["p50"] for _, p in parts])
        right.bar(x, values, bottom=bottom, label=stage)
        bottom += values
    rest = np.array([max(p["hybrid_ms"]["p50"] - b, 0) for (_, p), b in zip(parts, bottom, strict=True)])
    right.bar(x, rest, bottom=bottom, label="fusion + fetch + overhead")
    right.set_xticks(x, [n.replace("_onnx_int8", "\nONNX int8") for n, _ in parts])
    right.set_ylabel("median ms")
    right.set_title("Where the median hybrid query spends its time")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(REPORTS / "search.png", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["scifact", "100k", "all", "none"], default="all")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--onnx", type=Path, help="an ONNX export folder: measure its (int8) query encoder")
    parser.add_argument("--scifact-vectors", type=Path, help="a .npy of SciFact passage vectors (rows in corpus order)")
    args = parser.parse_args()
    path = REPORTS / "search.json"
    report = json.loads(path.read_text()) if path.exists() else {}
    report["machine"] = machine("torch", "numpy", "bm25s")
    suffix = "" if args.onnx is None else "_onnx_int8"
    parts = (
        ("scifact", lambda n: part_scifact(n, args.scifact_vectors, args.onnx)),
        ("100k", lambda n: part_synthetic(n, args.onnx)),
    )
    if args.part == "none":  # only re-render the report from the JSON
        write_reports(report)
    for base, fn in parts:
        name = base + suffix
        if args.part in (base, "all"):
            load = os.getloadavg()
            result = fn(args.queries)
            result["load_average_at_start"] = load
            result["query_encoder"] = "torch fp32" if args.onnx is None else "onnx int8"
            report[name] = result
            print(
                f"{name}: {result['documents']:,} docs  hybrid p50 {result['hybrid_ms']['p50']:.1f} ms  "
                f"p95 {result['hybrid_ms']['p95']:.1f} ms  encode p50 "
                f"{result['stages_ms']['encode_query']['p50']:.1f}  dense p50 "
                f"{result['stages_ms']['dense_top100']['p50']:.1f}  bm25 p50 "
                f"{result['stages_ms']['bm25_top100']['p50']:.1f}  bm25 {result['bm25_queries_per_s_top10']:.0f} q/s",
                flush=True,
            )
            write_reports(report)


if __name__ == "__main__":
    main()
