"""Entry point: the click group, --debug handling, and subcommand registration."""

from __future__ import annotations

import logging
import sys

import click

from ddr_search import __version__
from ddr_search.errors import DDRSearchError


class _Group(click.Group):
    """Shows DDRSearchError as one clear line (exit 1); the traceback only with --debug."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except DDRSearchError as e:
            if ctx.meta.get("ddr.debug"):
                raise
            click.echo(f"error: {e}", err=True)
            sys.exit(1)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="ddr-search")
@click.option("--debug", is_flag=True, help="Show full tracebacks and debug logs.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Dynamic Dense Retrieval search: routed prefix modules, hybrid BM25 + dense, OpenSearch or embedded."""
    ctx.meta["ddr.debug"] = debug
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


# Subcommands register themselves here, one import per module (kept sorted).
from ddr_search.cli import (  # noqa: E402,F401  # noqa: E402,F401  # noqa: E402,F401
    docs,
    eval,
    export,
    ingest,
    modules,
    reindex,
    search,
    setup,
    status,
    train,
    worker,
)
