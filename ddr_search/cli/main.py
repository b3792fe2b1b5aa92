"""Entry point: the click group, --debug handling, and subcommand registration."""

from __future__ import annotations

import logging
import sys

import click
from pydantic import ValidationError

from ddr_search import __version__
from ddr_search.errors import DDRSearchError


def describe_settings_error(e: ValidationError) -> str:
    """A pydantic-settings failure as one line naming each bad environment variable and why."""
    parts = []
    for error in e.errors():
        name = "DDR_" + "__".join(str(p) for p in error["loc"] if isinstance(p, str)).upper()
        parts.append(f"{name}={error.get('input')!r}: {error['msg']}")
    return "invalid setting " + "; ".join(parts)


class _Group(click.Group):
    """Shows DDRSearchError, a bad setting or an OS error (unwritable DDR_HOME, ...) as one clear line
    (exit 1; an interrupted ingest exits 130); the traceback only with --debug."""

    def invoke(self, ctx: click.Context) -> object:
        from ddr_search.ingest import IngestInterrupted

        try:
            return super().invoke(ctx)
        except (DDRSearchError, ValidationError, OSError) as e:
            if ctx.meta.get("ddr.debug"):
                raise
            if isinstance(e, ValidationError):
                message = describe_settings_error(e)
            elif isinstance(e, OSError) and not isinstance(e, DDRSearchError):
                where = f": {e.filename}" if e.filename else ""
                message = f"{e.strerror or type(e).__name__}{where}"
            else:
                message = str(e)
            click.echo(f"error: {message}", err=True)
            sys.exit(130 if isinstance(e, IngestInterrupted) else 1)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="ddr-search")
@click.option("--debug", is_flag=True, help="Show full tracebacks and debug logs.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Dynamic Dense Retrieval search: routed prefix modules, hybrid BM25 + dense, OpenSearch or embedded."""
    ctx.meta["ddr.debug"] = debug
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not debug:  # the clients log every failed attempt; the one line the command prints says it all
        for noisy in ("opensearch", "urllib3", "elastic_transport"):
            logging.getLogger(noisy).setLevel(logging.CRITICAL)
        # a long ingest pauses ~20 s on its first batch to compile the encoder: say why (model/compiled.py)
        logging.getLogger("ddr_search.model.compiled").setLevel(logging.INFO)


def _register() -> None:
    """Every command, named once here (their modules import nothing heavy until a command runs)."""
    from ddr_search.cli import docs, eval, export, ingest, modules, reindex, search, setup, status, train, worker

    for command in (
        docs.delete,
        docs.stats,
        eval.eval_command,
        export.export,
        ingest.ingest,
        modules.modules,
        reindex.reindex,
        search.search,
        setup.setup,
        status.status,
        train.train,
        worker.worker,
    ):
        cli.add_command(command)


_register()
