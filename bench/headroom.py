"""Headroom: each shipped domain module against full fine-tuning of the query tower on that domain's own
pairs (issue 10, item 3: does a ~2% query-side module leave gain on the table?).

    python bench/headroom.py [--domains scifact,nfcorpus,medical] [--prefix-only-store DIR]
    # default scifact,nfcorpus: about 4 minutes

`--prefix-only-store`: a store of the same recipes without query adapters adds its modules as a third column
(`python scripts/release_modules.py --adapter-rank 0 --work .ddr/release-prefix-only` makes it; use its
`medical` store, the last one).

`medical` fine-tunes on MedQuAD's ~13,600 pairs: about 12 minutes more on 2 cores (in the committed run).

Both sides of the comparison see the same things: the recipe's train pairs and dev split (the release
script's RECIPES), passages from the frozen encoder's cache, full-corpus negatives, the listwise loss and
the best-on-dev step. Full fine-tuning runs every weight of the query tower at lr 2e-5 for 4 epochs (fixed
in advance, not tuned). Test splits are only read for the table: NDCG@10 / R@100 by ir-measures, each gain
over the frozen encoder with a 95% paired bootstrap interval (bench/quality.py's).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

import numpy as np
from _common import REPO, REPORTS, SHARED_DATA, Dense, machine, write_report
from quality import SETS, load_set, paired_gain

sys.path.insert(0, str(REPO / "scripts"))
from release_modules import RECIPES, data_for  # the shipped recipes: one home

FT_LR = 2e-5
FT_EPOCHS = 4


def fine_tune_query_tower(recipe, cache_dir, tokenizer):
    """Full fine-tuning of the query tower on the recipe's own pairs: (encoder, training seconds)."""
    from ddr_search.model.encoder import TorchEncoder
    from ddr_search.training.config import TrainConfig
    from ddr_search.training.dr import train_dr_cached

    train, dev, corpus = data_for(recipe, SHARED_DATA, None)
    train = [replace(p, domain=recipe.name) for p in train]  # extra pairs files carry no domain
    config = TrainConfig(epochs=FT_EPOCHS, batch_size=32, patience=2, max_query_length=64, loss="listwise")
    config.lr.update(backbone=FT_LR)
    config.show_progress = sys.stderr.isatty()
    started = time.perf_counter()
    model, _ = train_dr_cached(
        train,
        config,
        corpora={recipe.name: corpus},
        dev=dev,
        cache_dir=cache_dir,
        passage_lengths={recipe.name: recipe.passage_length},
    )
    seconds = time.perf_counter() - started
    return TorchEncoder(model, tokenizer), seconds


def measure(recipes, store, prefix_only_store=None) -> dict:
    from ddr_search.evaluation.harness import default_cache_dir
    from ddr_search.evaluation.metrics import score_run
    from ddr_search.model.encoder import TorchEncoder
    from ddr_search.types import RoutingMode

    cache_dir = default_cache_dir()
    frozen = TorchEncoder.load(None)
    shipped = TorchEncoder.load(store)
    prefix_only = TorchEncoder.load(prefix_only_store) if prefix_only_store else None
    rows: dict[str, dict] = {}
    for recipe in recipes:
        corpus, queries, qrels = load_set(recipe.beir)
        queries = {q: t for q, t in queries.items() if q in qrels}
        length = SETS[recipe.beir][2]  # the passage tokens bench/quality.py evaluates the set at
        dense = Dense(corpus, TorchEncoder(frozen.model, frozen.tokenizer, max_passage_length=length), cache_dir)
        tuned, seconds = fine_tune_query_tower(recipe, cache_dir, frozen.tokenizer)  # the same backbone's
        runs = {
            "frozen": dense.run(frozen, queries, routing=RoutingMode.NONE)[0],
            "module": dense.run(shipped, queries, domain=recipe.name)[0],
            "query tower fine-tuned": dense.run(tuned, queries, routing=RoutingMode.NONE)[0],
        }
        if prefix_only is not None:
            runs["prefix-only module"] = dense.run(prefix_only, queries, domain=recipe.name)[0]
        scored = {name: score_run(qrels, run, ("nDCG@10", "R@100")) for name, run in runs.items()}
        rows[recipe.name] = {
            "set": recipe.beir,
            "queries": len(queries),
            "metrics": {name: {k: round(v, 4) for k, v in s[0].items()} for name, s in scored.items()},
            "gain": {name: paired_gain(scored["frozen"][1], scored[name][1]) for name in runs if name != "frozen"},
            "fine_tune_seconds": round(seconds, 1),
        }
        print(f"[headroom] {recipe.name}: {rows[recipe.name]['gain']}", flush=True)
    return rows


def markdown(report: dict) -> str:
    lines = [
        "# Headroom: shipped modules vs full fine-tuning of the query tower on the same pairs (test splits)",
        "",
        f"Reproduce: `python bench/headroom.py --domains {','.join(report['rows'])}"
        + (f" --prefix-only-store {report['prefix_only_store']}`" if report.get("prefix_only_store") else "`")
        + ". Fine-tuning: every query-tower"
        f" weight, lr {FT_LR}, {FT_EPOCHS} epochs, best dev step, the recipe's own train pairs and dev split; passages"
        " frozen (cached). Gains over the frozen encoder, NDCG@10, with 95% paired bootstrap intervals.",
        "",
        "| module (set, test queries) | frozen | module | gain | query tower fine-tuned | gain | module's share of"
        " the fine-tuned gain | fine-tuning s | prefix-only module's gain |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in report["rows"].items():
        m, g = row["metrics"], row["gain"]
        module, tuned = g["module"], g["query tower fine-tuned"]
        share = f"{module['mean'] / tuned['mean']:.0%}" if tuned["mean"] > 0 else "-"
        lines.append(
            f"| {name} ({row['set']}, {row['queries']}) | {m['frozen']['nDCG@10']:.4f} | {m['module']['nDCG@10']:.4f}"
            f" | {_gain(module)} | {m['query tower fine-tuned']['nDCG@10']:.4f} | {_gain(tuned)} | {share}"
            f" | {row['fine_tune_seconds']} | {_gain(g.get('prefix-only module'))} |"
        )
    mach = report["machine"]
    lines += ["", f"Machine: {mach['cpu']}, {mach['cpu_count']} CPUs (shared), load {mach['load_average_1_5_15']}.", ""]
    return "\n".join(lines)


def _gain(gain: dict | None) -> str:
    return f"{gain['mean']:+.4f} [{gain['ci95'][0]:+.4f}, {gain['ci95'][1]:+.4f}]" if gain else "-"


def plot(report: dict, path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    names = list(report["rows"])
    fig, ax = plt.subplots(figsize=(7, 4))
    columns = [
        k for k in ("prefix-only module", "module", "query tower fine-tuned") if k in report["rows"][names[0]]["gain"]
    ]
    width = 0.8 / len(columns)
    for offset, key in enumerate(columns):
        gains = [report["rows"][n]["gain"][key] for n in names]
        means = np.array([g["mean"] for g in gains])
        errors = np.array([[g["mean"] - g["ci95"][0] for g in gains], [g["ci95"][1] - g["mean"] for g in gains]])
        ax.bar(np.arange(len(names)) + offset * width, means, width, yerr=errors, capsize=4, label=key)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(np.arange(len(names)) + width * (len(columns) - 1) / 2, names)
    ax.set_ylabel("NDCG@10 gain over frozen (95% CI)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=str(REPO / "ddr_search" / "pretrained"))
    parser.add_argument("--domains", default="scifact,nfcorpus", help="comma-separated recipe names")
    parser.add_argument("--prefix-only-store", default=None, help="the same recipes without query adapters")
    args = parser.parse_args()
    wanted = args.domains.split(",")
    unknown = sorted(set(wanted) - {r.name for r in RECIPES})
    if unknown:
        parser.error(f"unknown domain(s) {unknown}; recipes: {[r.name for r in RECIPES]}")
    import torch

    torch.set_num_threads(2)
    recipes = [r for r in RECIPES if r.name in wanted]
    report = {
        "rows": measure(recipes, args.store, args.prefix_only_store),
        "prefix_only_store": args.prefix_only_store,
        "machine": machine("torch", "transformers", "ir-measures"),
    }
    write_report(REPORTS, "headroom", report, markdown(report), lambda p: plot(report, p))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
