"""Quality benchmark: do the shipped modules help where they should and never hurt elsewhere? (issue 10)

    python bench/quality.py [--store DIR]     # default: the store the package ships

Every set's test split (nothing here tunes on it), NDCG@10 and R@100 by ir-measures: in-domain SciFact,
NFCorpus, MedQuAD (each has a shipped module), PubMedQA (biomedical, no module of its own) and zero-shot
CACM, Cranfield, ADI, WikiQA test. Rows: BM25; frozen encoder; DR = full fine-tuning of the query tower on
the union of the modules' training pairs, one epoch (what a user would do instead; per domain and
longer it is far stronger: bench/headroom.py); DDR-prior (the set's module named);
DDR-auto (no domain given: the default routing); hybrids with the default 0.5/0.5 fusion and with the
fusion tuned per module on dev queries. Also: routing accuracy, what removing one module changes for the
other sets (domain independence), and training seconds per module.

Passages come from the frozen encoder's cache ($DDR_HOME/cache): the shipped general module is the
exact no-op, so its passage vectors are the frozen ones (checked on every set).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from _common import REPO, REPORTS, SHARED_DATA, Dense, machine, write_report

SETS = {  # name: (kind, module serving it, passage tokens)
    "scifact": ("in-domain", "scifact", 256),
    "nfcorpus": ("in-domain", "nfcorpus", 256),
    "medquad": ("in-domain", "medical", 128),
    "pubmedqa": ("no module", None, 256),  # biomedical, but its module did not earn a place (dev 1.0 before)
    "cacm": ("zero-shot", None, 256),
    "cranfield": ("zero-shot", None, 256),
    "adi": ("zero-shot", None, 256),
    "wikiqa-test": ("zero-shot", None, 256),
}
DR_PAIRS = {"scifact": "scifact", "nfcorpus": "nfcorpus", "medical": "medquad"}  # the modules' own data
BOOTSTRAP_DRAWS = 5000


def paired_gain(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]) -> dict[str, float]:
    """Mean per-query NDCG@10 change and its 95% bootstrap interval (queries resampled, seeded): how far a
    set's measured gain could move on another sample of its queries."""
    qids = sorted(before)
    delta = np.array([after[q]["nDCG@10"] - before[q]["nDCG@10"] for q in qids])
    draws = np.random.default_rng(0).integers(0, len(delta), (BOOTSTRAP_DRAWS, len(delta)))
    means = delta[draws].mean(axis=1)
    return {
        "mean": round(float(delta.mean()), 4),
        "ci95": [round(float(np.quantile(means, 0.025)), 4), round(float(np.quantile(means, 0.975)), 4)],
        "improved": round(float(np.mean(delta > 0)), 3),
        "hurt": round(float(np.mean(delta < 0)), 3),
    }


def load_set(name: str):
    from ddr_search.data.beir import load_beir
    from ddr_search.training.beir_pairs import pairs_as_beir
    from ddr_search.training.pairs import read_pairs

    if name == "wikiqa-test":
        return pairs_as_beir(read_pairs(SHARED_DATA / "train" / "wikiqa" / "test.jsonl"))
    return load_beir(SHARED_DATA / "beir" / name, "test")


def train_dr(work: Path, cache_dir: Path):
    """DR on the union of the modules' training pairs (one model, as a user fine-tuning one encoder would)."""
    from ddr_search.model.backbone import load_backbone
    from ddr_search.training import dr
    from ddr_search.training.beir_pairs import pairs_from_beir
    from ddr_search.training.config import TrainConfig
    from ddr_search.training.corpus import read_corpus
    from ddr_search.training.pairs import Pair, read_pairs

    out = work / "dr-union"
    if (out / "config.json").exists():
        return out, json.loads((work / "dr-union.json").read_text())
    pairs, dev, corpora = [], [], {}
    for domain, folder in DR_PAIRS.items():
        beir = SHARED_DATA / "beir" / folder
        pairs += pairs_from_beir(beir, "train", domain=domain)
        if (beir / "qrels" / "dev.tsv").exists():
            dev += pairs_from_beir(beir, "dev", domain=domain)
        corpora[domain] = read_corpus(beir / "corpus.jsonl")
    live = read_pairs(SHARED_DATA / "train" / "liveqa-med" / "pairs.jsonl")
    pairs += [Pair(p.query, p.positives, p.negatives, "medical", p.query_id) for p in live]
    config = TrainConfig(epochs=1, batch_size=32, patience=2, max_query_length=64, loss="listwise")
    config.lr.update(backbone=2e-5)
    config.show_progress = sys.stderr.isatty()
    model, result = dr.train_dr_cached(
        pairs, config, corpora=corpora, dev=dev, cache_dir=cache_dir, passage_lengths={"nfcorpus": 128, "medical": 128}
    )
    dr.save_backbone(model, load_backbone(), out)
    notes = {"pairs": len(pairs), "seconds": round(result.seconds, 1), "steps": result.steps}
    (work / "dr-union.json").write_text(json.dumps(notes))
    return out, notes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=REPO / "ddr_search" / "pretrained")
    parser.add_argument("--work", type=Path, default=REPO / ".ddr" / "bench-quality")
    parser.add_argument("--reports", type=Path, default=REPORTS)
    parser.add_argument("--report-only", action="store_true", help="re-render quality.md/.png from quality.json")
    args = parser.parse_args()
    if args.report_only:
        report = json.loads((args.reports / "quality.json").read_text())
        (args.reports / "quality.md").write_text(markdown(report))
        plot(report, args.reports / "quality.png")
        return 0

    import torch

    torch.set_num_threads(2)
    from ddr_search.evaluation.harness import bm25_runs, default_cache_dir
    from ddr_search.evaluation.metrics import score_run
    from ddr_search.fusion import FusionConfig, fuse, routed_fusion
    from ddr_search.manifest import read_manifest
    from ddr_search.model.backbone import load_backbone
    from ddr_search.model.ddr import DDRModel
    from ddr_search.model.encoder import TorchEncoder
    from ddr_search.model.store import load_store
    from ddr_search.types import RoutingMode

    cache_dir = default_cache_dir()
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    dr_dir, dr_notes = train_dr(args.work, cache_dir)
    base = TorchEncoder.load(None)
    store = TorchEncoder.load(args.store)
    dr_backbone = load_backbone(dr_dir)
    dr = TorchEncoder(DDRModel(dr_backbone, 32), dr_backbone.tokenizer)
    manifest = read_manifest(args.store)
    modules = [n for n in manifest.router_rows]
    general = store.model.general
    assert general is None or not bool(general.gates.any()), "the store's general module is not the no-op"
    without = {}
    for name in modules:  # the same store minus one module: what must not move for the other sets
        model = load_store(args.store, load_backbone())
        model.remove_domain_module(name)
        without[name] = TorchEncoder(model, store.tokenizer)
    configs = store.fusion_configs()
    default = FusionConfig()

    metrics: dict[str, dict[str, dict[str, float]]] = {}
    module_gains: dict[str, dict[str, float]] = {}
    routing: dict[str, dict[str, float]] = {}
    independence: dict[str, dict[str, object]] = {n: {} for n in modules}

    def put(row: str, name: str, run, qrels) -> None:
        scores, _ = score_run(qrels, run, ("nDCG@10", "R@100"))
        metrics.setdefault(row, {})[name] = {k: round(v, 4) for k, v in scores.items()}
        print(f"{row:<30} {name:<12} nDCG@10 {scores['nDCG@10']:.4f}  R@100 {scores['R@100']:.4f}", flush=True)

    def fused(lexical, dense, config_of: dict) -> dict:
        """Fuse each query's BM25 and dense lists with that query's fusion (`config_of[q]`)."""
        return {
            q: [(f.id, f.score) for f in fuse([lexical.get(q, []), dense.get(q, [])], config_of[q], k=100)]
            for q in dict.fromkeys([*lexical, *dense])
        }

    for name, (_kind, module, length) in SETS.items():
        corpus, queries, qrels = load_set(name)
        frozen = TorchEncoder(base.model, base.tokenizer, max_passage_length=length)
        dense = Dense(corpus, frozen, cache_dir)
        lexical, _ = bm25_runs(corpus, queries)
        runs = {"frozen": dense.run(frozen, queries, routing=RoutingMode.NONE)[0], "DR": dense.run(dr, queries)[0]}
        if module is not None:
            runs["DDR-prior"] = dense.run(store, queries, domain=module)[0]
        else:
            runs["DDR-prior"] = dense.run(store, queries, routing=RoutingMode.NONE)[0]  # no module: general alone
        runs["DDR-auto"], weights, vectors = dense.run(store, queries, routing=RoutingMode.AUTO)
        put("BM25", name, lexical, qrels)
        for row, run in runs.items():
            put(row, name, run, qrels)
        if module is not None:
            per_query = {row: score_run(qrels, runs[row], ("nDCG@10",))[1] for row in ("frozen", "DDR-prior")}
            module_gains[name] = paired_gain(per_query["frozen"], per_query["DDR-prior"])
        defaults = dict.fromkeys(queries, default)
        prior = dict.fromkeys(queries, routed_fusion({module: 1.0} if module else {}, configs) or default)
        auto = {q: routed_fusion(weights[q], configs) or default for q in queries}
        put("hybrid BM25+frozen (0.5/0.5)", name, fused(lexical, runs["frozen"], defaults), qrels)
        put("hybrid BM25+DR (0.5/0.5)", name, fused(lexical, runs["DR"], defaults), qrels)
        put("hybrid BM25+DDR-prior (tuned)", name, fused(lexical, runs["DDR-prior"], prior), qrels)
        put("hybrid BM25+DDR-auto (tuned)", name, fused(lexical, runs["DDR-auto"], auto), qrels)
        reached = [w == ({module: 1.0} if module else {}) for w in weights.values()]
        routing[name] = {
            "correct": round(float(np.mean(reached)), 4),
            **{m: round(float(np.mean([m in w for w in weights.values()])), 4) for m in modules},
        }
        for removed, encoder in without.items():
            if removed == module:
                continue
            run, _, vectors_after = dense.run(encoder, queries, routing=RoutingMode.AUTO)
            stayed = [i for i, w in enumerate(weights.values()) if removed not in w]
            changed = int(sum(not np.array_equal(vectors[i], vectors_after[i]) for i in stayed))
            qids = list(weights)
            kept = {qids[i]: qrels[qids[i]] for i in stayed if qids[i] in qrels}

            def ndcg(run, judged) -> float:
                return score_run(judged, run, ("nDCG@10",))[0]["nDCG@10"]

            independence[removed][name] = {
                "queries_not_routed_to_it": len(stayed),
                "their_vectors_changed": changed,
                "their_ndcg_delta": round(ndcg(run, kept) - ndcg(runs["DDR-auto"], kept), 4),
                "all_queries_ndcg_delta": round(ndcg(run, qrels) - ndcg(runs["DDR-auto"], qrels), 4),
            }
    training = {
        name: {k: manifest.modules[name].notes.get(k) for k in ("train_seconds", "steps", "dev_before", "dev_after")}
        for name in modules
    }
    report = {
        "machine": machine("torch", "transformers", "ir-measures"),
        "store": str(args.store),
        "sets": {n: {"kind": k, "module": m, "passage_tokens": t} for n, (k, m, t) in SETS.items()},
        "metrics": metrics,
        "module_gains": module_gains,
        "routing": routing,
        "independence": independence,
        "fusion": {n: c.to_record() for n, c in configs.items()},
        "training": training,
        "dr": dr_notes,
        "seconds": round(time.perf_counter() - started, 1),
    }
    report["targets"] = targets(report)
    write_report(args.reports, "quality", report, markdown(report), lambda path: plot(report, path))
    return 0


def nd(report, row: str, name: str) -> float:
    return report["metrics"][row][name]["nDCG@10"]


def targets(report) -> list[dict[str, object]]:
    out = []

    def add(what: str, margin: float) -> None:
        out.append({"target": what, "margin": round(margin, 4), "met": margin >= 0})

    gains = {"nfcorpus": 0.01, "medquad": 0.03}
    for name, (kind, _, _) in SETS.items():
        frozen, auto = nd(report, "frozen", name), nd(report, "DDR-auto", name)
        if kind != "in-domain":
            add(f"{name}: DDR-auto >= frozen - 0.005 (dense)", auto - frozen + 0.005)
        else:
            prior = nd(report, "DDR-prior", name)
            add(f"{name}: module beats frozen by >= {gains.get(name, 0.0):+.2f}", prior - frozen - gains.get(name, 0.0))
            add(f"{name}: DDR-auto keeps >= 90% of prior's gain", (auto - frozen) - 0.9 * (prior - frozen))
        best = max(nd(report, "BM25", name), auto)
        add(
            f"{name}: hybrid (tuned) >= better retriever - 0.005",
            nd(report, "hybrid BM25+DDR-auto (tuned)", name) - best + 0.005,
        )
    return out


def markdown(report) -> str:
    sets = list(report["sets"])
    rows = list(report["metrics"])
    lines = [
        "# Quality: every set's test split (NDCG@10 / R@100, ir-measures)",
        "",
        f"Reproduce: `python bench/quality.py` (store: `{Path(report['store']).name}`; CPU only).",
        "In-domain sets have a shipped module ("
        + ", ".join(f"{n} -> {s['module']}" for n, s in report["sets"].items() if s["module"])
        + "); zero-shot sets have none. DDR-auto = no domain given (the default routing).",
        "",
        "| method | " + " | ".join(f"{n} ({report['sets'][n]['kind'][:2]})" for n in sets) + " |",
        "|---|" + "---|" * len(sets),
    ]
    for row in rows:
        cells = [f"{report['metrics'][row][n]['nDCG@10']:.3f} / {report['metrics'][row][n]['R@100']:.3f}" for n in sets]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    if report.get("module_gains"):
        lines += [
            "",
            "## Module gain over the frozen encoder (DDR-prior, dense), with its noise",
            "",
            "Mean per-query NDCG@10 change on the test queries, its 95% bootstrap interval (queries resampled, "
            f"{BOOTSTRAP_DRAWS} draws) and the share of queries the module improves / hurts.",
            "",
            "| set | gain | 95% interval | improved | hurt |",
            "|---|---|---|---|---|",
        ]
        for name, g in report["module_gains"].items():
            lo, hi = g["ci95"]
            shares = f"{g['improved']:.2f} | {g['hurt']:.2f}"
            lines.append(f"| {name} | {g['mean']:+.4f} | [{lo:+.4f}, {hi:+.4f}] | {shares} |")
    lines += [
        "",
        "## Routing (DDR-auto)",
        "",
        "Share of a set's queries reaching its module (in-domain) or the "
        "general module alone (zero-shot), and the share routed to each module.",
        "",
    ]
    modules = [k for k in next(iter(report["routing"].values())) if k != "correct"]
    lines += ["| set | correct | " + " | ".join(modules) + " |", "|---|---|" + "---|" * len(modules)]
    for name, r in report["routing"].items():
        lines.append(f"| {name} | {r['correct']:.3f} | " + " | ".join(f"{r[m]:.3f}" for m in modules) + " |")
    lines += [
        "",
        "## Domain independence",
        "",
        "The store minus one module, on every other set: of the queries not routed to the removed module, how "
        "many vectors changed and their NDCG@10 change; then the NDCG@10 change over all queries (those the "
        "module had won now go elsewhere).",
        "",
    ]
    lines += ["| removed | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets)]
    for removed, per_set in report["independence"].items():
        cells = []
        for n in sets:
            d = per_set.get(n)
            cells.append(
                "-"
                if d is None
                else f"{d['their_vectors_changed']}/{d['queries_not_routed_to_it']}, "
                f"{d['their_ndcg_delta']:+.4f}; all {d['all_queries_ndcg_delta']:+.4f}"
            )
        lines.append(f"| {removed} | " + " | ".join(cells) + " |")
    lines += ["", "## Targets", "", "| target | margin | met |", "|---|---|---|"]
    lines += [f"| {t['target']} | {t['margin']:+.4f} | {'yes' if t['met'] else 'NO'} |" for t in report["targets"]]
    lines += ["", "## Fusion per module (chosen on dev queries; general: on the zero-shot sets + WikiQA train)", ""]
    lines += [f"- {n}: {c['technique']} (BM25, dense) = ({c['weights']})" for n, c in report["fusion"].items()]
    lines += [
        "",
        "## Training (CPU, this machine)",
        "",
        "| module | dev before -> after | steps | seconds |",
        "|---|---|---|---|",
    ]
    for n, t in report["training"].items():
        lines.append(f"| {n} | {t['dev_before']} -> {t['dev_after']} | {t['steps']} | {t['train_seconds']} |")
    dr = report["dr"]
    lines += [
        f"| DR (full fine-tune, union of all pairs) | - | {dr['steps']} | {dr['seconds']} |",
        "",
        f"Machine: {report['machine']['cpu_count']} CPUs (shared), load {report['machine']['load_average_1_5_15']}; "
        f"whole run {report['seconds']} s.",
        "",
    ]
    return "\n".join(lines)


def plot(report, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    sets = list(report["sets"])
    fig, axes = plt.subplots(1, 2, figsize=(14, 5))
    for ax, rows, title in (
        (axes[0], ["BM25", "frozen", "DR", "DDR-prior", "DDR-auto"], "dense (and BM25)"),
        (
            axes[1],
            ["hybrid BM25+frozen (0.5/0.5)", "hybrid BM25+DR (0.5/0.5)", "hybrid BM25+DDR-auto (tuned)"],
            "hybrid",
        ),
    ):
        width = 0.8 / len(rows)
        for i, row in enumerate(rows):
            values = [report["metrics"][row][n]["nDCG@10"] for n in sets]
            ax.bar(np.arange(len(sets)) + i * width, values, width, label=row)
        ax.set_xticks(np.arange(len(sets)) + 0.4 - width / 2, sets, rotation=30)
        ax.set_ylabel("NDCG@10")
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
