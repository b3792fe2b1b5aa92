"""The one strict reader of text lines (JSONL documents, pairs and queries; TSV qrels): UTF-8 decoded line by
line, a byte-order mark dropped on any line (files joined with `cat` carry one mid-file), blank lines
skipped, every error naming file and line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from ddr_search.errors import InputError


def decode_line(raw: bytes, path: str | Path, line: int) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(
            f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}): save the file as UTF-8",
            path=path,
            line=line,
        ) from None


def parse_line(raw: bytes, path: str | Path, line: int) -> dict[str, object] | None:
    """One line -> its JSON object, None for a blank line; InputError for anything else."""
    text = decode_line(raw, path, line)
    if not text.strip():
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"invalid JSON: {e.msg} (column {e.colno})", path=path, line=line) from None
    if not isinstance(value, dict):
        raise InputError(f"expected a JSON object, got {type(value).__name__}", path=path, line=line)
    return value


def _raw_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    try:
        handle = path.open("rb")
    except OSError as e:
        raise InputError(f"cannot read the file: {e.strerror or e}", path=path) from e
    with handle:
        yield from enumerate(handle, start=1)


def read_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, text without its line ending) of every non-blank line."""
    path = Path(path)
    for number, raw in _raw_lines(path):
        text = decode_line(raw, path, number)
        if text.strip():
            yield number, text.rstrip("\r\n")


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, object]]]:
    """(line number, object) for each non-blank line; the first bad line raises InputError."""
    path = Path(path)
    for number, raw in _raw_lines(path):
        value = parse_line(raw, path, number)
        if value is not None:
            yield number, value
