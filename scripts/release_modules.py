"""Train the module store the package ships (ddr_search/pretrained), from ../shared/data, on CPU.

    .venv/bin/python scripts/release_modules.py            # trains under .ddr/release, prints a summary
    .venv/bin/python scripts/release_modules.py --ship     # ... then replaces ddr_search/pretrained
    .venv/bin/python scripts/release_modules.py --routing-only [--ship]  # re-choose thresholds only
    .venv/bin/python scripts/release_modules.py --retrain nfcorpus [--ship]  # one module anew, the rest kept

Recipe (docs/routing.md, docs/training.md): a general module that is the exact no-op and carries the routing
background (train questions of no domain), then one domain module at a time with `train_domain` on top of it.
Each module sees only its own data, and its routing profile is calibrated on its own training queries against
that fixed background, so any module can be retrained or dropped alone. Then each module's routing quantile
is chosen on dev queries (docs/routing.md), and the general module's fusion on the zero-shot collections.
Every choice (learning rate, epochs, checkpoint) is made on train/dev splits; no test query is read.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PRETRAINED = REPO / "ddr_search" / "pretrained"
WIKIQA_TRAIN = Path("train") / "wikiqa" / "train.jsonl"  # under <data>: general questions, and their pages


@dataclass(frozen=True)
class Recipe:
    """One shipped domain module: where its data lives and how it trains."""

    name: str
    beir: str  # folder under <data>/beir: the corpus and the train (and dev) qrels
    lr: float
    epochs: int
    passage_length: int
    dev_split: str | None = None  # a BEIR dev split; None = 10% of the train queries
    extra_pairs: str | None = None  # more training pairs (JSONL, ddr_search.training.pairs) under <data>
    average_runs: int = 1  # runs (seeds 0, 1, ...) averaged into the module: TrainConfig.average_runs
    keep: bool = False  # train with the keep loss on queries of no domain and of the other domains (keep_texts)
    keep_sentences: int = 0  # Wikipedia sentences of many fields added to its keep queries (field_sentences)


RECIPES = (
    # SciFact: 809 train queries, 23 steps an epoch; early stopping (patience 2) keeps the best epoch.
    # The keep loss with sentences of many fields as well: with the other domains' and the background's
    # questions alone it moved questions of fields it had never seen (Cranfield's; docs/training.md)
    Recipe("scifact", "scifact", lr=5e-3, epochs=12, passage_length=256, keep=True, keep_sentences=1000),
    # NFCorpus: ~43 positives per query; lr 2e-2 with the listwise loss won a dev-only search (docs/training.md).
    # Passages at the index's 256 tokens; three seeds averaged: one run's dev gain varies +2.0..+2.7 by seed.
    # The keep loss: without it the module cost MedQuAD's dev queries 0.106 NDCG@10 (docs/training.md)
    Recipe("nfcorpus", "nfcorpus", lr=2e-2, epochs=4, passage_length=256, dev_split="dev", average_runs=3, keep=True),
    # MedQuAD + LiveQA-Med; the keep loss as well: NFCorpus's questions are the foreign ones it takes most
    # often, and with it every dev quantile stays within the other sets' cap (docs/training.md)
    Recipe(
        "medical",
        "medquad",
        lr=5e-3,
        epochs=2,
        passage_length=128,
        dev_split="dev",
        extra_pairs="train/liveqa-med/pairs.jsonl",
        keep=True,
    ),
)


KEEP_WEIGHT = 10.0  # the keep loss's weight for a recipe with `keep` (chosen on dev: docs/training.md)
KEEP_PER_DOMAIN = 1000  # training queries of each other shipped domain among the keep queries


def config(recipe: Recipe, limit: int | None):
    from ddr_search.training.config import TrainConfig

    cfg = TrainConfig(epochs=1 if limit else recipe.epochs, batch_size=32, patience=2, max_query_length=64)
    cfg.lr["domain"] = recipe.lr
    cfg.average_runs = 1 if limit else recipe.average_runs
    cfg.keep_weight = KEEP_WEIGHT if recipe.keep else 0.0
    cfg.show_progress = sys.stderr.isatty()
    return cfg


def pairs_for(recipe: Recipe, data: Path, limit: int | None):
    """(train pairs, dev pairs or None) as `train_domain` is given them; `limit` keeps a small slice (tests)."""
    from ddr_search.training.beir_pairs import pairs_from_beir
    from ddr_search.training.pairs import read_pairs

    folder = data / "beir" / recipe.beir
    train = pairs_from_beir(folder, "train", domain=recipe.name)
    dev = pairs_from_beir(folder, recipe.dev_split, domain=recipe.name) if recipe.dev_split else None
    if recipe.extra_pairs:
        train += read_pairs(data / recipe.extra_pairs)[: limit or None]
    if limit:
        train, dev = train[:limit], (dev[: max(4, limit // 4)] if dev else None)
    return train, dev


def held_out_split(recipe: Recipe, data: Path, limit: int | None):
    """(train pairs, dev pairs) as training used them: the recipe's dev split, else the share of the train
    pairs `train_domain` holds out for early stopping."""
    from ddr_search.training.pairs import split_dev

    train, dev = pairs_for(recipe, data, limit)
    if dev is not None:
        return train, dev
    cfg = config(recipe, limit)
    return split_dev(train, cfg.dev_fraction, cfg.seed)


def data_for(recipe: Recipe, data: Path, limit: int | None):
    """(train pairs, dev pairs or None, corpus); `limit` keeps a small slice (tests)."""
    from ddr_search.training.corpus import read_corpus

    train, dev = pairs_for(recipe, data, limit)
    corpus = read_corpus(data / "beir" / recipe.beir / "corpus.jsonl")
    if limit:
        wanted = {p.id for pair in (*train, *(dev or ())) for p in pair.positives if p.id}
        corpus = [d for d in corpus if d.id in wanted] + [d for d in corpus if d.id not in wanted][: 4 * limit]
    return train, dev, corpus


def keep_texts(recipe: Recipe, data: Path, limit: int | None) -> list[str] | None:
    """The keep queries of a recipe with `keep`: the routing background's questions (no domain), its
    `keep_sentences` sentences of many fields, and a seeded sample of each other shipped domain's training
    queries; never a dev query of any set."""
    if not recipe.keep:
        return None
    texts = background_texts(data, limit) + field_sentences(data, recipe.keep_sentences)[: limit or None]
    for other in RECIPES:
        if other.name != recipe.name:
            train, _ = held_out_split(other, data, limit)
            queries = list(dict.fromkeys(p.query for p in train))
            texts += [queries[i] for i in np.random.default_rng(0).permutation(len(queries))[:KEEP_PER_DOMAIN]]
    return texts


def train_recipe(recipe: Recipe, store: Path, out: Path, data: Path, limit: int | None, cache_dir: Path | None):
    """`train_domain` with a recipe's data and settings: its module on top of `store`, written to `out`.
    Returns (train pairs, dev pairs or None, the training result)."""
    from ddr_search.training import api

    train, dev, corpus = data_for(recipe, data, limit)
    _, result = api.train_domain(
        recipe.name,
        store,
        out,
        config(recipe, limit),
        pairs=train,
        dev=dev,
        corpus=corpus,
        cache_dir=cache_dir,
        passage_length=recipe.passage_length,
        keep=keep_texts(recipe, data, limit),
    )
    return train, dev, result


def release(
    data: Path, work: Path, *, limit: int | None = None, cache_dir: Path | None = None, adapter_rank: int | None = None
) -> dict[str, dict]:
    """Train every recipe in turn into `work/<name>` (each store = the previous + one module). `adapter_rank`:
    the domain modules' query adapters (default DEFAULT_ADAPTER_RANK; 0 = prefix-only, bench/headroom's column)."""
    from ddr_search.model.adapters import DEFAULT_ADAPTER_RANK
    from ddr_search.model.backbone import load_backbone
    from ddr_search.model.ddr import DDRModel
    from ddr_search.model.store import save_store
    from ddr_search.training import api

    work.mkdir(parents=True, exist_ok=True)
    store = work / "base"
    rank = DEFAULT_ADAPTER_RANK if adapter_rank is None else adapter_rank
    backbone = load_backbone()
    model = DDRModel(backbone, api.DEFAULT_PREFIX_LENGTH, rank)
    model.add_general(seed=0)  # gates at zero: the exact no-op (MODEL_CARD.md says why it is not trained)
    attach_background(model, backbone.tokenizer, data, limit)  # every module's profile is scored against it
    save_store(model, store, notes={"general": {"trained": 0, "note": "exact no-op: gates at zero"}})
    summary: dict[str, dict] = {}
    for recipe in RECIPES:
        out = work / recipe.name
        train, dev, result = train_recipe(recipe, store, out, data, limit, cache_dir)
        summary[recipe.name] = {
            "passage_length": recipe.passage_length,
            "train_pairs": len(train),
            "dev_pairs": len(dev) if dev else None,
            "dev_before": round(result.baseline_dev, 4),
            "dev_after": round(result.best_dev, 4),
            "steps": result.steps,
            "seconds": round(result.seconds, 1),
        }
        print(f"[release] {recipe.name}: {json.dumps(summary[recipe.name])}", flush=True)
        store = out
    summary["routing"] = routing_quantiles(store, data, limit, cache_dir)
    summary["general"] = general_fusion(store, data, limit, cache_dir)
    (work / "release.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


QUANTILES = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5)  # routing thresholds a module may get (0.05 default)


def dev_sets(data: Path, limit: int | None) -> dict[str, tuple[dict, dict, dict, int]]:
    """name -> (corpus, queries, qrels, passage tokens): each recipe's own dev queries (the ones its
    training held out) and two sets no shipped module is for (biomedical, general); never a test split."""
    from ddr_search.data.beir import load_beir

    sets = {}
    for recipe in RECIPES:
        folder = data / "beir" / recipe.beir
        if recipe.dev_split:
            sets[recipe.name] = (*load_beir(folder, recipe.dev_split), recipe.passage_length)
            continue
        corpus, queries, qrels = load_beir(folder, "train")
        held = {p.query_id for p in held_out_split(recipe, data, limit)[1]}
        ids = [q for q in queries if q in held]  # file order, not set order: the bootstrap draws depend on it
        sets[recipe.name] = (corpus, {q: queries[q] for q in ids}, {q: qrels[q] for q in ids}, recipe.passage_length)
    for name, (corpus, queries, qrels) in general_query_sets(data).items():
        _, evidence = background_split(queries, qrels)
        sets[name] = (corpus, {q: queries[q] for q in evidence}, {q: qrels[q] for q in evidence}, 256)
    if limit:
        for name, (corpus, queries, qrels, length) in sets.items():
            queries = dict(list(queries.items())[:limit])
            judged = {d for q in queries for d in qrels.get(q, {})}
            corpus = {d: t for d, t in corpus.items() if d in judged} | dict(list(corpus.items())[: 4 * limit])
            sets[name] = (corpus, queries, {q: qrels[q] for q in queries if q in qrels}, length)
    return sets


def general_query_sets(data: Path) -> dict[str, tuple[dict, dict, dict]]:
    """Train questions no shipped module is for (biomedical, general): half of each is the routing
    background, the other half dev evidence for the thresholds (`background_split`)."""
    from ddr_search.data.beir import load_beir
    from ddr_search.training.beir_pairs import pairs_as_beir
    from ddr_search.training.pairs import read_pairs

    return {
        "pubmedqa": load_beir(data / "beir" / "pubmedqa", "train"),
        "wikiqa-train": pairs_as_beir(read_pairs(data / WIKIQA_TRAIN)),
    }


def background_split(queries: dict, qrels: dict) -> tuple[list[str], list[str]]:
    """(background ids, evidence ids): a seeded half each of the judged queries, in file order."""
    qids = [q for q in queries if q in qrels]
    first_half = set(np.random.default_rng(0).permutation(len(qids))[: len(qids) // 2].tolist())
    return [q for i, q in enumerate(qids) if i in first_half], [q for i, q in enumerate(qids) if i not in first_half]


def background_texts(data: Path, limit: int | None) -> list[str]:
    """The routing background's questions: the background half of each general set, in file order."""
    texts = []
    for queries, qrels in ((q, r) for _, q, r in general_query_sets(data).values()):
        texts += [queries[q] for q in background_split(queries, qrels)[0][: limit or None]]
    return texts


def field_sentences(data: Path, count: int) -> list[str]:
    """Keep queries from fields no shipped domain or background question covers (engineering, history, ...):
    a seeded sample of `count` of the Wikipedia sentences WikiQA's background questions were asked about.
    Only the background half's sentences, so the evidence half of WikiQA stays unseen by training."""
    if count == 0:
        return []
    from ddr_search.training.beir_pairs import pairs_as_beir
    from ddr_search.training.pairs import read_pairs

    pairs = read_pairs(data / WIKIQA_TRAIN)
    _, queries, qrels = pairs_as_beir(pairs)  # as general_query_sets splits it, without loading PubMedQA
    background = {queries[q] for q in background_split(queries, qrels)[0]}
    pairs = [p for p in pairs if p.query in background]
    sentences = list(dict.fromkeys(d.text for p in pairs for d in (*p.positives, *p.negatives)))
    picked = np.random.default_rng(0).permutation(len(sentences))[:count]
    return [sentences[i] for i in picked]


def attach_background(model, tokenizer, data: Path, limit: int | None) -> None:  # type: ignore[no-untyped-def]
    """The store's routing background: general-module vectors of the background half of each general set."""
    from ddr_search.model.encoder import TorchEncoder
    from ddr_search.routing import background_profile
    from ddr_search.types import RoutingMode

    texts = background_texts(data, limit)
    encoder = TorchEncoder(model, tokenizer)
    model.routing_background = background_profile(encoder.encode_queries(texts, routing=RoutingMode.NONE).vectors)


def routing_quantiles(
    store: Path, data: Path, limit: int | None, cache_dir: Path | None, retrained: str | None = None
) -> dict:
    """Each module's routing threshold, chosen on dev queries by what it is worth (ddr_search.routing_quantile):
    its own held-out queries' NDCG@10 gain through it against the change it makes to the other sets' queries
    it would accept; the default quantile stays unless a bootstrap says another is better. Scores come from
    a profile of its training queries alone (the dev queries are not in it); the shipped profile (training +
    dev queries) then takes the quantile. The same is done without the routing background, and both designs'
    auto routing is run on every dev set (the comparison in docs/routing.md); the background one ships.

    `retrained`: the one module `--retrain` trained anew. The store's background is then kept as it is (not
    encoded again, which on another CPU rounds differently), and every other module keeps its threshold bit
    for bit unless its own chosen quantile moved."""
    from ddr_search.model.encoder import TorchEncoder
    from ddr_search.model.store import save_store
    from ddr_search.routing import calibrate, profile_rows, recalibrate
    from ddr_search.types import RoutingMode

    encoder = TorchEncoder.load(store)
    model = encoder.model
    if retrained is None or model.routing_background is None:
        attach_background(model, encoder.tokenizer, data, limit)
    ndcg, unit = dev_evidence(encoder, data, limit, cache_dir)
    train_vectors = {}
    for recipe in RECIPES:
        train, _ = held_out_split(recipe, data, limit)
        queries = list(dict.fromkeys(p.query for p in train))
        kept = [queries[i] for i in profile_rows(len(queries))]
        train_vectors[recipe.name] = encoder.encode_queries(kept, routing=RoutingMode.NONE).vectors
    designs = {}
    for design, background in (("knn", None), ("knn relative to the background", model.routing_background)):
        held_out = {name: calibrate(name, vectors, background=background) for name, vectors in train_vectors.items()}
        choices = {name: choose_threshold(profile, ndcg, unit) for name, profile in held_out.items()}
        chosen = [recalibrate(held_out[name], choice.quantile) for name, choice in choices.items()]
        designs[design] = {"choices": choices, "dev": dev_auto_routing(chosen, ndcg, unit)}
    summary, notes = {}, {}
    for name, choice in designs["knn relative to the background"]["choices"].items():
        if retrained in (None, name) or model.profiles[name].quantile != choice.quantile:
            model.profiles[name] = recalibrate(model.profiles[name], choice.quantile, model.routing_background)
        summary[name] = {
            "quantile": choice.quantile,
            "dev_utility_by_quantile": choice.utilities,
            "share_of_draws_beating_default": choice.confidence,
            "share_required": choice.required,
            "worst_other_set_by_quantile": choice.worst_other,
            "compared_against": choice.baseline,
        }
        notes[name] = {
            **model.loaded_from.modules[name].notes,
            "routing_quantile": choice.quantile,
            "routing_dev_utility": " ".join(f"{q:g}:{u:+.4f}" for q, u in choice.utilities.items()),
        }
        print(f"[release] {name}: routing quantile {choice.quantile}, dev utility {choice.utilities}")
    summary["designs"] = {
        design: {"quantiles": {n: c.quantile for n, c in d["choices"].items()}, "dev": d["dev"]}
        for design, d in designs.items()
    }
    save_store(model, store, notes=notes)
    return summary


def dev_evidence(encoder, data: Path, limit: int | None, cache_dir: Path | None):  # type: ignore[no-untyped-def]
    """(set -> "general" or module -> per-query NDCG@10, set -> general-module query vectors as unit rows)."""
    from ddr_search.evaluation.harness import default_cache_dir, dense_runs
    from ddr_search.evaluation.metrics import score_run
    from ddr_search.model.encoder import TorchEncoder
    from ddr_search.types import RoutingMode

    ndcg: dict[str, dict[str, np.ndarray]] = {}
    unit: dict[str, np.ndarray] = {}
    for name, (corpus, queries, qrels, length) in dev_sets(data, limit).items():
        passages = TorchEncoder(encoder.model, encoder.tokenizer, max_passage_length=length)  # queries as `encoder`'s
        qids = [q for q in queries if q in qrels]
        judged = {q: queries[q] for q in qids}
        ndcg[name] = {}
        for module in (None, *(r.name for r in RECIPES)):
            routing = {"domain": module} if module else {"routing": RoutingMode.NONE}
            run = dense_runs(
                corpus, judged, passages, **routing, depth=100, cache_dir=cache_dir or default_cache_dir(),
                show_progress=False,
            )[0]  # fmt: skip
            per_query = score_run({q: qrels[q] for q in qids}, run, ("nDCG@10",))[1]
            ndcg[name][module or "general"] = np.array([per_query[q]["nDCG@10"] for q in qids], dtype=np.float32)
        vectors = encoder.encode_queries(list(judged.values()), routing=RoutingMode.NONE).vectors
        unit[name] = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return ndcg, unit


def choose_threshold(held_out, ndcg: dict, unit: dict):  # type: ignore[no-untyped-def]
    """One module's quantile from its held-out profile: its own dev queries against every other set's."""
    from ddr_search.routing import recalibrate
    from ddr_search.routing_quantile import RoutingEvidence, choose_quantile

    name = held_out.module
    thresholds = {q: recalibrate(held_out, q).threshold for q in QUANTILES}
    evidence = {s: RoutingEvidence(held_out.scores(unit[s]), ndcg[s][name] - ndcg[s]["general"]) for s in ndcg}
    return choose_quantile(thresholds, evidence[name], [e for s, e in evidence.items() if s != name])


def dev_auto_routing(profiles, ndcg: dict, unit: dict) -> dict:  # type: ignore[no-untyped-def]
    """Auto routing with these (held-out) profiles on every dev set: the mean NDCG@10 change against the
    general module alone, the module's own change when named (prior), and the share reaching each module."""
    from ddr_search.routing import route

    out = {}
    for name, vectors in unit.items():
        chosen = route(vectors, profiles)
        got = [ndcg[name][c or "general"][row] for row, c in enumerate(chosen)]
        general = ndcg[name]["general"]
        out[name] = {
            "auto_change": round(float(np.mean(got) - general.mean()), 4),
            "prior_change": round(float(ndcg[name][name].mean() - general.mean()), 4) if name in ndcg[name] else None,
            "routed": {p.module: round(chosen.count(p.module) / len(chosen), 3) for p in profiles},
        }
    return out


GENERAL_SETS = ("cacm", "cranfield", "adi")  # zero-shot collections, plus WikiQA's train questions


def general_fusion(store: Path, data: Path, limit: int | None, cache_dir: Path | None) -> dict:
    """The general module's hybrid weights (queries no domain accepts), chosen on collections unlike any
    training set, and saved into `store`."""
    from ddr_search.data.beir import load_beir
    from ddr_search.evaluation.harness import bm25_runs, default_cache_dir, dense_runs
    from ddr_search.evaluation.tuning import choose_shared_fusion
    from ddr_search.model.encoder import TorchEncoder
    from ddr_search.model.store import save_store
    from ddr_search.training.beir_pairs import pairs_as_beir
    from ddr_search.training.pairs import read_pairs
    from ddr_search.types import RoutingMode

    model = TorchEncoder.load(store).model
    general = model.general
    assert general is None or not bool(general.gates.any()), "the general module is not the exact no-op"
    frozen = TorchEncoder.load(None)  # = the store's general module alone, and its passages are cached
    sets = {name: load_beir(data / "beir" / name, "test") for name in GENERAL_SETS}
    sets["wikiqa-train"] = pairs_as_beir(read_pairs(data / WIKIQA_TRAIN))
    runs = {}
    for name, (corpus, queries, qrels) in sets.items():
        if limit:
            queries = dict(list(queries.items())[:limit])
            qrels = {q: qrels[q] for q in queries}
            judged = {d for q in qrels.values() for d in q}
            corpus = {d: t for d, t in corpus.items() if d in judged} | dict(list(corpus.items())[: 4 * limit])
        lexical, _ = bm25_runs(corpus, queries)
        dense, _, _ = dense_runs(
            corpus, queries, frozen, routing=RoutingMode.NONE, cache_dir=cache_dir or default_cache_dir()
        )
        runs[name] = (lexical, dense, qrels)
    config, scores = choose_shared_fusion(runs)
    model.fusion["general"] = config
    save_store(model, store)
    print(f"[release] general fusion {config.to_record()}", flush=True)
    return {"fusion": config.to_record(), "dev_ndcg_by_dense_weight": scores}


def write_routing_report(choices: dict[str, dict]) -> None:
    """bench/reports/routing_quantiles.{json,md}: the evidence behind each shipped module's threshold."""
    from ddr_search.routing_quantile import MAX_LOSS

    reports = REPO / "bench" / "reports"
    (reports / "routing_quantiles.json").write_text(json.dumps(choices, indent=2) + "\n")
    choices = dict(choices)
    designs = choices.pop("designs")
    lines = [
        "# Routing threshold per module (`python scripts/release_modules.py --routing-only`)",
        "",
        "Dev queries only (docs/routing.md). Worth of a quantile: the module's own held-out queries' mean "
        "NDCG@10 change when those clearing its threshold go to it, plus the mean over the other dev sets "
        "(the other modules' dev splits, PubMedQA train, WikiQA train) of theirs. A quantile replaces 0.05 "
        "only when it beats it in the required share of 2,000 bootstrap resamples. A quantile that costs any "
        "other dev set more than 0.005 on average is not eligible; when 0.05 is not, the loosest eligible "
        "quantile takes its place as the one to beat.",
        "",
        "| module | quantile | worth | worst other set | eligible | share of draws beating the one to beat | chosen |",
        "|---|---|---|---|---|---|---|",
    ]
    for module, choice in choices.items():
        for quantile, worth in choice["dev_utility_by_quantile"].items():
            share = choice["share_of_draws_beating_default"][quantile]
            worst = choice["worst_other_set_by_quantile"][quantile]
            eligible = "yes" if worst >= -MAX_LOSS else "no"
            if float(quantile) == choice["compared_against"]:
                eligible += " (the one to beat)"
            chosen = "**yes**" if float(quantile) == choice["quantile"] else ""
            cells = (module, f"{float(quantile):g}", f"{worth:+.4f}", f"{worst:+.4f}", eligible, f"{share:.3f}", chosen)
            lines.append("| " + " | ".join(cells) + " |")
    required = next(iter(choices.values()))["share_required"]
    lines += ["", f"Share required: {required:.4f} (95% family-wise, Bonferroni over the candidates).", ""]
    lines += [
        "## Auto routing on the dev sets, with and without the routing background",
        "",
        "Each design's held-out profiles at the quantiles the rule above chooses for it; every module competes "
        "(the accepting domain with the highest score wins). Mean NDCG@10 change against the general module "
        "alone; for a module's own set, the share of the change prior routing (the module named) gives.",
        "",
        "| design | quantiles | " + " | ".join(next(iter(designs.values()))["dev"]) + " |",
        "|---|---|" + "---|" * len(next(iter(designs.values()))["dev"]),
    ]
    for design, result in designs.items():
        cells = []
        for outcome in result["dev"].values():
            routed = ", ".join(f"{m} {share:.0%}" for m, share in outcome["routed"].items() if share)
            prior = outcome["prior_change"]
            share = f" ({outcome['auto_change'] / prior:.0%} of {prior:+.4f})" if prior else ""
            cells.append(f"{outcome['auto_change']:+.4f}{share}; routed: {routed or 'none'}")
        quantiles = ", ".join(f"{m} {q:g}" for m, q in result["quantiles"].items())
        lines.append(f"| {design} | {quantiles} | " + " | ".join(cells) + " |")
    lines.append("")
    (reports / "routing_quantiles.md").write_text("\n".join(lines))


def retrain(name: str, data: Path, work: Path, cache_dir: Path | None = None) -> Path:
    """Train one module of the packaged store anew with its recipe, on top of the other modules, which stay
    bit-identical (train_domain asserts it), as does the background; then re-choose every threshold
    (routing_quantiles with `retrained`: the others' thresholds move only where their quantile does).
    The module moves to the end of the store's module order. Returns the new store."""
    from ddr_search.model.backbone import load_backbone
    from ddr_search.model.store import load_store, save_store

    recipe = next((r for r in RECIPES if r.name == name), None)
    if recipe is None:
        raise SystemExit(f"no recipe named {name!r} (recipes: {', '.join(r.name for r in RECIPES)})")
    backbone = load_backbone()
    model = load_store(PRETRAINED, backbone, None)
    model.remove_domain_module(name)
    base, out = work / f"without-{name}", work / f"retrained-{name}"
    save_store(model, base, notes={})
    _, _, result = train_recipe(recipe, base, out, data, None, cache_dir)
    print(f"[release] {name} retrained: dev {result.baseline_dev:.4f} -> {result.best_dev:.4f}, "
          f"{result.steps} steps, {result.seconds:.0f} s", flush=True)  # fmt: skip
    return out


def ship(store: Path) -> None:
    """Replace the packaged store (the model card stays: it is written by hand)."""
    for item in PRETRAINED.iterdir():
        if item.name != "MODEL_CARD.md":
            shutil.rmtree(item) if item.is_dir() else item.unlink()
    for item in store.iterdir():
        target = PRETRAINED / item.name
        shutil.copytree(item, target) if item.is_dir() else shutil.copyfile(item, target)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = Path(os.environ.get("DDR_SHARED_DATA", REPO.parent / "shared" / "data"))
    parser.add_argument("--data", type=Path, default=default_data)
    parser.add_argument("--work", type=Path, default=REPO / ".ddr" / "release")
    parser.add_argument("--limit", type=int, default=None, help="train on a small slice (a smoke test)")
    parser.add_argument("--ship", action="store_true", help="copy the final store into ddr_search/pretrained")
    parser.add_argument("--routing-only", action="store_true", help="only re-choose the trained store's thresholds")
    parser.add_argument("--adapter-rank", type=int, default=None, help="query adapter rank (8; 0: prefix-only)")
    parser.add_argument("--retrain", metavar="NAME", help="train one packaged module anew, then re-choose thresholds")
    args = parser.parse_args()
    if args.retrain:
        store = retrain(args.retrain, args.data, args.work)
        routing = routing_quantiles(store, args.data, None, None, retrained=args.retrain)
        (args.work / f"retrained-{args.retrain}.json").write_text(json.dumps(routing, indent=2) + "\n")
        write_routing_report(routing)
        if args.ship:
            ship(store)
            print(f"shipped {store} -> {PRETRAINED}")
        return 0
    if args.routing_only:
        summary_file = args.work / "release.json"
        summary = json.loads(summary_file.read_text())
        summary["routing"] = routing_quantiles(args.work / RECIPES[-1].name, args.data, args.limit, None)
        summary_file.write_text(json.dumps(summary, indent=2) + "\n")
    else:
        summary = release(args.data, args.work, limit=args.limit, adapter_rank=args.adapter_rank)
    if args.limit is None:
        write_routing_report(summary["routing"])
    if args.ship:
        ship(args.work / RECIPES[-1].name)
        print(f"shipped {args.work / RECIPES[-1].name} -> {PRETRAINED}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
