"""Indexing throughput against what a user would otherwise pick: ddr-search vs sentence-transformers, txtai, LanceDB.

Why: the issue asks that ddr-search ingest be at least 1.5x the fastest peer and within 2x of the compute
ceiling. Every system here embeds the same first N SciFact passages (title + text, truncated at 256 tokens)
with the same model (the packaged all-MiniLM-L6-v2 folder), on the CPU, with the same thread budget
(OMP/MKL/torch/ONNX Runtime/Lance threads = --threads, default every core):

- ddr-search torch / torch compiled / torch fp32 / ONNX fp32 / ONNX int8:
  `DDRSearch(Settings(home=<fresh>)).ingest(documents)` into the embedded store (dense vectors + BM25), with
  the default encoder (torch; passages in bf16 on CPUs with native bf16; eager at this size), the same compiled from its
  first batch (DDR_PASSAGE_COMPILE=on: the compile falls in the load time), the torch encoder held at fp32
  (DDR_PASSAGE_PRECISION=fp32), or an ONNX export under DDR_ONNX_DIR
  (made once per run with onnx_export.export.export_store, int8 and fp32, outside every timing; its seconds
  reported);
- sentence-transformers: `SentenceTransformer(path).encode(texts, batch_size=32)`, max_seq_length 256
  (vectors only, no index: the floor under any sentence-transformers stack);
- txtai: `Embeddings(path=<backbone>, content=True, hybrid=True, maxlength=256).index(...)` (its default
  vectors method for a local folder, faiss ANN, BM25 sparse index, SQLite content);
- LanceDB: vectors from sentence-transformers as above (embedded here, not through LanceDB's embedding
  registry, so batch size and max length are exactly the others'), then a table (id, text, vector) and a
  native full-text index on text: what hybrid search needs.

Every run is a fresh subprocess. End to end = N / its whole wall time (interpreter, imports, model load, a
two-text warm-up, the work, exit); encode/index only = N / the seconds of the work call after load and
warm-up. Systems interleave round by round (the order rotates each round, so a load spike on this shared
machine does not always hit the same system); figures are medians over rounds.

Ceiling: about 6 GFLOP per 256-token passage (6 layers x 256 tokens x (4 H^2 + 2 H F) MACs with H = 384,
F = 1536, plus attention, x 2 FLOP per MAC), every op run at the peak of an int8 GEMM micro-benchmark of the
encoder's feed-forward shape on ONNX Runtime (the int8 encoder's kernels), same threads. An optimistic
estimate: the real encoder runs attention, softmax, layer norms and (de)quantisation at lower rates.

The peers are not project dependencies. Install them once into a separate folder; --no-deps keeps the
venv's torch, transformers, tokenizers, numpy and faiss-cpu (the peers run on those), the rest are the
light dependencies the venv lacks:

    pip install --target .bench-peers --no-deps txtai==9.14.0 lancedb==0.40.0 sentence-transformers==6.3.0 \\
        lance-namespace==0.13.0 lance-namespace-urllib3-client==0.13.0 pyarrow==26.0.1 scikit-learn==1.9.1 \\
        joblib==1.6.0 threadpoolctl==3.8.0 narwhals==2.29.0 cloudpickle==3.1.3 msgpack==1.2.4 \\
        deprecation==2.1.0 overrides==7.7.0

Only the peer subprocesses append that folder to sys.path (after the venv's own packages); a peer that is
not importable is skipped with a printed note.

    python bench/peers.py [--documents 256] [--rounds 2] [--threads N] [--systems NAME,...]
                          [--export-int8 DIR --export-fp32 DIR] [--out DIR]
    python bench/peers.py --smoke   # 8 documents, 1 round, report to a temporary folder

The two ONNX exports take minutes of CPU (about 1.5 each on 2 cores): reuse them with --export-int8 /
--export-fp32 (an fp32-only export: the factory picks int8 whenever one is present), or leave the ONNX
variants out of --systems.

Writes bench/reports/peers.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import BEIR, REPO, REPORTS, machine, matrix_isa, write_report

SCIFACT = BEIR / "scifact" / "corpus.jsonl"
PEERS_DIR = REPO / ".bench-peers"
MAX_TOKENS = 256
BATCH = 32
HIDDEN, FFN, LAYERS = 384, 1536, 6  # all-MiniLM-L6-v2
TARGET_VS_PEER = 1.5
TARGET_VS_CEILING = 2.0
DDR_TORCH, DDR_TORCH32 = "ddr-search torch", "ddr-search torch fp32"
DDR_COMPILED = "ddr-search torch compiled"
DDR_FP32, DDR_INT8 = "ddr-search ONNX fp32", "ddr-search ONNX int8"
ST, TXTAI, LANCEDB = "sentence-transformers", "txtai", "LanceDB"
DDR_SYSTEMS = (DDR_TORCH, DDR_COMPILED, DDR_TORCH32, DDR_FP32, DDR_INT8)
PEER_SYSTEMS = (ST, TXTAI, LANCEDB)
SYSTEMS = DDR_SYSTEMS + PEER_SYSTEMS
PEER_MODULES = {
    ST: ("sentence_transformers",),
    TXTAI: ("txtai",),
    LANCEDB: ("lancedb", "pyarrow", "sentence_transformers"),
}
WHAT = {
    DDR_TORCH: "DDRSearch.ingest into the embedded store (vectors + BM25), default torch encoder (bf16 where native)",
    DDR_COMPILED: "same, compiled from the first batch (DDR_PASSAGE_COMPILE=on; compiling is in the load time)",
    DDR_TORCH32: "same, torch encoder held at fp32 (DDR_PASSAGE_PRECISION=fp32)",
    DDR_FP32: "same, ONNX Runtime fp32 export (DDR_ONNX_DIR, DDR_PASSAGE_PRECISION=fp32)",
    DDR_INT8: "same, ONNX Runtime int8 export (DDR_ONNX_DIR, DDR_PASSAGE_PRECISION=fp32)",
    ST: "SentenceTransformer.encode, batch 32: vectors only, no index",
    TXTAI: "Embeddings(content=True, hybrid=True).index: faiss + BM25 + SQLite content",
    LANCEDB: "sentence-transformers vectors (batch 32) + LanceDB table + native FTS index",
}


# ---------------------------------------------------------------------------------------------- worker side


def _set_torch_threads(threads: int) -> None:
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


def _load_peers_path(peers_dir: Path) -> None:
    """Peers come from their own folder, appended: the venv's torch / transformers always win."""
    if peers_dir.is_dir() and str(peers_dir) not in sys.path:
        sys.path.append(str(peers_dir))


Timings = dict[str, object]


def work_ddr(system: str, docs: list[dict[str, str]], home: Path, threads: int) -> Timings:
    """The client's in-process ingest; the encoder is built by the factory (ONNX when DDR_ONNX_DIR is set)."""
    start = time.perf_counter()
    import ddr_search.indexing  # noqa: F401  (ingest imports it on its first batch: count it as an import)
    from ddr_search import factory
    from ddr_search.client import DDRSearch
    from ddr_search.settings import Settings
    from ddr_search.types import Document

    imported = time.perf_counter()
    settings = Settings(home=home)
    encoder = factory.build_encoder(settings, passage_threads=threads)  # the client's own, with the thread budget
    _set_torch_threads(threads)
    precision = str(getattr(encoder, "precision", None) or getattr(encoder, "passage_precision", ""))
    expected = {DDR_FP32: "OrtEncoder", DDR_INT8: "OrtEncoder"}
    assert type(encoder).__name__ == expected.get(system, "TorchEncoder"), (system, type(encoder).__name__)
    assert system != DDR_COMPILED or encoder.compiled.choice == "on", system
    assert system != DDR_INT8 or precision.endswith("int8"), precision
    assert system not in (DDR_FP32, DDR_TORCH32) or precision.endswith("fp32"), precision
    client = DDRSearch(settings, encoder=encoder)
    client.backend  # noqa: B018  (opens the embedded store)
    encoder.encode_passages(["warm-up passage", "another warm-up passage"])  # two rows: compiles, where on
    documents = [Document(id=d["id"], title=d["title"], text=d["text"]) for d in docs]
    loaded = time.perf_counter()
    report = client.ingest(documents)
    done = time.perf_counter()
    stored = client.backend.count()
    client.close()
    assert report.written == len(docs), report
    return {
        "import_s": imported - start,
        "load_s": loaded - imported,
        "work_s": done - loaded,
        "stored": stored,
        "encoder": f"{type(encoder).__name__} {precision}",
        "versions": machine("torch", "transformers", "onnxruntime")["versions"],
    }


def _sentence_transformer(backbone: Path, threads: int):
    from sentence_transformers import SentenceTransformer

    _set_torch_threads(threads)
    model = SentenceTransformer(str(backbone), device="cpu")
    model.max_seq_length = MAX_TOKENS
    model.encode(["warm-up passage"], show_progress_bar=False)
    return model


def work_st(docs: list[dict[str, str]], backbone: Path, threads: int) -> Timings:
    start = time.perf_counter()
    import sentence_transformers  # noqa: F401
    import torch  # noqa: F401

    imported = time.perf_counter()
    model = _sentence_transformer(backbone, threads)
    texts = [d["passage"] for d in docs]
    loaded = time.perf_counter()
    vectors = model.encode(texts, batch_size=BATCH, show_progress_bar=False)
    done = time.perf_counter()
    return {
        "import_s": imported - start,
        "load_s": loaded - imported,
        "work_s": done - loaded,
        "stored": len(vectors),
        "versions": machine("sentence-transformers", "torch", "transformers")["versions"],
    }


def work_txtai(docs: list[dict[str, str]], backbone: Path, threads: int) -> Timings:
    start = time.perf_counter()
    import torch  # noqa: F401
    from txtai import Embeddings

    imported = time.perf_counter()
    _set_torch_threads(threads)
    embeddings = Embeddings(path=str(backbone), content=True, hybrid=True, maxlength=MAX_TOKENS, gpu=False)
    embeddings.model.encode(["warm-up passage"])  # the constructor loaded the vectors model
    rows = [(d["id"], d["passage"], None) for d in docs]
    loaded = time.perf_counter()
    embeddings.index(rows)
    done = time.perf_counter()
    stored = embeddings.count()
    method = type(embeddings.model).__name__
    embeddings.close()
    return {
        "import_s": imported - start,
        "load_s": loaded - imported,
        "work_s": done - loaded,
        "stored": stored,
        "encoder": f"txtai {method}",
        "versions": machine("txtai", "faiss-cpu", "torch", "transformers")["versions"],
    }


def work_lancedb(docs: list[dict[str, str]], backbone: Path, home: Path, threads: int) -> Timings:
    start = time.perf_counter()
    import lancedb
    import pyarrow as pa
    import sentence_transformers  # noqa: F401
    import torch  # noqa: F401

    imported = time.perf_counter()
    model = _sentence_transformer(backbone, threads)
    db = lancedb.connect(str(home / "lancedb"))
    ids, texts = [d["id"] for d in docs], [d["passage"] for d in docs]
    loaded = time.perf_counter()
    vectors = model.encode(texts, batch_size=BATCH, show_progress_bar=False, convert_to_numpy=True)
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), type=pa.float32()), vectors.shape[1])
    table = db.create_table("documents", data=pa.table({"id": ids, "text": texts, "vector": column}))
    table.create_fts_index("text")
    done = time.perf_counter()
    return {
        "import_s": imported - start,
        "load_s": loaded - imported,
        "work_s": done - loaded,
        "stored": table.count_rows(),
        "versions": machine("lancedb", "pyarrow", "sentence-transformers", "torch", "transformers")["versions"],
    }


def worker(args: argparse.Namespace) -> None:
    """One system, one round, in this fresh process; timings go to --result (stdout belongs to the libraries)."""
    docs = json.loads(args.corpus.read_text())
    home = args.home
    if args.worker in PEER_SYSTEMS:
        _load_peers_path(args.peers_dir)
    if args.worker in DDR_SYSTEMS:
        out = work_ddr(args.worker, docs, home, args.threads)
    elif args.worker == ST:
        out = work_st(docs, args.backbone, args.threads)
    elif args.worker == TXTAI:
        out = work_txtai(docs, args.backbone, args.threads)
    else:
        out = work_lancedb(docs, args.backbone, home, args.threads)
    args.result.write_text(json.dumps(out))


# ---------------------------------------------------------------------------------------------- parent side


def load_corpus(count: int, backbone: Path) -> tuple[list[dict[str, str]], dict[str, float]]:
    """The first `count` SciFact passages as every system sees them, and their token lengths (truncated at 256)."""
    from tokenizers import Tokenizer

    if not SCIFACT.exists():
        raise SystemExit(f"{SCIFACT} is missing: the bench needs the BEIR SciFact corpus (DDR_SHARED_DATA)")
    docs: list[dict[str, str]] = []
    with SCIFACT.open() as f:
        for line in f:
            record = json.loads(line)
            title, text = record.get("title", ""), record["text"]
            passage = f"{title} {text}".strip() if title else text  # ddr_search.types.passage_text
            docs.append({"id": str(record["_id"]), "title": title, "text": text, "passage": passage})
            if len(docs) == count:
                break
    tokenizer = Tokenizer.from_file(str(backbone / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=MAX_TOKENS)
    lengths = [len(e.ids) for e in tokenizer.encode_batch([d["passage"] for d in docs])]
    stats = {
        "mean": round(statistics.fmean(lengths), 1),
        "min": min(lengths),
        "max": max(lengths),
        "truncated_share": round(sum(n == MAX_TOKENS for n in lengths) / len(lengths), 2),
    }
    return docs, stats


def passage_gflop(tokens: float) -> float:
    """Forward FLOPs of one passage: per layer QKV + output (4 H^2) and feed-forward (2 H F) MACs per token,
    plus attention scores and mixing (2 L^2 H); x 2 FLOP per MAC. 256 tokens: 6.04 GFLOP."""
    macs = LAYERS * (tokens * (4 * HIDDEN * HIDDEN + 2 * HIDDEN * FFN) + 2 * tokens * tokens * HIDDEN)
    return 2 * macs / 1e9


def gemm_peak(threads: int, seconds: float) -> dict[str, float]:
    """Best GOPS of ONNX Runtime's int8 (MatMulInteger, u8 x s8) and fp32 GEMM on the encoder's feed-forward
    shape (2048 tokens x 384 -> 1536), the same kernels the exported encoders run; best, not median,
    because other processes on a shared machine only ever slow a call down."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    m, k, n = 2048, HIDDEN, FFN
    rng = np.random.default_rng(0)
    weights8 = numpy_helper.from_array(rng.integers(-127, 128, (k, n), dtype=np.int8), "B")
    weights32 = numpy_helper.from_array(rng.standard_normal((k, n), dtype=np.float32), "B")
    zero = numpy_helper.from_array(np.array(128, dtype=np.uint8), "a_zero")
    graphs = {
        "int8": helper.make_graph(
            [helper.make_node("MatMulInteger", ["A", "B", "a_zero"], ["Y"])],
            "gemm_int8",
            [helper.make_tensor_value_info("A", TensorProto.UINT8, [m, k])],
            [helper.make_tensor_value_info("Y", TensorProto.INT32, [m, n])],
            [weights8, zero],
        ),
        "fp32": helper.make_graph(
            [helper.make_node("MatMul", ["A", "B"], ["Y"])],
            "gemm_fp32",
            [helper.make_tensor_value_info("A", TensorProto.FLOAT, [m, k])],
            [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [m, n])],
            [weights32],
        ),
    }
    inputs = {
        "int8": rng.integers(0, 256, (m, k), dtype=np.uint8),
        "fp32": rng.standard_normal((m, k), dtype=np.float32),
    }
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    out: dict[str, float] = {}
    for name, graph in graphs.items():
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        feed = {"A": inputs[name]}
        session.run(None, feed)
        best, deadline = float("inf"), time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            session.run(None, feed)
            best = min(best, time.perf_counter() - started)
        out[f"{name}_gops"] = round(2 * m * k * n / best / 1e9, 1)
    return out


def make_exports(scratch: Path, args: argparse.Namespace) -> dict[str, object]:
    """An int8 and an fp32 export of the store a fresh DDRSearch uses (--export-* reuse existing ones)."""
    wanted = {DDR_INT8: args.export_int8, DDR_FP32: args.export_fp32}
    wanted = {name: path for name, path in wanted.items() if name in args.systems}
    if not wanted:
        return {"dirs": {}, "seconds": {}}
    from ddr_search.factory import default_module_store
    from ddr_search.settings import Settings
    from onnx_export.export import export_store

    store = default_module_store(Settings(home=scratch / "export-home"))
    dirs: dict[str, str] = {}
    seconds: dict[str, float | None] = {}
    for name, given in wanted.items():
        if given is not None:
            dirs[name], seconds[name] = str(given), None
            continue
        target = scratch / ("onnx-int8" if name == DDR_INT8 else "onnx-fp32")
        print(f"exporting {store or 'the frozen backbone'} for {name} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        export_store(store, target, int8=name == DDR_INT8, progress=lambda m: print(f"  {m}", file=sys.stderr))
        seconds[name] = round(time.perf_counter() - started, 1)
        dirs[name] = str(target)
    return {"store": str(store) if store else None, "dirs": dirs, "seconds": seconds}


def importable(system: str, peers_dir: Path) -> str | None:
    """None when the peer's packages are found (venv first, then the peers folder); else why not."""
    from importlib.machinery import PathFinder

    path = [*sys.path, str(peers_dir)]
    missing = [m for m in PEER_MODULES[system] if PathFinder.find_spec(m, path) is None]
    if missing:
        return f"{', '.join(missing)} not importable (install the peers into {peers_dir}: see this file's docstring)"
    return None


def child_env(system: str, threads: int, exports: dict[str, str]) -> dict[str, str]:
    """The same thread budget for every library, the CPU only, and the product's defaults (no DDR_* but the export)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DDR_") and k != "PYTHONPATH"}
    for name in (
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "LANCE_CPU_THREADS",
        "RAYON_NUM_THREADS",
    ):
        env[name] = str(threads)
    env.update(CUDA_VISIBLE_DEVICES="", TOKENIZERS_PARALLELISM="false", ORT_DISABLE_TELEMETRY="1")
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONWARNINGS="ignore")
    if system in exports:
        env["DDR_ONNX_DIR"] = exports[system]
    if system in (DDR_TORCH32, DDR_FP32, DDR_INT8):  # the ONNX rows: the export's own passage graph
        env["DDR_PASSAGE_PRECISION"] = "fp32"
    if system == DDR_COMPILED:
        env["DDR_PASSAGE_COMPILE"] = "on"
    return env


def run_once(
    system: str, corpus: Path, scratch: Path, args: argparse.Namespace, backbone: Path, exports: dict[str, str]
) -> dict[str, object]:
    """One fresh subprocess: its wall time is the end-to-end figure, its own timings the encode/index one."""
    work = Path(tempfile.mkdtemp(prefix="run-", dir=scratch))
    result, log = work / "result.json", work / "log.txt"
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", system, "--corpus", str(corpus)]
    command += ["--home", str(work / "home"), "--result", str(result), "--threads", str(args.threads)]
    command += ["--backbone", str(backbone), "--peers-dir", str(args.peers_dir)]
    load_before = os.getloadavg()[0]
    with log.open("wb") as handle:
        started = time.perf_counter()
        code = subprocess.call(
            command, env=child_env(system, args.threads, exports), cwd=work, stdout=handle, stderr=subprocess.STDOUT
        )
        wall = time.perf_counter() - started
    row: dict[str, object] = {"wall_s": wall, "load_average_before": round(load_before, 2)}
    if code != 0 or not result.exists():
        tail = log.read_text(errors="replace")[-1500:]
        row["error"] = f"exit {code}: {tail.strip().splitlines()[-1] if tail.strip() else 'no output'}"
        print(f"  {system} FAILED ({row['error']}); log:\n{tail}", file=sys.stderr)
    else:
        row.update(json.loads(result.read_text()))
        if row["stored"] != args.documents:
            row["error"] = f"stored {row['stored']} of {args.documents} documents"
    shutil.rmtree(work, ignore_errors=True)
    return row


def summarise(runs: dict[str, list[dict[str, object]]], documents: int) -> dict[str, dict[str, object]]:
    results: dict[str, dict[str, object]] = {}
    for system, rows in runs.items():
        good = [r for r in rows if "error" not in r]
        if not good:
            results[system] = {"error": rows[-1]["error"] if rows else "not run"}
            continue
        end_to_end = [documents / r["wall_s"] for r in good]
        encode = [documents / r["work_s"] for r in good]
        results[system] = {
            "end_to_end_docs_per_s": round(statistics.median(end_to_end), 2),
            "encode_docs_per_s": round(statistics.median(encode), 2),
            "end_to_end_rounds": [round(x, 2) for x in end_to_end],
            "encode_rounds": [round(x, 2) for x in encode],
            "wall_s": round(statistics.median(r["wall_s"] for r in good), 2),
            "import_s": round(statistics.median(r["import_s"] for r in good), 2),
            "load_s": round(statistics.median(r["load_s"] for r in good), 2),
            "work_s": round(statistics.median(r["work_s"] for r in good), 2),
            "encoder": good[-1].get("encoder"),
            "versions": good[-1]["versions"],
            "failed_rounds": len(rows) - len(good),
        }
    return results


def compare(results: dict[str, dict[str, object]], ceiling: dict[str, float]) -> dict[str, object]:
    """x vs the fastest peer per metric, and the issue's two targets for the fastest ddr-search variant."""
    ok = {s: r for s, r in results.items() if "error" not in r}
    verdict: dict[str, object] = {}
    for metric in ("end_to_end_docs_per_s", "encode_docs_per_s"):
        peers = {s: ok[s][metric] for s in PEER_SYSTEMS if s in ok}
        ddr = {s: ok[s][metric] for s in DDR_SYSTEMS if s in ok}
        fastest_peer = max(peers, key=peers.get) if peers else None
        for row in ok.values():
            row[f"{metric}_vs_fastest_peer"] = round(row[metric] / peers[fastest_peer], 2) if fastest_peer else None
        best_ddr = max(ddr, key=ddr.get) if ddr else None
        entry: dict[str, object] = {"fastest_peer": fastest_peer, "best_ddr": best_ddr}
        if fastest_peer and best_ddr:
            ratio = ddr[best_ddr] / peers[fastest_peer]
            entry["ddr_vs_fastest_peer"] = round(ratio, 2)
            entry["target_vs_peer_met"] = ratio >= TARGET_VS_PEER
        if best_ddr:
            gap = ceiling["corpus_docs_per_s"] / ddr[best_ddr]
            entry["ceiling_over_ddr"] = round(gap, 2)
            entry["target_vs_ceiling_met"] = gap <= TARGET_VS_CEILING
        verdict[metric] = entry
    return verdict


def run(args: argparse.Namespace) -> dict[str, object]:
    from ddr_search.model.backbone import packaged_backbone_path

    backbone = packaged_backbone_path()
    scratch = Path(tempfile.mkdtemp(prefix="ddr-bench-peers-"))
    try:
        docs, lengths = load_corpus(args.documents, backbone)
        args.documents = len(docs)
        corpus = scratch / "corpus.json"
        corpus.write_text(json.dumps(docs))
        skipped: dict[str, str] = {}
        for system in [s for s in args.systems if s in PEER_SYSTEMS]:
            why = importable(system, args.peers_dir)
            if why:
                skipped[system] = why
                print(f"skipping {system}: {why}", file=sys.stderr)
        systems = [s for s in args.systems if s not in skipped]
        export = make_exports(scratch, args)
        print(f"GEMM micro-benchmark ({args.threads} threads) ...", file=sys.stderr, flush=True)
        gemm = gemm_peak(args.threads, args.gemm_seconds)
        ceiling = {
            "assumed_gflop_per_256_token_passage": round(passage_gflop(MAX_TOKENS), 2),
            "corpus_mean_tokens": lengths["mean"],
            "gflop_per_corpus_passage": round(passage_gflop(lengths["mean"]), 2),
            **gemm,
            "docs_per_s_256_tokens": round(gemm["int8_gops"] / passage_gflop(MAX_TOKENS), 1),
            "corpus_docs_per_s": round(gemm["int8_gops"] / passage_gflop(lengths["mean"]), 1),
            "fp32_docs_per_s_256_tokens": round(gemm["fp32_gops"] / passage_gflop(MAX_TOKENS), 1),
            "cpu_matrix_isa": matrix_isa(),
        }
        runs: dict[str, list[dict[str, object]]] = {s: [] for s in systems}
        for round_ in range(args.rounds):
            shift = round_ % len(systems)
            for system in systems[shift:] + systems[:shift]:
                row = run_once(system, corpus, scratch, args, backbone, export["dirs"])
                runs[system].append(row)
                if "error" not in row:
                    print(
                        f"round {round_ + 1} {system}: end to end {args.documents / row['wall_s']:.1f} docs/s, "
                        f"encode/index {args.documents / row['work_s']:.1f} docs/s",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    results = summarise(runs, args.documents)
    verdict = compare(results, ceiling)
    return {
        "benchmark": "peers",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine("torch", "transformers", "onnxruntime", "tokenizers", "numpy", "faiss-cpu"),
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "setup": {
            "documents": args.documents,
            "text_source": "BEIR SciFact corpus, first N passages (title + text)",
            "passage_tokens": lengths,
            "max_tokens": MAX_TOKENS,
            "batch_size_peers": BATCH,
            "threads": args.threads,
            "rounds": args.rounds,
            "backbone": str(backbone),
            "lancedb_mode": "vectors from sentence-transformers, then create_table + native create_fts_index('text')",
            "export": export,
        },
        "skipped": skipped,
        "what": {s: WHAT[s] for s in args.systems},
        "ceiling": ceiling,
        "targets": {"ddr_vs_fastest_peer_min": TARGET_VS_PEER, "ceiling_over_ddr_max": TARGET_VS_CEILING},
        "verdict": verdict,
        "results": results,
        "runs": runs,
    }


def _times(value: object) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _met(value: object) -> str:
    return "n/a" if value is None else ("**met**" if value else "**NOT met**")


def markdown(report: dict[str, object]) -> str:
    m, s, c, r, v = report["machine"], report["setup"], report["ceiling"], report["results"], report["verdict"]
    peer_versions: dict[str, str] = {}
    for system in PEER_SYSTEMS:
        for package, version in (r.get(system, {}).get("versions") or {}).items():
            if package in ("txtai", "lancedb", "sentence-transformers", "pyarrow", "faiss-cpu"):
                peer_versions[package] = version
    lines = [
        "# Indexing throughput: ddr-search vs the peers a user would otherwise pick",
        "",
        f"{report['created']} on {m['cpu']} ({m['cpu_count']} cores, shared: load average at the end "
        f"{', '.join(str(x) for x in report['load_average_end'])}), Python {m['python']}, torch "
        f"{m['versions']['torch']}, transformers {m['versions']['transformers']}, onnxruntime "
        f"{m['versions']['onnxruntime']}; peers: {', '.join(f'{k} {x}' for k, x in peer_versions.items()) or 'none'}.",
        "",
        f"{s['documents']} SciFact passages (title + text; {s['passage_tokens']['mean']} tokens on average after "
        f"truncation at {s['max_tokens']}, {int(s['passage_tokens']['truncated_share'] * 100)}% truncated), the "
        f"packaged all-MiniLM-L6-v2 for every system, {s['threads']} threads each, CPU only, {s['rounds']} "
        "interleaved rounds (median). End to end: a fresh process's whole wall time (imports, model load, "
        "warm-up, work, exit); encode/index only: the work call alone.",
        "",
        "| system | end-to-end docs/s | encode/index-only docs/s | x fastest peer (e2e) | x fastest peer (encode) "
        "| import + load s | what it does |",
        "|---|---|---|---|---|---|---|",
    ]
    for system in report["what"]:
        x = r.get(system)
        if x is None:
            lines.append(f"| {system} | skipped | | | | | {report['skipped'].get(system, '')} |")
        elif "error" in x:
            lines.append(f"| {system} | failed | | | | | {x['error']} |")
        else:
            lines.append(
                f"| {system} | {x['end_to_end_docs_per_s']:.1f} | {x['encode_docs_per_s']:.1f} | "
                f"{_times(x['end_to_end_docs_per_s_vs_fastest_peer'])} | "
                f"{_times(x['encode_docs_per_s_vs_fastest_peer'])} | "
                f"{x['import_s'] + x['load_s']:.1f} | {report['what'][system]} |"
            )
    lines += [
        "",
        "## Ceiling (an estimate)",
        "",
        f"Assumption: {c['assumed_gflop_per_256_token_passage']} GFLOP per 256-token passage (6 layers of QKV, "
        "output and feed-forward matmuls plus attention, 2 FLOP per MAC), every op at the best rate of a "
        f"measured GEMM on the encoder's feed-forward shape with {s['threads']} threads: int8 {c['int8_gops']} "
        f"GOPS, fp32 {c['fp32_gops']} GFLOP/s (ONNX Runtime, the exported encoders' kernels; CPU flags "
        f"{', '.join(c['cpu_matrix_isa']) or 'unknown'}). That gives "
        f"**{c['docs_per_s_256_tokens']} passages/s** at 256 tokens (fp32: {c['fp32_docs_per_s_256_tokens']}), "
        f"and **{c['corpus_docs_per_s']} passages/s** for this corpus ({c['corpus_mean_tokens']} tokens, "
        f"{c['gflop_per_corpus_passage']} GFLOP each), the figure the target uses. Optimistic: attention, "
        "softmax, layer norms and (de)quantisation run well below GEMM peak.",
        "",
        "## Targets (from the issue)",
        "",
        "| target | metric | best ddr-search | fastest peer | value | verdict |",
        "|---|---|---|---|---|---|",
    ]
    metrics = (("encode_docs_per_s", "encode/index only"), ("end_to_end_docs_per_s", "end to end"))
    peer_rows = [
        f"| ddr-search ingest >= {TARGET_VS_PEER}x the fastest peer | {label} | {v[m].get('best_ddr') or 'n/a'} | "
        f"{v[m].get('fastest_peer') or 'n/a'} | {_times(v[m].get('ddr_vs_fastest_peer'))} | "
        f"{_met(v[m].get('target_vs_peer_met'))} |"
        for m, label in metrics
    ]
    ceiling_rows = [
        f"| within {TARGET_VS_CEILING}x of the ceiling ({c['corpus_docs_per_s']} docs/s) | {label} | "
        f"{v[m].get('best_ddr') or 'n/a'} | | ceiling is {_times(v[m].get('ceiling_over_ddr'))} | "
        f"{_met(v[m].get('target_vs_ceiling_met'))} |"
        for m, label in metrics
    ]
    lines += peer_rows + ceiling_rows
    export = s["export"]
    lines += [
        "",
        "## Notes",
        "",
        "- Work differs by design, each system doing what a user of it gets: ddr-search writes vectors, BM25 "
        "postings and documents to its embedded store; txtai builds faiss, BM25 and SQLite content; LanceDB "
        "writes a table and a full-text index; sentence-transformers only encodes (no index), the floor under "
        "any stack built on it.",
        f"- LanceDB: {s['lancedb_mode']}.",
        "- ddr-search encodes with its module store's general module (prefix tuning); the peers run the bare "
        "backbone. Batching is each system's default (ddr-search: Settings.batch_size; txtai: encodebatch 32); "
        f"sentence-transformers and LanceDB use batch {s['batch_size_peers']}.",
        "- Threads: OMP/MKL/OpenBLAS/Lance/Rayon thread counts and torch.set_num_threads set to the same budget; "
        "ddr-search's ONNX passage session gets it as passage_threads; tokenizers parallelism is off for all.",
        f"- ONNX exports ({export.get('store') or 'n/a'}), outside every timing: "
        + (
            ", ".join(f"{k} {f'{x} s' if x is not None else 'reused'}" for k, x in export.get("seconds", {}).items())
            or "none"
        )
        + ".",
    ]
    for system, why in report["skipped"].items():
        lines.append(f"- {system} skipped: {why}.")
    lines += ["", "Per-round docs/s (end to end / encode only):", ""]
    for system, x in r.items():
        if "error" not in x:
            lines.append(f"- {system}: {x['end_to_end_rounds']} / {x['encode_rounds']}")
    lines += ["", "![throughput](peers.png)", ""]
    return "\n".join(lines)


def plot(report: dict[str, object], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    r = {s: x for s, x in report["results"].items() if "error" not in x}
    names = list(r)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(11, 4.8))
    ax.bar(x - 0.2, [r[n]["end_to_end_docs_per_s"] for n in names], 0.4, label="end to end (fresh process)")
    ax.bar(x + 0.2, [r[n]["encode_docs_per_s"] for n in names], 0.4, label="encode/index only")
    encode = report["verdict"]["encode_docs_per_s"]
    if encode.get("fastest_peer"):
        line = r[encode["fastest_peer"]]["encode_docs_per_s"] * TARGET_VS_PEER
        ax.axhline(line, color="r", ls="--", label=f"target: {TARGET_VS_PEER}x fastest peer (encode)")
    ceiling = report["ceiling"]["corpus_docs_per_s"]
    ax.axhline(ceiling / TARGET_VS_CEILING, color="k", ls=":", label=f"target: ceiling / {TARGET_VS_CEILING:g}")
    ax.set_xticks(x, [n.replace("ddr-search ", "ddr-search\n") for n in names])
    ax.set_ylabel(f"documents/s ({report['setup']['threads']} threads, SciFact, <= 256 tokens)")
    ax.set_title(f"Indexing throughput, {report['setup']['documents']} documents (ceiling estimate {ceiling:g}/s)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_systems(value: str) -> list[str]:
    chosen = [s.strip() for s in value.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SYSTEMS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown systems {unknown}; choose from {', '.join(SYSTEMS)}")
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--documents", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="per system (default: every core)")
    parser.add_argument("--systems", type=parse_systems, default=list(SYSTEMS), help="comma-separated subset")
    parser.add_argument("--export-int8", type=Path, help="reuse an int8 export of the default store")
    parser.add_argument("--export-fp32", type=Path, help="reuse an fp32-only export of the default store")
    parser.add_argument("--peers-dir", type=Path, default=PEERS_DIR, help="where txtai / LanceDB / ST are installed")
    parser.add_argument("--gemm-seconds", type=float, default=2.0, help="per precision, for the ceiling")
    parser.add_argument("--smoke", action="store_true", help="8 documents, 1 round, report to a temp folder")
    parser.add_argument("--out", type=Path, help="report folder (default bench/reports; --smoke: a temp folder)")
    # internal: one system's run in a fresh process
    parser.add_argument("--worker", choices=SYSTEMS, help=argparse.SUPPRESS)
    for name in ("--corpus", "--home", "--result", "--backbone"):
        parser.add_argument(name, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if args.smoke:
        args.documents, args.rounds, args.gemm_seconds = 8, 1, 0.3
        args.out = args.out or Path(tempfile.mkdtemp(prefix="ddr-bench-peers-smoke-"))
    out: Path = args.out or REPORTS
    stripped = sorted(k for k in os.environ if k.startswith("DDR_"))
    for key in stripped:  # the bench measures the product's defaults
        del os.environ[key]
    if stripped:
        print(f"ignoring {', '.join(stripped)}: every system runs with the defaults", file=sys.stderr)
    report = run(args)
    write_report(out, "peers", report, markdown(report), lambda path: plot(report, path))
    print(f"\nwritten to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
