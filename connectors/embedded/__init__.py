"""The embedded default backend: a local store under DDR_HOME, no cluster needed."""

from connectors.embedded.backend import EmbeddedBackend

__all__ = ["EmbeddedBackend"]
