"""`ddr-search reindex`: re-embed every document with the current encoder, then switch the alias."""

from __future__ import annotations

import click

from ddr_search.errors import ConfigError


@click.command("reindex")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Documents embedded and written per batch.",
)
@click.option("--delete-old", is_flag=True, help="Delete the previous version's index after the switch.")
@click.option("--force", is_flag=True, help="Re-embed even when the alias already serves this encoder version.")
def reindex(batch_size: int, delete_old: bool, force: bool) -> None:
    """Fill <index>-v<new encoder version> while search keeps using the old one, then switch atomically.

    Run it after the general module changes. A failure before the switch leaves the alias where it was.
    Pause ingest while it runs: documents written meanwhile land in the old version and fail the final check.
    """
    from ddr_search.factory import build_encoder
    from ddr_search.settings import Settings

    settings = Settings()
    if not settings.opensearch.url and not settings.elasticsearch.url:
        raise ConfigError(
            "reindex works on a cluster: set DDR_OPENSEARCH__URL or DDR_ELASTICSEARCH__URL "
            "(the embedded store needs none)"
        )
    encoder = build_encoder(settings)
    from ddr_search.factory import build_backend

    backend = build_backend(settings, encoder.dimension)
    try:
        with click.progressbar(length=backend.count(), label="re-embedding") as bar:
            done = [0]

            def advance(written: int) -> None:
                bar.update(written - done[0])
                done[0] = written

            if settings.elasticsearch.url:
                from connectors.elasticsearch import admin as es_admin

                if force:
                    raise ConfigError("--force is not supported on Elasticsearch yet")
                report = es_admin.reindex(
                    backend,
                    settings.elasticsearch,
                    encoder,  # type: ignore[arg-type]
                    batch_size=batch_size,
                    delete_old=delete_old,
                    on_batch=advance,
                )
            else:
                from connectors.opensearch import admin

                report = admin.reindex(
                    backend,
                    settings.opensearch,
                    encoder,  # type: ignore[arg-type]
                    batch_size=batch_size,
                    delete_old=delete_old,
                    force=force,
                    on_batch=advance,
                )
    finally:
        backend.close()
    if not report.switched:
        click.echo(report.note)
        return
    click.echo(
        f"{report.documents} documents re-embedded into {report.new_index}; "
        f"{report.alias} switched from {', '.join(report.old_indices)}"
    )
    if report.deleted_old:
        click.echo(f"deleted {', '.join(report.old_indices)}")
