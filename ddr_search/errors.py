"""Every error ddr-search raises: one base class, each also the builtin it replaces."""

from __future__ import annotations

from pathlib import Path


class DDRSearchError(Exception):
    """Base class: catch this to handle any ddr-search failure."""


class InputError(DDRSearchError, ValueError):
    """Bad user input; carries the file, line and field so the message can point at it."""

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = str(path) if path is not None else None
        self.line = line
        self.field = field
        where = ""
        if self.path is not None:
            where = self.path if line is None else f"{self.path}:{line}"
            where += ": "
        if field is not None:
            message = f"field {field!r}: {message}"
        super().__init__(where + message)


class ConfigError(DDRSearchError, ValueError):
    """Settings that cannot work together (missing URL, bad broker scheme, ...)."""


class ModuleStoreError(DDRSearchError, ValueError):
    """A module store that is missing, corrupt, or made for another backbone / prefix length."""


class UnknownModuleError(DDRSearchError, KeyError):
    """A module or domain name that the store does not hold; never silently replaced by a fallback."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class BackendError(DDRSearchError, RuntimeError):
    """A search backend failed (cluster down, rejected credentials, bulk failures)."""


class DocumentsRejected(BackendError):
    """The backend refused some documents for good (a mapping conflict, say) and stored all the others.

    Repeating the write cannot help, so a worker records these per id instead of retrying its batch.
    """

    def __init__(self, message: str, failures: dict[str, str], attempted: int) -> None:
        super().__init__(message)
        self.failures = failures  # document id -> reason
        self.attempted = attempted


class ExportError(DDRSearchError, RuntimeError):
    """ONNX artifacts that are missing, stale, or were made for another module store."""
