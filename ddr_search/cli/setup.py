"""`ddr-search setup`: configure an existing OpenSearch cluster (template, versioned index, alias, pipelines)."""

from __future__ import annotations

import json

import click

from ddr_search.cli.main import cli
from ddr_search.errors import ConfigError


@cli.command("setup")
@click.option("--dimension", type=click.IntRange(min=1), help="Vector dimension [the encoder's].")
@click.option("--encoder-version", help="Encoder version naming the index [the encoder's].")
@click.option("--print-template", is_flag=True, help="Print the index template and pipelines JSON; change nothing.")
def setup(dimension: int | None, encoder_version: str | None, print_template: bool) -> None:
    """Configure the cluster at DDR_OPENSEARCH__URL; safe to run again (changes only what is missing).

    Writes the index template, creates <index>-v<encoder version> behind the alias DDR_OPENSEARCH__INDEX,
    and, where the neural-search plugin runs, the hybrid search pipelines.
    """
    from ddr_search.settings import Settings

    settings = Settings()
    if dimension is None or encoder_version is None:
        from ddr_search.factory import build_encoder

        encoder = build_encoder(settings)
        dimension = dimension or encoder.dimension
        encoder_version = encoder_version or encoder.version
    from connectors.opensearch import admin, schema

    configs = admin.default_fusion_configs(settings.search.combination_weights)
    if print_template:
        out = {
            "index_template": schema.index_template(settings.opensearch, dimension),
            "index": schema.index_name(settings.opensearch.index, encoder_version),
            "pipelines": {
                schema.pipeline_name(settings.opensearch.index, c): schema.pipeline_body(c, schema.PROVEN_VERSION)
                for c in configs
            },
        }
        click.echo(json.dumps(out, indent=2))
        return
    if not settings.opensearch.url:
        raise ConfigError("no OpenSearch URL configured: set DDR_OPENSEARCH__URL (e.g. https://localhost:9200)")
    from connectors.opensearch import OpenSearchBackend

    backend = OpenSearchBackend.from_settings(settings, dimension)
    try:
        report = admin.setup(
            backend, settings.opensearch, dimension=dimension, encoder_version=encoder_version, fusion_configs=configs
        )
    finally:
        backend.close()
    click.echo(f"cluster: {report.features.describe()}")
    click.echo(f"template: {report.template}")
    click.echo(f"index: {report.index} (alias {report.alias})")
    for action in report.actions or ["nothing to change: already set up"]:
        click.echo(f"  {action}")
    for name in report.pipelines:
        click.echo(f"pipeline: {name}")
    for note in report.notes:
        click.echo(f"note: {note}")
