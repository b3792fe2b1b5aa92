"""`ddr-search train ...`: make pairs, train the general module, domain modules, one new domain, or DR."""

from __future__ import annotations

from pathlib import Path

import click


def _config(opts: dict[str, object]):
    from ddr_search.training.config import TrainConfig

    config = TrainConfig()
    for key in (
        "epochs",
        "batch_size",
        "accumulation",
        "temperature",
        "loss",
        "seed",
        "dev_fraction",
        "patience",
        "eval_every",
        "max_steps",
        "max_examples",
        "checkpoint_dir",
        "resume",
        "min_delta",
        "hard_negatives",
        "max_query_length",
        "max_passage_length",
    ):
        if opts.get(key) is not None:
            setattr(config, key, opts[key])
    for group in ("general", "domain", "adapter", "router", "backbone"):
        if opts.get(f"lr_{group}") is not None:
            config.lr[group] = float(opts[f"lr_{group}"])
    config.show_progress = not opts.get("no_progress")
    return config


def training_options(func):
    """Options every training command shares (defaults: TrainConfig, docs/architecture.md section 5)."""
    options = [
        click.option("--epochs", type=int, help="Passes over the training pairs (default 5)."),
        click.option("--batch-size", type=int, help="Queries per batch (default 32)."),
        click.option("--accumulation", type=int, help="Batches per optimizer step (default 1)."),
        click.option("--temperature", type=float, help="InfoNCE temperature (default 0.05)."),
        click.option(
            "--loss",
            type=click.Choice(["listwise", "multi_positive"]),
            help="With several positives per query: their joint softmax mass (listwise, default) "
            "or each positive against the negatives alone.",
        ),
        click.option("--lr-general", type=float, help="Learning rate of the general module (default 1e-3)."),
        click.option("--lr-domain", type=float, help="Learning rate of domain modules (default 5e-3)."),
        click.option("--lr-adapter", type=float, help="Learning rate of query adapters (default 5e-4)."),
        click.option("--lr-router", type=float, help="Learning rate of the router (default 1e-2)."),
        click.option("--lr-backbone", type=float, help="Learning rate for DR full fine-tuning (default 2e-5)."),
        click.option("--hard-negatives", type=int, help="Hard negatives per query when passages train (default 3)."),
        click.option("--max-query-length", type=int, help="Query tokens (default 64)."),
        click.option("--max-passage-length", type=int, help="Passage tokens while passages train (default 128)."),
        click.option("--seed", type=int, help="Seed for splits, order and sampling (default 0)."),
        click.option("--dev-fraction", type=float, help="Held-out share of queries for early stopping (default 0.1)."),
        click.option("--patience", type=int, help="Dev evaluations without gain before stopping (default 2)."),
        click.option("--min-delta", type=float, help="Dev gain a checkpoint needs to be kept (default 0)."),
        click.option("--eval-every", type=int, help="Steps between dev evaluations (default: once per epoch)."),
        click.option("--max-steps", type=int, help="Stop after this many optimizer steps."),
        click.option("--max-examples", type=int, help="Train on a seeded sample of this many pairs."),
        click.option("--checkpoint-dir", type=click.Path(path_type=Path), help="Save a checkpoint here each eval."),
        click.option("--resume", is_flag=True, help="Continue from the checkpoint in --checkpoint-dir."),
        click.option(
            "--backbone",
            type=click.Path(path_type=Path, exists=True, file_okay=False),
            help="Local BERT-family model folder (default: packaged all-MiniLM-L6-v2).",
        ),
        click.option("--no-progress", is_flag=True, help="No progress bar."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _read_pairs(files: tuple[Path, ...], domain: str | None = None):
    from ddr_search.training.pairs import read_pairs

    if not files:
        raise click.UsageError("give at least one --pairs FILE")
    return [p for f in files for p in read_pairs(f, domain=domain)]


def _report(result, out: Path) -> None:
    click.echo(
        f"dev nDCG@10 {result.baseline_dev:.4f} -> {result.best_dev:.4f} (best step {result.best_step} of "
        f"{result.steps}; {result.seconds:.0f} s, {result.seconds_per_step:.2f} s/step). Saved to {out}"
    )


def store_paths(store: Path | None, out: Path | None, backbone: Path | None) -> tuple[Path | None, Path]:
    """Read from --store (default: the configured store, else the packaged one when the backbone is the
    packaged one); write to --out (default --store, except the packaged store, which is never written:
    then DDR_HOME/modules)."""
    from ddr_search.factory import PRETRAINED_DIR, default_module_store
    from ddr_search.settings import Settings

    settings = Settings(backbone=backbone) if backbone is not None else Settings()
    source = store if store is not None else default_module_store(settings)
    if out is None:
        packaged = source is None or Path(source).resolve() == PRETRAINED_DIR
        out = settings.home / "modules" if packaged else Path(source)
    return source, out


@click.group()
def train() -> None:
    """Train modules: general (phase 1), domains + router (phase 2), one new domain, or the DR baseline."""


@train.command("general")
@click.option("--pairs", "pairs_files", type=click.Path(path_type=Path), multiple=True, help="Pairs JSONL.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Module store to write.")
@click.option("--store", type=click.Path(path_type=Path), help="Start from this store's general module.")
@click.option("--prefix-length", type=int, help="Prefix vectors per layer for a new store (default 32).")
@click.option(
    "--adapter-rank",
    type=click.IntRange(min=0),
    help="Rank of the domain modules' query adapters for a new store (default 8; 0 = prefixes only).",
)
@training_options
def train_general_cmd(pairs_files, out, store, prefix_length, adapter_rank, **opts) -> None:
    """Phase 1: train the general module alone (it also encodes passages: a new one means re-indexing)."""
    from ddr_search.training.api import train_general

    config = _config(opts)
    _, result = train_general(
        _read_pairs(pairs_files),
        out,
        config,
        store=store,
        backbone=opts["backbone"],
        prefix_length=prefix_length,
        adapter_rank=adapter_rank,
    )
    _report(result, out)


def _corpora(specs: tuple[str, ...]) -> dict[str, list]:
    from ddr_search.training.corpus import read_corpus

    corpora = {}
    for spec in specs:
        domain, sep, file = spec.partition("=")
        if not sep:
            raise click.BadParameter(f"{spec!r}: expected DOMAIN=FILE", param_hint="--corpus")
        corpora[domain] = read_corpus(Path(file))
    return corpora


@train.command("domains")
@click.option(
    "--pairs",
    "pairs_files",
    type=click.Path(path_type=Path),
    multiple=True,
    help="Pairs JSONL; every record names its domain.",
)
@click.option(
    "--corpus",
    "corpus_specs",
    multiple=True,
    metavar="DOMAIN=FILE",
    help="A domain's corpus JSONL: all of it serves as negatives (encoded once, cached).",
)
@click.option("--store", type=click.Path(path_type=Path), help="Store with the general module.")
@click.option("--out", type=click.Path(path_type=Path), help="Store to write (default: --store).")
@click.option("--cache-dir", type=click.Path(path_type=Path), help="Passage-embedding cache.")
@training_options
def train_domains_cmd(pairs_files, corpus_specs, store, out, cache_dir, **opts) -> None:
    """Phase 2: domain modules + router jointly; the general module is frozen, so no passage changes."""
    from ddr_search.training.api import train_domains

    source, out = store_paths(store, out, opts["backbone"])
    _, result = train_domains(
        _read_pairs(pairs_files),
        source,
        out,
        _config(opts),
        corpora=_corpora(corpus_specs),
        backbone=opts["backbone"],
        cache_dir=cache_dir,
    )
    _report(result, out)


@train.command("domain")
@click.argument("name")
@click.option("--pairs", "pairs_files", type=click.Path(path_type=Path), multiple=True, help="Labelled pairs.")
@click.option("--corpus", type=click.Path(path_type=Path), help="Domain corpus JSONL (label-free without --pairs).")
@click.option("--store", type=click.Path(path_type=Path), help="Store to extend (default: configured/packaged).")
@click.option("--out", type=click.Path(path_type=Path), help="Store to write (default: --store).")
@click.option("--cache-dir", type=click.Path(path_type=Path), help="Passage-embedding cache.")
@click.option(
    "--average-runs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Train this many runs (seeds --seed, --seed + 1, ...) and keep their average: less run-to-run variance.",
)
@click.option(
    "--routing-quantile",
    type=click.FloatRange(0.0, 1.0, max_open=True),
    default=0.05,
    show_default=True,
    help="Share of the domain's own training queries its auto-routing threshold lets fall below: higher keeps "
    "more foreign queries out (docs/routing.md). Change it later with `ddr-search modules calibrate`.",
)
@click.option(
    "--time-budget",
    type=click.FloatRange(min=0.0, min_open=True),
    help="Label-free only: wall-clock seconds for the whole call (default: no limit). Where it binds, the module "
    "trains on a sample of the corpus for fewer steps and may gain little (docs/training.md).",
)
@click.option(
    "--keep-queries",
    type=click.Path(path_type=Path),
    help="Queries of other domains (or of none) the module should encode as the general module does: a JSONL "
    "of pairs or BEIR queries, or one per line. A foreign query routing lets through then costs little "
    "(docs/training.md: the keep loss).",
)
@click.option(
    "--keep-weight",
    type=click.FloatRange(min=0.0, min_open=True),
    default=10.0,
    show_default=True,
    help="Weight of the keep loss (with --keep-queries).",
)
@training_options
def train_domain_cmd(
    name,
    pairs_files,
    corpus,
    store,
    out,
    cache_dir,
    average_runs,
    routing_quantile,
    time_budget,
    keep_queries,
    keep_weight,
    **opts,
) -> None:
    """Add one domain module; every other module and every passage embedding stay bit-identical."""
    from dataclasses import replace

    from ddr_search.training.api import train_domain
    from ddr_search.training.corpus import read_corpus
    from ddr_search.training.pairs import read_query_texts
    from ddr_search.training.selfsup import LABEL_FREE_BUDGET

    if not pairs_files and corpus is None:
        raise click.UsageError("give --pairs FILE or --corpus FILE")
    source, out = store_paths(store, out, opts["backbone"])
    pairs = _read_pairs(pairs_files, domain=name) if pairs_files else None
    docs = read_corpus(corpus) if corpus is not None else None
    keep = read_query_texts(keep_queries) if keep_queries is not None else None
    config = _config(opts)
    config.average_runs = average_runs
    config.routing_quantile = routing_quantile
    config.keep_weight = keep_weight if keep is not None else 0.0
    budget = LABEL_FREE_BUDGET if time_budget is None else replace(LABEL_FREE_BUDGET, seconds=time_budget)
    _, result = train_domain(
        name,
        source,
        out,
        config,
        pairs=pairs,
        corpus=docs,
        backbone=opts["backbone"],
        cache_dir=cache_dir,
        budget=budget,
        keep=keep,
    )
    _report(result, out)
    click.echo(f"use it with DDR_MODULES={out} (passages need no re-indexing)")


@train.command("dr")
@click.option("--pairs", "pairs_files", type=click.Path(path_type=Path), multiple=True, help="Pairs JSONL.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Model folder to write.")
@training_options
def train_dr_cmd(pairs_files, out, **opts) -> None:
    """Baseline: full fine-tuning of the backbone on the pairs (every passage must be re-embedded)."""
    from ddr_search.training.dr import train_dr

    _, result = train_dr(_read_pairs(pairs_files), out, _config(opts), backbone=opts["backbone"])
    _report(result, out)


@train.group("pairs")
def pairs_group() -> None:
    """Make training pairs: from BEIR qrels, from a raw corpus (label-free), or add mined negatives."""


@pairs_group.command("beir")
@click.argument("folder", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--split", default="train", show_default=True, help="qrels split (test is refused).")
@click.option("--domain", help="Domain to record on every pair.")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
def pairs_beir(folder, split, domain, output) -> None:
    """Pairs from a BEIR folder's qrels: one line per query, every relevant document a positive."""
    from ddr_search.training.beir_pairs import pairs_from_beir
    from ddr_search.training.pairs import write_pairs

    click.echo(f"{write_pairs(output, pairs_from_beir(folder, split, domain=domain))} pairs -> {output}")


@pairs_group.command("corpus")
@click.argument("corpus", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--domain", help="Domain to record on every pair.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
def pairs_corpus(corpus, domain, seed, output) -> None:
    """Self-supervised pairs (title -> body, sentence -> rest, crop -> passage) from a raw corpus."""
    from ddr_search.training.corpus import read_corpus
    from ddr_search.training.pairs import write_pairs
    from ddr_search.training.selfsup import pairs_from_corpus

    pairs = pairs_from_corpus(read_corpus(corpus), domain=domain, seed=seed)
    click.echo(f"{write_pairs(output, pairs)} pairs -> {output}")


@pairs_group.command("mine")
@click.option("--pairs", "pairs_file", type=click.Path(path_type=Path), required=True)
@click.option("--corpus", type=click.Path(path_type=Path), required=True)
@click.option("--count", type=int, default=5, show_default=True, help="Negatives to add per pair.")
@click.option("--skip", type=int, default=0, show_default=True, help="Ignore this many top ranks.")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
def pairs_mine(pairs_file, corpus, count, skip, output) -> None:
    """Add BM25 hard negatives (never a positive of the same query)."""
    from ddr_search.training.corpus import read_corpus
    from ddr_search.training.mining import mine_bm25
    from ddr_search.training.pairs import read_pairs, write_pairs

    pairs = mine_bm25(read_pairs(pairs_file), read_corpus(corpus), count=count, skip=skip)
    click.echo(f"{write_pairs(output, pairs)} pairs -> {output}")
