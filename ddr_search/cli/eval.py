"""`ddr-search eval`: a thin layer over ddr_search.evaluation.evaluate that prints scores and writes a report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ddr_search.fusion import Technique
from ddr_search.types import RoutingMode

if TYPE_CHECKING:
    from ddr_search.evaluation.harness import EvalResult

METHODS = ("bm25", "dense", "ddr", "hybrid")
ROUTINGS = tuple(m.value for m in RoutingMode)
TECHNIQUES = tuple(t.value for t in Technique)


def _weights(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[float, ...]:
    try:
        weights = tuple(float(w) for w in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers such as 0.5,0.5, got {value!r}") from None
    if len(weights) != 2:
        raise click.BadParameter("give two weights: BM25,dense (e.g. 0.3,0.7)")
    return weights


@click.command("eval")
@click.option(
    "--beir", "beir", required=True, type=click.Path(file_okay=False, path_type=Path),
    help="A BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.",
)  # fmt: skip
@click.option("--split", default="test", show_default=True, help="The qrels split to score.")
@click.option("--method", type=click.Choice(METHODS), default="dense", show_default=True,
              help="bm25; dense = the frozen backbone; ddr = backbone + --modules; hybrid = BM25 fused with dense "
              "(or ddr when --modules is given).")  # fmt: skip
@click.option("--modules", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="A module store (needed for ddr) [DDR_MODULES].")  # fmt: skip
@click.option("--backbone", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="A local BERT-family folder [DDR_BACKBONE; default: packaged all-MiniLM-L6-v2].")  # fmt: skip
@click.option("--routing", type=click.Choice(ROUTINGS), help="ddr routing mode [topk; prior when --domain is given].")
@click.option("--top-k", "top_k", type=click.IntRange(min=1), default=2, show_default=True,
              help="Modules kept by topk routing.")  # fmt: skip
@click.option("--domain", help="Route every query with this domain's modules (prior routing).")
@click.option("--fusion", "technique", type=click.Choice(TECHNIQUES), default="min_max", show_default=True,
              help="hybrid: score normalisation (OpenSearch's), or rrf.")  # fmt: skip
@click.option("--weights", default="0.5,0.5", show_default=True, callback=_weights,
              help="hybrid: BM25,dense weights, summing to 1.")  # fmt: skip
@click.option("--exclude-self-hits", is_flag=True, help="Drop hits whose id equals the query id (ArguAna-style).")
@click.option("--depth", type=click.IntRange(min=10), default=100, show_default=True,
              help="Hits kept per query (Recall@depth, fusion candidates).")  # fmt: skip
@click.option("--max-queries", type=click.IntRange(min=1), help="Score only the first N judged queries.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Passage-embedding cache [DDR_HOME/cache].")  # fmt: skip
@click.option("--no-cache", is_flag=True, help="Encode passages afresh and cache nothing.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the JSON report here.")
@click.option("--include-run", is_flag=True, help="With --out: include every query's ranked hits in the report.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of a table.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def eval_command(
    beir: Path,
    split: str,
    method: str,
    modules: Path | None,
    backbone: Path | None,
    routing: str | None,
    top_k: int,
    domain: str | None,
    technique: str,
    weights: tuple[float, ...],
    exclude_self_hits: bool,
    depth: int,
    max_queries: int | None,
    cache_dir: Path | None,
    no_cache: bool,
    out: Path | None,
    include_run: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Score a retrieval method on a BEIR folder: NDCG@10, Recall@100, MRR@10 (ir-measures)."""
    from ddr_search.evaluation import evaluate
    from ddr_search.fusion import FusionConfig
    from ddr_search.settings import Settings

    settings = Settings()
    if method in ("ddr", "hybrid") and modules is None:
        modules = settings.modules
    result = evaluate(
        beir,
        method,
        split=split,
        modules=modules,
        backbone=backbone or settings.backbone,
        routing=routing,
        domain=domain,
        top_k=top_k,
        fusion=FusionConfig(technique, weights),
        exclude_self_hits=exclude_self_hits,
        depth=depth,
        max_queries=max_queries,
        cache_dir=cache_dir or settings.home / "cache",
        use_cache=not no_cache,
        show_progress=not quiet,
    )
    if out is not None:
        result.write_json(out, include_run=include_run)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    click.echo(render(result))
    if out is not None:
        click.echo(f"report: {out}")


def render(result: EvalResult) -> str:
    """One header line and one row: what ran, on what, and its three scores."""
    m, config = result.metrics, result.config
    what = result.method
    fusion = config.get("fusion")
    if isinstance(fusion, dict):
        what += f" ({fusion['technique']} {'/'.join(str(w) for w in fusion['weights'])})"  # type: ignore[union-attr]
    if config.get("routing") or config.get("domain"):
        what += f" routing={config.get('routing') or 'prior'}"
        if config.get("domain"):
            what += f" domain={config['domain']}"
    lines = [
        f"{result.dataset} [{result.split}]: {result.num_queries} queries, {result.num_documents} documents",
        f"{'method':<40} {'nDCG@10':>8} {'R@100':>8} {'MRR@10':>8} {'q/s':>8}",
        f"{what:<40} {m['nDCG@10']:>8.4f} {m['R@100']:>8.4f} {m['RR@10']:>8.4f} "
        f"{result.timings.get('queries_per_s', 0.0):>8.1f}",
    ]
    if result.routing:
        weights = ", ".join(f"{k}={v:.2f}" for k, v in sorted(result.routing.items(), key=lambda x: -x[1]))
        lines.append(f"mean routing weights: {weights}")
    return "\n".join(lines)
