"""OpenSearch connector: client from settings, index template + versioned index + alias, bulk, hybrid."""

from connectors.opensearch.backend import OpenSearchBackend

__all__ = ["OpenSearchBackend"]
