"""`ddr-search setup`: configure an existing OpenSearch or Elasticsearch cluster (template, versioned index,
alias, and OpenSearch's hybrid pipelines)."""

from __future__ import annotations

import json

import click

from ddr_search.errors import ConfigError
from ddr_search.settings import Settings


@click.command("setup")
@click.option("--dimension", type=click.IntRange(min=1), help="Vector dimension [the encoder's].")
@click.option("--encoder-version", help="Encoder version naming the index [the encoder's].")
@click.option("--print-template", is_flag=True, help="Print the index template and pipelines JSON; change nothing.")
def setup(dimension: int | None, encoder_version: str | None, print_template: bool) -> None:
    """Configure the cluster at DDR_OPENSEARCH__URL or DDR_ELASTICSEARCH__URL; safe to run again.

    Writes the index template, creates <index>-v<encoder version> behind the alias (DDR_*__INDEX), and,
    where OpenSearch's neural-search plugin runs, the hybrid search pipelines.
    """
    settings = Settings()
    if dimension is None or encoder_version is None:
        from ddr_search.factory import build_encoder

        encoder = build_encoder(settings)
        dimension = dimension or encoder.dimension
        encoder_version = encoder_version or encoder.version
    if settings.elasticsearch.url and not print_template:
        setup_elasticsearch(settings, dimension, encoder_version)
        return
    from connectors import shared
    from connectors.opensearch import admin, schema

    configs = admin.default_fusion_configs(settings.search.combination_weights)
    if print_template:
        out = {
            "index_template": schema.index_template(settings.opensearch, dimension),
            "index": shared.index_name(settings.opensearch.index, encoder_version),
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


def setup_elasticsearch(settings: Settings, dimension: int, encoder_version: str) -> None:
    from connectors.elasticsearch import ElasticsearchBackend, admin

    backend = ElasticsearchBackend.from_settings(settings, dimension)
    try:
        report = admin.setup(backend, settings.elasticsearch, dimension=dimension, encoder_version=encoder_version)
    finally:
        backend.close()
    click.echo(f"cluster: {report.info.describe()}")
    if report.retrievers is not None:
        click.echo(report.retrievers.describe())
    click.echo(f"template: {report.template}")
    click.echo(f"index: {report.index} (alias {report.alias})")
    for action in report.actions or ["nothing to change: already set up"]:
        click.echo(f"  {action}")
    for note in report.notes:
        click.echo(f"note: {note}")
