"""Does a faster passage path rank as torch fp32 does? Dense NDCG@10 / R@100 (ir-measures) of the shipped
store on SciFact and NFCorpus test queries, with the corpus encoded by torch fp32, torch bf16 (autocast, the
default on AMX CPUs), the same compiled by torch.compile (the default once a process is known to encode
8,192 passages), ONNX fp32 and ONNX int8, and the queries always by torch fp32 (so only the passage
side changes). Target of issue 13: a passage path may replace torch fp32 by default only where NDCG@10 stays
within 0.002.

    python bench/precision.py [--export DIR] [--sets scifact nfcorpus] [--paths "torch bf16" "ONNX int8" ...]

Every path encodes the corpus here, in one run on both cores, so passages/s compare across rows (the
machine is shared: ratios, not absolute numbers). Without --export the shipped store is exported (fp32 +
int8) into a temporary folder when an ONNX path is asked for. Writes bench/reports/precision.{json,md,png}.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import BEIR, REPORTS, machine, write_report

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TOLERANCE = 0.002
REFERENCE = "torch fp32"
COMPILED = "torch bf16 compiled"
PATHS = (REFERENCE, "torch bf16", COMPILED, "ONNX fp32", "ONNX int8")


def evaluate(passages: np.ndarray, queries: np.ndarray, doc_ids: list[str], qids: list[str], qrels) -> dict:
    import ir_measures
    from ir_measures import R, nDCG

    scores = queries @ passages.T
    top = np.argsort(-scores, axis=1)[:, :100]
    run = [ir_measures.ScoredDoc(q, doc_ids[j], float(scores[i, j])) for i, q in enumerate(qids) for j in top[i]]
    rows = [ir_measures.Qrel(q, d, r) for q, ds in qrels.items() for d, r in ds.items()]
    result = ir_measures.calc_aggregate([nDCG @ 10, R @ 100], rows, run)
    return {"ndcg@10": round(result[nDCG @ 10], 4), "recall@100": round(result[R @ 100], 4)}


def passage_encoders(paths: list[str], export_dir: Path | None):  # type: ignore[no-untyped-def]
    """name -> encoder for each asked path (the ONNX ones from `export_dir`, exported here when None)."""
    from ddr_search.factory import default_module_store
    from ddr_search.model.encoder import TorchEncoder
    from ddr_search.settings import Settings
    from onnx_export.export import export_store
    from onnx_export.runtime import OrtEncoder

    store = default_module_store(Settings())
    encoders = {}
    for path in paths:
        kind, precision = path.split()[:2]
        if kind == "torch":
            compiled = "on" if path == COMPILED else "off"  # eager rows stay eager past COMPILE_AFTER passages
            encoders[path] = TorchEncoder.load(store, passage_precision=precision, passage_compile=compiled)
            continue
        if export_dir is None:
            export_dir = Path(tempfile.mkdtemp(prefix="ddr-bench-precision-")) / "onnx"
            export_store(store, export_dir, int8=True, progress=lambda m: print(f"  {m}", file=sys.stderr))
        encoders[path] = OrtEncoder.load(export_dir, store=store, precision=precision, passage_threads=0)
    return store, encoders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export", type=Path)
    parser.add_argument("--sets", nargs="+", default=["scifact", "nfcorpus"])
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    args = parser.parse_args()

    import torch

    from ddr_search.data.beir import load_beir
    from ddr_search.types import RoutingMode, passage_text

    torch.set_num_threads(os.cpu_count() or 1)
    paths = [REFERENCE] + [p for p in args.paths if p != REFERENCE]
    store, encoders = passage_encoders(paths, args.export)
    report: dict[str, object] = {"sets": {}}
    if COMPILED in encoders:  # compiled once per process, before any timing: the report gives its seconds
        started = time.perf_counter()
        encoders[COMPILED].encode_passages(["a warm-up passage"] * 32)
        report["compile_s"] = round(time.perf_counter() - started, 1)
    for name in args.sets:
        corpus, queries, qrels = load_beir(BEIR / name, "test")
        doc_ids = list(corpus)
        texts = [passage_text(corpus[d].get("title", ""), corpus[d].get("text", "")) for d in doc_ids]
        qids = [q for q in queries if q in qrels]
        query_texts = [queries[q] for q in qids]
        query_vectors = encoders[REFERENCE].encode_queries(query_texts, routing=RoutingMode.NONE).vectors
        rows: dict[str, dict] = {}
        reference = None
        for path, encoder in encoders.items():
            started = time.perf_counter()
            vectors = encoder.encode_passages(texts)
            seconds = time.perf_counter() - started
            reference = vectors if reference is None else reference
            rows[path] = {
                **evaluate(vectors, query_vectors, doc_ids, qids, qrels),
                "passages_per_s": round(len(texts) / seconds, 1),
                "min_cosine_vs_fp32": float((vectors * reference).sum(axis=1).min()),
            }
            print(f"{name} {path}: {rows[path]}", file=sys.stderr)
        for row in rows.values():
            row["ndcg_delta"] = round(row["ndcg@10"] - rows[REFERENCE]["ndcg@10"], 4)
            row["speed_vs_fp32"] = round(row["passages_per_s"] / rows[REFERENCE]["passages_per_s"], 2)
        report["sets"][name] = {"documents": len(texts), "queries": len(qids), "rows": rows}
    worst = {p: max(abs(s["rows"][p]["ndcg_delta"]) for s in report["sets"].values()) for p in paths[1:]}
    report.update(
        machine=machine("torch", "onnxruntime"),
        store=str(store),
        tolerance=TOLERANCE,
        worst_abs_ndcg_delta=worst,
        parity={p: worst[p] <= TOLERANCE for p in worst},
    )
    write_report(REPORTS, "precision", report, markdown(report), lambda png: plot(report, png))


def markdown(report: dict) -> str:
    lines = [
        "# Passage encoding precision: ranking and speed (dense, test splits)",
        "",
        "The corpus encoded by each passage path of the shipped store (passages use the general module alone); "
        "queries always by torch fp32. NDCG@10 / R@100 by ir-measures; passages/s on both cores in one run. "
        f"Target: |delta NDCG@10| <= {report['tolerance']} for a passage path to replace torch fp32 by default.",
        "",
        "| set | passages encoded by | NDCG@10 | delta | R@100 | min cosine vs fp32 | passages/s | x torch fp32 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, data in report["sets"].items():
        for system, row in data["rows"].items():
            lines.append(
                f"| {name} ({data['documents']} docs, {data['queries']} queries) | {system} | {row['ndcg@10']:.4f} | "
                f"{row['ndcg_delta']:+.4f} | {row['recall@100']:.4f} | {row['min_cosine_vs_fp32']:.5f} | "
                f"{row['passages_per_s']} | {row['speed_vs_fp32']:.2f}x |"
            )
    lines += [
        "",
        "Largest |delta NDCG@10|: "
        + ", ".join(
            f"{p} {d:.4f} ({'parity' if report['parity'][p] else 'no parity'})"
            for p, d in report["worst_abs_ndcg_delta"].items()
        ),
        "",
        *(
            [
                f"{COMPILED}: torch.compile (inductor, frozen weights) of the bf16 passage encoder; compiling took "
                f"{report['compile_s']} s once per process, before the timings above (the default compiles once "
                "a process is known to encode 8,192 passages: ddr_search/model/compiled.py).",
                "",
            ]
            if "compile_s" in report
            else []
        ),
        f"Machine: {report['machine']['cpu']}, {report['machine']['cpu_count']} cores (shared). "
        "Reproduce: `python bench/precision.py`.",
        "",
    ]
    return "\n".join(lines)


def plot(report: dict, target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(report["sets"])
    paths = list(next(iter(report["sets"].values()))["rows"])
    fig, (speed, delta) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(sets)
    for i, name in enumerate(sets):
        rows = report["sets"][name]["rows"]
        xs = np.arange(len(paths)) + i * width
        speed.bar(xs, [rows[p]["passages_per_s"] for p in paths], width, label=name)
        delta.bar(xs, [rows[p]["ndcg_delta"] for p in paths], width, label=name)
    for axis in (speed, delta):
        axis.set_xticks(np.arange(len(paths)) + width * (len(sets) - 1) / 2, paths, rotation=15)
        axis.legend()
    speed.set_ylabel("passages/s (2 cores)")
    delta.set_ylabel("NDCG@10 - torch fp32")
    for bound in (report["tolerance"], -report["tolerance"]):
        delta.axhline(bound, color="grey", linestyle="--", linewidth=1)
    fig.suptitle("Passage paths: speed and ranking parity")
    fig.tight_layout()
    fig.savefig(target, dpi=110)


if __name__ == "__main__":
    main()
