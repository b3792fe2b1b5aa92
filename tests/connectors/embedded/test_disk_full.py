"""A full disk while the search index is rebuilt (issue 11): the ingest says its documents are stored,
nothing is lost or half-written, search goes on over the last complete index, and once space is freed
the next search builds the new one. The disk really fills: the index folder is a 128 KiB tmpfs."""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.embedded import EmbeddedBackend
from connectors.embedded.snapshot import CACHE_DIR
from ddr_search.client import DDRSearch
from ddr_search.errors import BackendError
from ddr_search.settings import Settings
from ddr_search.types import SearchMode
from tests.conftest import service_missing
from tests.doubles import HashEncoder


def _mount(target: Path, size: str) -> None:
    options = f"size={size}" if not target.is_mount() else f"remount,size={size}"
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True)
    if result.returncode != 0:
        service_missing(f"cannot mount a size-limited tmpfs at {target} (needs root): {result.stderr.decode()}")


@pytest.fixture()
def home(tmp_path: Path) -> Iterator[Path]:
    """DDR_HOME whose embedded index folder is a tiny file system (SQLite stays on the normal disk)."""
    index = tmp_path / "home" / "embedded" / CACHE_DIR
    index.mkdir(parents=True)
    _mount(index, "128k")
    try:
        yield tmp_path / "home"
    finally:
        subprocess.run(["umount", "-l", str(index)], check=False)


def corpus(path: Path, count: int, tag: str) -> Path:
    words = " ".join(f"{tag}word{i}" for i in range(60))
    lines = [
        json.dumps({"id": f"{tag}-{i}", "title": f"{tag} {i}", "text": f"{tag} document {i} {words}"})
        for i in range(count)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
def test_a_full_disk_loses_nothing_and_search_goes_on(home: Path, tmp_path: Path, caplog) -> None:
    client = DDRSearch(Settings(home=home), encoder=HashEncoder())
    client.ingest(corpus(tmp_path / "small.jsonl", 5, "alpha"), domain="notes")
    assert [h.id for h in client.search("alpha document", k=1, mode=SearchMode.BM25)] == ["alpha-0"]

    with pytest.raises(
        BackendError,
        match=r"2000 documents are stored, but the search index .* could not be built: .* \(0\.\d MB free on th",
    ):
        client.ingest(corpus(tmp_path / "big.jsonl", 2000, "beta"), domain="notes")
    index = home / "embedded" / CACHE_DIR
    assert not [p for p in index.iterdir() if p.name.startswith(".tmp-")]  # no half-written index left
    assert EmbeddedBackend(home / "embedded").count() == 2005  # every document committed

    with caplog.at_level(logging.WARNING):
        hits = client.search("alpha document", k=3, mode=SearchMode.BM25)  # even with the disk still full
    assert hits[0].id == "alpha-0"
    assert "searching an older index" in caplog.text
    assert client.search("betaword7", k=1, mode=SearchMode.BM25) == []  # not searchable yet: said so

    _mount(index, "64m")  # space is freed: the next search builds the new index
    assert client.search("betaword7", k=1, mode=SearchMode.BM25)[0].id.startswith("beta-")
    client.close()
