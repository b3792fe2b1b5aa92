"""Encoding speed: torch fp32 (the baseline a user would otherwise run) vs torch bf16 (the default passage path
on AMX CPUs, docs/performance.md) and ONNX Runtime fp32 and int8.

In one run, through each encoder's public interface (tokenisation included):
- passages/s: batches of 32 real SciFact passages of exactly 256 tokens (encode_passages);
- single-query latency p50/p95: one 16-token query at a time (encode_queries, top-k routing: router
  + weighted query encoder, the default query path).
Every encoder runs on one thread. Systems are interleaved round by round, so load from other
processes on a shared machine hits all three alike; passages/s is the median over rounds.

    python bench/encode.py [--modules STORE] [--export DIR] [--rounds 5] [--queries 40]

Without --modules it builds a store like the product's default (prefix length 128, a general and one
domain module with non-zero gates; speed does not depend on trained values). Without --export it
exports to a temporary folder (never into the repository). Target: int8 passages/s >= 1.8x torch.
Writes bench/reports/encode.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import BEIR, machine

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
REPORTS = REPO / "bench" / "reports"
SHARED = BEIR / "scifact"
PASSAGE_TOKENS = 256
QUERY_TOKENS = 16
BATCH = 32
TARGET = 1.8
SYSTEMS = ("torch fp32", "torch bf16", "ORT fp32", "ORT int8")


def build_store(path: Path, prefix_length: int) -> Path:
    import torch

    from ddr_search.model.backbone import load_backbone
    from ddr_search.model.ddr import DDRModel
    from ddr_search.model.store import save_store

    model = DDRModel(load_backbone(), prefix_length=prefix_length)
    general = model.add_general()
    domain = model.add_domain_module("legal")
    with torch.no_grad():
        general.gates.fill_(0.5)
        domain.keys.copy_(general.keys)
        domain.values.copy_(general.values)
        domain.gates.fill_(0.3)
    save_store(model, path)
    return path


def texts(tokenizer, count: int) -> tuple[list[str], str, str]:
    """`count` real passages of >= 256 tokens (truncated to 256 by the encoders) and a 16-token query."""
    passages, query, source = [], None, "synthetic"
    if (SHARED / "corpus.jsonl").exists():
        source = "SciFact"
        with (SHARED / "corpus.jsonl").open() as f:
            for line in f:
                doc = json.loads(line)
                text = f"{doc['title']} {doc['text']}".strip()
                if len(tokenizer(text)["input_ids"]) >= PASSAGE_TOKENS:
                    passages.append(text)
                if len(passages) == count:
                    break
        with (SHARED / "queries.jsonl").open() as f:
            for line in f:
                words = json.loads(line)["text"].split()
                for end in range(len(words), 0, -1):
                    if len(tokenizer(" ".join(words[:end]))["input_ids"]) == QUERY_TOKENS:
                        query = " ".join(words[:end])
                        break
                if query:
                    break
    filler = "Alveolar macrophages clear inhaled particles and pathogens from the lower respiratory tract. "
    while len(passages) < count:
        passages.append(filler * 20)
    query = query or "statute of limitations for securities fraud claims discovered years after"
    assert all(
        len(tokenizer(p, truncation=True, max_length=PASSAGE_TOKENS)["input_ids"]) == PASSAGE_TOKENS for p in passages
    )
    assert len(tokenizer(query)["input_ids"]) == QUERY_TOKENS, query
    return passages, query, source


def run(args: argparse.Namespace) -> dict[str, object]:
    import torch

    torch.set_num_threads(1)
    from ddr_search.model.encoder import TorchEncoder
    from ddr_search.types import RoutingMode
    from onnx_export.export import export_store
    from onnx_export.runtime import OrtEncoder

    scratch = Path(tempfile.mkdtemp(prefix="ddr-bench-encode-"))
    store = args.modules or build_store(scratch / "store", args.prefix_length)
    export_dir = args.export
    export_s = None
    if export_dir is None:
        export_dir = scratch / "onnx"
        start = time.perf_counter()
        export_store(store, export_dir, int8=True, progress=lambda m: print(f"  {m}", file=sys.stderr))
        export_s = time.perf_counter() - start
    encoders = {
        "torch fp32": TorchEncoder.load(store, passage_precision="fp32", passage_compile="off"),
        # passages only: queries run fp32; eager, as measured (bench/precision.py has the compiled row)
        "torch bf16": TorchEncoder.load(store, passage_precision="bf16", passage_compile="off"),
        "ORT fp32": OrtEncoder.load(export_dir, store=store, precision="fp32", query_threads=1, passage_threads=1),
        "ORT int8": OrtEncoder.load(export_dir, store=store, precision="int8", query_threads=1, passage_threads=1),
    }
    passages, query, source = texts(encoders["torch fp32"].tokenizer, args.batches * BATCH)
    for encoder in encoders.values():  # warm-up: sessions open, first-call allocations
        encoder.encode_passages(passages[:BATCH], batch_size=BATCH)
        encoder.encode_queries([query], routing=RoutingMode.TOP_K)
    rates: dict[str, list[float]] = {name: [] for name in SYSTEMS}
    latencies: dict[str, list[float]] = {name: [] for name in SYSTEMS}
    for round_ in range(args.rounds):
        for name in SYSTEMS:
            encoder = encoders[name]
            start = time.perf_counter()
            encoder.encode_passages(passages, batch_size=BATCH)
            rates[name].append(len(passages) / (time.perf_counter() - start))
            for _ in range(args.queries):
                start = time.perf_counter()
                encoder.encode_queries([query], routing=RoutingMode.TOP_K)
                latencies[name].append((time.perf_counter() - start) * 1000)
        print(f"round {round_ + 1}: " + ", ".join(f"{n} {rates[n][-1]:.1f} p/s" for n in SYSTEMS), file=sys.stderr)
    results = {}
    for name in SYSTEMS:
        samples = np.asarray(latencies[name])
        results[name] = {
            "passages_per_s": round(statistics.median(rates[name]), 2),
            "passages_per_s_rounds": [round(r, 2) for r in rates[name]],
            "query_ms_p50": round(float(np.percentile(samples, 50)), 2),
            "query_ms_p95": round(float(np.percentile(samples, 95)), 2),
            "query_samples": len(samples),
        }
    base = results["torch fp32"]
    for name in SYSTEMS:
        results[name]["passages_speedup"] = round(results[name]["passages_per_s"] / base["passages_per_s"], 2)
        # Same-round ratios cancel load that changes between rounds; their median is the steadier figure.
        ratios = [r / b for r, b in zip(rates[name], rates["torch fp32"], strict=True)]
        results[name]["passages_speedup_same_round"] = [round(x, 2) for x in ratios]
        results[name]["passages_speedup_same_round_median"] = round(statistics.median(ratios), 2)
        results[name]["query_p50_speedup"] = round(base["query_ms_p50"] / results[name]["query_ms_p50"], 2)
    sizes = {}
    manifest = encoders["ORT int8"].manifest
    for record in manifest.graphs.values():
        sizes[record.file] = round(record.bytes / 1e6, 1)
    return {
        "benchmark": "encode",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine("torch", "transformers", "onnxruntime", "onnx", "tokenizers", "numpy"),
        "load_average": os.getloadavg(),
        "setup": {
            "passages": len(passages),
            "passage_tokens": PASSAGE_TOKENS,
            "batch_size": BATCH,
            "query_tokens": QUERY_TOKENS,
            "query": query,
            "text_source": source,
            "routing": "topk (router + weighted query encoder)",
            "rounds": args.rounds,
            "queries_per_round": args.queries,
            "prefix_length": encoders["torch fp32"].model.prefix_length,
            "modules": manifest.module_names,
            "store": str(args.modules) if args.modules else "synthetic (general + 1 domain, non-zero gates)",
            "export_s": round(export_s, 1) if export_s else None,
            "onnx_file_mb": sizes,
        },
        "baseline": "torch fp32",
        "target": {"int8_passages_speedup_min": TARGET},
        "results": results,
        "target_met": results["ORT int8"]["passages_speedup"] >= TARGET,
    }


def markdown(report: dict[str, object]) -> str:
    m, s, r = report["machine"], report["setup"], report["results"]
    lines = [
        "# Encoding speed: torch fp32 vs torch bf16 and ONNX Runtime fp32 / int8",
        "",
        f"{report['created']} on {m['cpu']} ({m['cpu_count']} cores, shared; load average at the end "
        f"{', '.join(f'{x:.1f}' for x in report['load_average'])}), Python {m['python']}, torch "
        f"{m['versions']['torch']}, onnxruntime {m['versions']['onnxruntime']}. One thread per encoder.",
        "",
        f"Passages: {s['passages']} {s['text_source']} passages of {s['passage_tokens']} tokens in batches of "
        f"{s['batch_size']} (median of {s['rounds']} interleaved rounds). Query: one {s['query_tokens']}-token "
        f"query at a time, {s['routing']}, {s['rounds'] * s['queries_per_round']} samples. Prefix length "
        f"{s['prefix_length']}, modules {s['modules']}. Tokenisation is included (the public encode_* calls).",
        "",
        "| encoder | passages/s | vs torch | query p50 ms | query p95 ms | p50 vs torch |",
        "|---|---|---|---|---|---|",
    ]
    for name in SYSTEMS:
        x = r[name]
        lines.append(
            f"| {name} | {x['passages_per_s']:.1f} | {x['passages_speedup']:.2f}x | {x['query_ms_p50']:.1f} | "
            f"{x['query_ms_p95']:.1f} | {x['query_p50_speedup']:.2f}x |"
        )
    verdict = "met" if report["target_met"] else "NOT met"
    lines += [
        "",
        f"Target int8 passages/s >= {TARGET}x torch fp32: **{verdict}** ({r['ORT int8']['passages_speedup']:.2f}x).",
        "",
        "Per-round passages/s (the spread shows the machine's load):",
        "",
    ]
    lines += [f"- {name}: {r[name]['passages_per_s_rounds']}" for name in SYSTEMS]
    lines += [
        "",
        "Same-round speed-up over torch fp32 (median): "
        + ", ".join(
            f"{name} {r[name]['passages_speedup_same_round']} ({r[name]['passages_speedup_same_round_median']:.2f}x)"
            for name in SYSTEMS[1:]
        ),
    ]
    lines += ["", "ONNX files (MB): " + ", ".join(f"{k} {v}" for k, v in s["onnx_file_mb"].items())]
    lines += ["", "![latency](encode.png)", ""]
    return "\n".join(lines)


def plot(report: dict[str, object], latencies_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = report["results"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.bar(SYSTEMS, [r[n]["passages_per_s"] for n in SYSTEMS], color=["#888", "#c84", "#4a7", "#27a"])
    left.axhline(r["torch fp32"]["passages_per_s"] * TARGET, color="r", ls="--", label=f"target {TARGET}x torch")
    left.set_ylabel("passages/s (batch 32 x 256 tokens, 1 thread)")
    left.legend()
    x = np.arange(len(SYSTEMS))
    right.bar(x - 0.2, [r[n]["query_ms_p50"] for n in SYSTEMS], 0.4, label="p50")
    right.bar(x + 0.2, [r[n]["query_ms_p95"] for n in SYSTEMS], 0.4, label="p95")
    right.set_xticks(x, SYSTEMS)
    right.set_ylabel("single 16-token query latency, ms (top-k routing)")
    right.legend()
    fig.tight_layout()
    fig.savefig(latencies_path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modules", type=Path, help="module store (default: a synthetic P=128 store)")
    parser.add_argument("--export", type=Path, help="an existing export of --modules (default: export to a temp dir)")
    parser.add_argument("--prefix-length", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", type=int, default=4, help="batches of 32 passages per round")
    parser.add_argument("--queries", type=int, default=40, help="single queries per round and encoder")
    parser.add_argument("--out", type=Path, default=REPORTS)
    args = parser.parse_args()
    report = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "encode.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "encode.md").write_text(markdown(report))
    plot(report, args.out / "encode.png")
    print(markdown(report))


if __name__ == "__main__":
    main()
