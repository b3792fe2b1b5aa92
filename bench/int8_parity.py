"""Does an int8 passage encoder rank as the torch one does? Dense NDCG@10 / R@100 (ir-measures) of the
shipped store on SciFact and NFCorpus test queries, with the corpus encoded by torch fp32, ONNX fp32 and
ONNX int8, and the queries always by torch (so only the passage side changes). Target of issue 13: a
passage path may replace torch by default only where NDCG@10 stays within 0.002.

    python bench/int8_parity.py [--export DIR] [--sets scifact nfcorpus]

Without --export it exports the shipped store (fp32 + int8) into a temporary folder. The torch passage
vectors come from the evaluation cache ($DDR_HOME/cache); the ONNX ones are encoded here on both cores.
Writes bench/reports/int8_parity.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import BEIR, REPORTS, machine

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TOLERANCE = 0.002


def evaluate(passages: np.ndarray, queries: np.ndarray, doc_ids: list[str], qids: list[str], qrels) -> dict:
    import ir_measures
    from ir_measures import R, nDCG

    scores = queries @ passages.T
    top = np.argsort(-scores, axis=1)[:, :100]
    run = [ir_measures.ScoredDoc(q, doc_ids[j], float(scores[i, j])) for i, q in enumerate(qids) for j in top[i]]
    rows = [ir_measures.Qrel(q, d, r) for q, ds in qrels.items() for d, r in ds.items()]
    result = ir_measures.calc_aggregate([nDCG @ 10, R @ 100], rows, run)
    return {"ndcg@10": round(result[nDCG @ 10], 4), "recall@100": round(result[R @ 100], 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export", type=Path)
    parser.add_argument("--sets", nargs="+", default=["scifact", "nfcorpus"])
    args = parser.parse_args()

    from ddr_search.data.beir import load_beir
    from ddr_search.factory import default_module_store
    from ddr_search.model.encoder import TorchEncoder
    from ddr_search.settings import Settings
    from ddr_search.training.passages import encode_cached
    from ddr_search.types import RoutingMode, passage_text
    from onnx_export.export import export_store
    from onnx_export.runtime import OrtEncoder

    store = default_module_store(Settings())
    export_dir = args.export
    if export_dir is None:
        export_dir = Path(tempfile.mkdtemp(prefix="ddr-bench-int8-")) / "onnx"
        export_store(store, export_dir, int8=True, progress=lambda m: print(f"  {m}", file=sys.stderr))
    torch_encoder = TorchEncoder.load(store)
    onnx = {p: OrtEncoder.load(export_dir, store=store, precision=p, passage_threads=0) for p in ("fp32", "int8")}
    report: dict[str, object] = {"sets": {}}
    for name in args.sets:
        corpus, queries, qrels = load_beir(BEIR / name, "test")
        doc_ids = list(corpus)
        texts = [passage_text(corpus[d].get("title", ""), corpus[d].get("text", "")) for d in doc_ids]
        qids = [q for q in queries if q in qrels]
        query_vectors = torch_encoder.encode_queries([queries[q] for q in qids], routing=RoutingMode.NONE).vectors
        rows: dict[str, dict] = {}
        passages = encode_cached(torch_encoder, texts, ids=doc_ids)
        rows["torch fp32"] = evaluate(passages, query_vectors, doc_ids, qids, qrels)
        for precision, encoder in onnx.items():
            started = time.perf_counter()
            vectors = encoder.encode_passages(texts)
            seconds = time.perf_counter() - started
            rows[f"ONNX {precision}"] = {
                **evaluate(vectors, query_vectors, doc_ids, qids, qrels),
                "passages_per_s_2_threads": round(len(texts) / seconds, 1),
                "max_abs_vs_torch": float(np.abs(vectors - passages).max()),
                "min_cosine_vs_torch": float((vectors * passages).sum(axis=1).min()),
            }
            print(f"{name} {precision}: {rows[f'ONNX {precision}']}", file=sys.stderr)
        for row in rows.values():
            row["ndcg_delta"] = round(row["ndcg@10"] - rows["torch fp32"]["ndcg@10"], 4)
        report["sets"][name] = {"documents": len(texts), "queries": len(qids), "rows": rows}
    worst = {p: max(abs(s["rows"][f"ONNX {p}"]["ndcg_delta"]) for s in report["sets"].values()) for p in onnx}
    report.update(
        machine=machine("torch", "onnxruntime"),
        store=str(store),
        tolerance=TOLERANCE,
        worst_abs_ndcg_delta=worst,
        parity={p: worst[p] <= TOLERANCE for p in onnx},
    )
    REPORTS.mkdir(parents=True, exist_ok=True)
    (REPORTS / "int8_parity.json").write_text(json.dumps(report, indent=2) + "\n")
    (REPORTS / "int8_parity.md").write_text(markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    lines = [
        "# Passage encoding precision and ranking (dense, test splits)",
        "",
        "The corpus encoded by torch fp32, ONNX fp32 and ONNX int8 (the shipped store; passages use the general "
        "module alone); queries always by torch. NDCG@10 / R@100 by ir-measures. Target: |delta NDCG@10| <= "
        f"{report['tolerance']} for a passage path to replace torch by default.",
        "",
        "| set | passages encoded by | NDCG@10 | delta | R@100 | min cosine vs torch | passages/s (2 threads) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, data in report["sets"].items():
        for system, row in data["rows"].items():
            lines.append(
                f"| {name} ({data['documents']} docs, {data['queries']} queries) | {system} | {row['ndcg@10']:.4f} | "
                f"{row['ndcg_delta']:+.4f} | {row['recall@100']:.4f} | {row.get('min_cosine_vs_torch', 1.0):.4f} | "
                f"{row.get('passages_per_s_2_threads', '')} |"
            )
    lines += [
        "",
        "Largest |delta NDCG@10|: "
        + ", ".join(
            f"ONNX {p} {d:.4f} ({'parity' if report['parity'][p] else 'no parity'})"
            for p, d in report["worst_abs_ndcg_delta"].items()
        ),
        "",
        f"Machine: {report['machine']['cpu']}, {report['machine']['cpu_count']} cores (shared). "
        "Reproduce: `python bench/int8_parity.py`.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
