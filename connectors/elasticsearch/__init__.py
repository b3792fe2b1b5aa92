"""Elasticsearch 8.x / 9.x backend (docs/elasticsearch.md)."""

from connectors.elasticsearch.backend import ElasticsearchBackend

__all__ = ["ElasticsearchBackend"]
