"""`ddr-search search`: a thin layer over DDRSearch.search that renders hits as text or JSON."""

from __future__ import annotations

import dataclasses
import json
import textwrap

import click

from ddr_search.types import Hit, RoutingMode, SearchMode


def routing_line(hits: list[Hit], mode: SearchMode) -> str:
    if mode is SearchMode.BM25:
        return "routing: none (bm25 only)"
    if not hits:
        return "routing: -"
    weights = hits[0].routing
    if not weights:
        return "routing: general module only"
    return "routing: " + ", ".join(f"{name}={w:.2f}" for name, w in sorted(weights.items(), key=lambda x: -x[1]))


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def render(hits: list[Hit], mode: SearchMode) -> str:
    lines = [routing_line(hits, mode)]
    if not hits:
        lines.append("no results")
    for rank, hit in enumerate(hits, start=1):
        head = f"{rank:2d}. {hit.id} [{hit.domain or '-'}] score {hit.score:.3f}"
        head += f" (bm25 {_score(hit.bm25_score)}, dense {_score(hit.dense_score)})"
        lines.append(head)
        if hit.title:
            lines.append(f"    {hit.title}")
        lines.append(textwrap.shorten(hit.text, width=160, placeholder=" ...", initial_indent="    "))
    return "\n".join(lines)


SNIPPET_CHARS = 500  # a 5 MB document would otherwise fill the terminal (and any pipe) with one hit


def as_json_hit(hit: Hit, full_text: bool) -> dict[str, object]:
    """A hit as JSON; its text cut to a snippet unless `full_text` (`text_chars` says how long it is)."""
    out = dataclasses.asdict(hit)
    out["text_chars"] = len(hit.text)
    if not full_text and len(hit.text) > SNIPPET_CHARS:
        out["text"] = hit.text[:SNIPPET_CHARS] + " ..."
    return out


@click.command("search")
@click.argument("query")
@click.option("--domain", help="Route to this domain's modules and search only its documents.")
@click.option("--k", "k", type=click.IntRange(min=1), help="Number of hits [DDR_SEARCH__K, 10].")
@click.option(
    "--mode", type=click.Choice([m.value for m in SearchMode]), default=SearchMode.HYBRID.value, show_default=True
)
@click.option("--no-domain-filter", is_flag=True, help="With --domain: route by it but search every document.")
@click.option("--routing", type=click.Choice([m.value for m in RoutingMode]), help="Override the routing mode.")
@click.option(
    "--filter",
    "filter_expressions",
    multiple=True,
    metavar="EXPR",
    help="Metadata condition, repeatable, all must hold: key=v, key=a,b (any of), key!=v, key>=N, "
    "key>N, key<=N, key<N (docs/filters.md).",
)
@click.option("--filters", "filters_json", metavar="JSON", help='Conditions as JSON: {"year": {"gte": 2020}}.')
@click.option("--json", "as_json", is_flag=True, help="Print hits as JSON (every score and the routing weights).")
@click.option(
    "--full-text",
    is_flag=True,
    help=f"With --json: each hit's whole text (default: the first {SNIPPET_CHARS} characters).",
)
def search(
    query: str,
    domain: str | None,
    k: int | None,
    mode: str,
    no_domain_filter: bool,
    routing: str | None,
    filter_expressions: tuple[str, ...],
    filters_json: str | None,
    as_json: bool,
    full_text: bool,
) -> None:
    """Hybrid BM25 + dense search with DDR routing (top-k modules, or the --domain's modules)."""
    from ddr_search.client import DDRSearch
    from ddr_search.filters import parse_cli_filters

    filters = parse_cli_filters(filter_expressions, filters_json)
    with DDRSearch() as client:
        hits = client.search(
            query,
            domain=domain,
            k=k,
            mode=mode,
            filter_domain=not no_domain_filter,
            routing=RoutingMode(routing) if routing else None,
            filters=filters or None,
        )
    if as_json:
        click.echo(json.dumps([as_json_hit(h, full_text) for h in hits], ensure_ascii=False, indent=2))
    else:
        click.echo(render(hits, SearchMode(mode)))
