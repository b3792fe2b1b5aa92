"""Label-free modules: what a module trained from a corpus alone (no queries) gains, and what it costs.

    python bench/labelfree.py            # about 25 minutes on 2 cores (an AMX Xeon)
    python bench/labelfree.py --sets medquad --time-budget 540   # the opt-in time budget, one set

For each dev corpus (SciFact train queries, NFCorpus dev, MedQuAD dev, PubMedQA train: no test split
is read), `train_domain` with no pairs, as `ddr-search train domain NAME --corpus F` runs it: default
settings and budget (training/selfsup.LabelFreeBudget), a fresh passage cache, so the seconds include
model load, encoding the corpus and training. MedQuAD is cut to 10,000 documents (every document a
dev query judges, then a seeded sample) to time the 10k-document case. Dense nDCG@10 / R@100 by
ir-measures of the frozen encoder and of the label-free module named as the query's domain (prior),
over the set's full passages (frozen vectors; the general module is the no-op). Then auto routing (no
domain given), the way a user's queries arrive: the shipped store as it is, and with the label-free
module added; the share of queries that reach the new module (its profile is made of pseudo-queries).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from _common import BEIR, REPO, REPORTS, Dense, machine, write_report

SETS = {  # name: (dev split, passage tokens at evaluation, documents kept)
    "pubmedqa": ("train", 256, None),
    "nfcorpus": ("dev", 128, None),
    "scifact": ("train", 256, None),
    "medquad": ("dev", 128, 10_000),
}
TARGET_GAIN, MAX_LOSS, MAX_SECONDS_10K = 0.01, 0.005, 600


def cut(corpus: dict, qrels: dict, size: int | None) -> dict:
    """Every judged document, then a seeded sample of the rest, up to `size`."""
    if size is None or len(corpus) <= size:
        return corpus
    judged = sorted({d for q in qrels.values() for d in q if d in corpus})
    rest = sorted(set(corpus) - set(judged))
    random.Random(0).shuffle(rest)
    keep = set(judged + rest[: size - len(judged)])
    return {k: v for k, v in corpus.items() if k in keep}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=Path, default=REPORTS)
    parser.add_argument("--sets", nargs="*", default=list(SETS))
    parser.add_argument("--time-budget", type=float, help="LabelFreeBudget.seconds (default: none, as the CLI)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(2)
    from ddr_search.data.beir import load_beir
    from ddr_search.evaluation.harness import default_cache_dir
    from ddr_search.evaluation.metrics import score_run
    from ddr_search.manifest import read_manifest
    from ddr_search.model.encoder import TorchEncoder
    from ddr_search.training.api import train_domain
    from ddr_search.training.config import TrainConfig
    from ddr_search.training.selfsup import LABEL_FREE_BUDGET
    from ddr_search.types import Document, RoutingMode

    frozen_model = TorchEncoder.load(None)
    shipped = TorchEncoder.load(REPO / "ddr_search" / "pretrained")
    budget = replace(LABEL_FREE_BUDGET, seconds=args.time_budget)
    rows = {}
    for name in args.sets:
        split, length, size = SETS[name]
        corpus, queries, qrels = load_beir(BEIR / name, split)
        corpus = cut(corpus, qrels, size)
        docs = [Document(id=i, title=d.get("title", ""), text=d["text"]) for i, d in corpus.items()]
        with tempfile.TemporaryDirectory() as work:
            config = TrainConfig(show_progress=False)
            started = time.perf_counter()
            _, result = train_domain(
                "unlabelled", REPO / "ddr_search" / "pretrained", Path(work) / "store", config,
                corpus=docs, cache_dir=Path(work) / "cache", budget=budget,
            )  # fmt: skip
            seconds = time.perf_counter() - started
            module = TorchEncoder.load(Path(work) / "store")
            notes = read_manifest(Path(work) / "store").modules["unlabelled"].notes
        frozen = TorchEncoder(frozen_model.model, frozen_model.tokenizer, max_passage_length=length)
        dense = Dense(corpus, frozen, default_cache_dir())
        scores, reached = {}, {}
        for row, (encoder, options) in {
            "frozen": (frozen, {"routing": RoutingMode.NONE}),
            "label-free (prior)": (module, {"domain": "unlabelled"}),
            "shipped (auto)": (shipped, {"routing": RoutingMode.AUTO}),
            "shipped + label-free (auto)": (module, {"routing": RoutingMode.AUTO}),
        }.items():
            run, weights, _ = dense.run(encoder, queries, **options)
            scores[row] = {k: round(v, 4) for k, v in score_run(qrels, run, ("nDCG@10", "R@100"))[0].items()}
            if options.get("routing") is RoutingMode.AUTO:
                names = ["unlabelled", *shipped.model.module_names]
                reached[row] = {n: round(sum(n in w for w in weights.values()) / len(weights), 4) for n in names}
        delta = scores["label-free (prior)"]["nDCG@10"] - scores["frozen"]["nDCG@10"]
        rows[name] = {
            "split": split,
            "documents": len(docs),
            "queries": len(queries),
            "seconds": round(seconds, 1),
            "steps": result.steps,
            "trained_on_documents": notes["corpus_documents"],
            "time_limited": bool(notes.get("time_limited", 0)),
            "pseudo_dev_ndcg": [round(result.baseline_dev, 4), round(result.best_dev, 4)],
            **scores,
            "delta_ndcg10": round(delta, 4),
            "auto_reached": reached,
        }
        print(json.dumps({name: rows[name]}), flush=True)
    report = {"machine": machine("torch", "transformers", "ir-measures"), "time_budget": args.time_budget, "sets": rows}
    report["targets"] = targets(rows)
    write_report(args.reports, "labelfree", report, markdown(report), lambda path: plot(rows, path))
    return 0


def targets(rows: dict) -> list[dict[str, object]]:
    gains = sorted((r["delta_ndcg10"] for r in rows.values()), reverse=True)
    ten_k = [r["seconds"] for r in rows.values() if r["documents"] >= 10_000]
    two_gain = len(gains) > 1 and gains[1] >= TARGET_GAIN
    return [
        {"target": "+1.0 nDCG@10 on at least two dev corpora", "value": gains[:2], "met": two_gain},
        {"target": "never loses more than 0.005", "value": gains[-1], "met": gains[-1] >= -MAX_LOSS},
        {"target": "10k documents in <= 600 s", "value": ten_k, "met": bool(ten_k) and max(ten_k) <= MAX_SECONDS_10K},
    ]


def markdown(report: dict) -> str:
    lines = [
        "# Label-free modules (`python bench/labelfree.py`)",
        "",
        "A module trained from each corpus alone (no queries), with the defaults of "
        "`ddr-search train domain NAME --corpus F`; dense nDCG@10 / R@100 (ir-measures) on the corpus's "
        "dev queries, frozen encoder vs the module named as the domain. Seconds: the whole `train_domain` "
        "call with an empty passage cache (model load, encoding the corpus at 128 tokens, training). "
        f"Time budget (`--time-budget`): {report['time_budget'] or 'none'} s. Trained on: the documents the "
        "budget let it encode, and whether it cut the training steps; evaluation always ranks every document.",
        "",
        "| corpus (dev split) | documents | trained on | queries | frozen nDCG@10 | label-free nDCG@10 | delta "
        "| R@100 frozen / label-free | training s | steps |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in report["sets"].items():
        f, m = r["frozen"], r["label-free (prior)"]
        cut_short = " (time-limited)" if r["time_limited"] else ""
        lines.append(
            f"| {name} ({r['split']}) | {r['documents']:,} | {r['trained_on_documents']:,} | {r['queries']:,} "
            f"| {f['nDCG@10']:.4f} | {m['nDCG@10']:.4f} | {r['delta_ndcg10']:+.4f} "
            f"| {f['R@100']:.4f} / {m['R@100']:.4f} | {r['seconds']:.0f} | {r['steps']}{cut_short} |"
        )
    lines += [
        "",
        "Auto routing (no domain given): dense nDCG@10 of the shipped store and of the same store with the "
        "label-free module added, and the share of the dev queries reaching each module.",
        "",
        "| corpus | shipped (auto) | + label-free (auto) | delta | reach the label-free module | reach shipped "
        "modules before -> after |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in report["sets"].items():
        before, after = r["shipped (auto)"]["nDCG@10"], r["shipped + label-free (auto)"]["nDCG@10"]
        was, now = r["auto_reached"]["shipped (auto)"], r["auto_reached"]["shipped + label-free (auto)"]
        shipped = ", ".join(f"{n} {was[n]:.0%} -> {now[n]:.0%}" for n in was if n != "unlabelled")
        lines.append(
            f"| {name} | {before:.4f} | {after:.4f} | {after - before:+.4f} | {now['unlabelled']:.0%} | {shipped} |"
        )
    lines += ["", "| target | value | met |", "|---|---|---|"]
    lines += [f"| {t['target']} | {t['value']} | {'yes' if t['met'] else 'no'} |" for t in report["targets"]]
    m = report["machine"]
    lines += ["", f"Machine: {m['cpu']}, {m['cpu_count']} cores, load {m['load_average_1_5_15']}.", ""]
    return "\n".join(lines)


def plot(rows: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    names = list(rows)
    left.bar(names, [rows[n]["delta_ndcg10"] * 100 for n in names], color="tab:green")
    left.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    left.axhline(-0.5, color="tab:red", linestyle=":", linewidth=1)
    left.set_ylabel("dense nDCG@10 gain (points)")
    left.set_title("label-free module vs frozen (dev)")
    docs = [rows[n]["documents"] for n in names]
    right.plot(docs, [rows[n]["seconds"] for n in names], "o-")
    right.axhline(MAX_SECONDS_10K, color="grey", linestyle="--", linewidth=1)
    right.set_xlabel("documents")
    right.set_ylabel("training seconds (incl. encoding)")
    right.set_title("label-free training time, 2 cores")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
