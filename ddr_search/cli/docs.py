"""`ddr-search delete` and `ddr-search stats`: document management over DDRSearch (no model loaded)."""

from __future__ import annotations

import json

import click


@click.command("delete")
@click.argument("ids", nargs=-1, required=True)
def delete(ids: tuple[str, ...]) -> None:
    """Delete documents by id (ids that do not exist are ignored and counted)."""
    from ddr_search.client import DDRSearch

    with DDRSearch() as client:
        removed = client.delete(list(ids))
    missing = len(set(ids)) - removed
    click.echo(f"deleted {removed} documents" + (f" ({missing} ids not found)" if missing else ""))


@click.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
def stats(as_json: bool) -> None:
    """Documents per domain, where the store is, and which encoder versions embedded them."""
    from ddr_search.client import DDRSearch

    with DDRSearch() as client:
        info = client.stats()
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
        return
    for key, value in info.items():
        if isinstance(value, dict):
            click.echo(f"{key}:")
            for name, count in value.items():
                click.echo(f"  {name}: {count}")
        else:
            click.echo(f"{key}: {value}")
